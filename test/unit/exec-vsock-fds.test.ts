// vm.vsock's control-socket fd hand-over (src/devices/virtio/vsock/bridge.ts, host.ts) when the VM
// stops mid-connect: an fd named in a `C <fd>` (main → I/O worker) or `A <port> <fd>` (worker → main)
// line belongs to the reader, so a line nobody reads would leak its fd. Each case stops at the worst
// moment (the line written, not yet read) and checks, by the socket inode /proc/self/fd/N names,
// that the handed-over fd is closed afterwards (a reused fd number is not mistaken for a leak).
import { readlinkSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadAddon } from '../../src/kvm/addon.js';
import { VsockBridge } from '../../src/devices/virtio/vsock/bridge.js';
import { createVsockHostBackend } from '../../src/devices/virtio/vsock/host.js';
import { vsockDeviceType } from '../../src/devices/virtio/vsock/index.js';
import { VIRTIO_VSOCK_OP_REQUEST } from '../../src/devices/virtio/vsock/packet.js';
import { VsockGuest } from './virtio-vsock-guest.js';

const addon = loadAddon();
const CID = 5n;

function inode(fd: number): string | undefined {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
}

/** addon.socketpair(), remembering every pair and what each fd was. */
function spy(): { socketpair: () => [number, number]; made: Array<{ fd: number; what: string | undefined }> } {
  const made: Array<{ fd: number; what: string | undefined }> = [];
  return {
    made,
    socketpair: () => {
      const p = addon.socketpair();
      for (const fd of p) made.push({ fd, what: inode(fd) });
      return p;
    },
  };
}

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 5));
const stillOpen = (made: Array<{ fd: number; what: string | undefined }>): number[] => made.filter((m) => m.what !== undefined && inode(m.fd) === m.what).map((m) => m.fd);

describe('vsock control fds when the VM stops mid-connect', () => {
  it('a connect whose `C` line the worker never read: the worker closes that fd as it stops', async () => {
    const { params, release } = vsockDeviceType.prepare({ cid: CID }, { addon });
    const backend = createVsockHostBackend(params, { addon, guarded: (fn) => fn(), log: () => {} });
    new VsockGuest(backend, CID).activate();
    const s = spy();
    const bridge = new VsockBridge(s, params);
    const p = bridge.connect(1234);
    p.catch(() => {});
    // The VM stops now, in this tick: the main thread stops connecting, the worker stops.
    bridge.close();
    backend.close();
    bridge.dispose();
    release();
    await expect(p).rejects.toThrow(/refused/);
    await tick();
    expect(s.made.length).toBe(2);
    expect(stillOpen(s.made)).toEqual([]);
  });

  it('a guest connection whose `A` line the main thread never read: dispose() closes that fd', async () => {
    const { params, release } = vsockDeviceType.prepare({ cid: CID }, { addon });
    const s = spy();
    const backend = createVsockHostBackend(params, { addon: { ...addon, socketpair: s.socketpair }, guarded: (fn) => fn(), log: () => {} });
    const g = new VsockGuest(backend, CID);
    g.activate();
    g.postRx();
    const bridge = new VsockBridge(addon, params);
    const got: unknown[] = [];
    bridge.listen(7000, (sock) => got.push(sock));
    for (let i = 0; i < 4; i++) await tick(); // the worker has the `L 7000` line
    g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 50000, dstPort: 7000 }); // the worker writes `A 7000 <fd>` now
    expect(s.made.length).toBe(2);
    // The VM stops before the main thread read that line.
    bridge.close();
    backend.close();
    bridge.dispose();
    release();
    await tick();
    expect(got).toEqual([]);
    expect(stillOpen(s.made)).toEqual([]);
  });

  it('a start that failed before any worker took the device: dispose() closes the `C` fds too', async () => {
    const { params, release } = vsockDeviceType.prepare({ cid: CID }, { addon });
    const s = spy();
    const bridge = new VsockBridge(s, params);
    const ps = [bridge.connect(1), bridge.connect(2)];
    for (const p of ps) p.catch(() => {});
    bridge.dispose();
    release();
    for (const p of ps) await expect(p).rejects.toThrow(/refused/);
    await tick();
    expect(s.made.length).toBe(4);
    expect(stillOpen(s.made)).toEqual([]);
  });
});
