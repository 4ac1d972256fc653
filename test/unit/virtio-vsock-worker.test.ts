// virtio-vsock's host side where it really runs: in a worker_thread (the device's I/O worker), with the
// in-process bridge on the main thread. Fds cross the thread boundary as numbers over the control
// socketpair; this checks that both directions work across threads: vm.vsock.listen() on the main
// thread receiving a guest-initiated connection served by the worker, and vm.vsock.connect() handing
// the worker a socketpair end that it serves as a Firecracker client. The guest is simulated inside the
// worker by feeding the muxer packets (the queue path is covered by the other vsock suites).
import net from 'node:net';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { loadAddon } from '../../src/kvm/addon.js';
import { VsockBridge } from '../../src/devices/virtio/vsock/bridge.js';
import { vsockDeviceType } from '../../src/devices/virtio/vsock/index.js';
import { transpileForWorkers } from './transpile-for-workers.js';

const root = transpileForWorkers(
  [
    'devices/virtio/vsock/host.ts',
    'devices/virtio/vsock/backend.ts',
    'devices/virtio/vsock/muxer.ts',
    'devices/virtio/vsock/packet.ts',
    'devices/virtio/device.ts',
    'devices/virtio/iovec.ts',
    'seccomp/install.ts',
    'seccomp/roles.ts',
    'seccomp/bpf.ts',
    'seccomp/syscalls-x86_64.ts',
  ],
  'kindling-vsock-worker-',
);

// The worker: the backend with its host side (as the I/O worker creates it); messages from the test
// play the guest.
const WORKER = `
import { parentPort, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { createVsockHostBackend } from ${JSON.stringify(join(root, 'devices/virtio/vsock/host.js'))};
import { encodeHeader, parseTxPacket } from ${JSON.stringify(join(root, 'devices/virtio/vsock/packet.js'))};
const addon = createRequire(import.meta.url)(workerData.addonPath);
const p = workerData.params;
const backend = createVsockHostBackend(p, { addon, guarded: (fn) => fn(), log: () => {} });
// As the I/O worker does once its backend exists: the io:vsock syscall filter (a call missing from its
// allowlist kills this process with SIGSYS and fails the file).
const { installSeccomp } = await import(${JSON.stringify(join(root, 'seccomp/install.js'))});
installSeccomp(addon, { kind: 'io', device: 'vsock' }, 'strict', 'virtio-vsock');
const guest = (op, srcPort, dstPort, payload = new Uint8Array(0)) => {
  const h = encodeHeader({ srcCid: p.cid, dstCid: 2n, srcPort, dstPort, len: payload.length, type: 1, op, flags: 0, bufAlloc: 65536, fwdCnt: 0 });
  const b = new Uint8Array(44 + payload.length); b.set(h); b.set(payload, 44);
  backend.mux.guestTx(parseTxPacket(b, b.length, p.cid), () => b.slice(44));
};
parentPort.on('message', (m) => {
  if (m.type === 'guest') guest(m.op, m.srcPort, m.dstPort, m.payload ? new Uint8Array(m.payload) : undefined);
  if (m.type === 'conns') parentPort.postMessage({ type: 'conns', conns: backend.mux.connections() });
  if (m.type === 'stop') { backend.close(); parentPort.close(); }
});
parentPort.postMessage({ type: 'ready' });
`;

describe('virtio-vsock host side in a worker thread', () => {
  it('listen() and connect() on the main thread, served by the worker', async () => {
    const addon = loadAddon();
    const { params, release } = vsockDeviceType.prepare({ cid: 77 }, { addon });
    const w = new Worker(WORKER, { eval: true, workerData: { params, addonPath: join(process.cwd(), 'native/build/Release/kindling.node') } });
    const messages: Array<{ type: string; conns?: Array<{ hostPort: number; guestPort: number; state: string; pending: number }> }> = [];
    w.on('message', (m) => messages.push(m));
    const next = async (type: string): Promise<(typeof messages)[number]> => {
      for (let i = 0; i < 500; i++) {
        const k = messages.findIndex((m) => m.type === type);
        if (k >= 0) return messages.splice(k, 1)[0];
        await new Promise((r) => setTimeout(r, 5));
      }
      throw new Error(`no ${type} from the worker`);
    };
    const conns = async () => {
      w.postMessage({ type: 'conns' });
      return (await next('conns')).conns!;
    };
    const bridge = new VsockBridge(addon, params);
    const sockets: net.Socket[] = [];
    try {
      await next('ready');
      // guest-initiated, to a port the main thread listens on
      bridge.listen(7000, (s) => sockets.push(s));
      await new Promise((r) => setTimeout(r, 20));
      w.postMessage({ type: 'guest', op: 1, srcPort: 3000, dstPort: 7000 });
      for (let i = 0; i < 200 && sockets.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
      expect(sockets.length).toBe(1);
      sockets[0].write('from the host');
      let c: Awaited<ReturnType<typeof conns>> = [];
      for (let i = 0; i < 200; i++) {
        c = await conns();
        if (c[0]?.pending === 13) break;
      }
      expect(c).toMatchObject([{ hostPort: 7000, guestPort: 3000, state: 'established', pending: 13 }]);
      const got: Buffer[] = [];
      sockets[0].on('data', (d: Buffer) => got.push(d));
      w.postMessage({ type: 'guest', op: 5, srcPort: 3000, dstPort: 7000, payload: [...Buffer.from('from the guest')] });
      for (let i = 0; i < 200 && Buffer.concat(got).toString() !== 'from the guest'; i++) await new Promise((r) => setTimeout(r, 5));
      expect(Buffer.concat(got).toString()).toBe('from the guest');

      // host-initiated through the bridge: the worker adopts the fd and speaks CONNECT/OK
      const p = bridge.connect(1234);
      let hp = 0;
      for (let i = 0; i < 200 && hp === 0; i++) hp = (await conns()).find((x) => x.guestPort === 1234)?.hostPort ?? 0;
      expect(hp).toBe(2 ** 30);
      w.postMessage({ type: 'guest', op: 2, srcPort: 1234, dstPort: hp });
      const s = await p;
      sockets.push(s);
      s.write('abc');
      let q: Awaited<ReturnType<typeof conns>> = [];
      for (let i = 0; i < 200; i++) {
        q = await conns();
        if (q.find((x) => x.guestPort === 1234)?.pending === 3) break;
      }
      expect(q.find((x) => x.guestPort === 1234)).toMatchObject({ state: 'established', pending: 3 });
    } finally {
      for (const s of sockets) s.destroy();
      bridge.close();
      w.postMessage({ type: 'stop' });
      await new Promise((r) => w.once('exit', r));
      release();
    }
  });
});
