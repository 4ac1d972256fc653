// Unix socket files kindling creates in the host file system and removes when done: the hybrid-vsock
// listener (`--vsock CID,uds=PATH`) and the API socket (`kindling serve --api-sock PATH`). Each one's
// directory is opened when the socket is made, and the file is removed with unlinkat(dirfd, name)
// after checking that it is still a socket (never anything else). The open directory descriptors are
// what the process-wide seccomp filter (role vmm, src/seccomp/roles.ts) allows unlinkat on: removing
// these sockets is the one change to the file system a filtered kindling process can make.
import { closeSync, constants, lstatSync, openSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { loadAddon } from '../kvm/addon.js';

export interface SocketFile {
  readonly path: string;
  readonly dirFd: number;
  readonly name: string;
  /** Inode of the socket kindling made (when known): a different file at the path is left alone. */
  ino?: bigint;
}

/** <asm-generic/fcntl.h> O_PATH (node:fs does not export it). */
const O_PATH = 0o10000000;

const open = new Set<SocketFile>();

/** Open `path`'s directory for removing the socket at `path` later. Throws as openSync does. */
export function socketFile(path: string): SocketFile {
  // O_PATH: no permission on the directory is needed to hold it (unlinkat checks write access then).
  const dirFd = openSync(dirname(path), O_PATH | constants.O_DIRECTORY);
  const f: SocketFile = { path, dirFd, name: basename(path) };
  open.add(f);
  return f;
}

/** Remember the inode of the socket now at the path (call right after creating it). */
export function recordSocketInode(f: SocketFile): void {
  f.ino = lstatSync(f.path, { bigint: true }).ino;
}

/** Remove the socket (if the path still names a socket, and the one kindling made) and close the directory. */
export function removeSocketFile(f: SocketFile): void {
  if (!open.has(f)) return;
  try {
    const st = lstatSync(f.path, { bigint: true });
    if (st.isSocket() && (f.ino === undefined || st.ino === f.ino)) loadAddon().unlinkAt(f.dirFd, f.name);
  } catch {
    // gone already
  }
  releaseSocketFile(f);
}

/** Close the directory without removing anything (the socket was never made). */
export function releaseSocketFile(f: SocketFile): void {
  if (!open.delete(f)) return;
  try {
    closeSync(f.dirFd);
  } catch {
    // already closed
  }
}

/** The directory descriptors open now (for the vmm seccomp role's unlinkat rule). */
export function socketDirFds(): number[] {
  return [...open].map((f) => f.dirFd);
}
