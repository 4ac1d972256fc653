// Kernel loading: detect the image format, validate everything, plan every write, check the plan,
// and only then copy into guest RAM (through GuestMemory, so nothing can land outside RAM).
//
//   ELF with a Xen PVH note  → 'pvh-elf': 32-bit PVH entry, %ebx = hvm_start_info at PVH_INFO_START
//   other ELF64 x86-64 exec  → 'elf64':   vmlinux via the 64-bit boot protocol (entry = e_entry,
//                                          physical), %rsi = synthesized boot_params at ZERO_PAGE_START
//   bzImage                  → 'bzimage': protected-mode kernel at HIMEM_START, entry startup_64
//                                          (HIMEM_START + 0x200), %rsi = boot_params at ZERO_PAGE_START
//
// Writes: the kernel at/above HIMEM_START; the command line at CMDLINE_START; the initrd at the
// highest page-aligned address below min(initrd_addr_max + 1, end of low RAM) that is above the
// kernel's footprint; boot_params or the PVH start_info/modlist/memmap in their fixed slots.
//
// checkKernelLoad() runs every check that needs no guest memory (format, RAM, command line against
// the kernel's limit, initrd placement by size); resolveConfig() calls it before the VM exists. Every
// error is a ConfigError subclass (./errors.ts) naming its VMConfig option; every header field is
// read bounds-checked (./reader.ts).
import {
  CMDLINE_MAX_SIZE,
  CMDLINE_START,
  EBDA_START,
  HIMEM_START,
  MiB,
  PVH_INFO_START,
  PVH_MEMMAP_START,
  PVH_MODLIST_START,
  ZERO_PAGE_START,
} from '../arch/x86_64/layout.js';
import { e820Map, ramRegions } from '../arch/x86_64/memory-map.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { BOOT_PARAMS_SIZE, buildBootParams } from './boot-params.js';
import { BZIMAGE_ENTRY, hasBzImageMagic, parseBzImage, type BzImageInfo } from './bzimage.js';
import { KernelCmdline } from './cmdline.js';
import { CmdlineError, KernelFormatError, KernelLoadError } from './errors.js';
import { hasElfMagic, parseElf, type ElfImage } from './elf.js';
import { buildPvhStructures, HVM_MEMMAP_ENTRY_SIZE, HVM_START_INFO_SIZE, PVH_MAX_MEMMAP_ENTRIES } from './pvh.js';

export { CmdlineError, KernelFormatError, KernelLoadError } from './errors.js';
export { KernelCmdline } from './cmdline.js';

export type KernelKind = 'bzimage' | 'pvh-elf' | 'elf64';
export type BootProtocol = 'linux64' | 'pvh';

export interface BootSetup {
  kind: KernelKind;
  protocol: BootProtocol;
  /** 64-bit entry (linux64) or 32-bit physical entry (pvh) */
  entry: number;
  /** rsi for linux64 (zero page), rbx for pvh (start_info) */
  bootInfoAddr: number;
  kernelStart: number;
  /** End of the memory the kernel claims: its segments incl. BSS, or for a bzImage the init_size footprint. */
  kernelEnd: number;
  initrd?: { addr: number; size: number };
  cmdline: string;
}

export interface LoadOptions {
  cmdline: string;
  /** An empty initrd is treated as none. */
  initrd?: Uint8Array;
  memBytes: number;
  rsdpAddr?: number;
}

/** True for the errors loadKernel throws for a bad image/initrd/command line (one-line, user-facing). */
export function isLoaderError(e: unknown): e is KernelFormatError | KernelLoadError | CmdlineError {
  return e instanceof KernelFormatError || e instanceof KernelLoadError || e instanceof CmdlineError;
}

/** The initrd is placed on a page boundary. */
export const INITRD_ALIGN = 4096;

/**
 * The fixed boot-structure slots below HIMEM_START that the loader may write (nothing else there).
 * The zero page and the PVH memmap share one slot; a load uses one or the other.
 */
export const BOOT_STRUCTURE_SLOTS: readonly { name: string; start: number; size: number }[] = [
  { name: 'PVH start_info', start: PVH_INFO_START, size: HVM_START_INFO_SIZE },
  { name: 'PVH module list', start: PVH_MODLIST_START, size: PVH_MEMMAP_START - PVH_MODLIST_START },
  { name: 'PVH memory map', start: PVH_MEMMAP_START, size: PVH_MAX_MEMMAP_ENTRIES * HVM_MEMMAP_ENTRY_SIZE },
  { name: 'zero page', start: ZERO_PAGE_START, size: BOOT_PARAMS_SIZE },
  { name: 'command line', start: CMDLINE_START, size: CMDLINE_MAX_SIZE },
];

type Parsed = { kind: 'bzimage'; bz: BzImageInfo } | { kind: 'pvh-elf' | 'elf64'; elf: ElfImage };

function inspect(image: Uint8Array): Parsed {
  if (hasElfMagic(image)) {
    const elf = parseElf(image);
    return { kind: elf.pvhEntry !== undefined ? 'pvh-elf' : 'elf64', elf };
  }
  if (hasBzImageMagic(image)) return { kind: 'bzimage', bz: parseBzImage(image) };
  throw new KernelFormatError('not a Linux kernel: no ELF magic or bzImage setup header');
}

/** Like detectKernelFormat, but throws the specific KernelFormatError (e.g. "bzImage boot protocol 2.04 is too old"). */
export function checkKernelImage(image: Uint8Array): KernelKind {
  return inspect(image).kind;
}

/** The format loadKernel would use, or undefined if the image is not a valid kernel of any kind. */
export function detectKernelFormat(image: Uint8Array): KernelKind | undefined {
  try {
    return inspect(image).kind;
  } catch (e) {
    if (e instanceof KernelFormatError) return undefined;
    throw e;
  }
}

interface Write {
  what: string;
  gpa: number;
  /** bytes to copy, or a length to zero */
  data: Uint8Array | number;
}

const hex = (n: number): string => '0x' + n.toString(16);
const mib = (n: number): string => `${+(n / MiB).toFixed(2)} MiB`;
const len = (w: Write): number => (typeof w.data === 'number' ? w.data : w.data.length);

/** What checkKernelLoad() found: the plan for a load, without guest memory. */
export interface KernelLoadCheck {
  kind: KernelKind;
  /** Most bytes the command line may have (without its NUL): cmdline_size for a bzImage, else the loader's slot. */
  cmdlineMax: number;
  kernelStart: number;
  kernelEnd: number;
  /** Where an initrd of the given size goes. */
  initrd?: { addr: number; size: number };
  /** The command line as the kernel gets it. */
  cmdline: string;
}

interface Plan extends KernelLoadCheck {
  parsed: Parsed;
  entry: number;
  kernelCmdline: KernelCmdline;
  /** The kernel's own writes (segments, BSS or the protected-mode kernel). */
  writes: Write[];
}

/**
 * Every check loadKernel makes that does not need guest memory: the image's format, that the kernel
 * fits `memBytes` of RAM, the command line (its length against the kernel's limit), and where an
 * initrd of `initrdSize` bytes goes. Throws what loadKernel would (KernelFormatError,
 * KernelLoadError, CmdlineError). resolveConfig() calls it before the initrd is read, so a config
 * loadKernel would refuse is refused when it is resolved.
 */
export function checkKernelLoad(image: Uint8Array, opts: { cmdline: string; initrdSize?: number; memBytes: number }): KernelLoadCheck {
  const p = plan(image, opts);
  return { kind: p.kind, cmdlineMax: p.cmdlineMax, kernelStart: p.kernelStart, kernelEnd: p.kernelEnd, ...(p.initrd ? { initrd: p.initrd } : {}), cmdline: p.cmdline };
}

function plan(image: Uint8Array, opts: { cmdline: string; initrdSize?: number; memBytes: number }): Plan {
  const lowEnd = ramRegions(opts.memBytes)[0].size; // RangeError for an impossible RAM size
  const parsed = inspect(image);
  const writes: Write[] = [];
  let entry: number;
  let kernelStart: number;
  let kernelEnd: number;
  let initrdLimit = lowEnd;
  let cmdlineMax = CMDLINE_MAX_SIZE;

  if (parsed.kind === 'bzimage') {
    const bz = parsed.bz;
    if (bz.footprintEnd > lowEnd) {
      throw new KernelLoadError(
        `guest RAM too small for this kernel: it needs memory up to ${mib(bz.footprintEnd)} (init_size ${mib(bz.initSize)} at ${hex(bz.runStart)}), the guest has ${mib(lowEnd)}`,
        'memMiB',
      );
    }
    writes.push({ what: 'kernel', gpa: HIMEM_START, data: image.subarray(bz.setupSize) });
    entry = BZIMAGE_ENTRY;
    kernelStart = HIMEM_START;
    kernelEnd = bz.footprintEnd;
    initrdLimit = Math.min(lowEnd, bz.initrdAddrMax + 1);
    cmdlineMax = Math.min(CMDLINE_MAX_SIZE, bz.cmdlineSize + 1);
  } else {
    const elf = parsed.elf;
    for (const s of elf.segments) {
      if (s.paddr < HIMEM_START) {
        throw new KernelFormatError(`ELF program header ${s.index}: segment at ${hex(s.paddr)} lies below 1 MiB`);
      }
      if (s.paddr + s.memsz > lowEnd) {
        throw new KernelLoadError(
          `ELF program header ${s.index}: segment ${hex(s.paddr)}-${hex(s.paddr + s.memsz)} does not fit in guest RAM (${mib(lowEnd)} below 3 GiB)`,
          'memMiB',
        );
      }
      if (s.filesz > 0) writes.push({ what: `segment ${s.index}`, gpa: s.paddr, data: image.subarray(s.offset, s.offset + s.filesz) });
      if (s.memsz > s.filesz) writes.push({ what: `segment ${s.index} BSS`, gpa: s.paddr + s.filesz, data: s.memsz - s.filesz });
    }
    entry = parsed.kind === 'pvh-elf' ? (elf.pvhEntry as number) : Number(elf.entry);
    kernelStart = elf.start;
    kernelEnd = elf.end;
  }

  const kernelCmdline = new KernelCmdline(cmdlineMax).append(opts.cmdline);

  let initrd: { addr: number; size: number } | undefined;
  const size = opts.initrdSize ?? 0;
  if (size > 0) {
    const lo = Math.ceil(kernelEnd / INITRD_ALIGN) * INITRD_ALIGN;
    const addr = Math.floor((initrdLimit - size) / INITRD_ALIGN) * INITRD_ALIGN;
    if (addr < lo) {
      throw new KernelLoadError(
        `initrd of ${mib(size)} does not fit in guest RAM between the kernel (ends at ${mib(lo)}) and ${mib(initrdLimit)}`,
        'initrd',
      );
    }
    initrd = { addr, size };
  }
  return {
    kind: parsed.kind,
    cmdlineMax: cmdlineMax - 1,
    kernelStart,
    kernelEnd,
    ...(initrd ? { initrd } : {}),
    cmdline: kernelCmdline.toString(),
    parsed,
    entry,
    kernelCmdline,
    writes,
  };
}

export function loadKernel(mem: GuestMemory, image: Uint8Array, opts: LoadOptions): BootSetup {
  // ---- validate ------------------------------------------------------------------------------
  const lowEnd = ramRegions(opts.memBytes)[0].size; // RangeError for an impossible RAM size
  if (!mem.isRam(0, lowEnd)) throw new RangeError(`guest memory does not cover ${hex(lowEnd)} bytes of low RAM`);
  if (opts.rsdpAddr !== undefined && (!Number.isSafeInteger(opts.rsdpAddr) || opts.rsdpAddr < 0)) {
    throw new RangeError(`invalid RSDP address ${opts.rsdpAddr}`);
  }
  const p = plan(image, { cmdline: opts.cmdline, initrdSize: opts.initrd?.length ?? 0, memBytes: opts.memBytes });
  const { parsed, entry, kernelStart, kernelEnd, initrd } = p;
  const cmdline = p.kernelCmdline;
  const writes = p.writes;
  writes.push({ what: 'command line', gpa: CMDLINE_START, data: cmdline.bytes() });
  if (initrd && opts.initrd) writes.push({ what: 'initrd', gpa: initrd.addr, data: opts.initrd });

  const e820 = e820Map(opts.memBytes);
  let protocol: BootProtocol;
  let bootInfoAddr: number;
  if (parsed.kind === 'pvh-elf') {
    protocol = 'pvh';
    const s = buildPvhStructures({
      cmdlinePaddr: CMDLINE_START,
      modules: initrd ? [{ paddr: initrd.addr, size: initrd.size }] : [],
      memmap: e820,
      rsdpPaddr: opts.rsdpAddr,
    });
    bootInfoAddr = s.startInfo.gpa;
    writes.push({ what: 'PVH start_info', gpa: s.startInfo.gpa, data: s.startInfo.bytes });
    if (s.modlist.bytes.length) writes.push({ what: 'PVH module list', gpa: s.modlist.gpa, data: s.modlist.bytes });
    writes.push({ what: 'PVH memory map', gpa: s.memmap.gpa, data: s.memmap.bytes });
  } else {
    protocol = 'linux64';
    bootInfoAddr = ZERO_PAGE_START;
    const bp = buildBootParams({
      setupHeader: parsed.kind === 'bzimage' ? parsed.bz.setupHeader : undefined,
      cmdlineAddr: CMDLINE_START,
      cmdlineSize: cmdline.length,
      initrd,
      e820,
      rsdpAddr: opts.rsdpAddr,
    });
    writes.push({ what: 'zero page', gpa: ZERO_PAGE_START, data: bp });
  }

  // ---- check the plan, then write ------------------------------------------------------------
  checkPlan(mem, writes);
  for (const w of writes) {
    if (typeof w.data === 'number') mem.fill(w.gpa, w.data, 0);
    else mem.writeBytes(w.gpa, w.data);
  }

  return {
    kind: parsed.kind,
    protocol,
    entry,
    bootInfoAddr,
    kernelStart,
    kernelEnd,
    ...(initrd ? { initrd } : {}),
    cmdline: cmdline.toString(),
  };
}

/**
 * Internal invariants (a failure is a kindling bug, not a user error): every write is RAM, lies
 * at/above HIMEM_START or inside one fixed boot-structure slot, and no two writes overlap.
 */
function checkPlan(mem: GuestMemory, writes: readonly Write[]): void {
  for (const w of writes) {
    const n = len(w);
    if (!mem.isRam(w.gpa, n)) throw new Error(`loader bug: ${w.what} at ${hex(w.gpa)}+${hex(n)} is outside guest RAM`);
    if (w.gpa >= HIMEM_START) continue;
    const inSlot = BOOT_STRUCTURE_SLOTS.some((s) => w.gpa >= s.start && w.gpa + n <= s.start + s.size);
    if (!inSlot || w.gpa + n > EBDA_START) throw new Error(`loader bug: ${w.what} at ${hex(w.gpa)}+${hex(n)} is outside its boot-structure slot`);
  }
  const sorted = writes.filter((w) => len(w) > 0).sort((a, b) => a.gpa - b.gpa);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1];
    if (sorted[i].gpa < a.gpa + len(a)) throw new Error(`loader bug: ${a.what} and ${sorted[i].what} overlap`);
  }
}
