// virtio-net's backend on hostile rings, with the passt port (StreamPort) on a real socketpair: any
// interleaving of tx chains (good and hostile: loops, buffers outside RAM, wrong directions, bad
// indirect tables, huge lengths; with an all-zero header or garbage), rx chains of the same kinds,
// frames from the host side (1..2000 bytes, some longer than the driver takes, some written in two
// pieces so the stream hands out half a frame) and kicks; with and without MRG_RXBUF. Checked after
// every step against a model of guest RAM and of the wire:
// - the device writes nothing but the first `used.len` bytes of an rx chain's writable buffers (and
//   the used rings); every chain completes (tx with 0, rejected rx with 0), nothing throws;
// - the frames on the host side are exactly the tx chains that are well-formed with a valid header
//   and an Ethernet-sized frame, in order, byte for byte (qemu's stream framing intact);
// - the frames the guest receives are exactly the host's frames up to 1518 bytes, in order, byte for
//   byte, split over 1 or (MRG_RXBUF) more chains as num_buffers in the first chain's header says.
import { readSync, writeSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { NET_RX, NET_TX, NET_COUNTERS, NetBackend, VIRTIO_NET_F_MRG_RXBUF, readNetCounters } from '../../src/devices/virtio/net/backend.js';
import { NO_OFFLOADS, VIRTIO_NET_HDR_LEN, decodeNetHeader, validateTxHeader } from '../../src/devices/virtio/net/header.js';
import { StreamPort } from '../../src/devices/virtio/net/passt.js';
import { loadAddon } from '../../src/kvm/addon.js';
import { runs } from '../fuzz/budget.js';
import { ModelRam, benchQueue, chainArb, inRam, selfOverlaps, simpleChain, usedRingBytes, walkChain, type ChainSpec, type QueueLayout, type Range } from './virtq-model.js';
import { STUB_ENV } from './net-port-stub.js';

const addon = loadAddon();
const RX: QueueLayout = { size: 16, desc: 0x1000, avail: 0x2000, used: 0x3000 };
const TX: QueueLayout = { size: 16, desc: 0x5000, avail: 0x6000, used: 0x7000 };
const MAX_FRAME = 1500 + 18;

type Step =
  | { k: 'tx'; spec: ChainSpec; hdr: 'zero' | 'garbage'; seed: number }
  | { k: 'rx'; spec: ChainSpec }
  | { k: 'host'; n: number; split: number; seed: number }
  | { k: 'kick'; q: number };

const txChain = chainArb({ writeTenths: 1, big: [12, 13, 26, 100, 1530, 1600], small: 300 });
const rxChain = chainArb({ writeTenths: 9, big: [11, 12, 13, 100, 1530, 1600, 4096], small: 600 });
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ k: fc.constant('tx' as const), spec: txChain, hdr: fc.constantFrom('zero' as const, 'garbage' as const), seed: fc.nat() }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('rx' as const), spec: rxChain }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('host' as const), n: fc.oneof(fc.integer({ min: 1, max: 1600 }), fc.constantFrom(14, 1518, 1519, 2000)), split: fc.nat(), seed: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('kick' as const), q: fc.nat({ max: 1 }) }) },
);

function firstReadable(spec: ChainSpec): { addr: number; len: number } | undefined {
  const b = [...spec.bufs, ...(spec.table?.bufs ?? [])].find((x) => !x.write);
  if (!b || b.len < VIRTIO_NET_HDR_LEN || b.len > 0x4000 || !inRam(b.addr, b.len)) return undefined;
  return { addr: Number(b.addr), len: b.len };
}

/** Model RAM with the two rings, and a non-blocking socketpair: the device's end and the host's (a StreamPort's peer). */
function rig(indirect: boolean) {
  const ram = new ModelRam();
  const rx = benchQueue(ram, RX, { index: NET_RX, indirect });
  const tx = benchQueue(ram, TX, { index: NET_TX, indirect });
  const [dev, host] = addon.socketpair();
  fds.push(dev, host);
  addon.setNonblocking(dev, true);
  addon.setNonblocking(host, true);
  return { ram, rx, tx, dev, host };
}

/** Everything readable now on a non-blocking fd. */
function drain(fd: number): Buffer {
  const parts: Buffer[] = [];
  const b = Buffer.alloc(65536);
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, b, 0, b.length, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') break;
      throw e;
    }
    if (n <= 0) break;
    parts.push(Buffer.from(b.subarray(0, n)));
  }
  return Buffer.concat(parts);
}

const fds: number[] = [];
afterAll(() => {
  for (const fd of fds) addon.close(fd);
});

describe('virtio-net on hostile rings (passt stream port on a socketpair)', () => {
  it('writes only published rx bytes; the wire carries exactly the valid tx frames and the guest exactly the host frames that fit', () => {
    const cover = { rxFrames: 0, multiChain: 0, rxRejected: 0, txFrames: 0, dropped: 0, halves: 0, drained: 0 };
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 1, maxLength: 40 }), fc.boolean(), fc.boolean(), (steps, indirect, mrg) => {
        const { ram, rx, tx, dev, host } = rig(indirect);
        const counters = new SharedArrayBuffer(8 * NET_COUNTERS.length);
        const backend = new NetBackend({
          port: new StreamPort(addon, dev),
          counters,
          mtu: 1500,
          env: STUB_ENV,
        });
        backend.activate({ mem: ram.mem, features: (1n << 32n) | (mrg ? 1n << BigInt(VIRTIO_NET_F_MRG_RXBUF) : 0n), queues: [rx.aq, tx.aq] });
        const wantTx: Uint8Array[] = [];
        const wantRx: Uint8Array[] = [];
        let wire = Buffer.alloc(0);
        const rxWalk = new Map<number, ReturnType<typeof walkChain>>();
        const outstanding = new Map<number, Range[]>();
        // A frame being reassembled from its chains: its bytes so far and how many chains remain.
        let part: { bytes: Uint8Array[]; left: number; exact: boolean } | undefined;
        const run = { rx: 0, tx: 0, dropped: 0 };
        let rxUnknown = false;
        // Chains the device has popped and not published (the avail entries it has consumed).
        const postedAt = new Map<number, number>();
        let posted = 0;
        const heldByDevice = (head: number): boolean => (postedAt.get(head) ?? Infinity) < rx.aq.queue.lastAvailIdx;
        const settle = (): void => {
          for (const u of tx.drv.takeUsed()) expect(u.len).toBe(0);
          for (const u of rx.drv.takeUsed()) {
            const w = rxWalk.get(u.id)!;
            rxWalk.delete(u.id);
            outstanding.delete(u.id);
            postedAt.delete(u.id);
            if (!w.ok) {
              expect(u.len).toBe(0);
              cover.rxRejected++;
              continue;
            }
            expect(u.len).toBeLessThanOrEqual(w.writableBytes);
            const bytes = ram.readReal(w.writable, u.len);
            ram.acceptDeviceWrite(w.writable, bytes);
            if (u.len === 0) {
              expect(part, 'an unused chain inside a frame').toBeUndefined();
              continue;
            }
            const exact = !selfOverlaps(w.writable, u.len);
            // A chain whose buffers overlap each other hides what the device wrote first (num_buffers
            // among it): from there on this run checks RAM and lengths only, not frame boundaries.
            if (rxUnknown || (!part && !exact)) {
              rxUnknown = true;
              continue;
            }
            if (!part) {
              expect(u.len).toBeGreaterThanOrEqual(VIRTIO_NET_HDR_LEN);
              const h = decodeNetHeader(bytes);
              if (exact) {
                expect({ ...h, numBuffers: 0 }).toEqual({ flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0, numBuffers: 0 });
                expect(h.numBuffers).toBeGreaterThanOrEqual(1);
                if (!mrg) expect(h.numBuffers).toBe(1);
              }
              part = { bytes: [bytes.subarray(VIRTIO_NET_HDR_LEN)], left: (exact ? h.numBuffers : 1) - 1, exact };
            } else {
              part.bytes.push(bytes);
              part.exact &&= exact;
              part.left--;
            }
            if (part.left === 0) {
              const got = Buffer.concat(part.bytes);
              const want = wantRx.shift();
              expect(want, 'a frame the host never sent').toBeDefined();
              if (part.exact) expect(Buffer.compare(got, Buffer.from(want!))).toBe(0);
              if (part.bytes.length > 1) cover.multiChain++;
              cover.rxFrames++;
              run.rx++;
              part = undefined;
            }
          }
          ram.adopt(RX.used, usedRingBytes(RX));
          ram.adopt(TX.used, usedRingBytes(TX));
          // A frame the stream has handed out in part is already in the buffers the device holds (its
          // own until it publishes them: their content is checked when the frame is published).
          for (const [head, w] of rxWalk) if (w.ok && heldByDevice(head)) for (const r of w.writable) ram.adopt(r.gpa, r.len);
          ram.expectSame('guest RAM');
          wire = Buffer.concat([wire, drain(host)]);
          while (wire.length >= 4 && wire.length >= 4 + wire.readUInt32BE(0)) {
            const n = wire.readUInt32BE(0);
            const f = wire.subarray(4, 4 + n);
            wire = wire.subarray(4 + n);
            const want = wantTx.shift();
            expect(want, 'a frame no valid chain carried').toBeDefined();
            expect(Buffer.compare(f, Buffer.from(want!))).toBe(0);
            cover.txFrames++;
            run.tx++;
          }
        };
        for (const s of steps) {
          if (s.k === 'tx') {
            const head = tx.drv.post(s.spec);
            if (head === undefined) continue;
            tx.drv.fillReadable(s.spec, s.seed);
            const f = firstReadable(s.spec);
            if (f && s.hdr === 'zero') ram.write(f.addr, new Uint8Array(VIRTIO_NET_HDR_LEN));
            const w = walkChain(ram, { desc: TX.desc, size: TX.size, indirect }, head);
            if (w.ok && w.readableBytes >= VIRTIO_NET_HDR_LEN) {
              const h = decodeNetHeader(ram.readModel(w.readable, 0, VIRTIO_NET_HDR_LEN));
              const len = w.readableBytes - VIRTIO_NET_HDR_LEN;
              if (validateTxHeader(h, len, MAX_FRAME, NO_OFFLOADS).ok) wantTx.push(ram.readModel(w.readable, VIRTIO_NET_HDR_LEN, len));
            }
            backend.processQueue(NET_TX);
          } else if (s.k === 'rx') {
            // As in the vsock property: a chain whose buffers the device's own writes to outstanding
            // chains would rewrite (or that would rewrite theirs) is not posted.
            const mine = [...s.spec.bufs, ...(s.spec.table?.bufs ?? [])].filter((b) => b.write).map((b) => ({ gpa: Number(b.addr), len: b.len }));
            const table = s.spec.table ? { gpa: Number(s.spec.table.at), len: 16 * s.spec.table.bufs.length } : undefined;
            const hits = (a: Range, b: Range): boolean => a.gpa < b.gpa + b.len && b.gpa < a.gpa + a.len;
            const out = [...outstanding.values()].flat();
            if (table && [...out, ...mine].some((w) => hits(w, table))) continue;
            if (mine.some((w) => out.some((o) => hits(w, o)))) continue;
            const head = rx.drv.post(s.spec);
            if (head === undefined) continue;
            outstanding.set(head, mine);
            postedAt.set(head, posted++);
            rxWalk.set(head, walkChain(ram, { desc: RX.desc, size: RX.size, indirect }, head));
            backend.processQueue(NET_RX);
          } else if (s.k === 'host') {
            const frame = new Uint8Array(s.n).map((_, i) => (s.seed + i * 7) & 0xff);
            const msg = Buffer.alloc(4 + s.n);
            msg.writeUInt32BE(s.n, 0);
            msg.set(frame, 4);
            if (s.n <= MAX_FRAME) wantRx.push(frame);
            else {
              cover.dropped++;
              run.dropped++;
            }
            const cut = s.split % (msg.length + 1);
            writeSync(host, msg, 0, cut);
            if (cut > 0 && cut < msg.length) {
              backend.processQueue(NET_RX);
              settle();
              cover.halves++;
            }
            writeSync(host, msg, cut, msg.length - cut);
            backend.processQueue(NET_RX);
          } else backend.processQueue(s.q);
          settle();
        }
        // A last frame from the host (the stream must still be in step after whatever came before),
        // then the driver posts plain 1530-byte buffers until every frame that fits has arrived: none is lost.
        const probe = new Uint8Array(100).map((_, i) => 0xa5 ^ i);
        const msg = Buffer.alloc(104);
        msg.writeUInt32BE(100, 0);
        msg.set(probe, 4);
        writeSync(host, msg);
        wantRx.push(probe);
        backend.processQueue(NET_RX);
        settle();
        let fresh = 0;
        for (let i = 0; i < 64 && (wantRx.length > 0 || part); i++) {
          const out = [...outstanding.values()].flat();
          const at = [0x60000, 0x60800, 0x61000, 0x61800, 0x62000, 0x62800, 0x63000, 0x63800, 0x64000, 0x64800, 0x65000, 0x65800].find(
            (a) => !out.some((o) => a < o.gpa + o.len && o.gpa < a + 1530),
          );
          if (at === undefined) break;
          const spec: ChainSpec = { bufs: [{ addr: BigInt(at), len: 1530, write: true }], table: null, corrupt: 'none' };
          const head = rx.drv.post(spec);
          if (head === undefined) break;
          outstanding.set(head, [{ gpa: at, len: 1530 }]);
          postedAt.set(head, posted++);
          fresh++;
          rxWalk.set(head, walkChain(ram, { desc: RX.desc, size: RX.size, indirect }, head));
          backend.processQueue(NET_RX);
          settle();
        }
        // Two whole-frame buffers posted (or none needed): whatever the device already held, it had room.
        if (!rxUnknown && (fresh >= 2 || wantRx.length === 0)) {
          expect(wantRx.length, 'frames that fit were lost').toBe(0);
          cover.drained++;
        }
        // The counters agree with what the guest and the wire saw; no valid tx frame is missing.
        const c = readNetCounters(counters);
        if (!rxUnknown) expect(c.rxFrames).toBe(run.rx);
        expect(c.txFrames).toBe(run.tx);
        expect(c.rxDropped).toBeLessThanOrEqual(run.dropped);
        expect(wantTx).toEqual([]);
        backend.close();
      }),
      { numRuns: runs(120), ...(process.env.NET_SEED ? { seed: Number(process.env.NET_SEED), path: process.env.NET_PATH, endOnFailure: true } : {}) },
    );
    expect(cover.rxFrames).toBeGreaterThan(0);
    expect(cover.multiChain).toBeGreaterThan(0);
    expect(cover.rxRejected).toBeGreaterThan(0);
    expect(cover.txFrames).toBeGreaterThan(0);
    expect(cover.dropped).toBeGreaterThan(0);
    expect(cover.halves).toBeGreaterThan(0);
    expect(cover.drained).toBeGreaterThan(0);
    if (process.env.NET_COVER) console.log(cover);
  });
});

describe('virtio-net receive without buffers', () => {
  it('rxNoBuffers counts each time the ring runs dry, once per dry spell; a frame that waited is delivered when a buffer comes', () => {
    const { ram, rx, tx, dev, host } = rig(false);
    const counters = new SharedArrayBuffer(8 * NET_COUNTERS.length);
    const backend = new NetBackend({ port: new StreamPort(addon, dev), counters, mtu: 1500, env: STUB_ENV });
    const frame = (n: number): void => {
      const msg = Buffer.alloc(4 + n, n);
      msg.writeUInt32BE(n, 0);
      writeSync(host, msg);
    };
    rx.drv.post(simpleChain([[0x9000, 1530]], true));
    frame(60);
    frame(70);
    backend.activate({ mem: ram.mem, features: 1n << 32n, queues: [rx.aq, tx.aq] });
    // The first frame takes the one buffer; the second finds the ring dry and waits.
    expect(readNetCounters(counters)).toMatchObject({ rxNoBuffers: 1, rxFrames: 1, rxBytes: 60 });
    expect(rx.drv.takeUsed().map((u) => u.len)).toEqual([VIRTIO_NET_HDR_LEN + 60]);
    rx.drv.post(simpleChain([[0x9800, 1530]], true));
    rx.drv.post(simpleChain([[0xa000, 1530]], true));
    backend.processQueue(NET_RX); // the driver's kick: the waiting frame goes in, one buffer stays
    expect(readNetCounters(counters)).toMatchObject({ rxNoBuffers: 1, rxFrames: 2, rxBytes: 130 });
    expect(rx.drv.takeUsed().map((u) => u.len)).toEqual([VIRTIO_NET_HDR_LEN + 70]);
    frame(80);
    frame(90);
    backend.processQueue(NET_RX); // (a port wake-up, as the I/O worker's watcher would give): 80 fits, 90 runs it dry
    expect(readNetCounters(counters)).toMatchObject({ rxNoBuffers: 2, rxFrames: 3, rxQueueEvents: 2, txQueueEvents: 0 });
    backend.close();
  });
});

describe('virtio-net rate limiters at run time (reconfigure)', () => {
  it('a tx limiter holds frames back; reconfigure with txRate null sends them at once, one with a new limiter applies it', async () => {
    let t = 0;
    const { ram, rx, tx, dev, host } = rig(false);
    const guarded: string[] = [];
    const counters = new SharedArrayBuffer(8 * NET_COUNTERS.length);
    const backend = new NetBackend({
      port: new StreamPort(addon, dev),
      counters,
      mtu: 1500,
      env: { pollFd: () => ({ set: () => undefined, close: () => undefined }), log: () => undefined, guarded: (fn) => (guarded.push('g'), fn()) },
      // one frame per second
      txRate: { ops: { size: 1, refillTimeMs: 1000 } },
      now: () => t,
    });
    const frame = (i: number): void => {
      const at = 0x9000 + 0x100 * i;
      ram.write(at, new Uint8Array(VIRTIO_NET_HDR_LEN));
      ram.write(at + VIRTIO_NET_HDR_LEN, new Uint8Array(60).fill(i + 1));
      tx.drv.post(simpleChain([[at, VIRTIO_NET_HDR_LEN + 60]], false));
    };
    /** Frames on the wire (4-byte big-endian length, then the frame): their first bytes. */
    let wire = Buffer.alloc(0);
    const sent = (): number[] => {
      wire = Buffer.concat([wire, drain(host)]);
      const out: number[] = [];
      for (let o = 0; o + 4 <= wire.length; o += 4 + wire.readUInt32BE(o)) out.push(wire[o + 4]);
      return out;
    };
    for (let i = 0; i < 5; i++) frame(i);
    backend.activate({ mem: ram.mem, features: 1n << 32n, queues: [rx.aq, tx.aq] });
    // The full bucket pays the first; the second is let through and puts it in debt (paid after).
    expect(sent()).toEqual([1, 2]);
    expect(readNetCounters(counters).txThrottled).toBe(1);
    t = 500;
    backend.processQueue(NET_TX); // a kick while in debt: the resume timer is already armed
    expect(sent()).toEqual([1, 2]);
    expect(readNetCounters(counters).txThrottled).toBe(1);
    backend.reconfigure({ txRate: null });
    expect(sent()).toEqual([1, 2, 3, 4, 5]);
    expect(guarded.length).toBeGreaterThan(0);
    // A new limiter (full bucket of 1) applies to what comes next; rxRate left out keeps rx unlimited.
    backend.reconfigure({ txRate: { ops: { size: 1, refillTimeMs: 1000 } } });
    for (let i = 5; i < 8; i++) frame(i);
    backend.processQueue(NET_TX);
    expect(sent()).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(readNetCounters(counters)).toMatchObject({ txThrottled: 2, rxThrottled: 0, txFrames: 7 });
    expect(() => backend.reconfigure(null)).toThrow(/reconfiguration must be/);
    backend.close();
  });
});
