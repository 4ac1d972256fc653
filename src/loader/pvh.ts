// Xen PVH boot structures (xen/include/public/arch-x86/hvm/start_info.h), all little-endian:
//
//   struct hvm_start_info {          // 56 bytes, version 1
//     u32 magic;  u32 version;  u32 flags;  u32 nr_modules;
//     u64 modlist_paddr;  u64 cmdline_paddr;  u64 rsdp_paddr;
//     u64 memmap_paddr;  u32 memmap_entries;  u32 reserved;     // version 1+
//   };
//   struct hvm_modlist_entry { u64 paddr; u64 size; u64 cmdline_paddr; u64 reserved; };   // 32 bytes
//   struct hvm_memmap_table_entry { u64 addr; u64 size; u32 type; u32 reserved; };        // 24 bytes
//
// The kernel is entered in 32-bit protected mode, paging off, at the XEN_ELFNOTE_PHYS32_ENTRY
// address with %ebx = physical address of hvm_start_info.
import { PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START } from '../arch/x86_64/layout.js';
import type { E820Entry } from '../arch/x86_64/memory-map.js';

export const HVM_START_MAGIC = 0x336ec578;
export const HVM_START_INFO_VERSION = 1;
export const HVM_START_INFO_SIZE = 56;
export const HVM_MODLIST_ENTRY_SIZE = 32;
export const HVM_MEMMAP_ENTRY_SIZE = 24;

// hvm_start_info field offsets
export const SI_MAGIC = 0;
export const SI_VERSION = 4;
export const SI_FLAGS = 8;
export const SI_NR_MODULES = 12;
export const SI_MODLIST_PADDR = 16;
export const SI_CMDLINE_PADDR = 24;
export const SI_RSDP_PADDR = 32;
export const SI_MEMMAP_PADDR = 40;
export const SI_MEMMAP_ENTRIES = 48;

/** How many modules fit between PVH_MODLIST_START and the memmap slot. */
export const PVH_MAX_MODULES = Math.floor((PVH_MEMMAP_START - PVH_MODLIST_START) / HVM_MODLIST_ENTRY_SIZE);
/** Memmap entries kindling will write (the slot is one page; same cap as the zero page's e820). */
export const PVH_MAX_MEMMAP_ENTRIES = 128;

export interface PvhModule {
  paddr: number;
  size: number;
  /** NUL-terminated module command line, 0 if none. */
  cmdlinePaddr?: number;
}

export interface StartInfoOptions {
  cmdlinePaddr: number;
  modlistPaddr: number;
  nrModules: number;
  memmapPaddr: number;
  memmapEntries: number;
  /** 0 (the default) lets the guest scan for the RSDP itself. */
  rsdpPaddr?: number;
}

function u64(what: string, n: number): bigint {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`PVH: invalid ${what} ${n}`);
  return BigInt(n);
}

function u32(what: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0 || n > 0xffff_ffff) throw new RangeError(`PVH: invalid ${what} ${n}`);
  return n;
}

export function encodeStartInfo(o: StartInfoOptions): Uint8Array {
  const b = new Uint8Array(HVM_START_INFO_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(SI_MAGIC, HVM_START_MAGIC, true);
  v.setUint32(SI_VERSION, HVM_START_INFO_VERSION, true);
  v.setUint32(SI_FLAGS, 0, true);
  v.setUint32(SI_NR_MODULES, u32('module count', o.nrModules), true);
  v.setBigUint64(SI_MODLIST_PADDR, u64('modlist address', o.modlistPaddr), true);
  v.setBigUint64(SI_CMDLINE_PADDR, u64('cmdline address', o.cmdlinePaddr), true);
  v.setBigUint64(SI_RSDP_PADDR, u64('RSDP address', o.rsdpPaddr ?? 0), true);
  v.setBigUint64(SI_MEMMAP_PADDR, u64('memmap address', o.memmapPaddr), true);
  v.setUint32(SI_MEMMAP_ENTRIES, u32('memmap entry count', o.memmapEntries), true);
  return b;
}

export function encodeModlist(mods: readonly PvhModule[]): Uint8Array {
  const b = new Uint8Array(mods.length * HVM_MODLIST_ENTRY_SIZE);
  const v = new DataView(b.buffer);
  mods.forEach((m, i) => {
    const o = i * HVM_MODLIST_ENTRY_SIZE;
    v.setBigUint64(o, u64('module address', m.paddr), true);
    v.setBigUint64(o + 8, u64('module size', m.size), true);
    v.setBigUint64(o + 16, u64('module cmdline address', m.cmdlinePaddr ?? 0), true);
  });
  return b;
}

export function encodeMemmap(entries: readonly E820Entry[]): Uint8Array {
  const b = new Uint8Array(entries.length * HVM_MEMMAP_ENTRY_SIZE);
  const v = new DataView(b.buffer);
  entries.forEach((e, i) => {
    const o = i * HVM_MEMMAP_ENTRY_SIZE;
    v.setBigUint64(o, u64('memmap address', e.addr), true);
    v.setBigUint64(o + 8, u64('memmap size', e.size), true);
    v.setUint32(o + 16, u32('memmap type', e.type), true);
  });
  return b;
}

export interface PvhStructures {
  startInfo: { gpa: number; bytes: Uint8Array };
  modlist: { gpa: number; bytes: Uint8Array };
  memmap: { gpa: number; bytes: Uint8Array };
}

/** All three structures at their fixed slots (PVH_INFO_START / PVH_MODLIST_START / PVH_MEMMAP_START). */
export function buildPvhStructures(o: {
  cmdlinePaddr: number;
  modules: readonly PvhModule[];
  memmap: readonly E820Entry[];
  rsdpPaddr?: number;
}): PvhStructures {
  if (o.modules.length > PVH_MAX_MODULES) throw new RangeError(`PVH: ${o.modules.length} modules (max ${PVH_MAX_MODULES})`);
  if (o.memmap.length > PVH_MAX_MEMMAP_ENTRIES) {
    throw new RangeError(`PVH: ${o.memmap.length} memmap entries (max ${PVH_MAX_MEMMAP_ENTRIES})`);
  }
  return {
    startInfo: {
      gpa: PVH_INFO_START,
      bytes: encodeStartInfo({
        cmdlinePaddr: o.cmdlinePaddr,
        modlistPaddr: o.modules.length ? PVH_MODLIST_START : 0,
        nrModules: o.modules.length,
        memmapPaddr: PVH_MEMMAP_START,
        memmapEntries: o.memmap.length,
        rsdpPaddr: o.rsdpPaddr,
      }),
    },
    modlist: { gpa: PVH_MODLIST_START, bytes: encodeModlist(o.modules) },
    memmap: { gpa: PVH_MEMMAP_START, bytes: encodeMemmap(o.memmap) },
  };
}
