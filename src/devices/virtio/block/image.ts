// Opening a disk image for virtio-blk (main thread, before the VM exists): O_RDWR + flock(LOCK_EX|NB)
// for a writable image (refused with one line if another VM holds it), O_RDONLY and no lock for a
// read-only one. Never creates, truncates or otherwise changes an image.
import { statSync } from 'node:fs';
import type { KvmAddon } from '../../../kvm/addon.js';
import { VIRTIO_BLK_ID_BYTES, blockSerial } from './device.js';

/** An image opened (and, if writable, locked) for a virtio-blk device. */
export interface OpenedDisk {
  path: string;
  readOnly: boolean;
  fd: number;
  /** Capacity in 512-byte sectors. */
  sectors: number;
  /** GET_ID answer (20 bytes). */
  serial: Uint8Array;
}

/** Open (and lock) one image; on failure nothing stays open. */
export function openDisk(addon: KvmAddon, d: { path: string; readOnly: boolean }): OpenedDisk {
  const c = addon.constants;
  let fd: number;
  try {
    fd = addon.openFile(d.path, d.readOnly ? c.O_RDONLY : c.O_RDWR, 0);
  } catch (e) {
    throw new Error(`disk image cannot be opened: ${d.path} (${(e as { code?: string }).code ?? (e as Error).message})`);
  }
  try {
    if (!d.readOnly && !addon.tryLockExclusive(fd)) {
      throw new Error(`disk image is in use by another VM (locked): ${d.path}`);
    }
    const size = addon.fileSize(fd);
    if (size % 512n !== 0n) throw new Error(`disk image size ${size} bytes is not a multiple of 512: ${d.path}`);
    if (size / 512n > BigInt(Number.MAX_SAFE_INTEGER) / 512n) throw new Error(`disk image is too large: ${d.path}`);
    return { path: d.path, readOnly: d.readOnly, fd, sectors: Number(size / 512n), serial: blockSerial(d.path, statSync(d.path, { bigint: true }).ino) };
  } catch (e) {
    addon.close(fd);
    throw e;
  }
}
