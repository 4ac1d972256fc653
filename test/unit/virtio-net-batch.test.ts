// virtio-net's batched receive path (NetBackend.batchReceive with a port that reads whole frames, as
// a tap does through readvBatch) against the per-frame path, differentially: the same rx chains
// (whole-frame buffers, small ones that MRG_RXBUF gathers, ones too short for the header, some across
// the RAM slot edge) and the same host frames (1..2000 bytes, some longer than the driver takes) go
// to two backends over two guest RAMs, one whose port has receiveBatch and one whose port has not.
// Both must publish the same frames with the same used lengths, in order: the frames the host sent
// that fit, byte for byte, each behind the header the port wrote and the num_buffers the device
// wrote; chains too short complete unused; frames too long are dropped and counted alike. (Which
// chain carries a frame may differ after a refused frame.) A final drain with plain 1530-byte buffers
// gets every frame out of both. And the addon's readvBatch itself on /dev/zero and a socketpair.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NET_COUNTERS, NET_RX, NET_TX, NetBackend, RECV_AGAIN, RECV_DROPPED, VIRTIO_NET_F_MRG_RXBUF, readNetCounters, type NetPort } from '../../src/devices/virtio/net/backend.js';
import { VIRTIO_NET_HDR_LEN } from '../../src/devices/virtio/net/header.js';
import type { PackedIov } from '../../src/devices/virtio/iovec.js';
import { openSync, closeSync, writeSync } from 'node:fs';
import { loadAddon } from '../../src/kvm/addon.js';
import { runs } from '../fuzz/budget.js';
import { ModelRam, benchQueue, simpleChain, type QueueLayout } from './virtq-model.js';
import { PortStub, STUB_ENV } from './net-port-stub.js';

const RX: QueueLayout = { size: 32, desc: 0x1000, avail: 0x2000, used: 0x3000 };
const TX: QueueLayout = { size: 8, desc: 0x5000, avail: 0x6000, used: 0x7000 };
const MAX_FRAME = 1500 + 18;
/** What the fake tap writes as the first 10 header bytes (the kernel's virtio_net_hdr); 10..11 are left alone, as tun leaves them. */
const TAP_HDR = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xee, 0xee]);

/** A tap in memory: every read is one whole frame, [header, frame], or a refusal when it does not fit (tun's EFAULT). */
class FakeTap extends PortStub {
  readonly frames: Uint8Array[] = [];
  /** Frames read by batch calls that read two or more. */
  batched = 0;
  receiveBatch?: NetPort['receiveBatch'];

  constructor(batch: boolean) {
    super();
    if (batch) this.receiveBatch = (iov, counts, n, lengths) => this.batch(iov, counts, n, lengths);
  }

  /** Copy the next frame into triples [first, first + count); its length with header, 0 when refused, -1 when none. */
  private readInto(iov: PackedIov, first: number, count: number): number {
    const f = this.frames.shift();
    if (!f) return -1;
    let room = 0;
    for (let i = first; i < first + count; i++) room += iov.iov[3 * i + 2];
    const bytes = new Uint8Array(VIRTIO_NET_HDR_LEN + f.length);
    bytes.set(TAP_HDR);
    bytes.set(f, VIRTIO_NET_HDR_LEN);
    if (bytes.length > room) return 0;
    let pos = 0;
    for (let i = first; i < first + count && pos < bytes.length; i++) {
      const [b, off, len] = [iov.iov[3 * i], iov.iov[3 * i + 1], iov.iov[3 * i + 2]];
      const k = Math.min(len, bytes.length - pos);
      new Uint8Array(iov.buffers[b], off, k).set(bytes.subarray(pos, pos + k));
      pos += k;
    }
    return bytes.length;
  }

  override receive(iov: PackedIov): number {
    const n = this.readInto(iov, 0, iov.count);
    if (n < 0) return RECV_AGAIN;
    if (n === 0) return RECV_DROPPED;
    return n - VIRTIO_NET_HDR_LEN;
  }

  private batch(iov: PackedIov, counts: Uint32Array, n: number, lengths: Float64Array): number {
    let first = 0;
    let done = 0;
    for (let i = 0; i < n; i++) {
      expect(counts[i]).toBeLessThanOrEqual(64);
      const r = this.readInto(iov, first, counts[i]);
      first += counts[i];
      if (r < 0) break;
      lengths[i] = r;
      done++;
    }
    if (done >= 2) this.batched += done;
    return done;
  }

}

type Step = { k: 'rx'; lens: number[] } | { k: 'host'; n: number; seed: number; notify: boolean } | { k: 'kick' };
const bufLen = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(1530, 1600, 4096) }, { weight: 2, arbitrary: fc.constantFrom(100, 512, 700) }, { weight: 1, arbitrary: fc.constantFrom(4, 11, 12, 13) });
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ k: fc.constant('rx' as const), lens: fc.array(bufLen, { minLength: 1, maxLength: 2 }) }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('host' as const), n: fc.oneof(fc.integer({ min: 1, max: 1600 }), fc.constantFrom(14, 1518, 1519, 2000)), seed: fc.nat(), notify: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('kick' as const) }) },
);

interface World {
  ram: ModelRam;
  backend: NetBackend;
  tap: FakeTap;
  rx: ReturnType<typeof benchQueue>;
  counters: SharedArrayBuffer;
  used: Array<{ id: number; len: number }>;
}

function world(batch: boolean, mrg: boolean): World {
  const ram = new ModelRam();
  const rx = benchQueue(ram, RX, { index: NET_RX, indirect: false });
  const tx = benchQueue(ram, TX, { index: NET_TX, indirect: false });
  const tap = new FakeTap(batch);
  const counters = new SharedArrayBuffer(8 * NET_COUNTERS.length);
  const backend = new NetBackend({ port: tap, counters, mtu: 1500, env: STUB_ENV });
  backend.activate({ mem: ram.mem, features: (1n << 32n) | (mrg ? 1n << BigInt(VIRTIO_NET_F_MRG_RXBUF) : 0n), queues: [rx.aq, tx.aq] });
  return { ram, backend, tap, rx, counters, used: [] };
}

describe('virtio-net batched receive (readvBatch) vs per-frame receive', () => {
  it('publishes the same frames in the same order, byte for byte, with the same lengths; drops and short chains alike', () => {
    const cover = { batchFrames: 0, batched: 0, multiChain: 0, dropped: 0, short: 0 };
    fc.assert(
      fc.property(fc.array(stepArb, { minLength: 1, maxLength: 50 }), fc.boolean(), (steps, mrg) => {
        const worlds = [world(true, mrg), world(false, mrg)];
        // Buffers: bump-allocated from 0x10000 (crossing the slot edge at 0x20000), never reused.
        let next = 0x10000;
        const chains = new Map<number, Array<{ gpa: number; len: number }>>();
        const want: Uint8Array[] = [];
        const post = (lens: number[]): boolean => {
          if (lens.reduce((a, b) => a + b, 0) + next > 0x40000) return false;
          const bufs = lens.map((len) => {
            const b = { gpa: next, len };
            next += len;
            return b;
          });
          const heads = worlds.map((w) => w.rx.drv.post(simpleChain(bufs.map((b) => [b.gpa, b.len]), true)));
          if (heads[0] === undefined || heads[1] === undefined) return false;
          expect(heads[0]).toBe(heads[1]);
          chains.set(heads[0], bufs);
          return true;
        };
        const settle = (): void => {
          for (const w of worlds) w.used.push(...w.rx.drv.takeUsed());
        };
        // Receive pops are quiet (the driver's kicks are wanted only while the device is out of
        // buffers): after the device was woken, frames still waiting in the tap mean it ran dry (at
        // most 50 frames, under one wake-up's budget), so used.flags must ask for the driver's next
        // kick, else that kick is lost and the frames wait forever.
        const armedWhenDry = (): void => {
          for (const w of worlds) if (w.tap.frames.length > 0) expect(w.ram.mem.read16(RX.used), 'dry with VIRTQ_USED_F_NO_NOTIFY set').toBe(0);
        };
        for (const s of steps) {
          if (s.k === 'rx') {
            if (!post(s.lens)) continue;
            for (const w of worlds) w.backend.processQueue(NET_RX);
          } else if (s.k === 'host') {
            const frame = new Uint8Array(s.n).map((_, i) => (s.seed + i * 7) & 0xff);
            if (s.n <= MAX_FRAME) want.push(frame);
            for (const w of worlds) {
              w.tap.frames.push(frame);
              // The port became readable (or, not yet noticed, frames pile up for one batch).
              if (s.notify) w.backend.processQueue(NET_RX);
            }
          } else for (const w of worlds) w.backend.processQueue(NET_RX);
          if (s.k !== 'host' || s.notify) armedWhenDry();
          settle();
        }
        // Drain: plain whole-frame buffers until both have delivered everything.
        for (let i = 0; i < 40 && worlds.some((w) => w.tap.frames.length > 0); i++) {
          if (!post([1530])) break;
          for (const w of worlds) w.backend.processQueue(NET_RX);
          armedWhenDry();
          settle();
        }
        const [a, b] = worlds;
        // The batched path takes chains ahead, so it may complete an unusable one (too short for a
        // header, or without MRG_RXBUF for a frame) sooner: those aside, the published lists match.
        const short = (id: number): boolean => {
          const total = chains.get(id)!.reduce((x, r) => x + r.len, 0);
          return total < VIRTIO_NET_HDR_LEN || (!mrg && total < VIRTIO_NET_HDR_LEN + MAX_FRAME);
        };
        for (const w of worlds) for (const u of w.used) if (u.len === 0) expect(short(u.id), `chain ${u.id} completed unused`).toBe(true);
        // Same frames, same order, same lengths. Which chain carries a frame may differ: after a refused
        // frame the batch's next frame lands in the next set's chain, and the refused one's chain stays
        // held for later (split virtqueues without VIRTIO_F_IN_ORDER may use buffers out of order).
        expect(a.used.filter((u) => u.len > 0).map((u) => u.len)).toEqual(b.used.filter((u) => u.len > 0).map((u) => u.len));
        const { rxBadBuffers: badA, ...restA } = readNetCounters(a.counters);
        const { rxBadBuffers: badB, ...restB } = readNetCounters(b.counters);
        expect(restA).toEqual(restB);
        expect(badA).toBeGreaterThanOrEqual(badB);
        const frames = (w: World): Uint8Array[] => {
          // Reassemble the frames from the published chains (num_buffers in the first chain's header).
          const got: Uint8Array[] = [];
          const seen = new Set<number>();
          let part: { bytes: Uint8Array[]; left: number } | undefined;
          for (const u of w.used) {
            expect(seen.has(u.id), `chain ${u.id} published twice`).toBe(false);
            seen.add(u.id);
            const bufs = chains.get(u.id)!;
            const total = bufs.reduce((x, r) => x + r.len, 0);
            if (u.len === 0) {
              cover.short++;
              continue;
            }
            expect(total).toBeGreaterThanOrEqual(u.len);
            const bytes = w.ram.readReal(bufs, u.len);
            if (!part) {
              expect([...bytes.subarray(0, 10)]).toEqual([...TAP_HDR.subarray(0, 10)]);
              const nb = bytes[10] | (bytes[11] << 8);
              expect(nb).toBeGreaterThanOrEqual(1);
              if (!mrg) expect(nb).toBe(1);
              part = { bytes: [bytes.subarray(VIRTIO_NET_HDR_LEN)], left: nb - 1 };
            } else {
              part.bytes.push(bytes);
              part.left--;
            }
            if (part.left === 0) {
              if (part.bytes.length > 1) cover.multiChain++;
              got.push(Buffer.concat(part.bytes));
              part = undefined;
            }
          }
          expect(part).toBeUndefined();
          return got;
        };
        const got = frames(a);
        const gotB = frames(b);
        expect(got.length).toBe(gotB.length);
        // Every frame that fits, in order (the drain may stop early only when RAM ran out).
        expect(got.length).toBeLessThanOrEqual(want.length);
        got.forEach((g, i) => {
          expect(Buffer.compare(Buffer.from(g), Buffer.from(want[i]))).toBe(0);
          expect(Buffer.compare(Buffer.from(gotB[i]), Buffer.from(want[i]))).toBe(0);
        });
        if (a.tap.frames.length === 0) expect(got.length).toBe(want.length);
        cover.batchFrames += got.length;
        cover.batched += a.tap.batched;
        cover.dropped += readNetCounters(a.counters).rxDropped;
      }),
      { numRuns: runs(300) },
    );
    expect(cover.batchFrames).toBeGreaterThan(100);
    expect(cover.batched).toBeGreaterThan(20);
    expect(cover.multiChain).toBeGreaterThan(0);
    expect(cover.dropped).toBeGreaterThan(0);
    expect(cover.short).toBeGreaterThan(0);
  });
});

describe('readvBatch (native)', () => {
  const addon = loadAddon();
  it('reads set after set until EAGAIN, with each read\'s length; checks its arguments', () => {
    const sab = new SharedArrayBuffer(8192);
    const iov = new Float64Array([0, 0, 100, 0, 100, 50, 0, 1000, 10, 0, 2000, 30]);
    const counts = new Uint32Array([2, 1, 1]);
    const lengths = new Float64Array(3);
    const zero = openSync('/dev/zero', 'r');
    new Uint8Array(sab).fill(7);
    expect(addon.readvBatch(zero, [sab], iov, counts, 3, lengths)).toBe(3);
    expect([...lengths]).toEqual([150, 10, 30]);
    expect(new Uint8Array(sab, 0, 150).every((b) => b === 0)).toBe(true);
    expect(new Uint8Array(sab, 150, 850).every((b) => b === 7)).toBe(true);
    expect(() => addon.readvBatch(zero, [sab], new Float64Array([0, 8000, 500]), new Uint32Array([1]), 1, lengths)).toThrow(RangeError);
    expect(() => addon.readvBatch(zero, [sab], iov, new Uint32Array([65]), 1, lengths)).toThrow(/more than 64/);
    expect(() => addon.readvBatch(zero, [sab], iov, new Uint32Array([2, 2, 2]), 3, lengths)).toThrow(/fewer triples/);
    closeSync(zero);
    const [a, b] = addon.socketpair();
    addon.setNonblocking(a, true);
    expect(addon.readvBatch(a, [sab], iov, counts, 3, lengths)).toBe(0); // nothing yet: EAGAIN
    writeSync(b, Buffer.alloc(120, 9));
    lengths.fill(-1);
    expect(addon.readvBatch(a, [sab], iov, counts, 3, lengths)).toBe(1); // a stream: one read takes it all
    expect(lengths[0]).toBe(120);
    addon.close(b);
    expect(addon.readvBatch(a, [sab], iov, counts, 3, lengths)).toBe(0); // end of file: not counted
    addon.close(a);
  });
});
