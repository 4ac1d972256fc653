// bzImage parsing for the Linux x86 64-bit boot protocol (Documentation/arch/x86/boot.rst).
//
// File layout: a boot sector + (setup_sects) 512-byte sectors of real-mode setup code, with the
// setup header at 0x1F1; then the protected-mode kernel (syssize 16-byte paragraphs). kindling skips
// the real-mode part: it loads the protected-mode kernel at HIMEM_START and enters it in 64-bit
// mode at load address + 0x200 (startup_64) with %rsi = boot_params.
//
// The kernel decompresses itself into [runStart, runStart + init_size), where runStart is
// pref_address (LOAD_PHYSICAL_ADDR) for a non-relocatable kernel and max(load address rounded up
// to kernel_alignment, pref_address) for a relocatable one; the initrd must stay clear of that.
//
// Every header field is read through ImageReader (bounds-checked against the image length), so a
// truncated or hostile image gives a KernelFormatError, never a RangeError.
import { HIMEM_START } from '../arch/x86_64/layout.js';
import {
  BOOT_FLAG_MAGIC,
  HDR_BOOT_FLAG,
  HDR_CMDLINE_SIZE,
  HDR_HEADER,
  HDR_INIT_SIZE,
  HDR_INITRD_ADDR_MAX,
  HDR_JUMP,
  HDR_KERNEL_ALIGNMENT,
  HDR_LOADFLAGS,
  HDR_MAX_END,
  HDR_MIN_ALIGNMENT,
  HDR_PAYLOAD_LENGTH,
  HDR_PAYLOAD_OFFSET,
  HDR_PREF_ADDRESS,
  HDR_RELOCATABLE_KERNEL,
  HDR_SETUP_SECTS,
  HDR_START,
  HDR_SYSSIZE,
  HDR_VERSION,
  HDR_XLOADFLAGS,
  HDRS_MAGIC,
  LOADED_HIGH,
  XLF_KERNEL_64,
} from './boot-params.js';
import { KernelFormatError } from './errors.js';
import { ImageReader } from './reader.js';

export { KernelFormatError, KernelLoadError } from './errors.js';

export const SECTOR_SIZE = 512;
/** setup_sects == 0 means 4 (boot.rst). */
export const DEFAULT_SETUP_SECTS = 4;
export const MIN_BOOT_PROTOCOL = 0x0206;
/** From 2.12 on, xloadflags says whether there is a 64-bit entry point. */
export const XLOADFLAGS_PROTOCOL = 0x020c;
/** pref_address and init_size exist from 2.10 on. */
export const INIT_SIZE_PROTOCOL = 0x020a;
export const PAYLOAD_PROTOCOL = 0x0208;
/** startup_64 is at this offset from the start of the protected-mode kernel. */
export const STARTUP_64_OFFSET = 0x200;

export interface BzImageInfo {
  /** e.g. 0x020f */
  version: number;
  setupSects: number;
  /** Bytes of boot sector + real-mode setup: (setupSects + 1) * 512; the kernel starts here. */
  setupSize: number;
  /** syssize * 16 */
  syssizeBytes: number;
  /** Bytes loaded at HIMEM_START: the rest of the file. */
  kernelSize: number;
  loadflags: number;
  xloadflags: number;
  initrdAddrMax: number;
  kernelAlignment: number;
  relocatable: boolean;
  minAlignment: number;
  /** Maximum command line length without the NUL. */
  cmdlineSize: number;
  /** 0 before protocol 2.10 */
  prefAddress: bigint;
  /** 0 before protocol 2.10 */
  initSize: number;
  /** Where the kernel decompresses itself when loaded at HIMEM_START. */
  runStart: number;
  /** End of everything the kernel claims: max(HIMEM_START + kernelSize, runStart + init_size). */
  footprintEnd: number;
  /** Setup header bytes (file offsets HDR_START .. min(end of header, HDR_MAX_END)). */
  setupHeader: Uint8Array;
}

export function versionString(v: number): string {
  return `${v >> 8}.${(v & 0xff).toString().padStart(2, '0')}`;
}

const hex = (n: number | bigint): string => '0x' + n.toString(16);

/** Boot flag and "HdrS" magic present (says nothing about validity). */
export function hasBzImageMagic(image: Uint8Array): boolean {
  const r = new ImageReader(image, 'bzImage');
  if (!r.has(HDR_BOOT_FLAG, 2) || !r.has(HDR_HEADER, 4)) return false;
  return r.u16(HDR_BOOT_FLAG, 'boot_flag') === BOOT_FLAG_MAGIC && r.u32(HDR_HEADER, 'header') === HDRS_MAGIC;
}

const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

/** Parse and validate a bzImage; throws KernelFormatError. Independent of guest RAM size. */
export function parseBzImage(image: Uint8Array): BzImageInfo {
  if (!hasBzImageMagic(image)) throw new KernelFormatError('not a bzImage: no boot flag 0xAA55 / "HdrS" setup header');
  const v = new ImageReader(image, 'bzImage');
  const version = v.u16(HDR_VERSION, 'setup header field version');
  if (version < MIN_BOOT_PROTOCOL) {
    throw new KernelFormatError(`bzImage boot protocol ${versionString(version)} is too old (need ≥ ${versionString(MIN_BOOT_PROTOCOL)})`);
  }
  // The header ends at 0x202 + the byte at 0x201 (the setup code's first jump skips over it).
  const headerEnd = HDR_HEADER + v.u8(HDR_JUMP + 1, 'setup header field jump (its offset byte)');
  const needEnd = version >= INIT_SIZE_PROTOCOL ? HDR_INIT_SIZE + 4 : HDR_CMDLINE_SIZE + 4;
  if (headerEnd < needEnd) {
    throw new KernelFormatError(`bzImage setup header is truncated (ends at ${hex(headerEnd)}, protocol ${versionString(version)} needs ${hex(needEnd)})`);
  }
  const rawSects = v.u8(HDR_SETUP_SECTS, 'setup header field setup_sects');
  const setupSects = rawSects === 0 ? DEFAULT_SETUP_SECTS : rawSects;
  const setupSize = (setupSects + 1) * SECTOR_SIZE;
  if (image.length <= setupSize) {
    throw new KernelFormatError(`bzImage is truncated: ${image.length} bytes, but the setup code alone is ${setupSize}`);
  }
  const syssize = v.u32(HDR_SYSSIZE, 'setup header field syssize');
  if (syssize === 0) throw new KernelFormatError('bzImage header gives no protected-mode kernel size (syssize 0)');
  const syssizeBytes = syssize * 16;
  if (setupSize + syssizeBytes > image.length) {
    throw new KernelFormatError(`bzImage is truncated: ${image.length} bytes, the header claims ${setupSize + syssizeBytes}`);
  }
  const loadflags = v.u8(HDR_LOADFLAGS, 'setup header field loadflags');
  if (!(loadflags & LOADED_HIGH)) throw new KernelFormatError('zImage kernels (not loaded high) are not supported');
  const xloadflags = v.u16(HDR_XLOADFLAGS, 'setup header field xloadflags');
  if (version >= XLOADFLAGS_PROTOCOL && !(xloadflags & XLF_KERNEL_64)) {
    throw new KernelFormatError('bzImage has no 64-bit entry point (XLF_KERNEL_64 not set): not an x86-64 kernel');
  }
  const initrdAddrMax = v.u32(HDR_INITRD_ADDR_MAX, 'setup header field initrd_addr_max');
  const kernelAlignment = v.u32(HDR_KERNEL_ALIGNMENT, 'setup header field kernel_alignment');
  const relocatable = v.u8(HDR_RELOCATABLE_KERNEL, 'setup header field relocatable_kernel') !== 0;
  if (relocatable && !isPow2(kernelAlignment)) {
    throw new KernelFormatError(`bzImage kernel_alignment ${hex(kernelAlignment)} is not a power of two`);
  }
  const minAlignment = v.u8(HDR_MIN_ALIGNMENT, 'setup header field min_alignment');
  const cmdlineSize = v.u32(HDR_CMDLINE_SIZE, 'setup header field cmdline_size');
  const kernelSize = image.length - setupSize;
  if (kernelSize <= STARTUP_64_OFFSET) throw new KernelFormatError(`bzImage protected-mode kernel is only ${kernelSize} bytes`);

  if (version >= PAYLOAD_PROTOCOL) {
    const payloadOffset = v.u32(HDR_PAYLOAD_OFFSET, 'setup header field payload_offset');
    const payloadLength = v.u32(HDR_PAYLOAD_LENGTH, 'setup header field payload_length');
    if (payloadLength !== 0 && payloadOffset + payloadLength > syssizeBytes) {
      throw new KernelFormatError('bzImage compressed payload lies outside the protected-mode kernel');
    }
  }

  let prefAddress = 0n;
  let initSize = 0;
  let runStart: number;
  if (version >= INIT_SIZE_PROTOCOL) {
    prefAddress = v.u64(HDR_PREF_ADDRESS, 'setup header field pref_address');
    initSize = v.u32(HDR_INIT_SIZE, 'setup header field init_size');
    if (initSize === 0) throw new KernelFormatError('bzImage header gives no init_size');
    if (prefAddress < BigInt(HIMEM_START) || prefAddress > 0xffff_ffffn) {
      throw new KernelFormatError(`bzImage preferred load address ${hex(prefAddress)} is outside 1 MiB..4 GiB`);
    }
    const pref = Number(prefAddress);
    runStart = relocatable ? Math.max(alignUp(HIMEM_START, kernelAlignment), pref) : pref;
  } else {
    runStart = relocatable ? alignUp(HIMEM_START, kernelAlignment) : HIMEM_START;
  }
  const footprintEnd = Math.max(HIMEM_START + kernelSize, runStart + initSize);
  const setupHeader = image.slice(HDR_START, Math.min(headerEnd, HDR_MAX_END));

  return {
    version,
    setupSects,
    setupSize,
    syssizeBytes,
    kernelSize,
    loadflags,
    xloadflags,
    initrdAddrMax,
    kernelAlignment,
    relocatable,
    minAlignment,
    cmdlineSize,
    prefAddress,
    initSize,
    runStart,
    footprintEnd,
    setupHeader,
  };
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** The protected-mode kernel (everything after the setup sectors), to be copied to HIMEM_START. */
export function bzImageKernel(image: Uint8Array, info: BzImageInfo): Uint8Array {
  return image.subarray(info.setupSize);
}

/** 64-bit entry point when loaded at HIMEM_START. */
export const BZIMAGE_ENTRY = HIMEM_START + STARTUP_64_OFFSET;
