// A tiny, deterministic writer (and reader) for the cpio "newc" format (magic 070701), the format the
// Linux kernel unpacks into rootfs from an initramfs. Writing it here means device nodes need no
// mknod (and no root), and the archive is bit-for-bit reproducible: entries are sorted by path,
// missing parent directories are added, uid/gid are 0, inode numbers are assigned in order and
// every mtime is the same value (SOURCE_DATE_EPOCH or 0).
//
// Header: "070701" then 13 fields of 8 hex digits: ino, mode, uid, gid, nlink, mtime, filesize,
// devmajor, devminor, rdevmajor, rdevminor, namesize (incl. the NUL), check (0). The header+name is
// padded to a multiple of 4, then the data, padded to 4. The archive ends with "TRAILER!!!".

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Uint8Array | string; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'chardev' | 'blockdev'; path: string; major: number; minor: number; mode?: number };

/** One parsed entry, as `parseCpio` returns it. */
export interface CpioRecord {
  path: string;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  ino: number;
  rdevMajor: number;
  rdevMinor: number;
  data: Uint8Array;
}

export interface CpioOptions {
  /** Seconds since the epoch stamped on every entry (default 0). */
  mtime?: number;
}

const TRAILER = 'TRAILER!!!';
const enc = new TextEncoder();

/** Normalise an archive path: no leading "/" or "./", no trailing "/", no empty or ".." segments. */
export function normalizeCpioPath(p: string): string {
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.length === 0) throw new Error(`cpio: empty path ${JSON.stringify(p)}`);
  if (parts.includes('..')) throw new Error(`cpio: path with "..": ${JSON.stringify(p)}`);
  return parts.join('/');
}

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`cpio: field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

/**
 * Serialise entries into a newc archive (uncompressed). Parent directories that are not listed are
 * added with mode 0755. Duplicate paths are an error.
 */
export function writeCpio(entries: readonly CpioEntry[], opts: CpioOptions = {}): Uint8Array {
  const mtime = opts.mtime ?? 0;
  const byPath = new Map<string, CpioEntry>();
  for (const e of entries) {
    const path = normalizeCpioPath(e.path);
    if (byPath.has(path)) throw new Error(`cpio: duplicate entry ${path}`);
    byPath.set(path, { ...e, path });
  }
  for (const path of [...byPath.keys()]) {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      const existing = byPath.get(dir);
      if (!existing) byPath.set(dir, { type: 'dir', path: dir });
      else if (existing.type !== 'dir') throw new Error(`cpio: ${dir} is not a directory but has children`);
    }
  }
  // Byte-wise sort; a parent is a strict prefix of its children, so it always sorts first.
  const paths = [...byPath.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

  const chunks: Uint8Array[] = [];
  let ino = 1;
  const push = (name: string, mode: number, nlink: number, data: Uint8Array, rmaj: number, rmin: number, inode: number): void => {
    const nameBytes = enc.encode(name);
    const header =
      '070701' +
      hex8(inode) +
      hex8(mode) +
      hex8(0) + // uid
      hex8(0) + // gid
      hex8(nlink) +
      hex8(name === TRAILER ? 0 : mtime) +
      hex8(data.length) +
      hex8(0) + // devmajor
      hex8(0) + // devminor
      hex8(rmaj) +
      hex8(rmin) +
      hex8(nameBytes.length + 1) +
      hex8(0); // check
    const headLen = 110 + nameBytes.length + 1;
    const head = new Uint8Array(headLen + pad4(headLen));
    head.set(enc.encode(header), 0);
    head.set(nameBytes, 110);
    chunks.push(head);
    if (data.length > 0) {
      chunks.push(data);
      const p = pad4(data.length);
      if (p) chunks.push(new Uint8Array(p));
    }
  };

  const empty = new Uint8Array(0);
  for (const path of paths) {
    const e = byPath.get(path)!;
    switch (e.type) {
      case 'dir':
        push(path, S_IFDIR | ((e.mode ?? 0o755) & 0o7777), 2, empty, 0, 0, ino++);
        break;
      case 'file': {
        const data = typeof e.data === 'string' ? enc.encode(e.data) : e.data;
        push(path, S_IFREG | ((e.mode ?? 0o644) & 0o7777), 1, data, 0, 0, ino++);
        break;
      }
      case 'symlink':
        push(path, S_IFLNK | 0o777, 1, enc.encode(e.target), 0, 0, ino++);
        break;
      case 'chardev':
      case 'blockdev':
        push(path, (e.type === 'chardev' ? S_IFCHR : S_IFBLK) | ((e.mode ?? 0o600) & 0o7777), 1, empty, e.major, e.minor, ino++);
        break;
    }
  }
  push(TRAILER, 0, 1, empty, 0, 0, 0);

  let total = 0;
  for (const c of chunks) total += c.length;
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Parse a newc archive (uncompressed) up to the trailer. Throws on malformed input. */
export function parseCpio(buf: Uint8Array): CpioRecord[] {
  const dec = new TextDecoder();
  const out: CpioRecord[] = [];
  let off = 0;
  for (;;) {
    if (off + 110 > buf.length) throw new Error('cpio: truncated header');
    const magic = dec.decode(buf.subarray(off, off + 6));
    if (magic !== '070701' && magic !== '070702') throw new Error(`cpio: bad magic at ${off}: ${JSON.stringify(magic)}`);
    const f = (i: number): number => {
      const s = dec.decode(buf.subarray(off + 6 + i * 8, off + 14 + i * 8));
      if (!/^[0-9a-fA-F]{8}$/.test(s)) throw new Error(`cpio: bad header field at ${off}`);
      return parseInt(s, 16);
    };
    const namesize = f(11);
    const filesize = f(6);
    const nameEnd = off + 110 + namesize;
    if (nameEnd > buf.length || namesize < 1) throw new Error('cpio: truncated name');
    const path = dec.decode(buf.subarray(off + 110, nameEnd - 1));
    const dataStart = nameEnd + pad4(110 + namesize);
    if (dataStart + filesize > buf.length) throw new Error(`cpio: truncated data for ${path}`);
    if (path === TRAILER) return out;
    out.push({
      path,
      ino: f(0),
      mode: f(1),
      uid: f(2),
      gid: f(3),
      nlink: f(4),
      mtime: f(5),
      rdevMajor: f(9),
      rdevMinor: f(10),
      data: buf.subarray(dataStart, dataStart + filesize),
    });
    off = dataStart + filesize + pad4(filesize);
  }
}
