// ELF64 x86-64 executable parser for kernels (vmlinux, PVH guests). Strictly bounds-checked: every
// offset and size is read as a u64 (bigint) and checked against the file before use, so a hostile
// image can only produce a KernelFormatError; every field is read through ImageReader (bounds-checked
// against the file length). Placement in guest RAM is checked by the caller.
//
// Segments are loaded at p_paddr (vmlinux links at virtual addresses but its physical ones are
// where it must live). The Xen PVH entry point comes from an ELF note in a PT_NOTE segment:
// name "Xen\0", type XEN_ELFNOTE_PHYS32_ENTRY (18), desc = 32-bit physical address (4 or 8 bytes).
import { KernelFormatError } from './errors.js';
import { ImageReader } from './reader.js';

export const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46] as const; // "\x7fELF"
export const ELFCLASS64 = 2;
export const ELFDATA2LSB = 1;
export const EV_CURRENT = 1;
export const ET_EXEC = 2;
export const EM_X86_64 = 62;
export const PT_LOAD = 1;
export const PT_NOTE = 4;
/** e_phnum value meaning "the real count is in section header 0" (not supported for kernels). */
export const PN_XNUM = 0xffff;
export const ELF64_EHDR_SIZE = 64;
export const ELF64_PHDR_SIZE = 56;
export const ELF_NOTE_HEADER_SIZE = 12;
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;
export const XEN_NOTE_NAME = 'Xen\0';

export interface ElfSegment {
  /** program header index */
  index: number;
  /** file offset of the segment's bytes */
  offset: number;
  paddr: number;
  filesz: number;
  memsz: number;
}

export interface ElfImage {
  /** e_entry (meaningful as a physical address for the 64-bit boot protocol only) */
  entry: bigint;
  /** XEN_ELFNOTE_PHYS32_ENTRY, if present */
  pvhEntry?: number;
  /** PT_LOAD segments with p_memsz > 0, in program header order */
  segments: ElfSegment[];
  /** lowest p_paddr / highest p_paddr + p_memsz over the segments */
  start: number;
  end: number;
}

const U64_LIMIT = 1n << 64n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const hex = (n: number | bigint): string => '0x' + n.toString(16);

export function hasElfMagic(image: Uint8Array): boolean {
  return image.length >= 4 && ELF_MAGIC.every((b, i) => image[i] === b);
}

/** Parse and validate an ELF64 x86-64 executable; throws KernelFormatError. */
export function parseElf(image: Uint8Array): ElfImage {
  if (!hasElfMagic(image)) throw new KernelFormatError('not an ELF file');
  if (image.length < ELF64_EHDR_SIZE) throw new KernelFormatError(`ELF file is truncated (${image.length} bytes)`);
  if (image[4] !== ELFCLASS64) throw new KernelFormatError(`ELF class ${image[4]} is not 64-bit: not an x86-64 kernel`);
  if (image[5] !== ELFDATA2LSB) throw new KernelFormatError('ELF file is not little-endian: not an x86-64 kernel');
  if (image[6] !== EV_CURRENT) throw new KernelFormatError(`ELF version ${image[6]} is not supported`);
  const v = new ImageReader(image, 'ELF file');
  const fileLen = BigInt(image.length);

  const type = v.u16(16, 'e_type');
  if (type !== ET_EXEC) throw new KernelFormatError(`ELF type ${type} is not a kernel (need ET_EXEC, 2)`);
  const machine = v.u16(18, 'e_machine');
  if (machine !== EM_X86_64) throw new KernelFormatError(`ELF machine ${machine} is not x86-64 (62)`);
  const entry = v.u64(24, 'e_entry');
  const phoff = v.u64(32, 'e_phoff');
  const phentsize = v.u16(54, 'e_phentsize');
  const phnum = v.u16(56, 'e_phnum');
  if (phnum === 0) throw new KernelFormatError('ELF file has no program headers');
  if (phnum === PN_XNUM) throw new KernelFormatError('ELF file has too many program headers (PN_XNUM)');
  if (phentsize < ELF64_PHDR_SIZE) throw new KernelFormatError(`ELF program header size ${phentsize} is too small (need ${ELF64_PHDR_SIZE})`);

  const segments: ElfSegment[] = [];
  let pvhEntry: number | undefined;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + BigInt(i) * BigInt(phentsize);
    if (ph + BigInt(ELF64_PHDR_SIZE) > fileLen) throw new KernelFormatError(`ELF program header ${i} lies outside the file`);
    const o = Number(ph);
    const pType = v.u32(o, 'p_type');
    if (pType !== PT_LOAD && pType !== PT_NOTE) continue;
    const pOffset = v.u64(o + 8, 'p_offset');
    const pPaddr = v.u64(o + 24, 'p_paddr');
    const pFilesz = v.u64(o + 32, 'p_filesz');
    const pMemsz = v.u64(o + 40, 'p_memsz');
    const pAlign = v.u64(o + 48, 'p_align');
    if (pOffset + pFilesz > fileLen) throw new KernelFormatError(`ELF program header ${i}: segment data lies outside the file`);
    if (pType === PT_NOTE) {
      const found = parseNotes(v, i, Number(pOffset), Number(pFilesz), pAlign === 8n ? 8 : 4);
      if (found !== undefined && pvhEntry === undefined) pvhEntry = found;
      continue;
    }
    if (pMemsz < pFilesz) throw new KernelFormatError(`ELF program header ${i}: memory size is smaller than file size`);
    if (pMemsz === 0n) continue;
    const end = pPaddr + pMemsz;
    if (end > U64_LIMIT) throw new KernelFormatError(`ELF program header ${i}: segment at ${hex(pPaddr)} wraps around the address space`);
    if (end > MAX_SAFE) throw new KernelFormatError(`ELF program header ${i}: segment at ${hex(pPaddr)} is beyond any guest RAM`);
    segments.push({ index: i, offset: Number(pOffset), paddr: Number(pPaddr), filesz: Number(pFilesz), memsz: Number(pMemsz) });
  }
  if (segments.length === 0) throw new KernelFormatError('ELF file has no loadable segments');

  const sorted = [...segments].sort((a, b) => a.paddr - b.paddr);
  for (let k = 1; k < sorted.length; k++) {
    const a = sorted[k - 1];
    const b = sorted[k];
    if (b.paddr < a.paddr + a.memsz) {
      throw new KernelFormatError(`ELF program headers ${Math.min(a.index, b.index)} and ${Math.max(a.index, b.index)} overlap in physical memory`);
    }
  }

  const inLoaded = (addr: bigint): boolean => segments.some((s) => addr >= BigInt(s.paddr) && addr < BigInt(s.paddr + s.filesz));
  if (pvhEntry !== undefined) {
    if (!inLoaded(BigInt(pvhEntry))) throw new KernelFormatError(`PVH entry point ${hex(pvhEntry)} is not inside a loaded segment`);
  } else if (!inLoaded(entry)) {
    throw new KernelFormatError(`ELF entry point ${hex(entry)} is not a physical address inside a loaded segment`);
  }

  return {
    entry,
    pvhEntry,
    segments,
    start: sorted[0].paddr,
    end: Math.max(...segments.map((s) => s.paddr + s.memsz)),
  };
}

/** Walk the notes in [off, off+size); return the PVH entry if a Xen PHYS32_ENTRY note is there. */
function parseNotes(v: ImageReader, index: number, off: number, size: number, align: number): number | undefined {
  const end = off + size;
  const pad = (n: number): number => Math.ceil(n / align) * align;
  let pos = off;
  let found: number | undefined;
  while (pos < end) {
    if (end - pos < ELF_NOTE_HEADER_SIZE) throw new KernelFormatError(`ELF program header ${index}: note is truncated`);
    const namesz = v.u32(pos, 'n_namesz');
    const descsz = v.u32(pos + 4, 'n_descsz');
    const type = v.u32(pos + 8, 'n_type');
    const namePos = pos + ELF_NOTE_HEADER_SIZE;
    const descPos = namePos + pad(namesz);
    if (descPos > end || descPos + descsz > end) throw new KernelFormatError(`ELF program header ${index}: note is truncated`);
    if (found === undefined && type === XEN_ELFNOTE_PHYS32_ENTRY && namesz === XEN_NOTE_NAME.length && isXenName(v, namePos)) {
      if (descsz === 4) found = v.u32(descPos, 'the PVH entry note address');
      else if (descsz === 8) {
        const e = v.u64(descPos, 'the PVH entry note address');
        if (e > 0xffff_ffffn) throw new KernelFormatError(`PVH entry point ${hex(e)} is above 4 GiB`);
        found = Number(e);
      } else throw new KernelFormatError(`Xen PVH entry note has a ${descsz}-byte address (expected 4 or 8)`);
    }
    pos = descPos + pad(descsz);
  }
  return found;
}

function isXenName(v: ImageReader, pos: number): boolean {
  for (let k = 0; k < XEN_NOTE_NAME.length; k++) if (v.u8(pos + k, 'the note name') !== XEN_NOTE_NAME.charCodeAt(k)) return false;
  return true;
}
