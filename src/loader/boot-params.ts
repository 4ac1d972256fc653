// struct boot_params ("zero page") for the Linux x86 64-bit boot protocol
// (Documentation/arch/x86/boot.rst, arch/x86/include/uapi/asm/bootparam.h).
//
// The setup header lives at the same offsets in a bzImage file and in boot_params (0x1F1..), so the
// HDR_* constants below serve both the bzImage parser and this encoder.
import type { E820Entry } from '../arch/x86_64/memory-map.js';

export const BOOT_PARAMS_SIZE = 4096;

// ---- boot_params fields outside the setup header -------------------------------------------
export const BP_ACPI_RSDP_ADDR = 0x070; // u64 (protocol 2.14+)
export const BP_EXT_RAMDISK_IMAGE = 0x0c0; // u32: ramdisk_image >> 32
export const BP_EXT_RAMDISK_SIZE = 0x0c4; // u32: ramdisk_size >> 32
export const BP_EXT_CMD_LINE_PTR = 0x0c8; // u32: cmd_line_ptr >> 32
export const BP_E820_ENTRIES = 0x1e8; // u8
/** Nonzero tells the kernel the loader did not clear boot_params; we always leave it 0. */
export const BP_SENTINEL = 0x1ef; // u8
export const BP_E820_TABLE = 0x2d0; // struct boot_e820_entry[128]
export const E820_ENTRY_SIZE = 20; // u64 addr, u64 size, u32 type (packed)
export const E820_MAX_ENTRIES_ZEROPAGE = 128;

// ---- struct setup_header (offsets within boot_params and within a bzImage file) -------------
export const HDR_START = 0x1f1;
export const HDR_SETUP_SECTS = 0x1f1; // u8
export const HDR_ROOT_FLAGS = 0x1f2; // u16
export const HDR_SYSSIZE = 0x1f4; // u32, 16-byte paragraphs
export const HDR_RAM_SIZE = 0x1f8; // u16
export const HDR_VID_MODE = 0x1fa; // u16
export const HDR_ROOT_DEV = 0x1fc; // u16
export const HDR_BOOT_FLAG = 0x1fe; // u16 = 0xAA55
export const HDR_JUMP = 0x200; // u16; byte 0x201 = length of the header after 0x202
export const HDR_HEADER = 0x202; // u32 = "HdrS"
export const HDR_VERSION = 0x206; // u16
export const HDR_REALMODE_SWTCH = 0x208; // u32
export const HDR_START_SYS_SEG = 0x20c; // u16
export const HDR_KERNEL_VERSION = 0x20e; // u16
export const HDR_TYPE_OF_LOADER = 0x210; // u8
export const HDR_LOADFLAGS = 0x211; // u8
export const HDR_SETUP_MOVE_SIZE = 0x212; // u16
export const HDR_CODE32_START = 0x214; // u32
export const HDR_RAMDISK_IMAGE = 0x218; // u32
export const HDR_RAMDISK_SIZE = 0x21c; // u32
export const HDR_BOOTSECT_KLUDGE = 0x220; // u32
export const HDR_HEAP_END_PTR = 0x224; // u16
export const HDR_EXT_LOADER_VER = 0x226; // u8
export const HDR_EXT_LOADER_TYPE = 0x227; // u8
export const HDR_CMD_LINE_PTR = 0x228; // u32
export const HDR_INITRD_ADDR_MAX = 0x22c; // u32
export const HDR_KERNEL_ALIGNMENT = 0x230; // u32
export const HDR_RELOCATABLE_KERNEL = 0x234; // u8
export const HDR_MIN_ALIGNMENT = 0x235; // u8
export const HDR_XLOADFLAGS = 0x236; // u16
export const HDR_CMDLINE_SIZE = 0x238; // u32 (without the NUL)
export const HDR_HARDWARE_SUBARCH = 0x23c; // u32
export const HDR_HARDWARE_SUBARCH_DATA = 0x240; // u64
export const HDR_PAYLOAD_OFFSET = 0x248; // u32
export const HDR_PAYLOAD_LENGTH = 0x24c; // u32
export const HDR_SETUP_DATA = 0x250; // u64
export const HDR_PREF_ADDRESS = 0x258; // u64
export const HDR_INIT_SIZE = 0x260; // u32
export const HDR_HANDOVER_OFFSET = 0x264; // u32
export const HDR_KERNEL_INFO_OFFSET = 0x268; // u32
/** boot_params reserves room for the setup header up to here (edd_mbr_sig_buffer follows). */
export const HDR_MAX_END = 0x290;

export const BOOT_FLAG_MAGIC = 0xaa55;
export const HDRS_MAGIC = 0x53726448; // "HdrS" little-endian
export const LOADER_TYPE_UNDEFINED = 0xff;
/** loadflags */
export const LOADED_HIGH = 0x01;
/** xloadflags */
export const XLF_KERNEL_64 = 0x01;
export const XLF_CAN_BE_LOADED_ABOVE_4G = 0x02;
/** vid_mode: "normal" (80x25 text) */
export const VID_MODE_NORMAL = 0xffff;
/** kernel_alignment written into a synthesized header (Firecracker uses the same 16 MiB). */
export const SYNTH_KERNEL_ALIGNMENT = 0x0100_0000;

export interface BootParamsOptions {
  /**
   * The setup header bytes of a bzImage (file offsets HDR_START .. end of header, at most
   * HDR_MAX_END). Omit for a vmlinux booted via the 64-bit protocol: a header is synthesized.
   */
  setupHeader?: Uint8Array;
  cmdlineAddr: number;
  /** Command line length in bytes, without the NUL (written to cmdline_size only when synthesizing). */
  cmdlineSize: number;
  initrd?: { addr: number; size: number };
  e820: readonly E820Entry[];
  rsdpAddr?: number;
}

function u32(what: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0 || n > 0xffff_ffff) throw new RangeError(`boot_params: ${what} ${n} does not fit in 32 bits`);
  return n;
}

function u64(what: string, n: number): bigint {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`boot_params: invalid ${what} ${n}`);
  return BigInt(n);
}

const lo32 = (n: number): number => n % 0x1_0000_0000;
const hi32 = (n: number): number => Math.floor(n / 0x1_0000_0000);

/** Encode struct boot_params. Pure: returns a fresh BOOT_PARAMS_SIZE-byte array. */
export function buildBootParams(opts: BootParamsOptions): Uint8Array {
  const bp = new Uint8Array(BOOT_PARAMS_SIZE);
  const v = new DataView(bp.buffer);

  if (opts.setupHeader) {
    const hdr = opts.setupHeader;
    if (hdr.length < HDR_HEADER + 4 - HDR_START || hdr.length > HDR_MAX_END - HDR_START) {
      throw new RangeError(`boot_params: setup header of ${hdr.length} bytes`);
    }
    bp.set(hdr, HDR_START);
    // Fields the loader owns: never pass through what the image file happened to contain.
    v.setUint16(HDR_HEAP_END_PTR, 0, true);
    v.setUint8(HDR_EXT_LOADER_VER, 0);
    v.setUint8(HDR_EXT_LOADER_TYPE, 0);
    if (hdr.length >= HDR_HARDWARE_SUBARCH_DATA + 8 - HDR_START) {
      v.setUint32(HDR_HARDWARE_SUBARCH, 0, true);
      v.setBigUint64(HDR_HARDWARE_SUBARCH_DATA, 0n, true);
    }
    if (hdr.length >= HDR_SETUP_DATA + 8 - HDR_START) v.setBigUint64(HDR_SETUP_DATA, 0n, true);
  } else {
    v.setUint16(HDR_BOOT_FLAG, BOOT_FLAG_MAGIC, true);
    v.setUint32(HDR_HEADER, HDRS_MAGIC, true);
    v.setUint32(HDR_KERNEL_ALIGNMENT, SYNTH_KERNEL_ALIGNMENT, true);
    v.setUint32(HDR_CMDLINE_SIZE, u32('cmdline size', opts.cmdlineSize), true);
  }
  v.setUint16(HDR_VID_MODE, VID_MODE_NORMAL, true);
  v.setUint8(HDR_TYPE_OF_LOADER, LOADER_TYPE_UNDEFINED);

  u64('command line address', opts.cmdlineAddr);
  v.setUint32(HDR_CMD_LINE_PTR, lo32(opts.cmdlineAddr), true);
  v.setUint32(BP_EXT_CMD_LINE_PTR, u32('command line address >> 32', hi32(opts.cmdlineAddr)), true);

  const rd = opts.initrd ?? { addr: 0, size: 0 };
  u64('initrd address', rd.addr);
  u64('initrd size', rd.size);
  v.setUint32(HDR_RAMDISK_IMAGE, lo32(rd.addr), true);
  v.setUint32(HDR_RAMDISK_SIZE, lo32(rd.size), true);
  v.setUint32(BP_EXT_RAMDISK_IMAGE, u32('initrd address >> 32', hi32(rd.addr)), true);
  v.setUint32(BP_EXT_RAMDISK_SIZE, u32('initrd size >> 32', hi32(rd.size)), true);

  if (opts.rsdpAddr !== undefined) v.setBigUint64(BP_ACPI_RSDP_ADDR, u64('RSDP address', opts.rsdpAddr), true);

  if (opts.e820.length > E820_MAX_ENTRIES_ZEROPAGE) {
    throw new RangeError(`boot_params: ${opts.e820.length} e820 entries (max ${E820_MAX_ENTRIES_ZEROPAGE})`);
  }
  v.setUint8(BP_E820_ENTRIES, opts.e820.length);
  opts.e820.forEach((e, i) => {
    const o = BP_E820_TABLE + i * E820_ENTRY_SIZE;
    v.setBigUint64(o, u64('e820 address', e.addr), true);
    v.setBigUint64(o + 8, u64('e820 size', e.size), true);
    v.setUint32(o + 16, u32('e820 type', e.type), true);
  });
  return bp;
}
