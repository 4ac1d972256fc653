// A NetPort with nothing behind it, for the virtio-net unit tests to extend: a tap's shape (fd -1,
// virtio_net_hdr on its frames, never blocked), nothing to read, every send taken. And a backend
// environment that watches nothing, logs nothing and runs guarded work inline.
import { RECV_AGAIN, type NetBackendOptions, type NetPort } from '../../src/devices/virtio/net/backend.js';
import type { PackedIov } from '../../src/devices/virtio/iovec.js';

export class PortStub implements NetPort {
  readonly fd = -1;
  readonly vnetHdr = true;
  readonly blocked = false;
  receive(_iov: PackedIov): number {
    return RECV_AGAIN;
  }
  send(_iov: PackedIov, _frameLen: number): boolean {
    return true;
  }
  flush(): boolean {
    return true;
  }
  resetRx(): void {}
  setGuestOffloads(): void {}
  close(): void {}
}

export const STUB_ENV: NetBackendOptions['env'] = { pollFd: () => ({ set: () => undefined, close: () => undefined }), log: () => undefined, guarded: (fn) => fn() };
