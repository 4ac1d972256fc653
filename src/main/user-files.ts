// Opening the files a user names (kernel, initrd): checked on the descriptor that is then read.
//
//   open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)   a FIFO cannot block the open, a tty
//                                                               does not become our controlling terminal
//   fstat(fd)                                                   only S_ISREG is accepted: a FIFO, a
//                                                               character device (/dev/zero), a directory,
//                                                               a socket or a block device is refused with
//                                                               one line naming the path and what it is
//   size checks (fstat's st_size)                               before a byte is read: at most
//                                                               MAX_USER_FILE_BYTES, and what the caller allows
//                                                               (e.g. the guest's RAM)
//   pread(fd, …) of exactly st_size bytes                       from that same fd: no stat-then-reopen window,
//                                                               and the allocation is bounded by the checked
//                                                               size (a file that grows is read to its old
//                                                               size; one that shrinks is refused)
//
// Every error is a ConfigError naming the file (its `option` is the VMConfig key, e.g. 'initrd').
// Nothing is ever written to the file. Disks are opened by the block device (src/devices/virtio/block/image.ts).
import { closeSync, constants as fsConstants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { ConfigError } from './config-error.js';
import { shown } from './config.js';

/** Linux O_CLOEXEC (Node does not export it; libuv sets it on every open anyway). */
const O_CLOEXEC = (fsConstants as Record<string, number | undefined>).O_CLOEXEC ?? 0o2000000;
export const USER_FILE_OPEN_FLAGS = fsConstants.O_RDONLY | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY | O_CLOEXEC;

/**
 * Largest kernel or initrd kindling reads (2 GiB - 1: Node's single-read limit; a kernel and its
 * initrd also have to fit below the 32-bit MMIO hole, so nothing larger could be loaded).
 */
export const MAX_USER_FILE_BYTES = 2 ** 31 - 1;
/** Bytes per pread (well below Node's per-call limit). */
const READ_CHUNK = 64 * 1024 * 1024;

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** A size for a message: "1.50 GiB", "64 MiB", "4096 bytes". */
export function sizeText(n: number): string {
  if (n >= GiB) return `${+(n / GiB).toFixed(2)} GiB`;
  if (n >= MiB) return `${+(n / MiB).toFixed(2)} MiB`;
  return `${n} bytes`;
}

/** What a file that is not a regular file is: "a FIFO (named pipe)", "a character device"… */
export function fileKind(st: Pick<Stats, 'isFile' | 'isDirectory' | 'isFIFO' | 'isCharacterDevice' | 'isBlockDevice' | 'isSocket' | 'isSymbolicLink'>): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

function errnoCode(e: unknown): string {
  return (e as { code?: string }).code ?? shown((e as Error).message);
}

/** An open, checked regular file: `size` is fstat's st_size on `fd`. */
export interface UserFile {
  /** The VMConfig key it came from ('kernel', 'initrd'). */
  readonly option: string;
  /** How messages call it ("kernel", "initrd"). */
  readonly what: string;
  readonly path: string;
  readonly fd: number;
  readonly size: number;
}

/**
 * Open `path` for reading without blocking and check, on that descriptor, that it is a regular
 * file. Throws one ConfigError line naming the file; the fd is closed on every error.
 */
export function openUserFile(path: string, option: string, what: string = option): UserFile {
  const p = shown(path);
  let fd: number;
  try {
    fd = openSync(path, USER_FILE_OPEN_FLAGS);
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new ConfigError(`${what} not found: ${p}`, option);
    if (code === 'EACCES' || code === 'EPERM') throw new ConfigError(`${what} is not readable: ${p} (permission denied)`, option);
    if (code === 'ELOOP') throw new ConfigError(`${what} cannot be read: ${p} (too many levels of symbolic links)`, option);
    // open(2) of a socket fails with ENXIO.
    if (code === 'ENXIO') throw new ConfigError(`${what} is a socket or a device without a driver, not a regular file: ${p}`, option);
    throw new ConfigError(`${what} cannot be read: ${p} (${code})`, option);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new ConfigError(`${what} is ${fileKind(st)}, not a regular file: ${p}`, option);
    return { option, what, path, fd, size: st.size };
  } catch (e) {
    closeSync(fd);
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(`${what} cannot be read: ${p} (${errnoCode(e)})`, option);
  }
}

/**
 * Refuse (before anything is read) a file larger than MAX_USER_FILE_BYTES or than `limit` bytes;
 * `limitText` says what the limit is ("the guest's 64 MiB of RAM").
 */
export function checkUserFileSize(f: UserFile, limit: number, limitText: string): void {
  const p = shown(f.path);
  if (f.size > MAX_USER_FILE_BYTES) {
    throw new ConfigError(`${f.what} is ${sizeText(f.size)}, more than kindling reads (2 GiB): ${p}`, f.option);
  }
  if (f.size > limit) throw new ConfigError(`${f.what} is ${sizeText(f.size)}, larger than ${limitText}: ${p}`, f.option);
}

/**
 * The file's bytes: exactly `f.size` bytes read from `f.fd` with pread (the size was checked first,
 * so this allocates no more than that). A file that got shorter since fstat is refused.
 */
export function readUserFile(f: UserFile): Buffer {
  if (f.size > MAX_USER_FILE_BYTES) throw new ConfigError(`${f.what} is ${sizeText(f.size)}, more than kindling reads (2 GiB): ${shown(f.path)}`, f.option);
  const out = Buffer.allocUnsafe(f.size);
  let done = 0;
  while (done < f.size) {
    let n: number;
    try {
      n = readSync(f.fd, out, done, Math.min(READ_CHUNK, f.size - done), done);
    } catch (e) {
      throw new ConfigError(`${f.what} cannot be read: ${shown(f.path)} (${errnoCode(e)})`, f.option);
    }
    if (n === 0) throw new ConfigError(`${f.what} changed while it was read (${done} of ${f.size} bytes): ${shown(f.path)}`, f.option);
    done += n;
  }
  return out;
}

export function closeUserFile(f: UserFile): void {
  closeSync(f.fd);
}
