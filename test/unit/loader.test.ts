import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CMDLINE_MAX_SIZE,
  CMDLINE_START,
  E820_RAM,
  E820_RESERVED,
  HIMEM_START,
  MiB,
  PVH_INFO_START,
  PVH_MEMMAP_START,
  PVH_MODLIST_START,
  RSDP_START,
  ZERO_PAGE_START,
} from '../../src/arch/x86_64/layout.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import {
  BP_ACPI_RSDP_ADDR,
  BP_E820_ENTRIES,
  BP_E820_TABLE,
  BP_EXT_RAMDISK_IMAGE,
  HDR_BOOT_FLAG,
  HDR_CMD_LINE_PTR,
  HDR_CMDLINE_SIZE,
  HDR_HEADER,
  HDR_INIT_SIZE,
  HDR_KERNEL_ALIGNMENT,
  HDR_RAMDISK_IMAGE,
  HDR_RAMDISK_SIZE,
  HDR_SETUP_DATA,
  HDR_TYPE_OF_LOADER,
  HDR_VERSION,
  HDR_VID_MODE,
} from '../../src/loader/boot-params.js';
import { parseBzImage } from '../../src/loader/bzimage.js';
import { parseElf } from '../../src/loader/elf.js';
import {
  checkKernelImage,
  checkKernelLoad,
  CmdlineError,
  detectKernelFormat,
  isLoaderError,
  KernelFormatError,
  KernelLoadError,
  loadKernel,
  type BootSetup,
} from '../../src/loader/index.js';
import { ConfigError } from '../../src/main/config-error.js';
import { ImageReader } from '../../src/loader/reader.js';
import { runs } from '../fuzz/budget.js';

// ---- guest memory with a canary ------------------------------------------------------------

const CANARY = 0xcc;
const CHUNK = 64 * 1024;
const canaryChunk = Buffer.alloc(CHUNK, CANARY);

interface TestMem {
  mem: GuestMemory;
  size: number;
  buffer: SharedArrayBuffer;
  bytes: Uint8Array;
}

function makeMem(size: number): TestMem {
  const buffer = new SharedArrayBuffer(size);
  const bytes = new Uint8Array(buffer);
  bytes.fill(CANARY);
  return { mem: new GuestMemory([{ slot: 0, gpa: 0, size, buffer }]), size, buffer, bytes };
}

/** The fixed boot-structure slots below 1 MiB (from layout.ts), and the PVH struct sizes. */
const SLOTS: [number, number][] = [
  [PVH_INFO_START, 56],
  [PVH_MODLIST_START, 32],
  [ZERO_PAGE_START, 4096], // == PVH_MEMMAP_START
  [CMDLINE_START, CMDLINE_MAX_SIZE],
];

/** True iff no byte of guest memory has changed since the last reset. */
function untouched(t: TestMem): boolean {
  for (let off = 0; off < t.size; off += CHUNK) if (!Buffer.from(t.buffer, off, CHUNK).equals(canaryChunk)) return false;
  return true;
}

/** [start, end) ranges below HIMEM_START that no load may write: everything but the slots. */
const FORBIDDEN: [number, number][] = (() => {
  const out: [number, number][] = [];
  let cur = 0;
  for (const [s, n] of [...SLOTS].sort((a, b) => a[0] - b[0])) {
    if (s > cur) out.push([cur, s]);
    cur = Math.max(cur, s + n);
  }
  out.push([cur, HIMEM_START]);
  return out;
})();

/**
 * Addresses written outside the allowed places: below HIMEM_START but not in a boot-structure slot.
 * (Everything from HIMEM_START to the end of the buffer is allowed, and GuestMemory cannot write
 * beyond it.) Resets the canary afterwards.
 */
function takeForbiddenWrites(t: TestMem): number[] {
  const bad: number[] = [];
  for (const [s, e] of FORBIDDEN) {
    if (Buffer.from(t.buffer, s, e - s).equals(Buffer.alloc(e - s, CANARY))) continue;
    for (let a = s; a < e; a++) if (t.bytes[a] !== CANARY) bad.push(a);
  }
  for (let off = 0; off < t.size; off += CHUNK) {
    const chunk = Buffer.from(t.buffer, off, CHUNK);
    if (!chunk.equals(canaryChunk)) chunk.fill(CANARY);
  }
  return bad;
}

// ---- synthetic images ----------------------------------------------------------------------

const pattern = (n: number, seed = 1): Uint8Array => Uint8Array.from({ length: n }, (_, i) => ((i * 31 + seed * 7) % 251) + 1);

interface BzOpts {
  version?: number;
  setupSects?: number;
  kernelLen?: number;
  syssize?: number;
  loadflags?: number;
  xloadflags?: number;
  initrdAddrMax?: number;
  kernelAlignment?: number;
  relocatable?: number;
  cmdlineSize?: number;
  prefAddress?: bigint;
  initSize?: number;
  headerLen?: number;
}

const BZ_SETUP_SIZE = 5 * 512;
const BZ_KERNEL_LEN = 0x3000;

/** A minimal bzImage: boot sector + 4 setup sectors with a real setup header, then the "kernel". */
function makeBzImage(o: BzOpts = {}): Uint8Array {
  const sects = o.setupSects ?? 4;
  const setupSize = ((sects === 0 ? 4 : sects) + 1) * 512;
  const kernelLen = o.kernelLen ?? BZ_KERNEL_LEN;
  const syssize = o.syssize ?? Math.ceil(kernelLen / 16);
  const img = new Uint8Array(setupSize + Math.max(kernelLen, syssize * 16));
  img.fill(0x90, 0, setupSize);
  img.set(pattern(kernelLen, 3), setupSize);
  const v = new DataView(img.buffer);
  img[0x1f1] = sects;
  v.setUint16(0x1f2, 1, true); // root_flags
  v.setUint32(0x1f4, syssize, true);
  v.setUint16(0x1fa, 0xfffd, true); // vid_mode as a real kernel has it
  v.setUint16(0x1fe, 0xaa55, true);
  img[0x200] = 0xeb;
  img[0x201] = o.headerLen ?? 0x26c - 0x202;
  img.set([0x48, 0x64, 0x72, 0x53], 0x202); // "HdrS"
  v.setUint16(0x206, o.version ?? 0x020f, true);
  img[0x211] = o.loadflags ?? 0x01;
  v.setUint32(0x214, 0x100000, true); // code32_start
  v.setUint32(0x22c, o.initrdAddrMax ?? 0x7fffffff, true);
  v.setUint32(0x230, o.kernelAlignment ?? 0x200000, true);
  img[0x234] = o.relocatable ?? 1;
  img[0x235] = 21;
  v.setUint16(0x236, o.xloadflags ?? 0x7f, true);
  v.setUint32(0x238, o.cmdlineSize ?? 0x7ff, true);
  v.setUint32(0x248, 0x100, true); // payload_offset
  v.setUint32(0x24c, 0x800, true); // payload_length
  v.setBigUint64(0x250, 0xdead_beefn, true); // setup_data: the loader must clear it
  v.setBigUint64(0x258, o.prefAddress ?? 0x100_0000n, true);
  v.setUint32(0x260, o.initSize ?? 0x10_0000, true);
  return img;
}

interface ElfSeg {
  paddr: number;
  data: Uint8Array;
  memsz?: number;
}
interface ElfNote {
  name: string;
  type: number;
  desc: Uint8Array;
}
interface ElfSpec {
  segments: ElfSeg[];
  notes?: ElfNote[];
  noteAlign?: number;
  entry: bigint;
}
interface BuiltElf {
  image: Uint8Array;
  phoff: number;
  phnum: number;
  noteOffset: number;
}

const u32le = (n: number): Uint8Array => new Uint8Array(new Uint32Array([n]).buffer);
const u64le = (n: bigint): Uint8Array => new Uint8Array(new BigUint64Array([n]).buffer);
const pvhNote = (entry: number | bigint, size: 4 | 8 = 8): ElfNote => ({
  name: 'Xen\0',
  type: 18,
  desc: size === 4 ? u32le(Number(entry)) : u64le(BigInt(entry)),
});

function encodeNotes(notes: ElfNote[], align: number): Uint8Array {
  const pad = (n: number): number => Math.ceil(n / align) * align;
  const parts: number[] = [];
  for (const n of notes) {
    const name = Buffer.from(n.name, 'latin1');
    const hdr = new DataView(new ArrayBuffer(12));
    hdr.setUint32(0, name.length, true);
    hdr.setUint32(4, n.desc.length, true);
    hdr.setUint32(8, n.type, true);
    parts.push(...new Uint8Array(hdr.buffer));
    parts.push(...name, ...Array(pad(name.length) - name.length).fill(0));
    parts.push(...n.desc, ...Array(pad(n.desc.length) - n.desc.length).fill(0));
  }
  return Uint8Array.from(parts);
}

function makeElf(s: ElfSpec): BuiltElf {
  const noteAlign = s.noteAlign ?? 4;
  const notes = s.notes && s.notes.length ? encodeNotes(s.notes, noteAlign) : undefined;
  const phnum = s.segments.length + (notes ? 1 : 0);
  const phoff = 64;
  let off = phoff + phnum * 56;
  off = Math.ceil(off / 8) * 8;
  const noteOffset = off;
  if (notes) off += notes.length;
  const segOffsets: number[] = [];
  for (const seg of s.segments) {
    off = Math.ceil(off / 16) * 16;
    segOffsets.push(off);
    off += seg.data.length;
  }
  const img = new Uint8Array(off);
  const v = new DataView(img.buffer);
  img.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]);
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(24, s.entry, true);
  v.setBigUint64(32, BigInt(phoff), true);
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, phnum, true);
  s.segments.forEach((seg, i) => {
    const o = phoff + i * 56;
    v.setUint32(o, 1, true); // PT_LOAD
    v.setUint32(o + 4, 7, true);
    v.setBigUint64(o + 8, BigInt(segOffsets[i]), true);
    v.setBigUint64(o + 16, 0xffff_ffff_8000_0000n + BigInt(seg.paddr), true); // vaddr != paddr, like vmlinux
    v.setBigUint64(o + 24, BigInt(seg.paddr), true);
    v.setBigUint64(o + 32, BigInt(seg.data.length), true);
    v.setBigUint64(o + 40, BigInt(seg.memsz ?? seg.data.length), true);
    v.setBigUint64(o + 48, 0x1000n, true);
    img.set(seg.data, segOffsets[i]);
  });
  if (notes) {
    const o = phoff + s.segments.length * 56;
    v.setUint32(o, 4, true); // PT_NOTE
    v.setUint32(o + 4, 4, true);
    v.setBigUint64(o + 8, BigInt(noteOffset), true);
    v.setBigUint64(o + 32, BigInt(notes.length), true);
    v.setBigUint64(o + 40, BigInt(notes.length), true);
    v.setBigUint64(o + 48, BigInt(noteAlign), true);
    img.set(notes, noteOffset);
  }
  return { image: img, phoff, phnum, noteOffset };
}

const TEXT = pattern(0x1000, 5);
const DATA = pattern(0x200, 9);
const baseSegments = (): ElfSeg[] => [
  { paddr: 0x100000, data: TEXT },
  { paddr: 0x101000, data: DATA, memsz: 0x3000 },
];
const PVH_ENTRY = 0x100010;
const pvhElf = (size: 4 | 8 = 8, noteAlign = 4): BuiltElf =>
  makeElf({
    segments: baseSegments(),
    notes: [{ name: 'GNU\0', type: 3, desc: pattern(20) }, pvhNote(PVH_ENTRY, size)],
    noteAlign,
    entry: 0xffff_ffff_8100_0000n,
  });
const vmlinuxElf = (): BuiltElf => makeElf({ segments: baseSegments(), notes: [{ name: 'GNU\0', type: 3, desc: pattern(20) }], entry: 0x100000n });

// ---- helpers -------------------------------------------------------------------------------

const MEM = 64 * MiB;
let t64: TestMem;
beforeAll(() => {
  t64 = makeMem(MEM);
});

function expectRejected(t: TestMem, fn: () => unknown, cls: new (m: string) => Error, msg?: RegExp | string): Error {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(cls);
  const m = (err as Error).message;
  expect(m).not.toContain('\n');
  if (typeof msg === 'string') expect(m).toBe(msg);
  else if (msg) expect(m).toMatch(msg);
  expect(untouched(t)).toBe(true); // validated before anything was written
  return err as Error;
}

const bpView = (t: TestMem): DataView => new DataView(t.buffer, ZERO_PAGE_START, 4096);

// ---- tests ---------------------------------------------------------------------------------

describe('detectKernelFormat', () => {
  it('recognises bzImage, PVH ELF and plain ELF64, and nothing else', () => {
    expect(detectKernelFormat(makeBzImage())).toBe('bzimage');
    expect(detectKernelFormat(pvhElf().image)).toBe('pvh-elf');
    expect(detectKernelFormat(vmlinuxElf().image)).toBe('elf64');
    expect(detectKernelFormat(new Uint8Array(0))).toBeUndefined();
    expect(detectKernelFormat(pattern(8192))).toBeUndefined();
    expect(detectKernelFormat(makeBzImage({ version: 0x0204 }))).toBeUndefined();
    expect(checkKernelImage(pvhElf().image)).toBe('pvh-elf');
    expect(() => checkKernelImage(makeBzImage({ version: 0x0204 }))).toThrow('bzImage boot protocol 2.04 is too old (need ≥ 2.06)');
  });

  it('rejects non-kernels with a one-line message', () => {
    expectRejected(t64, () => loadKernel(t64.mem, pattern(8192), { cmdline: '', memBytes: MEM }), KernelFormatError,
      'not a Linux kernel: no ELF magic or bzImage setup header');
  });
});

describe('bzImage', () => {
  it('parses the setup header', () => {
    const info = parseBzImage(makeBzImage());
    expect(info).toMatchObject({
      version: 0x020f,
      setupSects: 4,
      setupSize: BZ_SETUP_SIZE,
      kernelSize: BZ_KERNEL_LEN,
      initrdAddrMax: 0x7fffffff,
      kernelAlignment: 0x200000,
      relocatable: true,
      cmdlineSize: 0x7ff,
      prefAddress: 0x100_0000n,
      initSize: 0x10_0000,
      runStart: 0x100_0000,
      footprintEnd: 0x110_0000,
    });
    expect(info.setupHeader.length).toBe(0x26c - 0x1f1);
    // setup_sects 0 means 4
    expect(parseBzImage(makeBzImage({ setupSects: 0 })).setupSize).toBe(BZ_SETUP_SIZE);
    expect(parseBzImage(makeBzImage({ setupSects: 7 })).setupSize).toBe(8 * 512);
    // a relocatable kernel is not placed below its alignment / pref_address
    expect(parseBzImage(makeBzImage({ prefAddress: 0x100000n, kernelAlignment: 0x400000 })).runStart).toBe(0x400000);
    expect(parseBzImage(makeBzImage({ relocatable: 0, prefAddress: 0x200000n, kernelAlignment: 3 })).runStart).toBe(0x200000);
  });

  it('loads the kernel at 1 MiB, the zero page, command line and initrd', () => {
    const img = makeBzImage({ initrdAddrMax: 0x1ff_ffff });
    const initrd = pattern(5000, 11);
    const r = loadKernel(t64.mem, img, { cmdline: 'console=ttyS0 quiet', initrd, memBytes: MEM, rsdpAddr: RSDP_START });
    expect(r).toEqual<BootSetup>({
      kind: 'bzimage',
      protocol: 'linux64',
      entry: 0x100200,
      bootInfoAddr: ZERO_PAGE_START,
      kernelStart: 0x100000,
      kernelEnd: 0x1100000,
      initrd: { addr: 0x200_0000 - 0x2000, size: 5000 },
      cmdline: 'console=ttyS0 quiet',
    });
    expect(t64.mem.readBytes(HIMEM_START, BZ_KERNEL_LEN)).toEqual(img.subarray(BZ_SETUP_SIZE));
    expect(t64.mem.readBytes(0x200_0000 - 0x2000, 5000)).toEqual(initrd);
    expect(t64.mem.readCString(CMDLINE_START, 100)).toBe('console=ttyS0 quiet');
    expect(t64.mem.read8(CMDLINE_START + 19)).toBe(0);
    const v = bpView(t64);
    expect(v.getUint16(HDR_BOOT_FLAG, true)).toBe(0xaa55);
    expect(v.getUint32(HDR_HEADER, true)).toBe(0x53726448);
    expect(v.getUint16(HDR_VERSION, true)).toBe(0x020f);
    expect(v.getUint32(HDR_INIT_SIZE, true)).toBe(0x10_0000);
    expect(v.getUint32(HDR_KERNEL_ALIGNMENT, true)).toBe(0x200000);
    expect(v.getUint32(HDR_CMDLINE_SIZE, true)).toBe(0x7ff);
    expect(v.getUint8(HDR_TYPE_OF_LOADER)).toBe(0xff);
    expect(v.getUint16(HDR_VID_MODE, true)).toBe(0xffff);
    expect(v.getUint32(HDR_CMD_LINE_PTR, true)).toBe(CMDLINE_START);
    expect(v.getUint32(HDR_RAMDISK_IMAGE, true)).toBe(0x200_0000 - 0x2000);
    expect(v.getUint32(HDR_RAMDISK_SIZE, true)).toBe(5000);
    expect(v.getUint32(BP_EXT_RAMDISK_IMAGE, true)).toBe(0);
    expect(v.getBigUint64(HDR_SETUP_DATA, true)).toBe(0n);
    expect(v.getBigUint64(BP_ACPI_RSDP_ADDR, true)).toBe(BigInt(RSDP_START));
    expect(v.getUint8(BP_E820_ENTRIES)).toBe(4);
    const e820 = [0, 1, 2, 3].map((i) => [
      Number(v.getBigUint64(BP_E820_TABLE + i * 20, true)),
      Number(v.getBigUint64(BP_E820_TABLE + i * 20 + 8, true)),
      v.getUint32(BP_E820_TABLE + i * 20 + 16, true),
    ]);
    expect(e820).toEqual([
      [0, 0x9fc00, E820_RAM],
      [0x9fc00, 0x60400, E820_RESERVED],
      [0x100000, MEM - 0x100000, E820_RAM],
      [0xc000_0000, 0x4000_0000, E820_RESERVED],
    ]);
    // Bytes before the copied header stay zero (sentinel etc.).
    expect(t64.mem.readBytes(ZERO_PAGE_START, 0x70)).toEqual(new Uint8Array(0x70));
    expect(takeForbiddenWrites(t64)).toEqual([]);
  });

  it('puts the initrd at the top of low RAM, page aligned, without initrd limit', () => {
    const r = loadKernel(t64.mem, makeBzImage(), { cmdline: '', initrd: new Uint8Array(4097).fill(1), memBytes: MEM });
    expect(r.initrd).toEqual({ addr: MEM - 0x2000, size: 4097 });
    expect(t64.mem.read8(CMDLINE_START)).toBe(0);
    takeForbiddenWrites(t64);
  });

  it('rejects unsupported or inconsistent headers', () => {
    const load = (img: Uint8Array) => () => loadKernel(t64.mem, img, { cmdline: '', memBytes: MEM });
    expectRejected(t64, load(makeBzImage({ version: 0x0204 })), KernelFormatError, 'bzImage boot protocol 2.04 is too old (need ≥ 2.06)');
    expectRejected(t64, load(makeBzImage({ loadflags: 0 })), KernelFormatError, /not loaded high/);
    expectRejected(t64, load(makeBzImage({ xloadflags: 0x7e })), KernelFormatError, /XLF_KERNEL_64/);
    expectRejected(t64, load(makeBzImage({ syssize: 0 })), KernelFormatError, /syssize 0/);
    const truncated = makeBzImage().subarray(0, BZ_SETUP_SIZE + BZ_KERNEL_LEN - 1);
    expectRejected(t64, load(truncated), KernelFormatError, /truncated.*claims/);
    expectRejected(t64, load(makeBzImage().subarray(0, 0x300)), KernelFormatError, /truncated/);
    expectRejected(t64, load(makeBzImage({ headerLen: 0x40 })), KernelFormatError, /setup header is truncated/);
    expectRejected(t64, load(makeBzImage({ kernelAlignment: 0x300000 })), KernelFormatError, /power of two/);
    expectRejected(t64, load(makeBzImage({ prefAddress: 0x1000n })), KernelFormatError, /preferred load address/);
    expectRejected(t64, load(makeBzImage({ initSize: 0 })), KernelFormatError, /init_size/);
  });

  it('checks RAM against init_size, the initrd against RAM, the cmdline against cmdline_size', () => {
    const big = makeBzImage({ initSize: 60 * MiB });
    expectRejected(t64, () => loadKernel(t64.mem, big, { cmdline: '', memBytes: MEM }), KernelLoadError, /guest RAM too small/);
    expectRejected(
      t64,
      () => loadKernel(t64.mem, makeBzImage({ initSize: 40 * MiB }), { cmdline: '', memBytes: MEM, initrd: new Uint8Array(9 * MiB) }),
      KernelLoadError,
      /initrd of 9 MiB does not fit/,
    );
    expectRejected(
      t64,
      () => loadKernel(t64.mem, makeBzImage({ initrdAddrMax: 0x10fffff }), { cmdline: '', memBytes: MEM, initrd: new Uint8Array(1) }),
      KernelLoadError,
      /initrd/,
    );
    expectRejected(t64, () => loadKernel(t64.mem, makeBzImage({ cmdlineSize: 10 }), { cmdline: 'x'.repeat(11), memBytes: MEM }), CmdlineError,
      /too long: 11 bytes, the limit is 10/);
    expectRejected(t64, () => loadKernel(t64.mem, makeBzImage(), { cmdline: 'x'.repeat(CMDLINE_MAX_SIZE), memBytes: MEM }), CmdlineError);
    expectRejected(t64, () => loadKernel(t64.mem, makeBzImage(), { cmdline: 'a\nb', memBytes: MEM }), CmdlineError);
    // exactly at the limit is fine
    loadKernel(t64.mem, makeBzImage({ cmdlineSize: 10 }), { cmdline: 'x'.repeat(10), memBytes: MEM });
    expect(t64.mem.readCString(CMDLINE_START, 20)).toBe('x'.repeat(10));
    takeForbiddenWrites(t64);
  });

  it('rejects a RAM size GuestMemory does not cover', () => {
    expect(() => loadKernel(t64.mem, makeBzImage(), { cmdline: '', memBytes: 2 * MEM })).toThrow(RangeError);
    expect(untouched(t64)).toBe(true);
  });
});

describe('ELF', () => {
  it('loads a PVH ELF: segments at p_paddr, BSS zeroed, start_info/modlist/memmap', () => {
    const { image } = pvhElf();
    const initrd = pattern(3 * 4096, 2);
    const r = loadKernel(t64.mem, image, { cmdline: 'console=ttyS0', initrd, memBytes: MEM, rsdpAddr: RSDP_START });
    expect(r).toEqual<BootSetup>({
      kind: 'pvh-elf',
      protocol: 'pvh',
      entry: PVH_ENTRY,
      bootInfoAddr: PVH_INFO_START,
      kernelStart: 0x100000,
      kernelEnd: 0x104000,
      initrd: { addr: MEM - 3 * 4096, size: 3 * 4096 },
      cmdline: 'console=ttyS0',
    });
    expect(t64.mem.readBytes(0x100000, 0x1000)).toEqual(TEXT);
    expect(t64.mem.readBytes(0x101000, 0x200)).toEqual(DATA);
    expect(t64.mem.readBytes(0x101200, 0x2e00)).toEqual(new Uint8Array(0x2e00));
    expect(t64.mem.read8(0x104000)).toBe(CANARY);
    expect(t64.mem.readBytes(MEM - 3 * 4096, initrd.length)).toEqual(initrd);
    const si = new DataView(t64.buffer, PVH_INFO_START, 56);
    expect(si.getUint32(0, true)).toBe(0x336ec578);
    expect(si.getUint32(4, true)).toBe(1);
    expect(si.getUint32(8, true)).toBe(0);
    expect(si.getUint32(12, true)).toBe(1);
    expect(si.getBigUint64(16, true)).toBe(BigInt(PVH_MODLIST_START));
    expect(si.getBigUint64(24, true)).toBe(BigInt(CMDLINE_START));
    expect(si.getBigUint64(32, true)).toBe(BigInt(RSDP_START));
    expect(si.getBigUint64(40, true)).toBe(BigInt(PVH_MEMMAP_START));
    expect(si.getUint32(48, true)).toBe(4);
    const ml = new DataView(t64.buffer, PVH_MODLIST_START, 32);
    expect([ml.getBigUint64(0, true), ml.getBigUint64(8, true), ml.getBigUint64(16, true)]).toEqual([BigInt(MEM - 3 * 4096), 12288n, 0n]);
    const mm = new DataView(t64.buffer, PVH_MEMMAP_START, 4 * 24);
    expect([mm.getBigUint64(48, true), mm.getBigUint64(56, true), mm.getUint32(64, true), mm.getUint32(68, true)]).toEqual([
      0x100000n,
      BigInt(MEM - 0x100000),
      E820_RAM,
      0,
    ]);
    expect(t64.mem.readCString(CMDLINE_START, 100)).toBe('console=ttyS0');
    expect(takeForbiddenWrites(t64)).toEqual([]);
  });

  it('reads 4-byte PVH notes and 8-byte-aligned note segments', () => {
    expect(parseElf(pvhElf(4).image).pvhEntry).toBe(PVH_ENTRY);
    expect(parseElf(pvhElf(8, 8).image).pvhEntry).toBe(PVH_ENTRY);
    const r = loadKernel(t64.mem, pvhElf(4).image, { cmdline: '', memBytes: MEM });
    expect(r.entry).toBe(PVH_ENTRY);
    expect(r.initrd).toBeUndefined();
    expect(new DataView(t64.buffer, PVH_INFO_START, 56).getUint32(12, true)).toBe(0); // nr_modules
    takeForbiddenWrites(t64);
  });

  it('boots a vmlinux-style ELF via the 64-bit protocol with a synthesized zero page', () => {
    const r = loadKernel(t64.mem, vmlinuxElf().image, { cmdline: 'root=/dev/vda', initrd: new Uint8Array(100), memBytes: MEM });
    expect(r).toMatchObject({ kind: 'elf64', protocol: 'linux64', entry: 0x100000, bootInfoAddr: ZERO_PAGE_START });
    const v = bpView(t64);
    expect(v.getUint16(HDR_BOOT_FLAG, true)).toBe(0xaa55);
    expect(v.getUint32(HDR_HEADER, true)).toBe(0x53726448);
    expect(v.getUint8(HDR_TYPE_OF_LOADER)).toBe(0xff);
    expect(v.getUint32(HDR_KERNEL_ALIGNMENT, true)).toBe(0x100_0000);
    expect(v.getUint32(HDR_CMD_LINE_PTR, true)).toBe(CMDLINE_START);
    expect(v.getUint32(HDR_CMDLINE_SIZE, true)).toBe(13);
    expect(v.getUint32(HDR_RAMDISK_IMAGE, true)).toBe(MEM - 4096);
    expect(v.getUint32(HDR_RAMDISK_SIZE, true)).toBe(100);
    expect(v.getUint8(BP_E820_ENTRIES)).toBe(4);
    expect(takeForbiddenWrites(t64)).toEqual([]);
  });

  it('rejects malformed ELF files with precise messages', () => {
    const load = (img: Uint8Array) => () => loadKernel(t64.mem, img, { cmdline: '', memBytes: MEM });
    const mutate = (f: (v: DataView, b: BuiltElf) => void, base = pvhElf()): Uint8Array => {
      const img = base.image.slice();
      f(new DataView(img.buffer), { ...base, image: img });
      return img;
    };
    // program header table moved to the end of the file with one header too many
    const e = pvhElf();
    const moved = new Uint8Array(e.image.length + e.phnum * 56);
    moved.set(e.image);
    moved.set(e.image.subarray(e.phoff, e.phoff + e.phnum * 56), e.image.length);
    new DataView(moved.buffer).setBigUint64(32, BigInt(e.image.length + 56), true); // drop header 0 → 3rd is outside
    expectRejected(t64, load(moved), KernelFormatError, 'ELF program header 2 lies outside the file');
    expectRejected(t64, load(mutate((v) => v.setBigUint64(32, 2n ** 64n - 8n, true))), KernelFormatError, 'ELF program header 0 lies outside the file');
    expectRejected(t64, load(mutate((v) => v.setBigUint64(64 + 8, 0x10000n, true))), KernelFormatError, 'ELF program header 0: segment data lies outside the file');
    expectRejected(t64, load(mutate((v) => v.setBigUint64(64 + 32, 2n ** 64n - 1n, true))), KernelFormatError, /segment data lies outside the file/);
    expectRejected(t64, load(mutate((v) => v.setBigUint64(64 + 40, 0x10n, true))), KernelFormatError, /memory size is smaller than file size/);
    expectRejected(t64, load(mutate((v) => v.setBigUint64(64 + 56 + 24, 0x100800n, true))), KernelFormatError, 'ELF program headers 0 and 1 overlap in physical memory');
    expectRejected(t64, load(mutate((v) => v.setBigUint64(64 + 56 + 24, 2n ** 64n - 0x100n, true))), KernelFormatError, /wraps around/);
    expectRejected(t64, load(mutate((v) => v.setBigUint64(64 + 56 + 24, 2n ** 60n, true))), KernelFormatError, /beyond any guest RAM/);
    expectRejected(t64, load(mutate((v) => v.setBigUint64(64 + 56 + 24, 0x80000n, true))), KernelFormatError, /lies below 1 MiB/);
    expectRejected(t64, load(mutate((v) => v.setBigUint64(64 + 56 + 24, BigInt(MEM - 0x1000), true))), KernelLoadError, /does not fit in guest RAM/);
    expectRejected(t64, load(mutate((v) => v.setBigUint64(64 + 24, 0x200000n, true))), KernelFormatError, /PVH entry point 0x100010 is not inside a loaded segment/);
    expectRejected(t64, load(mutate((v) => v.setBigUint64(24, 0xffff_ffff_8100_0000n, true), vmlinuxElf())), KernelFormatError, /ELF entry point 0xffffffff81000000/);
    expectRejected(t64, load(mutate((v) => v.setUint8(4, 1))), KernelFormatError, /not 64-bit/);
    expectRejected(t64, load(mutate((v) => v.setUint8(5, 2))), KernelFormatError, /little-endian/);
    expectRejected(t64, load(mutate((v) => v.setUint16(16, 3, true))), KernelFormatError, /ELF type 3/);
    expectRejected(t64, load(mutate((v) => v.setUint16(18, 3, true))), KernelFormatError, /not x86-64/);
    expectRejected(t64, load(mutate((v) => v.setUint16(54, 32, true))), KernelFormatError, /program header size 32/);
    expectRejected(t64, load(mutate((v) => v.setUint16(56, 0, true))), KernelFormatError, /no program headers/);
    expectRejected(t64, load(pvhElf().image.subarray(0, 40)), KernelFormatError, /truncated/);
    // notes
    const notesAt = pvhElf().noteOffset;
    const xenNote = notesAt + 12 + 4 + 20; // after the GNU note
    expectRejected(t64, load(mutate((v) => v.setUint32(xenNote + 4, 6, true))), KernelFormatError, /6-byte address/);
    expectRejected(t64, load(mutate((v) => v.setUint32(xenNote + 4, 0x1000, true))), KernelFormatError, /note is truncated/);
    expectRejected(t64, load(mutate((v) => v.setUint32(notesAt, 0xffff_fff0, true))), KernelFormatError, /note is truncated/);
    expectRejected(t64, load(mutate((v) => v.setBigUint64(xenNote + 16, 0x1_0010_0000n, true))), KernelFormatError, /above 4 GiB/);
    // a different note name is not a PVH note
    expect(detectKernelFormat(mutate((v) => v.setUint8(xenNote + 12, 0x59)))).toBe(undefined); // then e_entry is virtual
  });
});

describe('properties', () => {
  const PROP_MEM = 32 * MiB;
  let tp: TestMem;
  beforeAll(() => {
    tp = makeMem(PROP_MEM);
  });

  const interesting = fc.oneof(
    fc.constantFrom(0n, 1n, 4n, 8n, 0x38n, 0x40n, 0xffn, 0xffffn, 0x7fff_ffffn, 0xffff_ffffn, 0x100000n, 0x1000000n, 0x1fff000n,
      2n ** 31n, 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 64n - 0x1000n),
    fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    fc.bigInt({ min: 0n, max: 0x4000n }),
  );
  const put = (img: Uint8Array, off: number, width: number, value: bigint): void => {
    for (let i = 0; i < width && off + i < img.length; i++) img[off + i] = Number((value >> BigInt(8 * i)) & 0xffn);
  };
  const byteFlips = (lo: number, hi: number) =>
    fc.oneof(
      { weight: 2, arbitrary: fc.constant([]) },
      { weight: 1, arbitrary: fc.array(fc.record({ off: fc.integer({ min: lo, max: hi }), byte: fc.integer({ min: 0, max: 255 }) }), { maxLength: 3 }) },
    );
  /** null most of the time (fc.option's freq is the other way round). */
  const rarely = <T,>(a: fc.Arbitrary<T>): fc.Arbitrary<T | null> =>
    fc.oneof({ weight: 8, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: a });
  const initrdArb = fc.constantFrom(0, 1, 4096, 5000, 1 * MiB, 20 * MiB, 40 * MiB);
  const cmdlineArb = fc.oneof(fc.constant('console=ttyS0'), fc.string({ maxLength: 40 }));

  const initrds = new Map<number, Uint8Array>();
  const initrdOf = (n: number): Uint8Array | undefined => {
    if (n === 0) return undefined;
    if (!initrds.has(n)) initrds.set(n, new Uint8Array(n).fill(0x11));
    return initrds.get(n);
  };
  const outcomes = new Map<string, number>();
  const count = (k: string): void => void outcomes.set(k, (outcomes.get(k) ?? 0) + 1);

  /** The property is not vacuous: a fair share of the mutated images still load. */
  function expectSomeLoaded(runs: number): void {
    const loaded = [...outcomes].filter(([k]) => k.startsWith('loaded')).reduce((a, [, n]) => a + n, 0);
    expect(loaded).toBeGreaterThan(runs / 10);
  }

  function check(img: Uint8Array, initrdSize: number, cmdline: string): void {
    let r: BootSetup | undefined;
    try {
      r = loadKernel(tp.mem, img, { cmdline, memBytes: PROP_MEM, initrd: initrdOf(initrdSize), rsdpAddr: RSDP_START });
      count(`loaded ${r.kind}`);
    } catch (e) {
      if (!isLoaderError(e)) throw e;
      count((e as Error).message.replace(/0x[0-9a-f]+|\d+/g, "N"));
      expect((e as Error).message).not.toContain('\n');
      expect(untouched(tp)).toBe(true);
      return;
    }
    expect(takeForbiddenWrites(tp).slice(0, 4)).toEqual([]);
    expect(r.kernelStart).toBeGreaterThanOrEqual(HIMEM_START);
    expect(r.kernelEnd).toBeLessThanOrEqual(PROP_MEM);
    expect(r.entry).toBeGreaterThanOrEqual(r.kernelStart);
    expect(r.entry).toBeLessThan(r.kernelEnd);
    if (r.initrd) {
      expect(r.initrd.addr % 4096).toBe(0);
      expect(r.initrd.addr).toBeGreaterThanOrEqual(r.kernelEnd);
      expect(r.initrd.addr + r.initrd.size).toBeLessThanOrEqual(PROP_MEM);
    }
  }

  it('mutated bzImage headers: KernelFormatError/KernelLoadError, or writes only inside RAM in allowed places', () => {
    outcomes.clear();
    const base = makeBzImage({ prefAddress: 0x200000n });
    const fields: [number, number][] = [
      [0x1f1, 1], [0x1f4, 4], [0x1fe, 2], [0x201, 1], [0x202, 4], [0x206, 2], [0x211, 1], [0x22c, 4], [0x230, 4],
      [0x234, 1], [0x236, 2], [0x238, 4], [0x248, 4], [0x24c, 4], [0x250, 8], [0x258, 8], [0x260, 4],
    ];
    fc.assert(
      fc.property(
        fc.array(fc.record({ field: fc.constantFrom(...fields), value: interesting }), { maxLength: 3 }),
        byteFlips(0x1f0, 0x270),
        rarely(fc.integer({ min: 0, max: base.length })),
        initrdArb,
        cmdlineArb,
        (sets, flips, cut, initrdSize, cmdline) => {
          let img = base.slice();
          for (const { field, value } of sets) put(img, field[0], field[1], value);
          for (const f of flips) img[f.off] = f.byte;
          if (cut !== null) img = img.subarray(0, cut);
          check(img, initrdSize, cmdline);
        },
      ),
      { numRuns: runs(300) },
    );
    expectSomeLoaded(300);
  });

  it('mutated ELF headers, program headers and notes: KernelFormatError/KernelLoadError, or writes only inside RAM in allowed places', () => {
    outcomes.clear();
    const bases = [pvhElf(), pvhElf(4, 8), vmlinuxElf()];
    const fieldsFor = (b: BuiltElf): [number, number][] => {
      const f: [number, number][] = [[4, 1], [5, 1], [6, 1], [16, 2], [18, 2], [24, 8], [32, 8], [54, 2], [56, 2]];
      for (let i = 0; i < b.phnum; i++) for (const [o, w] of [[0, 4], [8, 8], [24, 8], [32, 8], [40, 8], [48, 8]]) f.push([b.phoff + i * 56 + o, w]);
      for (const o of [0, 4, 8, 12, 16, 20, 32, 36, 40, 44, 48, 52]) f.push([b.noteOffset + o, 4]);
      return f;
    };
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: bases.length - 1 }),
        fc.array(fc.record({ pick: fc.nat(), value: interesting }), { maxLength: 3 }),
        byteFlips(0, 0x140),
        rarely(fc.integer({ min: 0, max: 0x2000 })),
        initrdArb,
        cmdlineArb,
        (which, sets, flips, cut, initrdSize, cmdline) => {
          const b = bases[which];
          const fields = fieldsFor(b);
          let img = b.image.slice();
          for (const { pick, value } of sets) {
            const [off, w] = fields[pick % fields.length];
            put(img, off, w, value);
          }
          for (const f of flips) if (f.off < img.length) img[f.off] = f.byte;
          if (cut !== null) img = img.subarray(0, cut);
          check(img, initrdSize, cmdline);
        },
      ),
      { numRuns: runs(400) },
    );
    expectSomeLoaded(400);
  });
});

describe('real images', () => {
  const helloPath = fileURLToPath(new URL('../../build/guests/hello.elf', import.meta.url));
  it('build/guests/hello.elf is a PVH ELF', () => {
    const img = new Uint8Array(readFileSync(helloPath));
    expect(detectKernelFormat(img)).toBe('pvh-elf');
    const r = loadKernel(t64.mem, img, { cmdline: 'hello', memBytes: MEM });
    expect(r.kernelStart).toBe(HIMEM_START);
    expect(r.protocol).toBe('pvh');
    expect(takeForbiddenWrites(t64)).toEqual([]);
  });

});

describe('truncated images (issue 10 item 12)', () => {
  /** Every way a truncated image may end: a kernel kind, or a loader error (a ConfigError) of one line. */
  function sweep(name: string, image: Uint8Array, loadable: (n: number) => boolean): void {
    const kinds = new Map<string, number>();
    for (let n = 0; n <= image.length; n++) {
      const img = image.subarray(0, n);
      let kind: string | undefined;
      try {
        kind = detectKernelFormat(img);
      } catch (e) {
        throw new Error(`${name} cut to ${n} bytes: detectKernelFormat threw ${String(e)}`);
      }
      try {
        checkKernelLoad(img, { cmdline: 'console=ttyS0', initrdSize: 4096, memBytes: MEM });
        expect(kind, `${name} cut to ${n}`).toBeDefined();
        kinds.set(String(kind), (kinds.get(String(kind)) ?? 0) + 1);
      } catch (e) {
        if (!isLoaderError(e)) throw new Error(`${name} cut to ${n} bytes: ${String(e)}`);
        expect(e).toBeInstanceOf(ConfigError);
        expect((e as Error).message).not.toContain('\n');
        kinds.set('refused', (kinds.get('refused') ?? 0) + 1);
      }
      if (loadable(n)) expect(kind, `${name} cut to ${n}`).toBeDefined();
    }
    // Not vacuous: the whole image loads, and some cut is refused.
    expect(kinds.get('refused')).toBeGreaterThan(0);
    expect(detectKernelFormat(image)).toBeDefined();
  }

  it('a bzImage cut to 518 or 519 bytes is a KernelFormatError (the fuzz counterexample, seed 2117419968)', () => {
    for (const n of [518, 519]) {
      const img = makeBzImage().subarray(0, n);
      expect(detectKernelFormat(img)).toBeUndefined();
      expect(() => checkKernelImage(img)).toThrow(KernelFormatError);
      expect(() => checkKernelImage(img)).toThrow(`bzImage is truncated: ${n} bytes, setup header field version at 0x206 needs 2 bytes`);
      expectRejected(t64, () => loadKernel(t64.mem, img, { cmdline: '', memBytes: MEM }), KernelFormatError, /truncated/);
    }
  });

  it('every truncation of the synthetic bzImage, PVH ELF and vmlinux ELF: a kind or a KernelFormatError', () => {
    const bz = makeBzImage();
    sweep('bzImage', bz, (n) => n === bz.length);
    const pvh = pvhElf().image;
    sweep('PVH ELF', pvh, (n) => n === pvh.length);
    const vml = vmlinuxElf().image;
    sweep('vmlinux ELF', vml, (n) => n === vml.length);
  });

  it('every truncation of build/guests/hello.elf (skips loudly when it is not built)', () => {
    const helloPath = fileURLToPath(new URL('../../build/guests/hello.elf', import.meta.url));
    if (!existsSync(helloPath)) {
      console.warn('SKIPPED: build/guests/hello.elf is not built (node scripts/build.mjs guests)');
      return;
    }
    const img = new Uint8Array(readFileSync(helloPath));
    sweep('hello.elf', img, (n) => n === img.length);
  });

  it('ImageReader refuses every read that does not lie wholly inside the image', () => {
    const r = new ImageReader(new Uint8Array(8), 'image');
    expect(r.u32(4, 'f')).toBe(0);
    expect(r.u64(0, 'f')).toBe(0n);
    expect(() => r.u32(5, 'field f')).toThrow('image is truncated: 8 bytes, field f at 0x5 needs 4 bytes');
    expect(() => r.u8(8, 'f')).toThrow(KernelFormatError);
    expect(() => r.u16(-1, 'f')).toThrow(KernelFormatError);
    expect(() => r.u64(1, 'f')).toThrow(KernelFormatError);
    expect(r.has(0, 8)).toBe(true);
    expect(r.has(1, 8)).toBe(false);
  });
});

describe('checkKernelLoad (what resolveConfig checks before the VM exists)', () => {
  it('gives the format, the command-line limit and the initrd placement without guest memory', () => {
    expect(checkKernelLoad(makeBzImage({ cmdlineSize: 100 }), { cmdline: 'a', memBytes: MEM })).toMatchObject({ kind: 'bzimage', cmdlineMax: 100, cmdline: 'a' });
    expect(checkKernelLoad(pvhElf().image, { cmdline: 'a', memBytes: MEM })).toMatchObject({ kind: 'pvh-elf', cmdlineMax: CMDLINE_MAX_SIZE - 1 });
    const c = checkKernelLoad(pvhElf().image, { cmdline: '', memBytes: MEM, initrdSize: 5000 });
    const r = loadKernel(t64.mem, pvhElf().image, { cmdline: '', memBytes: MEM, initrd: new Uint8Array(5000).fill(1) });
    takeForbiddenWrites(t64);
    expect(c.initrd).toEqual(r.initrd);
  });

  it('refuses what loadKernel refuses, with the same errors, each a ConfigError naming its option', () => {
    const cases: Array<[() => unknown, new (...a: never[]) => Error, string]> = [
      [() => checkKernelLoad(makeBzImage({ cmdlineSize: 10 }), { cmdline: 'x'.repeat(11), memBytes: MEM }), CmdlineError, 'cmdline'],
      [() => checkKernelLoad(pvhElf().image, { cmdline: 'x'.repeat(CMDLINE_MAX_SIZE), memBytes: MEM }), CmdlineError, 'cmdline'],
      [() => checkKernelLoad(pvhElf().image, { cmdline: '', memBytes: MEM, initrdSize: MEM }), KernelLoadError, 'initrd'],
      [() => checkKernelLoad(makeBzImage({ initSize: 0x4000_0000 }), { cmdline: '', memBytes: MEM }), KernelLoadError, 'memMiB'],
      [() => checkKernelLoad(pattern(8192), { cmdline: '', memBytes: MEM }), KernelFormatError, 'kernel'],
    ];
    for (const [f, cls, option] of cases) {
      let err: unknown;
      try {
        f();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(cls);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).option).toBe(option);
    }
  });
});
