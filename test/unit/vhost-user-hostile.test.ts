// Hostile vhost-user frontends. Properties against models for the three parsers a frontend feeds:
//  - MessageReader (protocol.ts): arbitrary byte streams cut at arbitrary points, fds attached to
//    arbitrary pieces → exactly the messages / framing error a reference reader finds, every fd
//    handed back exactly once;
//  - the payload parsers: a payload of any length is refused unless it has the request's size;
//  - validateRegions/translateUser (memory.ts): regions that overlap, wrap past 2^64, are empty or
//    pass 2^53 are refused; a user range translates iff one region holds all of it.
// Then a VhostUserSession (backend.ts) fed random message sequences, kicks and hostile ring bytes
// through a fake host: handle() answers or throws CloseConnection and nothing else, a kick never
// throws (it runs in an fd watcher), NEED_REPLY requests are always acked, requests missing their fds
// are refused, every fd is closed exactly once (never while watched, never notified after), the
// backend is activated at most once per reset and is asked to process a queue only while active.
// Last, wrong-state and malformed requests over the real server.
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { runs } from '../fuzz/budget.js';
import type { ActiveDevice, AnyVirtioDeviceType, VirtioDeviceBackend } from '../../src/devices/virtio/device.js';
import { createTransportStats } from '../../src/devices/virtio/queue-service.js';
import { VirtqueueError } from '../../src/devices/virtio/queue.js';
import { fillRequest, rngDeviceType } from '../../src/devices/virtio/rng/index.js';
import { CloseConnection, OFFERED_PROTOCOL_FEATURES, VhostUserSession, type SessionHost } from '../../src/vhost-user/backend.js';
import { translateUser, validateRegions } from '../../src/vhost-user/memory.js';
import {
  HEADER_SIZE,
  MAX_PAYLOAD,
  MessageReader,
  VHOST_USER_FLAG_NEED_REPLY,
  VHOST_USER_FLAG_REPLY,
  VHOST_USER_GET_CONFIG,
  VHOST_USER_GET_FEATURES,
  VHOST_USER_GET_PROTOCOL_FEATURES,
  VHOST_USER_GET_QUEUE_NUM,
  VHOST_USER_GET_VRING_BASE,
  VHOST_USER_RESET_OWNER,
  VHOST_USER_SET_BACKEND_REQ_FD,
  VHOST_USER_SET_CONFIG,
  VHOST_USER_SET_FEATURES,
  VHOST_USER_SET_MEM_TABLE,
  VHOST_USER_SET_OWNER,
  VHOST_USER_SET_PROTOCOL_FEATURES,
  VHOST_USER_SET_VRING_ADDR,
  VHOST_USER_SET_VRING_BASE,
  VHOST_USER_SET_VRING_CALL,
  VHOST_USER_SET_VRING_ENABLE,
  VHOST_USER_SET_VRING_ERR,
  VHOST_USER_SET_VRING_KICK,
  VHOST_USER_SET_VRING_NUM,
  VhostUserError,
  encodeRequest,
  parseConfig,
  parseMemTable,
  parseU64,
  parseVringAddr,
  parseVringFile,
  parseVringState,
  u64Payload,
  vringStatePayload,
  type MemRegionMsg,
  type VhostUserMessage,
} from '../../src/vhost-user/protocol.js';
import { MEM_SIZE, TestFrontend, USER_BASE, addon, memTable, vringAddr } from './vhost-user-frontend.js';

const u32 = (v: number): Uint8Array => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
};
const cat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

// ---- MessageReader against a reference reader ---------------------------------------------------

type ModelOut = { messages: Array<{ request: number; flags: number; payload: number[] }>; error: boolean; consumed: number };

/** The reference: whole messages in order until the stream ends or a header is refused. */
function modelRead(stream: Uint8Array): ModelOut {
  const out: ModelOut = { messages: [], error: false, consumed: 0 };
  let pos = 0;
  const dv = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  while (stream.length - pos >= HEADER_SIZE) {
    const request = dv.getUint32(pos, true);
    const flags = dv.getUint32(pos + 4, true);
    const size = dv.getUint32(pos + 8, true);
    if ((flags & 3) !== 1 || (flags & VHOST_USER_FLAG_REPLY) !== 0 || size > MAX_PAYLOAD) {
      out.error = true;
      out.consumed = pos + HEADER_SIZE;
      return out;
    }
    if (stream.length - pos - HEADER_SIZE < size) break;
    out.messages.push({ request, flags, payload: [...stream.subarray(pos + HEADER_SIZE, pos + HEADER_SIZE + size)] });
    pos += HEADER_SIZE + size;
  }
  out.consumed = stream.length;
  return out;
}

const headerArb = fc.record({
  request: fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 0xffffffff })),
  flags: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(1, 1 | VHOST_USER_FLAG_NEED_REPLY) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) }),
  size: fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max: 64 }) },
    { weight: 2, arbitrary: fc.integer({ min: MAX_PAYLOAD - 8, max: MAX_PAYLOAD + 8 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
  ),
  // how many payload bytes actually follow: all of them, or a truncated part
  cut: fc.option(fc.nat(), { freq: 5 }),
});

function encodeStream(hs: ReadonlyArray<{ request: number; flags: number; size: number; cut: number | null }>, fill: number): Uint8Array {
  const parts: Uint8Array[] = [];
  hs.forEach((h, i) => {
    const n = h.size > MAX_PAYLOAD + 8 ? 0 : h.cut === null ? h.size : Math.min(h.size, h.cut % (h.size + 1));
    parts.push(cat(u32(h.request), u32(h.flags), u32(h.size), new Uint8Array(n).map((_, k) => (k * 31 + i * 7 + fill) & 0xff)));
  });
  return cat(...parts);
}

describe('MessageReader (property)', () => {
  it('finds exactly the reference messages, whatever the cuts, and hands back every fd exactly once', () => {
    fc.assert(
      fc.property(
        fc.array(headerArb, { maxLength: 6 }),
        fc.uint8Array({ maxLength: 12 }), // trailing garbage
        fc.array(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 40 }),
        fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 40 }),
        fc.nat(255),
        (hs, tail, cuts, fdCounts, fill) => {
          const stream = cat(encodeStream(hs, fill), tail);
          const model = modelRead(stream);
          const r = new MessageReader();
          const got: ModelOut['messages'] = [];
          const gotFds: number[][] = [];
          const returned: number[] = [];
          let nextFd = 100;
          let sent: number[] = [];
          let pos = 0;
          let step = 0;
          let error = false;
          while (pos < stream.length) {
            const want = r.want();
            if (want === 0) {
              // after a framing error the reader takes nothing more (fds pushed now come straight back)
              expect(error).toBe(true);
              break;
            }
            const n = Math.min(want, cuts[step % cuts.length], stream.length - pos);
            const fds = Array.from({ length: fdCounts[step % fdCounts.length] }, () => nextFd++);
            step++;
            sent = sent.concat(fds);
            const res = r.push(stream.subarray(pos, pos + n), fds);
            pos += n;
            if (!res) continue;
            if (res.kind === 'error') {
              error = true;
              returned.push(...res.fds);
              break;
            }
            got.push({ request: res.message.request, flags: res.message.flags, payload: [...res.message.payload] });
            gotFds.push(res.message.fds);
            returned.push(...res.message.fds);
          }
          returned.push(...r.pendingFds());
          expect(got).toEqual(model.messages);
          expect(error).toBe(model.error);
          if (error) expect(pos).toBe(model.consumed);
          expect(r.error !== undefined).toBe(model.error);
          // every fd comes back once, in the order sent
          expect(returned).toEqual(sent);
          // pushing more than want() is refused, never read past the message
          const r2 = new MessageReader();
          const over = r2.push(new Uint8Array(HEADER_SIZE + 1), [7]);
          expect(over?.kind).toBe('error');
          expect(over?.kind === 'error' && over.fds).toEqual([7]);
        },
      ),
      { numRuns: runs(400) },
    );
  });
});

// ---- payload parsers --------------------------------------------------------------------------

const msg = (request: number, payload: Uint8Array, fds: number[] = []): VhostUserMessage => ({ request, flags: 1, payload, fds });

describe('payload parsers (property)', () => {
  it('refuse every payload length but the request’s own, and decode the fields little-endian', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 320 }), (p) => {
        const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
        const refuses = (f: () => unknown): boolean => {
          try {
            f();
            return false;
          } catch (e) {
            expect(e).toBeInstanceOf(VhostUserError);
            return true;
          }
        };
        expect(refuses(() => parseU64(msg(2, p)))).toBe(p.length !== 8);
        if (p.length === 8) expect(parseU64(msg(2, p))).toBe(dv.getBigUint64(0, true));
        expect(refuses(() => parseVringState(msg(8, p)))).toBe(p.length !== 8);
        expect(refuses(() => parseVringAddr(msg(9, p)))).toBe(p.length !== 40);
        if (p.length === 40) {
          const a = parseVringAddr(msg(9, p));
          expect([a.index, a.flags, a.desc, a.used, a.avail, a.log]).toEqual([dv.getUint32(0, true), dv.getUint32(4, true), dv.getBigUint64(8, true), dv.getBigUint64(16, true), dv.getBigUint64(24, true), dv.getBigUint64(32, true)]);
        }
        const fileOk = p.length === 8 && dv.getBigUint64(0, true) >> 9n === 0n;
        expect(refuses(() => parseVringFile(msg(12, p)))).toBe(!fileOk);
        // memory table: n in 1..8 regions, the payload a whole number of 32-byte entries holding n of them
        const n = p.length >= 4 ? dv.getUint32(0, true) : -1;
        const tableOk = p.length >= 8 && n >= 1 && n <= 8 && p.length >= 8 + 32 * n && p.length <= 8 + 32 * 8 && (p.length - 8) % 32 === 0;
        expect(refuses(() => parseMemTable(msg(5, p)))).toBe(!tableOk);
        if (tableOk) expect(parseMemTable(msg(5, p))).toHaveLength(n);
        const size = p.length >= 8 ? dv.getUint32(4, true) : -1;
        const configOk = p.length >= 12 && size <= 256 && p.length === 12 + size;
        expect(refuses(() => parseConfig(msg(24, p)))).toBe(!configOk);
      }),
      { numRuns: runs(600) },
    );
  });

  it('a config message whose size field matches its payload parses (the generator above rarely makes one)', () => {
    fc.assert(
      fc.property(fc.nat(0xffff), fc.uint8Array({ maxLength: 300 }), (offset, data) => {
        const p = cat(u32(offset), u32(data.length), u32(0), data);
        const ok = data.length <= 256;
        try {
          const c = parseConfig(msg(25, p));
          expect(ok).toBe(true);
          expect([c.offset, c.size, [...c.data]]).toEqual([offset, data.length, [...data]]);
        } catch (e) {
          expect(e).toBeInstanceOf(VhostUserError);
          expect(ok).toBe(false);
        }
      }),
      { numRuns: runs(200) },
    );
  });
});

// ---- address translation against a model -------------------------------------------------------

const big = (min: bigint, max: bigint): fc.Arbitrary<bigint> => fc.bigInt({ min, max });
const u64Arb = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const addrArb = fc.oneof(
  { weight: 4, arbitrary: big(0n, 0x10_0000n).map((x) => x * 0x1000n) }, // page-ish, likely to overlap
  { weight: 2, arbitrary: big(0n, 2n ** 53n) },
  { weight: 1, arbitrary: big(2n ** 64n - 0x10_0000n, 2n ** 64n - 1n) }, // near the top: wraps
);
const sizeArb = fc.oneof(
  { weight: 4, arbitrary: big(1n, 0x10n).map((x) => x * 0x1000n) },
  { weight: 1, arbitrary: fc.constant(0n) },
  { weight: 1, arbitrary: big(1n, 2n ** 64n - 1n) },
);
const regionArb: fc.Arbitrary<MemRegionMsg> = fc.record({ guestAddr: addrArb, size: sizeArb, userAddr: addrArb, mmapOffset: fc.oneof(fc.constant(0n), addrArb) });

function modelValid(rs: readonly MemRegionMsg[]): boolean {
  const L = 2n ** 53n;
  for (const r of rs) {
    if (r.size === 0n) return false;
    if (r.guestAddr + r.size > L || r.userAddr + r.size > L || r.mmapOffset + r.size > L) return false;
  }
  for (let i = 0; i < rs.length; i++) {
    for (let j = i + 1; j < rs.length; j++) {
      const a = rs[i];
      const b = rs[j];
      const overlap = (x: bigint, y: bigint): boolean => x < y + b.size && y < x + a.size;
      if (overlap(a.guestAddr, b.guestAddr) || overlap(a.userAddr, b.userAddr)) return false;
    }
  }
  return true;
}

describe('memory table validation and translation (property)', () => {
  it('accepts exactly the tables the model does; translates a user range iff one region holds all of it', () => {
    fc.assert(
      fc.property(
        fc.array(regionArb, { minLength: 1, maxLength: 4 }),
        fc.array(fc.tuple(fc.nat(5), fc.oneof(big(-0x3000n, 0x3000n), big(0n, 2n ** 64n - 1n)), fc.oneof(fc.integer({ min: 1, max: 0x3000 }), fc.integer({ min: 0, max: 2 ** 40 }))), { maxLength: 12 }),
        (rs, probes) => {
          let regions;
          try {
            regions = validateRegions(rs);
          } catch (e) {
            expect(e).toBeInstanceOf(VhostUserError);
            expect(modelValid(rs)).toBe(false);
            return;
          }
          expect(modelValid(rs)).toBe(true);
          for (const [which, delta, len] of probes) {
            // probe near a region's start or end (or anywhere)
            const r = rs[which % rs.length];
            const ua = BigInt.asUintN(64, which < rs.length ? r.userAddr + delta : which === 4 ? r.userAddr + r.size + delta : delta);
            const expected = rs.find((x) => ua >= x.userAddr && ua + BigInt(len) <= x.userAddr + x.size);
            const got = translateUser(regions, ua, len);
            if (expected === undefined) expect(got).toBeUndefined();
            else expect(got).toBe(Number(expected.guestAddr + (ua - expected.userAddr)));
          }
        },
      ),
      { numRuns: runs(800) },
    );
  });

  it('refuses the documented cases: empty, wrapping, past 2^53, overlapping, straddling', () => {
    const R = (guestAddr: bigint, size: bigint, userAddr: bigint, mmapOffset = 0n): MemRegionMsg => ({ guestAddr, size, userAddr, mmapOffset });
    expect(() => validateRegions([R(0n, 0n, 0x1000n)])).toThrow(/size 0/);
    expect(() => validateRegions([R(2n ** 64n - 0x1000n, 0x2000n, 0n)])).toThrow(/guest_addr.*2\^53/);
    expect(() => validateRegions([R(0n, 0x2000n, 2n ** 64n - 0x1000n)])).toThrow(/user_addr/);
    expect(() => validateRegions([R(0n, 0x1000n, 0n, 2n ** 53n)])).toThrow(/mmap_offset/);
    expect(() => validateRegions([R(0n, 0x2000n, 0x10000n), R(0x1000n, 0x1000n, 0x20000n)])).toThrow(/overlap in guest/);
    expect(() => validateRegions([R(0n, 0x2000n, 0x10000n), R(0x8000n, 0x1000n, 0x11000n)])).toThrow(/overlap in user/);
    // adjacent in both spaces: valid, but a ring straddling them is refused
    const rs = validateRegions([R(0n, 0x1000n, 0x10000n), R(0x1000n, 0x1000n, 0x11000n)]);
    expect(translateUser(rs, 0x10ff0n, 0x10)).toBe(0xff0);
    expect(translateUser(rs, 0x10ff0n, 0x20)).toBeUndefined();
    expect(translateUser(rs, 0x11000n, 0x1000)).toBe(0x1000);
    expect(translateUser(rs, 0x11000n, 0x1001)).toBeUndefined();
    expect(translateUser(rs, 0xfff0n, 0x20)).toBeUndefined();
  });
});

// ---- a session under a random frontend --------------------------------------------------------

const REGION = 0x10000; // each fake memfd's size
const UA = 0x7f00_0000_0000n;

interface FakeWorld {
  host: SessionHost;
  closed: Map<number, number>;
  watched: Map<number, number>; // fd → live watchers
  sent: Set<number>;
  problems: string[];
  nextFd: number;
  memfds: Set<number>;
  activations: Array<{ rings: number[] }>;
  seed: number;
}

function fakeWorld(seed: number): FakeWorld {
  const w: FakeWorld = {
    closed: new Map(),
    watched: new Map(),
    sent: new Set(),
    problems: [],
    nextFd: 1000,
    memfds: new Set(),
    activations: [],
    seed,
    host: undefined as unknown as SessionHost,
  };
  w.host = {
    mapFdShared(fd, offset, size) {
      if (!Number.isInteger(fd) || !w.memfds.has(fd)) throw Object.assign(new Error('not a memfd'), { code: 'ENODEV' });
      if (w.closed.has(fd)) w.problems.push(`fd ${fd} mapped after it was closed`);
      if (offset + size > REGION) throw Object.assign(new Error('short'), { code: 'ENXIO' });
      const sab = new SharedArrayBuffer(size);
      // hostile ring contents: pseudo-random bytes (every byte for a third of the seeds, else a few
      // in zeroed memory, so that some rings survive their first kick and reach the later states)
      const b = new Uint8Array(sab);
      let x = (w.seed ^ fd ^ offset) >>> 0 || 1;
      const every = w.seed % 3 === 0 ? 1 : 509;
      for (let i = 0; i < b.length; i += every) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        b[i] = x & 0xff;
      }
      return sab;
    },
    close(fd) {
      if (!w.sent.has(fd)) w.problems.push(`closed fd ${fd} that the frontend never sent`);
      if ((w.watched.get(fd) ?? 0) > 0) w.problems.push(`closed fd ${fd} while it is watched`);
      w.closed.set(fd, (w.closed.get(fd) ?? 0) + 1);
      if (w.closed.get(fd)! > 1) w.problems.push(`fd ${fd} closed twice`);
    },
    notifyFd(fd) {
      if (w.closed.has(fd)) w.problems.push(`notified fd ${fd} after closing it`);
      return true;
    },
    watchKick(fd) {
      if (!Number.isInteger(fd)) throw new TypeError(`fd must be an integer (got ${String(fd)})`);
      if (w.closed.has(fd)) w.problems.push(`watching closed fd ${fd}`);
      w.watched.set(fd, (w.watched.get(fd) ?? 0) + 1);
      let live = true;
      return () => {
        if (!live) w.problems.push(`fd ${fd} unwatched twice`);
        live = false;
        w.watched.set(fd, (w.watched.get(fd) ?? 1) - 1);
      };
    },
  };
  return w;
}

/** A two-queue device whose backend fills every writable buffer (like rng) and checks its life cycle. */
function recordingType(w: FakeWorld): AnyVirtioDeviceType {
  return {
    kind: 'test',
    deviceId: 4,
    prepare: () => ({ params: {}, release: () => undefined }),
    describe: () => ({ features: 1n << 3n, queues: [{ name: 'q0', maxSize: 16 }, { name: 'q1', maxSize: 16 }], config: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]) }),
    configWrite: () => undefined,
    createBackend: () => {
      let dev: ActiveDevice | undefined;
      const b: VirtioDeviceBackend = {
        activate(d) {
          if (dev) w.problems.push('activated twice without a reset');
          dev = d;
          w.activations.push({ rings: d.queues.flatMap((q, i) => (q ? [i] : [])) });
        },
        processQueue(i) {
          if (!dev) {
            w.problems.push(`processQueue(${i}) while not active`);
            return;
          }
          dev.queues[i]?.service((chain) => fillRequest(chain, 4096, (v) => v.fill(0xa5)));
        },
        reset() {
          dev = undefined;
        },
        save: () => ({}),
        restore: () => undefined,
      };
      return b;
    },
  };
}

type Step =
  | { kind: 'msg'; request: number; payload: Uint8Array; fds: number; memfds: number; ack: boolean }
  | { kind: 'kick'; ring: number }
  | { kind: 'guarded' };

const idx = fc.oneof({ weight: 5, arbitrary: fc.integer({ min: 0, max: 1 }) }, { weight: 1, arbitrary: fc.integer({ min: 2, max: 300 }) });
const ringBase = (i: number): bigint => UA + BigInt(0x1000 + i * 0x1000);
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 1, arbitrary: fc.constantFrom(VHOST_USER_GET_FEATURES, VHOST_USER_GET_PROTOCOL_FEATURES, VHOST_USER_GET_QUEUE_NUM, VHOST_USER_SET_OWNER, VHOST_USER_RESET_OWNER).map((request) => ({ request, payload: new Uint8Array(0) })) },
  {
    weight: 3,
    arbitrary: fc.oneof(fc.constant((1n << 3n) | (1n << 32n) | (1n << 30n)), fc.constant((1n << 3n) | (1n << 32n)), u64Arb).map((f) => ({ request: VHOST_USER_SET_FEATURES, payload: u64Payload(f) })),
  },
  { weight: 2, arbitrary: fc.oneof(fc.constant(OFFERED_PROTOCOL_FEATURES), u64Arb).map((f) => ({ request: VHOST_USER_SET_PROTOCOL_FEATURES, payload: u64Payload(f) })) },
  {
    weight: 3,
    arbitrary: fc
      .array(
        fc.oneof(
          { weight: 3, arbitrary: fc.constant({ gpa: 0n, size: BigInt(REGION), ua: UA, off: 0n }) },
          { weight: 1, arbitrary: fc.constant({ gpa: 0n, size: BigInt(REGION / 2), ua: UA + 0x8000n, off: 0x8000n }) },
          { weight: 1, arbitrary: fc.record({ gpa: addrArb, size: sizeArb, ua: addrArb, off: fc.oneof(fc.constant(0n), addrArb) }) },
        ),
        { minLength: 1, maxLength: 3 },
      )
      .map((rs) => ({ request: VHOST_USER_SET_MEM_TABLE, payload: memTable(rs) })),
  },
  { weight: 3, arbitrary: fc.tuple(idx, fc.oneof(fc.constant(16), fc.constant(8), fc.nat(40), fc.nat(0xffffffff))).map(([i, n]) => ({ request: VHOST_USER_SET_VRING_NUM, payload: vringStatePayload(i, n) })) },
  {
    weight: 3,
    arbitrary: fc
      .tuple(idx, fc.oneof({ weight: 4, arbitrary: fc.constant(0n) }, { weight: 1, arbitrary: fc.bigInt({ min: -0x2000n, max: 0x20000n }) }), u64Arb)
      .map(([i, d, r]) => {
        const b = ringBase(i % 2) + d;
        const rand = d === 0x1fffn;
        return { request: VHOST_USER_SET_VRING_ADDR, payload: vringAddr(i, rand ? r : BigInt.asUintN(64, b), BigInt.asUintN(64, b + 0x200n), BigInt.asUintN(64, b + 0x100n)) };
      }),
  },
  { weight: 2, arbitrary: fc.tuple(idx, fc.oneof(fc.nat(20), fc.nat(0xffffffff))).map(([i, n]) => ({ request: VHOST_USER_SET_VRING_BASE, payload: vringStatePayload(i, n) })) },
  { weight: 2, arbitrary: idx.map((i) => ({ request: VHOST_USER_GET_VRING_BASE, payload: vringStatePayload(i, 0) })) },
  {
    weight: 5,
    arbitrary: fc
      .tuple(fc.constantFrom(VHOST_USER_SET_VRING_KICK, VHOST_USER_SET_VRING_CALL, VHOST_USER_SET_VRING_ERR), idx, fc.boolean(), fc.oneof({ weight: 6, arbitrary: fc.constant(0n) }, { weight: 1, arbitrary: u64Arb }))
      .map(([request, i, nofd, junk]) => ({ request, payload: u64Payload(junk || BigInt(i) | (nofd ? 256n : 0n)) })),
  },
  { weight: 3, arbitrary: fc.tuple(idx, fc.oneof(fc.constant(1), fc.constant(0), fc.nat(5))).map(([i, n]) => ({ request: 18, payload: vringStatePayload(i, n) })) },
  { weight: 1, arbitrary: fc.constant({ request: VHOST_USER_SET_BACKEND_REQ_FD, payload: new Uint8Array(0) }) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(VHOST_USER_GET_CONFIG, VHOST_USER_SET_CONFIG), fc.oneof(fc.nat(10), fc.nat(0xffffffff)), fc.oneof(fc.nat(10), fc.nat(300)), fc.boolean())
      .map(([request, off, size, honest]) => ({ request, payload: cat(u32(off), u32(size), u32(0), new Uint8Array(honest ? Math.min(size, 300) : size % 7)) })),
  },
  // anything at all: unknown requests, wrong payload sizes
  { weight: 2, arbitrary: fc.tuple(fc.nat(60), fc.uint8Array({ maxLength: 48 })).map(([request, payload]) => ({ request, payload })) },
).chain((m) =>
  fc.record({ fds: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 1 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 4 }) }), memfds: fc.boolean(), ack: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }) }).map((o) => ({ kind: 'msg' as const, ...m, ...o, fds: m.request === VHOST_USER_SET_MEM_TABLE && o.memfds ? Math.max(o.fds, 1) : o.fds })),
);
const actionArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 6, arbitrary: stepArb },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 1 }).map((ring) => ({ kind: 'kick' as const, ring })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'guarded' as const }) },
);

/** A valid start (features, protocol features with REPLY_ACK, a table, both rings) so that random steps reach the running states. */
function prologue(): Step[] {
  const s = (request: number, payload: Uint8Array, fds = 0, memfds = false): Step => ({ kind: 'msg', request, payload, fds, memfds, ack: true });
  const out: Step[] = [
    s(VHOST_USER_SET_OWNER, new Uint8Array(0)),
    s(VHOST_USER_SET_FEATURES, u64Payload((1n << 3n) | (1n << 32n) | (1n << 30n))),
    s(VHOST_USER_SET_PROTOCOL_FEATURES, u64Payload(OFFERED_PROTOCOL_FEATURES)),
    s(VHOST_USER_SET_MEM_TABLE, memTable([{ gpa: 0n, size: BigInt(REGION), ua: UA, off: 0n }]), 1, true),
  ];
  for (const i of [0, 1]) {
    const b = ringBase(i);
    out.push(s(VHOST_USER_SET_VRING_NUM, vringStatePayload(i, 16)), s(VHOST_USER_SET_VRING_ADDR, vringAddr(i, b, b + 0x200n, b + 0x100n)), s(VHOST_USER_SET_VRING_CALL, u64Payload(BigInt(i)), 1), s(VHOST_USER_SET_VRING_KICK, u64Payload(BigInt(i)), 1), s(18, vringStatePayload(i, 1)));
  }
  return out;
}

/** Requests that must be refused because an fd they need is missing (the status the model expects). */
function missingFd(request: number, payload: Uint8Array, fds: number): boolean {
  if (request === VHOST_USER_SET_VRING_KICK || request === VHOST_USER_SET_VRING_CALL || request === VHOST_USER_SET_VRING_ERR) {
    return payload.length === 8 && (new DataView(payload.buffer).getBigUint64(0, true) & 256n) === 0n && fds === 0;
  }
  if (request === VHOST_USER_SET_BACKEND_REQ_FD) return fds === 0;
  if (request === VHOST_USER_SET_MEM_TABLE && payload.length >= 4) {
    const n = new DataView(payload.buffer).getUint32(0, true);
    return n >= 1 && n <= 8 && fds < n;
  }
  return false;
}

function runSession(steps: readonly Step[], seed: number): FakeWorld {
  const w = fakeWorld(seed);
  const type = recordingType(w);
  const session = new VhostUserSession({ name: 't', type, params: {}, backend: type.createBackend({}, undefined as never), host: w.host, stats: createTransportStats(), log: () => undefined });
  const isGet = (r: number): boolean => [VHOST_USER_GET_FEATURES, VHOST_USER_GET_PROTOCOL_FEATURES, VHOST_USER_GET_VRING_BASE, VHOST_USER_GET_QUEUE_NUM, VHOST_USER_GET_CONFIG].includes(r);
  let ackNegotiated = false;
  for (const st of steps) {
    if (st.kind === 'kick') {
      try {
        session.kick(st.ring);
      } catch (e) {
        w.problems.push(`a kick threw ${(e as Error).name}: ${(e as Error).message}`);
      }
      continue;
    }
    if (st.kind === 'guarded') {
      try {
        session.guarded(() => {
          throw new VirtqueueError('broken', 'a backend fault');
        });
      } catch (e) {
        w.problems.push(`guarded work threw out: ${(e as Error).message}`);
      }
      continue;
    }
    const fds = Array.from({ length: st.fds }, () => {
      const fd = w.nextFd++;
      w.sent.add(fd);
      if (st.memfds) w.memfds.add(fd);
      return fd;
    });
    const m: VhostUserMessage = { request: st.request, flags: 1 | (st.ack ? VHOST_USER_FLAG_NEED_REPLY : 0), payload: st.payload, fds };
    let reply: Uint8Array | undefined;
    try {
      reply = session.handle(m);
    } catch (e) {
      if (!(e instanceof CloseConnection)) w.problems.push(`handle(${st.request}) threw ${(e as Error).name}: ${(e as Error).message}`);
      break; // the server closes the connection
    }
    // the model of REPLY_ACK: negotiated by an accepted SET_PROTOCOL_FEATURES (8 bytes, offered bits only)
    if (st.request === VHOST_USER_SET_PROTOCOL_FEATURES && st.payload.length === 8) {
      const f = new DataView(st.payload.buffer).getBigUint64(0, true);
      if ((f & ~OFFERED_PROTOCOL_FEATURES) === 0n) ackNegotiated = (f & 8n) !== 0n;
    }
    if (reply) {
      const v = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
      if (v.getUint32(0, true) !== st.request) w.problems.push('reply to another request');
      if (v.getUint32(4, true) !== (1 | VHOST_USER_FLAG_REPLY)) w.problems.push('reply flags wrong');
      if (v.getUint32(8, true) !== reply.length - HEADER_SIZE) w.problems.push('reply size field wrong');
    }
    if (isGet(st.request)) {
      if (!reply) w.problems.push(`GET ${st.request} answered with nothing (the frontend would hang)`);
    } else if (st.ack && ackNegotiated && st.request !== VHOST_USER_SET_PROTOCOL_FEATURES) {
      if (!reply || reply.length !== HEADER_SIZE + 8) w.problems.push(`request ${st.request} with NEED_REPLY not acked`);
      else if (missingFd(st.request, st.payload, st.fds) && new DataView(reply.buffer).getBigUint64(HEADER_SIZE, true) === 0n) w.problems.push(`request ${st.request} accepted without the fd it needs`);
    }
    for (const [fd, n] of w.watched) if (n > 1) w.problems.push(`fd ${fd} watched ${n} times`);
    const live = [...w.watched.values()].reduce((a, n) => a + n, 0);
    if (live > 2) w.problems.push(`${live} kick watchers for 2 rings`);
  }
  session.close();
  for (const fd of w.sent) if (w.closed.get(fd) !== 1) w.problems.push(`fd ${fd} closed ${w.closed.get(fd) ?? 0} times after the session ended`);
  for (const [fd, n] of w.watched) if (n !== 0) w.problems.push(`fd ${fd} still watched after the session ended`);
  return w;
}

describe('VhostUserSession under a random frontend (property)', () => {
  it('answers or closes, never throws out, acks what it must, refuses missing fds, closes every fd once', () => {
    let activations = 0;
    fc.assert(
      fc.property(fc.array(actionArb, { maxLength: 40 }), fc.boolean(), fc.nat(), (steps, start, seed) => {
        const w = runSession(start ? [...prologue(), ...steps] : steps, seed);
        activations += w.activations.length;
        expect(w.problems).toEqual([]);
      }),
      { numRuns: runs(300) },
    );
    expect(activations).toBeGreaterThan(0); // the generator reaches the running states
  });

  it('the prologue alone activates both rings, and kicks are served from the hostile ring bytes without escaping', () => {
    const w = runSession([...prologue(), { kind: 'kick', ring: 0 }, { kind: 'kick', ring: 1 }], 1234);
    expect(w.problems).toEqual([]);
    expect(w.activations.at(-1)).toEqual({ rings: [0, 1] });
  });
});

// ---- wrong-state requests over the real server --------------------------------------------------

const fes: TestFrontend[] = [];
afterEach(async () => {
  for (const f of fes.splice(0)) await f.close();
});

function rngFrontend(): TestFrontend {
  const p = rngDeviceType.prepare({}, { addon });
  const fe = new TestFrontend(rngDeviceType, p.params);
  fes.push(fe);
  return fe;
}

const RING = 0x1000;
const ringAddr = (i: number, gpa: number): Uint8Array => vringAddr(i, USER_BASE + BigInt(gpa), USER_BASE + BigInt(gpa + 0x200), USER_BASE + BigInt(gpa + 0x100));

describe('wrong-state and malformed requests (real server)', () => {
  it('SET_VRING_KICK before SET_MEM_TABLE is held: nothing runs until the table and addresses come', async () => {
    const fe = rngFrontend();
    fe.send(VHOST_USER_SET_OWNER);
    const offered = await fe.u64(VHOST_USER_GET_FEATURES);
    expect(await fe.acked(VHOST_USER_SET_PROTOCOL_FEATURES, u64Payload(OFFERED_PROTOCOL_FEATURES))).toBe(0n);
    expect(await fe.acked(VHOST_USER_SET_FEATURES, u64Payload(offered))).toBe(0n);
    const kick = fe.eventfd();
    expect(await fe.acked(VHOST_USER_SET_VRING_KICK, u64Payload(0n), [kick])).toBe(0n);
    expect(await fe.acked(VHOST_USER_SET_VRING_ADDR, ringAddr(0, RING))).toBe(1n); // no table yet
    expect(await fe.acked(VHOST_USER_SET_VRING_NUM, vringStatePayload(0, 8))).toBe(0n);
    expect(await fe.acked(18, vringStatePayload(0, 1))).toBe(0n);
    fe.kick(kick);
    await new Promise((r) => setTimeout(r, 20));
    expect(await fe.acked(VHOST_USER_SET_MEM_TABLE, memTable([{ gpa: 0n, size: BigInt(MEM_SIZE), ua: USER_BASE, off: 0n }]), [fe.memfd])).toBe(0n);
    expect(await fe.acked(VHOST_USER_SET_VRING_ADDR, ringAddr(0, RING))).toBe(0n);
    // now ready: a request is served
    const q = { size: 8, desc: RING, avail: RING + 0x100, used: RING + 0x200, availIdx: 0, lastUsed: 0 };
    fe.post(q, [[0x8000, 32, true]], 0);
    fe.kick(kick);
    expect(await fe.used(q)).toEqual([{ id: 0, len: 32 }]);
  });

  it('SET_VRING_ADDR on a running ring: outside every region refused (the ring keeps serving); a valid move continues at last_avail_idx', async () => {
    const fe = rngFrontend();
    await fe.handshake();
    const { q, kick } = await fe.ring(0, 8, RING);
    fe.post(q, [[0x8000, 16, true]], 0);
    fe.kick(kick);
    await fe.used(q);
    const size = BigInt(MEM_SIZE);
    for (const bad of [
      vringAddr(0, USER_BASE + size - 0x40n, USER_BASE + 0x1200n, USER_BASE + 0x1100n), // desc table runs off the end
      vringAddr(0, USER_BASE - 0x1000n, USER_BASE + 0x1200n, USER_BASE + 0x1100n), // below the region
      vringAddr(0, USER_BASE + 0x1000n, 2n ** 64n - 8n, USER_BASE + 0x1100n), // used ring wraps
      vringAddr(0, USER_BASE + 0x1001n, USER_BASE + 0x1200n, USER_BASE + 0x1100n), // misaligned
    ]) {
      expect(await fe.acked(VHOST_USER_SET_VRING_ADDR, bad)).toBe(1n);
    }
    fe.post(q, [[0x8100, 16, true]], 1);
    fe.kick(kick);
    expect(await fe.used(q)).toEqual([{ id: 1, len: 16 }]);
    // move the ring: copy it, point the device at the copy
    const NEW = 0x4000;
    fe.mem.writeBytes(NEW, fe.mem.readBytes(RING, 0x300));
    expect(await fe.acked(VHOST_USER_SET_VRING_ADDR, vringAddr(0, USER_BASE + BigInt(NEW), USER_BASE + BigInt(NEW + q.used - RING), USER_BASE + BigInt(NEW + q.avail - RING)))).toBe(0n);
    const q2 = { ...q, desc: NEW, avail: NEW + q.avail - RING, used: NEW + q.used - RING };
    fe.post(q2, [[0x8200, 24, true]], 2);
    fe.kick(kick);
    expect(await fe.used(q2)).toEqual([{ id: 2, len: 24 }]);
  });

  it('GET_VRING_BASE on a stopped ring answers its base and starts nothing; indices past the queue count are refused', async () => {
    const fe = rngFrontend();
    await fe.handshake();
    const { q, kick } = await fe.ring(0, 8, RING);
    fe.post(q, [[0x8000, 16, true]], 0);
    fe.kick(kick);
    await fe.used(q);
    const base = async (): Promise<number[]> => {
      const r = await fe.request(VHOST_USER_GET_VRING_BASE, vringStatePayload(0, 0));
      const v = new DataView(r!.payload.buffer);
      return [v.getUint32(0, true), v.getUint32(4, true)];
    };
    expect(await base()).toEqual([0, 1]);
    expect(await base()).toEqual([0, 1]); // stopped: the same answer, nothing restarted
    fe.post(q, [[0x8100, 16, true]], 1);
    fe.kick(kick);
    await new Promise((r) => setTimeout(r, 30));
    expect(fe.mem.read16(q.used + 2)).toBe(1);
    for (const [req, p] of [
      [VHOST_USER_SET_VRING_NUM, vringStatePayload(1, 8)],
      [VHOST_USER_SET_VRING_BASE, vringStatePayload(7, 0)],
      [VHOST_USER_SET_VRING_ADDR, ringAddr(255, RING)],
      [VHOST_USER_SET_VRING_CALL, u64Payload(1n | 256n)],
      [18, vringStatePayload(0xffffffff, 1)],
    ] as const) {
      expect(await fe.acked(req, p)).toBe(1n);
    }
    // a GET whose answer cannot be given closes the connection (the frontend waits for it)
    fe.send(VHOST_USER_GET_VRING_BASE, vringStatePayload(1, 0));
    expect(await fe.closedByServer()).toBe(true);
  });

  it('a kick fd that is not an eventfd: its watch stops with one warning, a new SET_VRING_KICK brings the ring back', async () => {
    const fe = rngFrontend();
    await fe.handshake();
    const { q } = await fe.ring(0, 8, RING);
    const [mine, theirs] = addon.socketpair();
    try {
      expect(await fe.acked(VHOST_USER_SET_VRING_KICK, u64Payload(0n), [theirs])).toBe(0n);
      fe.post(q, [[0x8000, 16, true]], 0);
      expect(addon.vhostSend(mine, new Uint8Array([1, 2, 3]))).toBe(true); // 3 bytes: not an eventfd count
      await new Promise((r) => setTimeout(r, 30));
      expect(fe.logs.filter((l) => /kick fd cannot be read/.test(l))).toHaveLength(1);
      const kick = fe.eventfd();
      expect(await fe.acked(VHOST_USER_SET_VRING_KICK, u64Payload(0n), [kick])).toBe(0n);
      fe.kick(kick);
      expect(await fe.used(q)).toEqual([{ id: 0, len: 16 }]);
    } finally {
      addon.close(mine);
      addon.close(theirs);
    }
  });

  it('unknown requests: refused with NEED_REPLY, the connection closed without', async () => {
    const fe = rngFrontend();
    await fe.handshake();
    expect(await fe.acked(40, new Uint8Array(8))).toBe(1n);
    fe.send(40, new Uint8Array(8));
    expect(await fe.closedByServer()).toBe(true);
  });

  it('framing faults close the connection and the next frontend is served normally', async () => {
    const faults: Array<{ bytes: Uint8Array }> = [
      { bytes: cat(u32(VHOST_USER_GET_FEATURES), u32(0), u32(0)) }, // no version bit
      { bytes: cat(u32(VHOST_USER_GET_FEATURES), u32(2), u32(0)) }, // version 2
      { bytes: cat(u32(VHOST_USER_GET_FEATURES), u32(1 | VHOST_USER_FLAG_REPLY), u32(0)) }, // a reply
      { bytes: cat(u32(VHOST_USER_SET_MEM_TABLE), u32(1), u32(MAX_PAYLOAD + 1)) }, // oversized
    ];
    for (const f of faults) {
      const fe = rngFrontend();
      fe.sendRaw(f.bytes);
      expect(await fe.closedByServer()).toBe(true);
      await fe.close();
      fes.splice(fes.indexOf(fe), 1);
    }
    const fe = rngFrontend();
    await fe.handshake();
    const { q, kick } = await fe.ring(0, 8, RING);
    fe.post(q, [[0x8000, 16, true]], 0);
    fe.kick(kick);
    expect(await fe.used(q)).toEqual([{ id: 0, len: 16 }]);
  });

  it('a truncated message then EOF: the server lets go of the fds it held', async () => {
    const fe = rngFrontend();
    const memfd = addon.memfdCreate('t', 4096);
    const whole = encodeRequest(VHOST_USER_SET_MEM_TABLE, memTable([{ gpa: 0n, size: 4096n, ua: 0n, off: 0n }]));
    fe.sendRaw(whole.subarray(0, 20), [memfd]);
    addon.close(memfd);
    await new Promise((r) => setTimeout(r, 20));
    await fe.close();
    fes.splice(fes.indexOf(fe), 1);
    expect(fe.logs.join('\n')).not.toMatch(/error/);
  });

  it('random bytes on the socket never take the server down (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.oneof(fc.uint8Array({ maxLength: 40 }), headerArb.map((h) => encodeStream([h], 3))), { maxLength: 5 }), async (chunks) => {
        const fe = rngFrontend();
        for (const c of chunks) if (c.length) fe.sendRaw(c);
        await new Promise((r) => setTimeout(r, 5));
        await fe.close(); // resolves once the server has let go of the connection
        fes.splice(fes.indexOf(fe), 1);
        expect(fe.device.busy).toBe(false);
        // every refusal is a protocol error, never an unexpected exception caught by the last resort
        expect(fe.logs.filter((l) => /connection error/.test(l))).toEqual([]);
      }),
      { numRuns: runs(25) },
    );
    // and the device is still served properly afterwards
    const fe = rngFrontend();
    await fe.handshake();
    expect(await fe.u64(VHOST_USER_GET_QUEUE_NUM)).toBe(1n);
  });
});

describe('VhostUserSession: directed cases', () => {
  const msgStep = (request: number, payload: Uint8Array, fds = 0, memfds = false): Step => ({ kind: 'msg', request, payload, fds, memfds, ack: true });
  it('a new memory table that no longer holds the running rings: refused rings stay stopped, a kick does not throw', () => {
    const w = runSession([...prologue(), msgStep(VHOST_USER_SET_MEM_TABLE, memTable([{ gpa: 0n, size: BigInt(REGION / 2), ua: UA + 0x8000n, off: 0x8000n }]), 1, true), { kind: 'kick', ring: 0 }, { kind: 'kick', ring: 1 }], 99);
    expect(w.problems).toEqual([]);
  });
});
