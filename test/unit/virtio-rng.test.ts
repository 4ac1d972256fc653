// virtio-rng (src/devices/virtio/rng) on synthetic rings: the request loop through a real ActiveQueue
// over a SplitQueue, the RNG_MAX_REQUEST_BYTES cap, rejected chains, stats, and properties with hostile
// chains checked against a model (reference chain walk + a deterministic entropy stream) byte for byte
// over all of guest RAM.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VIRTIO_ID_RNG, VIRTQ_AVAIL_F_NO_INTERRUPT } from '../../src/devices/virtio/constants.js';
import { ActiveQueue, createTransportStats, type QueueGuard } from '../../src/devices/virtio/queue-service.js';
import { SplitQueue, VirtqueueError, type DescriptorChain } from '../../src/devices/virtio/queue.js';
import { RNG_MAX_REQUEST_BYTES, RNG_QUEUE_SIZE, RngBackend, createRngStats, fillRequest, readRngStats, rngDeviceType } from '../../src/devices/virtio/rng/index.js';
import type { RateLimiterConfig } from '../../src/devices/rate-limiter.js';
import { runs } from '../fuzz/budget.js';
import { expectSameBytes } from '../fuzz/bytes.js';
import {
  DATA,
  HIGH,
  HOLE,
  ModelRam,
  RAM_END,
  SLOT_EDGE,
  benchQueue,
  brokenChains,
  chainArb,
  simpleChain,
  usedRingBytes,
  walkChain,
  type ChainSpec,
  type QueueLayout,
} from './virtq-model.js';

const CAP = RNG_MAX_REQUEST_BYTES;
const LAYOUT: QueueLayout = { size: 16, desc: 0x1000, avail: 0x2000, used: 0x3000 };

/** A deterministic entropy source: byte k of the stream is streamByte(seed, k). */
function streamByte(seed: number, k: number): number {
  return Math.imul((k + 1) ^ seed, 0x9e3779b1) >>> 24;
}
function stream(seed: number): { fill: (view: Uint8Array) => void; pos: () => number } {
  let k = 0;
  return {
    fill(view) {
      for (let i = 0; i < view.length; i++) view[i] = streamByte(seed, k++);
    },
    pos: () => k,
  };
}

function setup(opts: { indirect?: boolean; seed?: number; random?: boolean; size?: number; rate?: RateLimiterConfig; now?: () => number } = {}) {
  const ram = new ModelRam();
  const layout = { ...LAYOUT, size: opts.size ?? LAYOUT.size };
  const q = benchQueue(ram, layout, { index: 0, indirect: opts.indirect ?? true });
  const rngStats = createRngStats();
  const src = stream(opts.seed ?? 1);
  const params = { stats: rngStats, ...(opts.rate ? { rate: opts.rate } : {}) };
  const backend = opts.random ? new RngBackend(params) : new RngBackend(params, src.fill, undefined, opts.now);
  backend.activate({ queues: [q.aq] });
  /** The used ring is checked through the driver; everything else must match the model. */
  const expectRam = (what: string): void => {
    ram.adopt(layout.used, usedRingBytes(layout));
    ram.expectSame(what);
  };
  return { ram, layout, ...q, backend, rngStats, src, expectRam };
}

describe('virtio-rng device type', () => {
  it('one requestq of RNG_QUEUE_SIZE, no feature bits, no config space; prepare makes the stats', () => {
    expect(rngDeviceType.kind).toBe('rng');
    expect(rngDeviceType.deviceId).toBe(VIRTIO_ID_RNG);
    const p = rngDeviceType.prepare({}, { addon: {} as never });
    expect(p.params.stats).toBeInstanceOf(SharedArrayBuffer);
    expect(readRngStats(p.params.stats)).toEqual({ requests: 0, bytes: 0 });
    p.release();
    expect(rngDeviceType.describe(p.params)).toEqual({ features: 0n, queues: [{ name: 'requestq', maxSize: RNG_QUEUE_SIZE }], config: new Uint8Array(0) });
  });
});

describe('fillRequest', () => {
  const seg = (buffer: SharedArrayBuffer, offset: number, length: number) => ({ buffer, offset, length, gpa: offset });
  const chain = (buf: SharedArrayBuffer, readable: Array<[number, number]>, writable: Array<[number, number]>): DescriptorChain => ({
    head: 0,
    readable: readable.map(([o, l]) => seg(buf, o, l)),
    writable: writable.map(([o, l]) => seg(buf, o, l)),
    readableBytes: readable.reduce((a, [, l]) => a + l, 0),
    writableBytes: writable.reduce((a, [, l]) => a + l, 0),
  });

  it('fills the writable segments in order up to max; readable segments and the rest stay untouched', () => {
    const buf = new SharedArrayBuffer(64);
    const bytes = new Uint8Array(buf).fill(0xee);
    const s = stream(7);
    expect(fillRequest(chain(buf, [[0, 8]], [[20, 4], [10, 3], [40, 10]]), 12, s.fill)).toBe(12);
    expect(s.pos()).toBe(12);
    const want = new Uint8Array(64).fill(0xee);
    [20, 21, 22, 23, 10, 11, 12, 40, 41, 42, 43, 44].forEach((at, k) => (want[at] = streamByte(7, k)));
    expectSameBytes(bytes, want);
    // no writable bytes: nothing filled; max 0: nothing filled
    expect(fillRequest(chain(buf, [[0, 8]], []), 12, s.fill)).toBe(0);
    expect(fillRequest(chain(buf, [], [[0, 8]]), 0, s.fill)).toBe(0);
    expect(s.pos()).toBe(12);
    // zero-length segments are skipped over
    expect(fillRequest(chain(buf, [], [[0, 0], [1, 2]]), 100, s.fill)).toBe(2);
  });

  it('defaults: the host CSPRNG, RNG_MAX_REQUEST_BYTES', () => {
    const buf = new SharedArrayBuffer(CAP + 100);
    expect(fillRequest(chain(buf, [], [[0, CAP + 100]]))).toBe(CAP);
    const b = new Uint8Array(buf);
    expect(new Set(b.subarray(0, CAP)).size).toBeGreaterThan(200);
    expect([...new Set(b.subarray(CAP))]).toEqual([0]);
  });
});

describe('virtio-rng requests', () => {
  it('fills a request with random bytes: used length = writable bytes, readable buffers untouched, stats, one interrupt', () => {
    const t = setup({ random: true });
    const before = t.ram.mem.readBytes(DATA, 0x3000);
    // readable header (ignored), then writable buffers, one of them straddling the slot edge
    const head = t.drv.post({
      bufs: [
        { addr: BigInt(DATA), len: 16, write: false },
        { addr: BigInt(DATA + 0x1000), len: 100, write: true },
        { addr: BigInt(SLOT_EDGE - 10), len: 30, write: true },
      ],
      table: null,
      corrupt: 'none',
    })!;
    t.backend.processQueue(0);
    expect(t.drv.takeUsed()).toEqual([{ id: head, len: 130 }]);
    expectSameBytes(t.ram.mem.readBytes(DATA, 16), before.subarray(0, 16), 'readable buffer');
    expect(t.ram.mem.readBytes(DATA + 0x1000, 100)).not.toEqual(before.subarray(0x1000, 0x1100));
    expect(readRngStats(t.rngStats)).toEqual({ requests: 1, bytes: 130 });
    expect(t.log).toMatchObject({ enters: 1, leaves: 1, notifies: 1, depth: 0 });
  });

  it('caps one request at RNG_MAX_REQUEST_BYTES; the rest of its buffers stay untouched', () => {
    const t = setup();
    const head = t.drv.post(simpleChain([[DATA, CAP - 1], [DATA + CAP, 2], [DATA + 2 * CAP, 100]], true))!;
    const head2 = t.drv.post(simpleChain([[HIGH, 5]], true))!;
    t.backend.processQueue(0);
    expect(t.drv.takeUsed()).toEqual([
      { id: head, len: CAP },
      { id: head2, len: 5 },
    ]);
    // the model: the stream fills [DATA, +CAP-1), one byte at DATA+CAP, then the next request
    for (let k = 0; k < CAP - 1; k++) t.ram.model[DATA + k] = streamByte(1, k);
    t.ram.model[DATA + CAP] = streamByte(1, CAP - 1);
    for (let k = 0; k < 5; k++) t.ram.model[HIGH + k] = streamByte(1, CAP + k);
    t.expectRam('capped request');
    expect(readRngStats(t.rngStats)).toEqual({ requests: 2, bytes: CAP + 5 });
  });

  it('a rejected chain completes with used length 0 (counted as broken, not as a request); the queue keeps working', () => {
    const t = setup({ indirect: false });
    const bad: ChainSpec[] = [
      simpleChain([[HOLE - 4, 8]], true), // runs into the hole
      { ...simpleChain([[DATA, 8]], true), corrupt: 'loop' },
      { ...simpleChain([[DATA, 8]], true), corrupt: 'bad-next' },
      { bufs: [], table: { at: BigInt(DATA + 0x100), bufs: [{ addr: BigInt(DATA), len: 8, write: true }], lenDelta: 0, withNext: false, nested: false }, corrupt: 'none' }, // INDIRECT not negotiated
      { bufs: [{ addr: BigInt(DATA), len: 8, write: true }, { addr: BigInt(DATA + 8), len: 8, write: false }], table: null, corrupt: 'none' }, // readable after writable
    ];
    const heads = bad.map((s) => t.drv.post(s)!);
    const good = t.drv.post(simpleChain([[DATA + 0x800, 4]], true))!;
    t.backend.processQueue(0);
    expect(t.drv.takeUsed()).toEqual([...heads.map((id) => ({ id, len: 0 })), { id: good, len: 4 }]);
    for (let k = 0; k < 4; k++) t.ram.model[DATA + 0x800 + k] = streamByte(1, k);
    t.expectRam('after rejected chains');
    expect(brokenChains(t.stats)).toBe(bad.length);
    expect(readRngStats(t.rngStats)).toEqual({ requests: 1, bytes: 4 });
  });

  it('a chain without writable bytes completes with used length 0 (a request of 0 bytes)', () => {
    const t = setup();
    const head = t.drv.post(simpleChain([[DATA, 64]], false))!;
    t.backend.processQueue(0);
    expect(t.drv.takeUsed()).toEqual([{ id: head, len: 0 }]);
    t.expectRam('readable-only chain');
    expect(readRngStats(t.rngStats)).toEqual({ requests: 1, bytes: 0 });
  });

  it('does nothing before activate, for another queue index, after reset, or while the transport refuses ring access', () => {
    const t = setup();
    t.drv.post(simpleChain([[DATA, 64]], true));
    const idle = new RngBackend({ stats: createRngStats() }, () => expect.unreachable());
    idle.processQueue(0);
    t.backend.processQueue(1);
    t.backend.reset();
    t.backend.processQueue(0);
    // a queue whose guard refuses (a driver reset in progress)
    const sq = new SplitQueue(t.ram.mem, { size: LAYOUT.size, descAddr: LAYOUT.desc, driverAddr: LAYOUT.avail, deviceAddr: LAYOUT.used, eventIdx: false, indirect: true });
    const refusing: QueueGuard = { rings: () => undefined, enter: () => expect.unreachable(), leave: () => undefined, notifyUsed: () => expect.unreachable() };
    const b = new RngBackend({ stats: createRngStats() }, () => expect.unreachable());
    b.activate({ queues: [new ActiveQueue({ index: 0, queue: sq, guard: refusing, mem: t.ram.mem, descAddr: LAYOUT.desc, stats: createTransportStats() })] });
    b.processQueue(0);
    expect(t.drv.takeUsed()).toEqual([]);
    t.expectRam('untouched');
    expect(t.src.pos()).toBe(0);
  });

  it('a broken ring (avail.idx too far ahead, head ≥ queue size) throws a fatal VirtqueueError', () => {
    for (const breakIt of [(t: ReturnType<typeof setup>) => t.ram.write16(LAYOUT.avail + 2, 100), (t: ReturnType<typeof setup>) => t.drv.publish(LAYOUT.size + 3)]) {
      const t = setup();
      breakIt(t);
      let err: unknown;
      try {
        t.backend.processQueue(0);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(VirtqueueError);
      expect((err as VirtqueueError).fatal).toBe(true);
      expect(t.log.enters).toBe(t.log.leaves);
    }
  });

  it('rate limiter: the bytes given are paid after each request; a queue in debt waits for its timer, not the next kick', async () => {
    let t0 = 0;
    const t = setup({ rate: { bandwidth: { size: 100, refillTimeMs: 50 } }, now: () => t0 });
    const post = (len: number) => t.drv.post({ bufs: [{ addr: BigInt(DATA), len, write: true }], table: null, corrupt: 'none' })!;
    const [a, b, c] = [post(100), post(100), post(100)];
    t.backend.processQueue(0);
    // a empties the full bucket, b may still start (nothing is owed yet) and leaves 100 bytes of debt: c waits.
    expect(t.drv.takeUsed()).toEqual([{ id: a, len: 100 }, { id: b, len: 100 }]);
    t.backend.processQueue(0); // a kick changes nothing while in debt
    expect(t.drv.takeUsed()).toEqual([]);
    t0 = 50; // the debt is paid: the resume timer (armed for the fake clock's 49 ms) serves c
    await new Promise((r) => setTimeout(r, 100));
    expect(t.drv.takeUsed()).toEqual([{ id: c, len: 100 }]);
    expect(readRngStats(t.rngStats)).toEqual({ requests: 3, bytes: 300 });
    t.backend.close();
  });

  it('rate limiter ops: each request costs one op (2 tokens: the third request goes into debt, the fourth waits)', () => {
    const t0 = 0;
    const t = setup({ rate: { ops: { size: 2, refillTimeMs: 1000 } }, now: () => t0 });
    const ids = [0, 1, 2, 3].map(() => t.drv.post({ bufs: [{ addr: BigInt(DATA), len: 8, write: true }], table: null, corrupt: 'none' })!);
    t.backend.processQueue(0);
    expect(t.drv.takeUsed().map((u) => u.id)).toEqual(ids.slice(0, 3));
    t.backend.close();
  });

  it('NO_INTERRUPT: chains are completed without a notification', () => {
    const t = setup();
    t.drv.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    t.drv.post(simpleChain([[DATA, 8]], true));
    t.backend.processQueue(0);
    expect(t.drv.takeUsed()).toHaveLength(1);
    expect(t.log.notifies).toBe(0);
  });

  it('property: hostile chains (mixed, indirect, loops, out of range, huge, straddling) → the model, byte for byte', () => {
    const cover = { good: 0, rejected: 0, capped: 0, zero: 0, indirect: 0 };
    fc.assert(
      fc.property(
        fc.array(fc.array(chainArb({ writeTenths: 8, big: [0x1000, CAP - 1, CAP, CAP + 1, 0x14000], maxTable: 18 }), { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        fc.boolean(),
        fc.integer(),
        (rounds, indirect, noInterrupt, seed) => {
          const t = setup({ indirect, seed });
          if (noInterrupt) t.drv.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
          let pos = 0;
          let requests = 0;
          let bytes = 0;
          let rejected = 0;
          for (const round of rounds) {
            const posted: number[] = [];
            for (const spec of round) {
              const h = t.drv.post(spec);
              if (h !== undefined) posted.push(h);
            }
            // The model: the whole batch is taken before it is served (all fit in one batch), then
            // every accepted chain gets the next bytes of the stream, up to the cap, in chain order.
            const walks = posted.map((h) => walkChain(t.ram, { desc: LAYOUT.desc, size: LAYOUT.size, indirect }, h));
            const expected = walks.map((w, k) => {
              if (!w.ok) {
                rejected++;
                cover.rejected++;
                return { id: posted[k], len: 0 };
              }
              let n = 0;
              for (const r of w.writable) {
                if (n >= CAP) break;
                const m = Math.min(r.len, CAP - n);
                for (let i = 0; i < m; i++) t.ram.model[r.gpa + i] = streamByte(seed, pos++);
                n += m;
              }
              requests++;
              bytes += n;
              cover.good++;
              if (n === CAP && w.writableBytes > CAP) cover.capped++;
              if (n === 0) cover.zero++;
              return { id: posted[k], len: n };
            });
            if (indirect && round.some((s) => s.table)) cover.indirect++;
            const notifies = t.log.notifies;
            t.backend.processQueue(0);
            expect(t.drv.takeUsed()).toEqual(expected);
            t.expectRam('after a round');
            expect(t.src.pos()).toBe(pos);
            expect(readRngStats(t.rngStats)).toEqual({ requests, bytes });
            expect(brokenChains(t.stats)).toBe(rejected);
            expect(t.log.enters).toBe(t.log.leaves);
            expect(t.log.notifies - notifies).toBe(!noInterrupt && posted.length > 0 ? 1 : 0);
          }
        },
      ),
      { numRuns: runs(150) },
    );
    for (const [k, v] of Object.entries(cover)) expect(v, `outcome '${k}' reached`).toBeGreaterThan(0);
  });

  it('property: any descriptor table and avail ring (buffers may cover the rings) → no exception but a fatal VirtqueueError; counters agree', () => {
    const descArb = fc.record({
      addr: fc.oneof(
        fc.constantFrom(0, LAYOUT.desc, LAYOUT.avail, LAYOUT.used, DATA, SLOT_EDGE - 8, HOLE - 1, HIGH, RAM_END - 16),
        fc.integer({ min: 0, max: RAM_END + 0x10000 }),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      ),
      len: fc.oneof(fc.constantFrom(0, 1, 16, 64, 0x1000, CAP + 1, 0x80000), fc.nat()),
      flags: fc.nat(7),
      next: fc.nat(20),
    });
    fc.assert(
      fc.property(
        fc.array(descArb, { minLength: 8, maxLength: 8 }),
        fc.array(fc.nat(9), { minLength: 1, maxLength: 12 }),
        fc.boolean(),
        fc.nat(3),
        (descs, heads, indirect, kicks) => {
          const t = setup({ indirect, size: 8 });
          descs.forEach((d, i) => t.ram.writeDesc(LAYOUT.desc + 16 * i, BigInt(d.addr), d.len, d.flags, d.next));
          for (const h of heads) t.drv.publish(h);
          for (let k = 0; k <= kicks; k++) {
            try {
              t.backend.processQueue(0);
            } catch (e) {
              expect(e).toBeInstanceOf(VirtqueueError);
              expect((e as VirtqueueError).fatal).toBe(true);
              expect(t.log.enters).toBe(t.log.leaves);
              return;
            }
            expect(t.log.enters).toBe(t.log.leaves);
            const st = readRngStats(t.rngStats);
            expect(t.sq.usedIdx).toBe((st.requests + brokenChains(t.stats)) & 0xffff);
            expect(t.sq.lastAvailIdx).toBe(t.sq.usedIdx);
            expect(st.bytes).toBeLessThanOrEqual(st.requests * CAP);
            expect(st.bytes).toBe(t.src.pos());
          }
        },
      ),
      { numRuns: runs(300) },
    );
  });
});
