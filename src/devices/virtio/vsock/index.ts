// virtio-vsock (virtio 1.2 §5.10, device id 19): the device type. What the parts do is in backend.ts's
// header; this file is what the registry lists:
//   prepare   main thread: validates the CID, binds and listens on udsPath (synchronously, so a busy or
//             bad path is an error before the VM exists), creates the control socketpair of the
//             in-process bridge, and the control SAB (fd ownership words, counters)
//   describe  features (VIRTIO_VSOCK_F_STREAM), queues rx/tx/event, config space le64 guest_cid
//   createBackend  I/O worker: VsockBackend with its host side (host.ts)
// release() closes every fd no thread took over and removes the socket file kindling created.
import { ConfigError } from '../../../main/config-error.js';
import { shown } from '../../../main/config.js';
import { VIRTIO_ID_VSOCK, featureBit } from '../constants.js';
import type { VirtioDeviceType } from '../device.js';
import {
  CTL_COUNTERS_OFFSET,
  CTL_DEV_CTL_TAKEN,
  CTL_HOST_CTL_TAKEN,
  CTL_LISTEN_TAKEN,
  CTL_WORDS,
  VIRTIO_VSOCK_F_STREAM,
  VSOCK_QUEUE_SIZE,
  validGuestCid,
  vsockConfigSpace,
  type VsockOptions,
  type VsockParams,
} from './backend.js';
import { createVsockHostBackend } from './host.js';
import { recordSocketInode, removeSocketFile, socketFile, type SocketFile } from '../../../main/socket-files.js';
import { rmSync } from 'node:fs';
import { VSOCK_COUNTERS } from './muxer.js';

export * from './backend.js';

/** Guest CIDs of the VMs of this process (main thread): a CID is unique per VM in a process. */
const cidsInUse = new Set<bigint>();

/** A bind/listen failure on udsPath, in the user's terms (the path is theirs; nothing there is touched). */
function udsError(path: string, e: unknown): ConfigError {
  const code = (e as { code?: string }).code;
  const p = shown(path);
  const why =
    code === 'EADDRINUSE'
      ? 'already exists (remove it first, as with Firecracker)'
      : code === 'ENOENT'
        ? 'is in a directory that does not exist'
        : code === 'ENAMETOOLONG'
          ? 'is longer than a Unix socket path may be (107 bytes)'
          : code === 'EACCES'
            ? 'cannot be created here (permission denied)'
            : `cannot be listened on (${(e as Error).message})`;
  return new ConfigError(`vsock.udsPath ${p} ${why}`, 'vsock.udsPath', `${p} ${why}`);
}

export const vsockDeviceType: VirtioDeviceType<VsockOptions, VsockParams> = {
  kind: 'vsock',
  deviceId: VIRTIO_ID_VSOCK,
  prepare(options, host) {
    if (!validGuestCid(options.cid)) throw ConfigError.about('vsock.cid', `must be a whole number in 3..4294967294 (got ${String(options.cid)})`);
    const cid = BigInt(options.cid);
    if (cidsInUse.has(cid)) throw ConfigError.about('vsock.cid', `${cid} is already used by another VM in this process`);
    let listenFd = -1;
    let udsFile: SocketFile | undefined;
    if (options.udsPath !== undefined) {
      try {
        listenFd = host.addon.unixListen(options.udsPath, 128);
      } catch (e) {
        throw udsError(options.udsPath, e);
      }
      try {
        udsFile = socketFile(options.udsPath);
        recordSocketInode(udsFile);
      } catch (e) {
        host.addon.close(listenFd);
        if (udsFile) removeSocketFile(udsFile);
        else rmSync(options.udsPath, { force: true });
        throw udsError(options.udsPath, e);
      }
    }
    let pair: [number, number];
    try {
      pair = host.addon.socketpair();
    } catch (e) {
      if (listenFd >= 0) {
        host.addon.close(listenFd);
        removeSocketFile(udsFile!);
      }
      throw e;
    }
    cidsInUse.add(cid);
    const control = new SharedArrayBuffer(CTL_COUNTERS_OFFSET + 8 * VSOCK_COUNTERS.length);
    const params: VsockParams = { cid, udsPath: options.udsPath, ...(udsFile ? { udsFile } : {}), listenFd, devCtlFd: pair[1], hostCtlFd: pair[0], control };
    let released = false;
    return {
      params,
      release: () => {
        if (released) return;
        released = true;
        cidsInUse.delete(cid);
        releaseVsock(host.addon, params);
      },
    };
  },
  describe(p) {
    return {
      features: featureBit(VIRTIO_VSOCK_F_STREAM),
      queues: [
        { name: 'rx', maxSize: VSOCK_QUEUE_SIZE },
        { name: 'tx', maxSize: VSOCK_QUEUE_SIZE },
        { name: 'event', maxSize: VSOCK_QUEUE_SIZE },
      ],
      config: vsockConfigSpace(p.cid),
    };
  },
  createBackend(p, env) {
    return createVsockHostBackend(p, env);
  },
};

/** Close what no thread took over, and remove the socket file kindling created. */
export function releaseVsock(addon: { close(fd: number): void }, p: VsockParams): void {
  const w = new Int32Array(p.control, 0, CTL_WORDS);
  const closeUnless = (fd: number, word: number): void => {
    if (fd >= 0 && Atomics.exchange(w, word, 1) === 0) {
      try {
        addon.close(fd);
      } catch {
        // already gone
      }
    }
  };
  closeUnless(p.listenFd, CTL_LISTEN_TAKEN);
  closeUnless(p.devCtlFd, CTL_DEV_CTL_TAKEN);
  closeUnless(p.hostCtlFd, CTL_HOST_CTL_TAKEN);
  if (p.udsFile) removeSocketFile(p.udsFile);
}
