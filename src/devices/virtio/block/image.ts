// Opening a disk image for virtio-blk (main thread, before the VM exists), on one checked fd, and
// locking it so that kindling and QEMU refuse each other. Never creates, truncates or otherwise
// changes an image; on any failure nothing stays open.
//
// Open. open(2) with O_RDONLY (",ro") or O_RDWR, plus O_NONBLOCK|O_CLOEXEC: O_NONBLOCK so that a
// FIFO cannot block the open (it is refused below). fstat(2) on that same fd: only a regular file or
// a block device is accepted (one line naming what it is otherwise). The size comes from the same fd
// (st_size, or BLKGETSIZE64 for a block device), and so does the inode in the GET_ID serial: the
// path is never looked up twice, so there is no check-then-reopen window. O_NONBLOCK is then cleared:
// the I/O worker's preadv/pwritev on the fd are plain blocking calls.
//
// Locks. QEMU's file-posix driver (block/file-posix.c: raw_apply_lock_bytes, raw_check_lock_bytes)
// expresses a BlockBackend's permissions as OFD byte-range locks (fcntl F_OFD_SETLK, all shared,
// F_RDLCK, one byte each) on the image:
//   byte RAW_LOCK_PERM_BASE   (100) + i  held  = "I use permission i",
//   byte RAW_LOCK_SHARED_BASE (200) + i  held  = "I do not let others use permission i",
// for the BLK_PERM_* bits i (include/block/block-common.h): 0 CONSISTENT_READ, 1 WRITE,
// 2 WRITE_UNCHANGED, 3 RESIZE (QEMU <= 6.1 also had 4 GRAPH_MOD). A user applies its bytes first and
// then checks with F_OFD_GETLK (a write-lock probe, which any other description's lock on the byte
// fails): for each permission it uses, byte 200+i must be free ('Failed to get "write" lock'); for
// each it does not share, byte 100+i must be free ('Failed to get shared "write" lock'). Apply before
// check means two users racing can both be refused, never both admitted. kindling takes the same
// bytes, so QEMU (qemu-io, qemu-img, qemu-storage-daemon, a QEMU VM) sees kindling as one of its own:
//
//   read-write attach   uses CONSISTENT_READ + WRITE, shares only CONSISTENT_READ:
//                       holds 100, 101, 201, 202, 203 (what a QEMU VM's writable disk holds, plus
//                       WRITE_UNCHANGED unshared), and refuses to start if ANY other open file
//                       description holds any lock on the image (F_OFD_GETLK F_WRLCK over the whole
//                       file): QEMU users, kindling readers and writers, whole-file lockers.
//                       CONSISTENT_READ is shared, as a QEMU VM shares it, so a QEMU writer is
//                       refused with QEMU's own 'Failed to get "write" lock' (not "consistent read")
//                       and a QEMU reader that explicitly shares writes (qemu-img info -U, qemu-io -r)
//                       can still look at a running image, exactly as with a QEMU VM.
//   read-only attach    uses CONSISTENT_READ, shares CONSISTENT_READ + WRITE_UNCHANGED:
//                       holds 100, 201, 203, and is refused by QEMU's rules (a writer or resizer holds
//                       101/103; someone refuses to share reads, 200) and by any exclusive lock
//                       anywhere on the file (F_OFD_GETLK F_RDLCK over the whole file). Readers share:
//                       any number of read-only attaches (kindling or QEMU readers) may hold an image.
//
// No flock(2) any more: QEMU never sees flock, every kindling takes the OFD bytes, and on NFS flock
// is emulated with byte-range locks owned by the same open file description, where it would merge
// with (and could upgrade) the OFD bytes instead of adding anything. Locks belong to the open file
// description and go away when its fd is closed (blockDeviceType's release() closes it; so does the
// kernel when the process dies).
import { fstatSync, statSync, type BigIntStats } from 'node:fs';
import type { KvmAddon } from '../../../kvm/addon.js';
import { ConfigError, shown } from '../../../main/config.js';
import { blockSerial } from './device.js';

/** QEMU's BLK_PERM_* bits (include/block/block-common.h). */
export const BLK_PERM_CONSISTENT_READ = 0x01;
export const BLK_PERM_WRITE = 0x02;
export const BLK_PERM_WRITE_UNCHANGED = 0x04;
export const BLK_PERM_RESIZE = 0x08;
export const BLK_PERM_ALL = 0x0f;
/** Lock byte bases of QEMU's file-posix locking. */
export const RAW_LOCK_PERM_BASE = 100;
export const RAW_LOCK_SHARED_BASE = 200;
const BLK_PERM_BITS = 4;

/** A QEMU-style permission pair: what a holder uses (`perm`) and what it lets others use (`shared`). */
export interface LockPerms {
  perm: number;
  shared: number;
}

/** What a read-write attach takes (see the header). */
export const RW_PERMS: LockPerms = { perm: BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, shared: BLK_PERM_CONSISTENT_READ };
/** What a read-only attach takes. */
export const RO_PERMS: LockPerms = { perm: BLK_PERM_CONSISTENT_READ, shared: BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED };

/** The bytes a holder of `p` locks (F_RDLCK, one byte each), ascending. */
export function lockBytes(p: LockPerms): number[] {
  const out: number[] = [];
  for (let i = 0; i < BLK_PERM_BITS; i++) if (p.perm & (1 << i)) out.push(RAW_LOCK_PERM_BASE + i);
  for (let i = 0; i < BLK_PERM_BITS; i++) if (!(p.shared & (1 << i))) out.push(RAW_LOCK_SHARED_BASE + i);
  return out;
}

/** An image opened and locked for a virtio-blk device. */
export interface OpenedDisk {
  path: string;
  readOnly: boolean;
  fd: number;
  /** Capacity in 512-byte sectors. */
  sectors: number;
  /** GET_ID answer (20 bytes). */
  serial: Uint8Array;
}

/** "a FIFO", "a directory"…: what a non-image file is, for the one-line refusal. */
function fileKind(st: { isDirectory(): boolean; isFIFO(): boolean; isCharacterDevice(): boolean; isSocket(): boolean; isSymbolicLink(): boolean }): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'of an unknown file type';
}

function errnoCode(e: unknown): string {
  return (e as { code?: string }).code ?? shown((e as Error).message);
}

function openError(path: string, readOnly: boolean, e: unknown): ConfigError {
  const code = errnoCode(e);
  const p = shown(path);
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new ConfigError(`disk image not found: ${p}`);
    case 'EISDIR':
      return new ConfigError(`disk image is a directory, not a regular file or block device: ${p}`);
    case 'EACCES':
    case 'EPERM':
    case 'EROFS': {
      const why = code === 'EROFS' ? 'read-only file system' : 'permission denied';
      return readOnly
        ? new ConfigError(`disk image is not readable: ${p} (${why})`)
        : new ConfigError(`disk image is not writable: ${p} (${why}; append ,ro to attach it read-only)`);
    }
    case 'ENXIO': {
      // open(2) of a socket: say what it is (the stat is for the message only; nothing is opened).
      let kind = 'not a regular file or block device';
      try {
        kind = fileKind(statSync(path));
      } catch {
        /* the message stays generic */
      }
      return new ConfigError(`disk image is ${kind}, not a regular file or block device: ${p}`);
    }
    default:
      return new ConfigError(`disk image cannot be opened: ${p} (${code})`);
  }
}

/** Take the lock bytes of `p` (shared locks, which never conflict with other shared locks). */
function holdLockBytes(addon: KvmAddon, fd: number, p: LockPerms): boolean {
  for (const b of lockBytes(p)) if (!addon.ofdLock(fd, b, 1, false)) return false;
  return true;
}

/**
 * After holdLockBytes: does another open file description hold a lock that refuses this attach?
 * 'writer' when the holder writes (QEMU's WRITE byte, or an exclusive lock), 'other' otherwise.
 */
export function lockConflict(addon: KvmAddon, fd: number, readOnly: boolean): 'writer' | 'other' | undefined {
  const p = readOnly ? RO_PERMS : RW_PERMS;
  let found = false;
  for (let i = 0; i < BLK_PERM_BITS && !found; i++) {
    const bit = 1 << i;
    // QEMU's raw_check_lock_bytes: nobody may refuse to share what we use…
    if (p.perm & bit && addon.ofdTest(fd, RAW_LOCK_SHARED_BASE + i, 1, true)) found = true;
    // …and nobody may use what we refuse to share (for a reader: no writer, no resizer).
    if (!(p.shared & bit) && addon.ofdTest(fd, RAW_LOCK_PERM_BASE + i, 1, true)) found = true;
  }
  // Beyond QEMU's bytes: a writer refuses every other holder; a reader refuses any exclusive lock.
  if (!found && addon.ofdTest(fd, 0, 0, !readOnly)) found = true;
  if (!found) return undefined;
  const writer = addon.ofdTest(fd, RAW_LOCK_PERM_BASE + 1, 1, true) !== null || addon.ofdTest(fd, 0, 0, false) !== null;
  return writer ? 'writer' : 'other';
}

/** Open, check, lock and size one image (see the header); on failure nothing stays open. */
export function openDisk(addon: KvmAddon, d: { path: string; readOnly: boolean }): OpenedDisk {
  const c = addon.constants;
  const p = shown(d.path);
  let fd: number;
  try {
    fd = addon.openFile(d.path, (d.readOnly ? c.O_RDONLY : c.O_RDWR) | c.O_NONBLOCK, 0);
  } catch (e) {
    throw openError(d.path, d.readOnly, e);
  }
  try {
    let st: BigIntStats;
    try {
      st = fstatSync(fd, { bigint: true });
    } catch (e) {
      throw new ConfigError(`disk image cannot be examined: ${p} (${errnoCode(e)})`);
    }
    if (!st.isFile() && !st.isBlockDevice()) throw new ConfigError(`disk image is ${fileKind(st)}, not a regular file or block device: ${p}`);
    const perms = d.readOnly ? RO_PERMS : RW_PERMS;
    let conflict: 'writer' | 'other' | undefined;
    try {
      conflict = holdLockBytes(addon, fd, perms) ? lockConflict(addon, fd, d.readOnly) : 'writer';
    } catch (e) {
      throw new ConfigError(`disk image cannot be locked: ${p} (${errnoCode(e)})`);
    }
    if (conflict !== undefined) {
      if (d.readOnly && conflict === 'writer') {
        throw new ConfigError(`disk image is in use (locked by another process that has it open for writing; a read-only attach needs it unwritten): ${p}`);
      }
      throw new ConfigError(`disk image is in use (locked by another process): ${p}`);
    }
    let size: bigint;
    try {
      size = st.isBlockDevice() ? addon.fileSize(fd) : st.size;
    } catch (e) {
      throw new ConfigError(`disk image size cannot be read: ${p} (${errnoCode(e)})`);
    }
    if (size === 0n) throw new ConfigError(`disk image is empty (0 bytes): ${p}`);
    if (size % 512n !== 0n) throw new ConfigError(`disk image size ${size} bytes is not a multiple of 512: ${p}`);
    if (size / 512n > BigInt(Number.MAX_SAFE_INTEGER) / 512n) throw new ConfigError(`disk image is too large: ${p}`);
    addon.setNonblocking(fd, false);
    return { path: d.path, readOnly: d.readOnly, fd, sectors: Number(size / 512n), serial: blockSerial(d.path, st.ino) };
  } catch (e) {
    addon.close(fd);
    throw e;
  }
}
