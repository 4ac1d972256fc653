// Extract the uncompressed kernel ELF (vmlinux) from an x86 bzImage, and find its PVH entry note.
//
// The setup header (Documentation/arch/x86/boot.rst) is at 0x1f1. The protected-mode code starts at
// (setup_sects + 1) * 512 (setup_sects 0 means 4). Since boot protocol 2.08, payload_offset (0x248)
// and payload_length (0x24c) locate the compressed vmlinux relative to that start. The kernel build
// appends the uncompressed size as a little-endian u32 to the compressed stream (size_append), so
// the payload's last 4 bytes are the size of the ELF.
import { spawnSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { lz4DecompressLegacy } from './lz4.js';

export type PayloadFormat = 'gzip' | 'lz4' | 'xz' | 'zstd' | 'bzip2' | 'lzma' | 'lzo' | 'elf' | 'unknown';

export interface BzImagePayload {
  format: PayloadFormat;
  /** The compressed stream without the trailing 4-byte size. */
  compressed: Uint8Array;
  /** Uncompressed size from the payload trailer. */
  size: number;
  protocol: number;
}

const XEN_ELFNOTE_PHYS32_ENTRY = 18;
const PT_NOTE = 4;

export function detectPayloadFormat(p: Uint8Array): PayloadFormat {
  const b = (i: number): number => p[i] ?? -1;
  if (b(0) === 0x1f && (b(1) === 0x8b || b(1) === 0x9e)) return 'gzip';
  if (b(0) === 0x02 && b(1) === 0x21 && b(2) === 0x4c && b(3) === 0x18) return 'lz4';
  if (b(0) === 0xfd && b(1) === 0x37 && b(2) === 0x7a && b(3) === 0x58 && b(4) === 0x5a && b(5) === 0x00) return 'xz';
  if (b(0) === 0x28 && b(1) === 0xb5 && b(2) === 0x2f && b(3) === 0xfd) return 'zstd';
  if (b(0) === 0x42 && b(1) === 0x5a && b(2) === 0x68) return 'bzip2';
  if (b(0) === 0x5d && b(1) === 0x00 && b(2) === 0x00) return 'lzma';
  if (b(0) === 0x89 && b(1) === 0x4c && b(2) === 0x5a && b(3) === 0x4f) return 'lzo';
  if (b(0) === 0x7f && b(1) === 0x45 && b(2) === 0x4c && b(3) === 0x46) return 'elf';
  return 'unknown';
}

/** Locate the compressed payload in a bzImage. Throws if it is not a bzImage with protocol >= 2.08. */
export function bzImagePayload(bz: Uint8Array): BzImagePayload {
  if (bz.length < 0x250) throw new Error('bzImage: file too small');
  const dv = new DataView(bz.buffer, bz.byteOffset, bz.byteLength);
  if (dv.getUint32(0x202, true) !== 0x53726448 /* "HdrS" */) throw new Error('bzImage: no "HdrS" setup header signature');
  const protocol = dv.getUint16(0x206, true);
  if (protocol < 0x208) throw new Error(`bzImage: boot protocol ${protocol.toString(16)} has no payload fields (need >= 2.08)`);
  const setupSects = bz[0x1f1] || 4;
  const pmStart = (setupSects + 1) * 512;
  const payloadOffset = dv.getUint32(0x248, true);
  const payloadLength = dv.getUint32(0x24c, true);
  const start = pmStart + payloadOffset;
  const end = start + payloadLength;
  if (payloadLength < 8 || end > bz.length) throw new Error('bzImage: payload_offset/payload_length point outside the file');
  const payload = bz.subarray(start, end);
  const size = dv.getUint32(end - 4, true);
  return { format: detectPayloadFormat(payload), compressed: payload.subarray(0, payload.length - 4), size, protocol };
}

function viaCli(tool: string, args: string[], input: Uint8Array, format: string): Uint8Array {
  const r = spawnSync(tool, args, { input, maxBuffer: 1 << 30 });
  if (r.error) {
    const missing = (r.error as NodeJS.ErrnoException).code === 'ENOENT';
    throw new Error(
      missing
        ? `bzImage: payload is ${format}-compressed and the \`${tool}\` tool is not installed (apt-get install ${tool === 'xz' ? 'xz-utils' : tool})`
        : `bzImage: running ${tool}: ${r.error.message}`,
    );
  }
  if (r.status !== 0) {
    const last = r.stderr.toString().trim().split('\n').pop() ?? '';
    throw new Error(`bzImage: ${tool} failed to decompress the ${format} payload: ${last}`);
  }
  return new Uint8Array(r.stdout.buffer, r.stdout.byteOffset, r.stdout.byteLength);
}

/**
 * Decompress the vmlinux ELF out of a bzImage. LZ4 (legacy frames) and gzip are handled in-process;
 * xz and zstd use the `xz`/`zstd` command line tools if installed. The result is checked to be an
 * x86-64 ELF of the size recorded in the payload trailer.
 */
export function extractVmlinux(bzImage: Uint8Array): Uint8Array {
  const p = bzImagePayload(bzImage);
  let elf: Uint8Array;
  switch (p.format) {
    case 'lz4':
      elf = lz4DecompressLegacy(p.compressed, p.size);
      break;
    case 'gzip': {
      const b = gunzipSync(p.compressed);
      elf = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
      break;
    }
    case 'xz':
      elf = viaCli('xz', ['-dc', '--single-stream'], p.compressed, 'xz');
      break;
    case 'zstd':
      elf = viaCli('zstd', ['-dcq'], p.compressed, 'zstd');
      break;
    default:
      throw new Error(`bzImage: unsupported payload compression (${p.format}); supported: lz4, gzip, xz, zstd`);
  }
  if (elf.length !== p.size) {
    throw new Error(`bzImage: decompressed ${elf.length} bytes, the payload trailer says ${p.size}`);
  }
  if (!(elf[0] === 0x7f && elf[1] === 0x45 && elf[2] === 0x4c && elf[3] === 0x46) || elf[4] !== 2) {
    throw new Error('bzImage: decompressed payload is not an ELF64 file');
  }
  return elf;
}

/**
 * The PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY, note type 18, owner "Xen") of an ELF64 image, from
 * its PT_NOTE program headers, or undefined if there is none.
 */
export function findPvhEntry(elf: Uint8Array): number | undefined {
  if (elf.length < 64 || elf[0] !== 0x7f || elf[1] !== 0x45 || elf[2] !== 0x4c || elf[3] !== 0x46) {
    throw new Error('not an ELF file');
  }
  if (elf[4] !== 2 || elf[5] !== 1) throw new Error('not a little-endian ELF64 file');
  const dv = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  const phoff = Number(dv.getBigUint64(0x20, true));
  const phentsize = dv.getUint16(0x36, true);
  const phnum = dv.getUint16(0x38, true);
  const dec = new TextDecoder();
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length) break;
    if (dv.getUint32(ph, true) !== PT_NOTE) continue;
    const off = Number(dv.getBigUint64(ph + 8, true));
    const filesz = Number(dv.getBigUint64(ph + 32, true));
    const end = Math.min(off + filesz, elf.length);
    let n = off;
    while (n + 12 <= end) {
      const namesz = dv.getUint32(n, true);
      const descsz = dv.getUint32(n + 4, true);
      const type = dv.getUint32(n + 8, true);
      const nameOff = n + 12;
      const descOff = nameOff + ((namesz + 3) & ~3);
      const next = descOff + ((descsz + 3) & ~3);
      if (next > end) break;
      const name = dec.decode(elf.subarray(nameOff, nameOff + namesz)).replace(/\0+$/, '');
      if (name === 'Xen' && type === XEN_ELFNOTE_PHYS32_ENTRY) {
        if (descsz >= 8) return Number(dv.getBigUint64(descOff, true));
        if (descsz >= 4) return dv.getUint32(descOff, true);
      }
      n = next;
    }
  }
  return undefined;
}
