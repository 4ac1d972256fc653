// virtio-vsock's host side (src/devices/virtio/vsock/host.ts, bridge.ts) over real sockets: the device
// prepared as the main thread does (unixListen on a socket in a temp dir, the control socketpair), the
// backend with its host side as the I/O worker creates it, and a model driver as the guest. Checked:
// Firecracker's hybrid vsock byte for byte (CONNECT <port>\n → OK <host port>\n, refusals close the
// client, guest connections to <uds>_<port>), the in-process bridge (vm.vsock's connect/listen), a slow
// host reader stalling the guest writer with bounded memory, and teardown (sockets closed, socket file
// removed).
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadAddon } from '../../src/kvm/addon.js';
import { DeferredVsock, VsockBridge } from '../../src/devices/virtio/vsock/bridge.js';
import { createVsockHostBackend, parseConnectLine } from '../../src/devices/virtio/vsock/host.js';
import { readVsockStats, vsockDeviceType, type VsockBackend, type VsockParams } from '../../src/devices/virtio/vsock/index.js';
import { BUF_ALLOC, LOCAL_PORT_MIN } from '../../src/devices/virtio/vsock/muxer.js';
import {
  VIRTIO_VSOCK_OP_CREDIT_UPDATE,
  VIRTIO_VSOCK_OP_REQUEST,
  VIRTIO_VSOCK_OP_RESPONSE,
  VIRTIO_VSOCK_OP_RST,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
} from '../../src/devices/virtio/vsock/packet.js';
import { runs } from '../fuzz/budget.js';
import { expectSameBytes } from '../fuzz/bytes.js';
import { VsockGuest, concat, pattern, type RxPkt } from './virtio-vsock-guest.js';

const CID = 3n;
const addon = loadAddon();

describe('Firecracker CONNECT command parser', () => {
  it('reads the command as Firecracker does', () => {
    const p = (s: string) => parseConnectLine(Buffer.from(s, 'latin1'));
    expect(p('CONNECT 52\n')).toEqual({ port: 52, consumed: 11 });
    expect(p('connect 52\nhello')).toEqual({ port: 52, consumed: 11 });
    expect(p('CoNnEcT +4294967295\n')).toEqual({ port: 4294967295, consumed: 20 });
    expect(p('CONNECT 5\n')).toEqual({ port: 5, consumed: 10 });
    expect(p('CONNECT 52 and more\n')).toEqual({ port: 52, consumed: 20 });
    expect(p('CONNECT 52')).toBe('more');
    expect(p('CONNECT 4294967296\n')).toBe('invalid');
    expect(p('CONNECT -1\n')).toBe('invalid');
    expect(p('OPEN 52\n' + '.'.repeat(24))).toBe('invalid');
    expect(p('OPEN 52\n.....')).toBe('more'); // Firecracker keeps reading up to 32 bytes
    expect(p('CONNECT\n  52\n')).toEqual({ port: 52, consumed: 13 }); // a '\n' before the 10th byte does not end it
    expect(p('CONNECT 52' + ' '.repeat(30))).toEqual({ port: 52, consumed: 32 }); // 32 bytes without '\n'
    expect(p('CONNECT ' + '1'.repeat(30))).toBe('invalid');
    expect(parseConnectLine(Uint8Array.of(0x43, 0xff, 0xfe, 0x20, 0x31, 0x32, 0x33, 0x34, 0x35, 0x0a))).toBe('invalid');
  });

  it('never throws and never consumes more than 32 bytes', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.string({ maxLength: 40 }).map((s) => Buffer.from(`CONNECT ${s}`))), (b) => {
        const r = parseConnectLine(b);
        if (typeof r === 'object') {
          expect(r.consumed).toBeLessThanOrEqual(Math.min(32, b.length));
          expect(r.port).toBeLessThanOrEqual(0xffffffff);
        } else if (r === 'more') expect(b.length).toBeLessThan(32);
      }),
      { numRuns: runs(500) },
    );
  });
});

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 2));

interface Rig {
  /** The fence the I/O worker's runner applies: host work runs only while the driver is up. */
  active: { on: boolean };
  dir: string;
  uds: string;
  params: VsockParams;
  backend: VsockBackend;
  g: VsockGuest;
  got: RxPkt[];
  release: () => void;
  /** Let the event loop run and collect rx packets until `cond` holds. */
  until(cond: () => boolean, what: string, ms?: number): Promise<void>;
  take(op: number): RxPkt;
}

let rig: Rig | undefined;

function makeRig(): Rig {
  const dir = mkdtempSync(join(tmpdir(), 'kindling-vsock-'));
  const uds = join(dir, 'v.sock');
  const { params, release } = vsockDeviceType.prepare({ cid: CID, udsPath: uds }, { addon });
  const active = { on: true };
  const backend = createVsockHostBackend(params, { addon, guarded: (fn) => active.on && fn(), log: () => {} });
  const g = new VsockGuest(backend, CID);
  g.activate();
  const got: RxPkt[] = [];
  const r: Rig = {
    active,
    dir,
    uds,
    params,
    backend,
    g,
    got,
    release,
    async until(cond, what, ms = 5000) {
      const end = Date.now() + ms;
      for (;;) {
        g.postRx();
        got.push(...g.recv());
        if (cond()) return;
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await tick();
      }
    },
    take(op) {
      const i = got.findIndex((p) => p.hdr.op === op);
      expect(i, `a packet with op ${op}`).toBeGreaterThanOrEqual(0);
      return got.splice(i, 1)[0];
    },
  };
  return r;
}

beforeEach(() => {
  rig = makeRig();
});

afterEach(() => {
  if (!rig) return;
  rig.backend.close();
  rig.release();
  expect(existsSync(rig.uds)).toBe(false);
  rmSync(rig.dir, { recursive: true, force: true });
  rig = undefined;
});

function readAll(s: net.Socket): { data: () => Buffer; closed: () => boolean } {
  const parts: Buffer[] = [];
  let closed = false;
  s.on('data', (d: Buffer) => parts.push(d));
  s.on('close', () => (closed = true));
  s.on('error', () => {});
  return { data: () => Buffer.concat(parts), closed: () => closed };
}

const has = (r: Rig, op: number) => () => r.got.some((p) => p.hdr.op === op);

describe('Firecracker hybrid vsock over a Unix socket', () => {
  it('host-initiated: CONNECT <port>\\n → the guest gets REQUEST; on RESPONSE the client reads OK <host port>\\n, then data both ways', async () => {
    const r = rig!;
    const c = net.connect(r.uds);
    const rd = readAll(c);
    c.write('CONNECT 1234\nearly bytes');
    await r.until(has(r, VIRTIO_VSOCK_OP_REQUEST), 'REQUEST');
    const req = r.take(VIRTIO_VSOCK_OP_REQUEST);
    expect(req.hdr).toMatchObject({ srcPort: LOCAL_PORT_MIN, dstPort: 1234, bufAlloc: BUF_ALLOC });
    expect(rd.data().length).toBe(0); // nothing before the guest accepted
    r.g.send({ op: VIRTIO_VSOCK_OP_RESPONSE, srcPort: 1234, dstPort: req.hdr.srcPort });
    await r.until(() => rd.data().length >= 14 && has(r, VIRTIO_VSOCK_OP_RW)(), 'OK and the early bytes');
    expect(rd.data().toString()).toBe(`OK ${LOCAL_PORT_MIN}\n`);
    expect(Buffer.from(r.take(VIRTIO_VSOCK_OP_RW).data).toString()).toBe('early bytes');
    // guest → host
    const a = pattern(100_000, 7);
    for (let o = 0; o < a.length; o += 4096) r.g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1234, dstPort: LOCAL_PORT_MIN }, a.subarray(o, o + 4096));
    await r.until(() => rd.data().length === 14 + a.length, 'guest data at the client');
    expectSameBytes(rd.data().subarray(14), a);
    // host → guest
    const b = pattern(50_000, 8);
    c.write(b);
    await r.until(() => r.got.filter((p) => p.hdr.op === VIRTIO_VSOCK_OP_RW).reduce((s, p) => s + p.data.length, 0) === b.length, 'client data at the guest');
    expectSameBytes(concat(r.got.filter((p) => p.hdr.op === VIRTIO_VSOCK_OP_RW).map((p) => p.data)), b);
    // the client closes: the guest sees SHUTDOWN
    c.end();
    await r.until(has(r, VIRTIO_VSOCK_OP_SHUTDOWN), 'SHUTDOWN');
    // the counters are in the shared control SAB (vm.vsockStats() reads them on the main thread)
    expect(readVsockStats(r.params)).toMatchObject({ connectionsOpened: 1, bytesToHost: a.length, bytesToGuest: b.length + 11 });
  });

  it('refusals close the client without writing anything: a bad command, a guest RST', async () => {
    const r = rig!;
    const bad = net.connect(r.uds);
    const rb = readAll(bad);
    bad.write('HELLO 1234\n');
    await r.until(rb.closed, 'bad command closed');
    expect(rb.data().length).toBe(0);

    const c = net.connect(r.uds);
    const rc = readAll(c);
    c.write('CONNECT 99\n');
    await r.until(has(r, VIRTIO_VSOCK_OP_REQUEST), 'REQUEST');
    const req = r.take(VIRTIO_VSOCK_OP_REQUEST);
    r.g.send({ op: VIRTIO_VSOCK_OP_RST, srcPort: 99, dstPort: req.hdr.srcPort });
    await r.until(rc.closed, 'refused client closed');
    expect(rc.data().length).toBe(0);
  });

  it('guest-initiated: (CID 2, port P) connects to <uds>_P; nothing listening there → RST', async () => {
    const r = rig!;
    const accepted: net.Socket[] = [];
    const server = net.createServer((s) => accepted.push(s));
    await new Promise<void>((res) => server.listen(`${r.uds}_5678`, res));
    try {
      r.g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 40000, dstPort: 5678 });
      await r.until(has(r, VIRTIO_VSOCK_OP_RESPONSE), 'RESPONSE');
      expect(r.take(VIRTIO_VSOCK_OP_RESPONSE).hdr).toMatchObject({ srcPort: 5678, dstPort: 40000 });
      await r.until(() => accepted.length === 1, 'accepted');
      const rd = readAll(accepted[0]);
      r.g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 40000, dstPort: 5678 }, Buffer.from('ping'));
      await r.until(() => rd.data().toString() === 'ping', 'ping');
      accepted[0].write('pong');
      await r.until(has(r, VIRTIO_VSOCK_OP_RW), 'pong');
      expect(Buffer.from(r.take(VIRTIO_VSOCK_OP_RW).data).toString()).toBe('pong');
      r.g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 40001, dstPort: 5679 });
      await r.until(has(r, VIRTIO_VSOCK_OP_RST), 'RST');
      expect(r.take(VIRTIO_VSOCK_OP_RST).hdr).toMatchObject({ srcPort: 5679, dstPort: 40001 });
    } finally {
      for (const s of accepted) s.destroy();
      await new Promise((res) => server.close(res));
    }
  });

  it('a slow host reader stalls the guest writer: at most buf_alloc held by kindling, every byte arrives in order', async () => {
    const r = rig!;
    const accepted: net.Socket[] = [];
    const server = net.createServer((s) => {
      s.pause();
      accepted.push(s);
    });
    await new Promise<void>((res) => server.listen(`${r.uds}_6000`, res));
    try {
      r.g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 41000, dstPort: 6000 });
      await r.until(() => accepted.length === 1 && has(r, VIRTIO_VSOCK_OP_RESPONSE)(), 'connected');
      r.take(VIRTIO_VSOCK_OP_RESPONSE);
      const total = 8 * 1024 * 1024;
      const data = pattern(total, 5);
      let sent = 0;
      let fwd = 0;
      let maxHeld = 0;
      let stalledAt = -1;
      const pump = (): void => {
        for (const p of r.got.splice(0)) if (p.hdr.op === VIRTIO_VSOCK_OP_CREDIT_UPDATE) fwd = Math.max(fwd, p.hdr.fwdCnt);
        let credit = BUF_ALLOC - (sent - fwd);
        while (credit > 0 && sent < total) {
          const n = Math.min(4096, credit, total - sent);
          r.g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 41000, dstPort: 6000 }, data.subarray(sent, sent + n));
          sent += n;
          credit -= n;
        }
        for (const c of r.backend.mux.connections()) maxHeld = Math.max(maxHeld, c.unflushed);
      };
      // the reader does not read: the guest must stall well before 8 MiB
      for (let i = 0; i < 200; i++) {
        pump();
        await tick();
      }
      stalledAt = sent;
      expect(stalledAt).toBeLessThan(total);
      expect(maxHeld).toBeLessThanOrEqual(BUF_ALLOC);
      // now it reads everything
      const rd = readAll(accepted[0]);
      accepted[0].resume();
      await r.until(() => {
        pump();
        return rd.data().length === total;
      }, 'all bytes at the reader', 20000);
      expectSameBytes(rd.data(), data);
      expect(maxHeld).toBeLessThanOrEqual(BUF_ALLOC);
    } finally {
      for (const s of accepted) s.destroy();
      await new Promise((res) => server.close(res));
    }
  });

  it('closing the device closes every host socket', async () => {
    const r = rig!;
    const c = net.connect(r.uds);
    const rc = readAll(c);
    c.write('CONNECT 1\n');
    await r.until(has(r, VIRTIO_VSOCK_OP_REQUEST), 'REQUEST');
    const req = r.take(VIRTIO_VSOCK_OP_REQUEST);
    r.g.send({ op: VIRTIO_VSOCK_OP_RESPONSE, srcPort: 1, dstPort: req.hdr.srcPort });
    await r.until(() => rc.data().length > 0, 'OK');
    r.backend.close();
    await r.until(rc.closed, 'client closed');
  });
});

describe('in-process bridge (vm.vsock)', () => {
  it('connect(port) resolves with a Duplex once the guest accepts; data both ways', async () => {
    const r = rig!;
    const bridge = new VsockBridge(addon, r.params);
    try {
      const p = bridge.connect(1234);
      await r.until(has(r, VIRTIO_VSOCK_OP_REQUEST), 'REQUEST');
      const req = r.take(VIRTIO_VSOCK_OP_REQUEST);
      r.g.send({ op: VIRTIO_VSOCK_OP_RESPONSE, srcPort: 1234, dstPort: req.hdr.srcPort });
      const s = await p;
      const rd = readAll(s);
      s.write('to guest');
      await r.until(has(r, VIRTIO_VSOCK_OP_RW), 'data at the guest');
      expect(Buffer.from(r.take(VIRTIO_VSOCK_OP_RW).data).toString()).toBe('to guest');
      r.g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1234, dstPort: req.hdr.srcPort }, Buffer.from('to host'));
      await r.until(() => rd.data().toString() === 'to host', 'data at the host');
      s.destroy();
      // a refusal rejects
      const q = bridge.connect(4321);
      await r.until(has(r, VIRTIO_VSOCK_OP_REQUEST), 'REQUEST 2');
      const req2 = r.take(VIRTIO_VSOCK_OP_REQUEST);
      r.g.send({ op: VIRTIO_VSOCK_OP_RST, srcPort: 4321, dstPort: req2.hdr.srcPort });
      await expect(q).rejects.toThrow(/guest port 4321 refused/);
      await expect(bridge.connect(-1)).rejects.toThrow(/port/);
    } finally {
      bridge.close();
    }
  });

  it('listen(port) gets guest connections to (CID 2, port) as sockets; an unlistened port gets RST', async () => {
    const r = rig!;
    const bridge = new VsockBridge(addon, r.params);
    const sockets: net.Socket[] = [];
    try {
      const l = bridge.listen(7000, (s) => sockets.push(s));
      expect(() => bridge.listen(7000, () => {})).toThrow(/already/);
      await tick();
      await tick();
      r.g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 50000, dstPort: 7000 });
      await r.until(() => sockets.length === 1 && has(r, VIRTIO_VSOCK_OP_RESPONSE)(), 'connection');
      const rd = readAll(sockets[0]);
      r.g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 50000, dstPort: 7000 }, Buffer.from('hello'));
      await r.until(() => rd.data().toString() === 'hello', 'hello');
      sockets[0].end('bye');
      await r.until(() => r.got.some((p) => p.hdr.op === VIRTIO_VSOCK_OP_RW && Buffer.from(p.data).toString() === 'bye'), 'bye');
      await r.until(has(r, VIRTIO_VSOCK_OP_SHUTDOWN), 'SHUTDOWN after the host end');
      l.close();
      await tick();
      await tick();
      r.g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 50001, dstPort: 7000 });
      await r.until(has(r, VIRTIO_VSOCK_OP_RST), 'RST once unlistened');
    } finally {
      for (const s of sockets) s.destroy();
      bridge.close();
    }
  });

  it('before the driver is up: a client is refused (closed), but listen() is kept; vm.vsock before start() waits', async () => {
    const r = rig!;
    r.active.on = false;
    const c = net.connect(r.uds);
    const rc = readAll(c);
    c.write('CONNECT 5\n');
    await r.until(rc.closed, 'client refused while the driver is down');
    expect(rc.data().length).toBe(0);

    const handle = new DeferredVsock();
    const sockets: net.Socket[] = [];
    handle.listen(8000, (s) => sockets.push(s));
    const early = handle.connect(1234).then(
      () => 'connected',
      (e: Error) => e.message,
    );
    handle.attach(new VsockBridge(addon, r.params));
    await tick();
    await tick();
    r.active.on = true;
    try {
      // the listen registered while the driver was down holds
      r.g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 60000, dstPort: 8000 });
      await r.until(() => sockets.length === 1, 'guest connection to the early listener');
      // the early connect was refused (no driver when it arrived): it rejects with one line
      expect(await early).toMatch(/guest port 1234 refused/);
      // now it works
      const p = handle.connect(1234);
      await r.until(has(r, VIRTIO_VSOCK_OP_REQUEST), 'REQUEST');
      const req = r.take(VIRTIO_VSOCK_OP_REQUEST);
      r.g.send({ op: VIRTIO_VSOCK_OP_RESPONSE, srcPort: 1234, dstPort: req.hdr.srcPort });
      (await p).destroy();
    } finally {
      for (const s of sockets) s.destroy();
      handle.close();
    }
    await expect(handle.connect(1)).rejects.toThrow(/stopped/);
    expect(() => handle.listen(1, () => {})).toThrow(/stopped/);
  });

  it('a connect() waiting for the device is rejected when the VM stops', async () => {
    const handle = new DeferredVsock();
    const p = handle.connect(1);
    handle.close();
    await expect(p).rejects.toThrow(/stopped/);
  });
});
