// A test bench for virtio device backends, shared by the virtio-rng and virtio-console suites:
//   ModelRam     guest RAM (three slots: two adjacent ones, so a buffer can straddle a slot boundary,
//                then a hole, then a small one) with a flat byte-for-byte model next to it. The driver
//                writes both; a device model writes only the model; expectSame() then says whether the
//                device wrote exactly what the model did and nothing else.
//   walkChain    a reference chain walker (virtio 1.2 §2.7.5 and the limits SplitQueue documents):
//                what a descriptor chain in (model) RAM resolves to, or that it must be rejected
//   QueueDriver  the driver side of one split queue: posts ChainSpecs (direct descriptors, an optional
//                indirect table, corruptions), publishes them, collects used entries
//   benchQueue   a SplitQueue inside a real ActiveQueue, with a QueueGuard that runs ring accesses
//                inline and records enter/leave/notifyUsed (and can watch each used-ring publish)
//   chainArb     fast-check chains, hostile as well as good
import fc from 'fast-check';
import { expect } from 'vitest';
import { ActiveQueue, createTransportStats, readTransportStats, type QueueGuard } from '../../src/devices/virtio/queue-service.js';
import { SplitQueue } from '../../src/devices/virtio/queue.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { expectSameBytes } from '../fuzz/bytes.js';

export const NEXT = 1;
export const WRITE = 2;
export const INDIRECT = 4;

/** Guest RAM: [0, 0x20000) and [0x20000, 0x40000) (adjacent slots), a hole, [0x60000, 0x68000). */
export const SLOTS = [
  { gpa: 0, size: 0x20000 },
  { gpa: 0x20000, size: 0x20000 },
  { gpa: 0x60000, size: 0x8000 },
];
export const SLOT_EDGE = 0x20000;
export const HOLE = 0x40000;
export const HIGH = 0x60000;
export const RAM_END = 0x68000;
/** Rings live below DATA; every in-RAM address the arbitraries produce is at or above it. */
export const DATA = 0x10000;

/** Initial RAM contents: a byte pattern, so that a stray write of any value shows. */
const PATTERN = (() => {
  const p = new Uint8Array(RAM_END);
  let x = 0x2545f491;
  for (let i = 0; i < p.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) | 0;
    p[i] = x >>> 23;
  }
  return p;
})();

/** Whether every byte of [addr, addr+len) is RAM (GuestMemory's rule: a zero-length range needs its address in RAM or at the end). */
export function inRam(addr: bigint | number, len: number): boolean {
  const a = BigInt(addr);
  const e = a + BigInt(len);
  if (len === 0) return a < BigInt(HOLE) || (a >= BigInt(HIGH) && a <= BigInt(RAM_END));
  return e <= BigInt(HOLE) || (a >= BigInt(HIGH) && e <= BigInt(RAM_END));
}

export class ModelRam {
  readonly mem: GuestMemory;
  /** The model: indexed by guest-physical address (the hole is never compared). */
  readonly model: Uint8Array;
  private readonly real: Array<{ gpa: number; bytes: Uint8Array }>;
  private readonly dv: DataView;

  constructor() {
    this.model = PATTERN.slice();
    this.dv = new DataView(this.model.buffer);
    const slots = SLOTS.map((s, i) => {
      const buffer = new SharedArrayBuffer(s.size);
      new Uint8Array(buffer).set(PATTERN.subarray(s.gpa, s.gpa + s.size));
      return { slot: i, gpa: s.gpa, size: s.size, buffer };
    });
    this.mem = new GuestMemory(slots);
    this.real = slots.map((s) => ({ gpa: s.gpa, bytes: new Uint8Array(s.buffer) }));
  }

  /** A driver write: real RAM and model. */
  write(gpa: number, bytes: Uint8Array): void {
    this.mem.writeBytes(gpa, bytes);
    this.model.set(bytes, gpa);
  }
  write16(gpa: number, v: number): void {
    this.write(gpa, Uint8Array.of(v & 0xff, (v >>> 8) & 0xff));
  }
  writeDesc(gpa: number, addr: bigint, len: number, flags: number, next: number): void {
    const b = new Uint8Array(16);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, BigInt.asUintN(64, addr), true);
    v.setUint32(8, len >>> 0, true);
    v.setUint16(12, flags, true);
    v.setUint16(14, next, true);
    this.write(gpa, b);
  }
  /** The model's descriptor at `gpa` (which must be RAM). */
  modelDesc(gpa: number): { addr: bigint; len: number; flags: number; next: number } {
    const v = this.dv;
    return { addr: v.getBigUint64(gpa, true), len: v.getUint32(gpa + 8, true), flags: v.getUint16(gpa + 12, true), next: v.getUint16(gpa + 14, true) };
  }
  /** Bytes of real RAM over `ranges` (first `n` bytes of their concatenation). */
  readReal(ranges: readonly Range[], n: number): Uint8Array {
    const out = new Uint8Array(n);
    let pos = 0;
    for (const r of ranges) {
      if (pos >= n) break;
      const k = Math.min(r.len, n - pos);
      out.set(this.mem.readBytes(r.gpa, k), pos);
      pos += k;
    }
    return out;
  }
  /** Bytes of the model over `ranges`, from byte `from` of their concatenation, `n` of them. */
  readModel(ranges: readonly Range[], from: number, n: number): Uint8Array {
    const out = new Uint8Array(n);
    let pos = 0;
    let got = 0;
    for (const r of ranges) {
      if (got >= n) break;
      const start = Math.max(from - pos, 0);
      if (start < r.len) {
        const k = Math.min(r.len - start, n - got);
        out.set(this.model.subarray(r.gpa + start, r.gpa + start + k), got);
        got += k;
      }
      pos += r.len;
    }
    return out;
  }
  /**
   * A published rx chain: the device wrote `bytes` (its first used.len bytes, read back from real RAM)
   * into `ranges` in order: the model takes them, so that every other byte must still match.
   */
  acceptDeviceWrite(ranges: readonly Range[], bytes: Uint8Array): void {
    let pos = 0;
    for (const r of ranges) {
      if (pos >= bytes.length) break;
      const k = Math.min(r.len, bytes.length - pos);
      this.model.set(bytes.subarray(pos, pos + k), r.gpa);
      pos += k;
    }
  }

  /** Copy real RAM into the model over [gpa, gpa+len) (areas checked by other means: used rings). */
  adopt(gpa: number, len: number): void {
    this.model.set(this.mem.readBytes(gpa, len), gpa);
  }
  /** Real RAM equals the model, byte for byte. */
  expectSame(what: string): void {
    for (const s of this.real) expectSameBytes(s.bytes, this.model.subarray(s.gpa, s.gpa + s.bytes.length), `${what}: RAM from 0x${s.gpa.toString(16)}`);
  }
}

export interface Range {
  gpa: number;
  len: number;
}

export type Walk =
  | { ok: true; readable: Range[]; writable: Range[]; readableBytes: number; writableBytes: number }
  | { ok: false; why: string };

/**
 * Reference walk of the chain at `head` as the model RAM holds it: buffers in chain order, or why the
 * device must reject the chain (loop, bad next index, buffer or indirect table outside RAM, readable
 * after writable, more buffers than the queue size, INDIRECT without the feature / with NEXT / nested /
 * with a table length that is not a non-zero multiple of 16, more than 2^32-1 bytes).
 */
export function walkChain(ram: ModelRam, q: { desc: number; size: number; indirect: boolean }, head: number): Walk {
  const readable: Range[] = [];
  const writable: Range[] = [];
  let readableBytes = 0;
  let writableBytes = 0;
  let count = 0;
  let sawWritable = false;
  const bad = (why: string): Walk => ({ ok: false, why });
  const ok = (): Walk => ({ ok: true, readable, writable, readableBytes, writableBytes });
  const add = (d: { addr: bigint; len: number; flags: number }): string | undefined => {
    if (++count > q.size) return 'more buffers than the queue size';
    const w = (d.flags & WRITE) !== 0;
    if (!w && sawWritable) return 'readable after writable';
    if (readableBytes + writableBytes + d.len > 0xffffffff) return 'longer than 2^32-1 bytes';
    if (!inRam(d.addr, d.len)) return 'buffer outside RAM';
    if (w) {
      writable.push({ gpa: Number(d.addr), len: d.len });
      writableBytes += d.len;
      sawWritable = true;
    } else {
      readable.push({ gpa: Number(d.addr), len: d.len });
      readableBytes += d.len;
    }
    return undefined;
  };
  const seen = new Set<number>();
  let i = head;
  for (;;) {
    if (seen.has(i)) return bad('loop');
    seen.add(i);
    const d = ram.modelDesc(q.desc + 16 * i);
    if (d.flags & INDIRECT) {
      if (!q.indirect) return bad('INDIRECT not negotiated');
      if (d.flags & NEXT) return bad('INDIRECT with NEXT');
      if (d.len === 0 || d.len % 16 !== 0) return bad('indirect table length');
      if (!inRam(d.addr, d.len)) return bad('indirect table outside RAM');
      const n = d.len / 16;
      const tseen = new Set<number>();
      let j = 0;
      for (;;) {
        if (j >= n) return bad('indirect next beyond the table');
        if (tseen.has(j)) return bad('indirect loop');
        tseen.add(j);
        if (count >= q.size) return bad('more buffers than the queue size');
        const e = ram.modelDesc(Number(d.addr) + 16 * j);
        if (e.flags & INDIRECT) return bad('nested INDIRECT');
        const why = add(e);
        if (why) return bad(why);
        if (!(e.flags & NEXT)) return ok();
        j = e.next;
      }
    }
    const why = add(d);
    if (why) return bad(why);
    if (!(d.flags & NEXT)) return ok();
    if (d.next >= q.size) return bad('next beyond the queue');
    i = d.next;
  }
}

/** Whether the first `n` bytes of `ranges` overlap each other (then a later byte overwrote an earlier one). */
export function selfOverlaps(ranges: readonly Range[], n: number): boolean {
  const parts: Array<[number, number]> = [];
  let left = n;
  for (const r of ranges) {
    if (left <= 0) break;
    const k = Math.min(r.len, left);
    if (k > 0) parts.push([r.gpa, r.gpa + k]);
    left -= k;
  }
  parts.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < parts.length; i++) if (parts[i][0] < parts[i - 1][1]) return true;
  return false;
}

// ---- chains ------------------------------------------------------------------------------------

export interface BufSpec {
  addr: bigint;
  len: number;
  write: boolean;
}
export interface TableSpec {
  at: bigint;
  bufs: BufSpec[];
  /** Added to the table length 16 * bufs.length (0: right; else not a multiple of 16, short, zero). */
  lenDelta: number;
  /** INDIRECT together with NEXT. */
  withNext: boolean;
  /** The first table entry is itself INDIRECT. */
  nested: boolean;
}
export interface ChainSpec {
  /** Direct buffers (before the indirect descriptor, if any). */
  bufs: BufSpec[];
  table: TableSpec | null;
  /** The chain's last descriptor gets NEXT back to its first one, or NEXT to an index past the end. */
  corrupt: 'none' | 'loop' | 'bad-next';
}

/** A good chain of device-writable (or device-readable) buffers. */
export function simpleChain(bufs: Array<[number, number]>, write: boolean): ChainSpec {
  return { bufs: bufs.map(([addr, len]) => ({ addr: BigInt(addr), len, write })), table: null, corrupt: 'none' };
}

/** In-RAM buffer addresses (at or above DATA), some close below the slot edge so that buffers straddle it. */
export const ramAddrArb: fc.Arbitrary<number> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: DATA, max: HOLE - 1 }) },
  { weight: 1, arbitrary: fc.integer({ min: HIGH, max: RAM_END - 1 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 48 }).map((k) => SLOT_EDGE - k) },
);

/** Addresses of buffers that are not (entirely) RAM: running into the hole, in it, past the end, beyond 4 GiB. */
export const badAddrArb: fc.Arbitrary<bigint> = fc
  .oneof(
    fc.integer({ min: 1, max: 48 }).map((k) => HOLE - k),
    fc.integer({ min: HOLE, max: HIGH - 1 }),
    fc.integer({ min: 0, max: 48 }).map((k) => RAM_END - k),
    fc.bigInt({ min: 1n << 32n, max: (1n << 64n) - 1n }),
  )
  .map((a) => BigInt(a));

/** Buffer addresses: mostly RAM, sometimes not. */
export const addrArb: fc.Arbitrary<bigint> = fc.oneof({ weight: 5, arbitrary: ramAddrArb.map((a) => BigInt(a)) }, { weight: 1, arbitrary: badAddrArb });

/** Buffer lengths: small ones (up to `small`), sometimes `big` ones. */
export function lenArb(big: readonly number[], small = 200): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 12, arbitrary: fc.integer({ min: 0, max: small }) },
    { weight: 2, arbitrary: fc.constantFrom(0, 1, 15, 16, 17, 63, 64, 65) },
    { weight: 2, arbitrary: fc.constantFrom(...big) },
  );
}
/** Lengths no buffer in RAM has. */
export const hugeLenArb: fc.Arbitrary<number> = fc.oneof(fc.constantFrom(0xffffffff, 0x80000000, 0x100001), fc.integer({ min: 0x100001, max: 0xffffffff }));

/**
 * Chains, about half of them well-formed: device-readable buffers then device-writable ones, in RAM
 * (possibly overlapping each other and straddling the slot edge), direct or through an indirect table
 * (up to `maxTable` entries) after up to `maxDirect` direct ones. The others are hostile: each buffer
 * device-writable with probability writeTenths/10 in any order, addresses outside RAM, huge lengths,
 * bad indirect tables (length, INDIRECT with NEXT, nested, outside RAM), loops, next past the end.
 */
export function chainArb(o: { writeTenths: number; big: readonly number[]; small?: number; maxDirect?: number; maxTable?: number }): fc.Arbitrary<ChainSpec> {
  const dir = fc.integer({ min: 0, max: 9 }).map((x) => x < o.writeTenths);
  const goodBuf = fc.record({ addr: ramAddrArb.map((a) => BigInt(a)), len: lenArb(o.big, o.small), write: dir });
  const anyBuf = fc.record({
    addr: addrArb,
    len: fc.oneof({ weight: 12, arbitrary: lenArb(o.big, o.small) }, { weight: 1, arbitrary: hugeLenArb }),
    write: dir,
  });
  const sorted = (bufs: BufSpec[]): BufSpec[] => [...bufs.filter((b) => !b.write), ...bufs.filter((b) => b.write)];
  const good: fc.Arbitrary<ChainSpec> = fc
    .record({
      bufs: fc.array(goodBuf, { minLength: 0, maxLength: o.maxDirect ?? 3 }),
      table: fc.option(fc.record({ at: ramAddrArb.map((a) => BigInt(a)), bufs: fc.array(goodBuf, { minLength: 1, maxLength: o.maxTable ?? 6 }) }), { freq: 3 }),
    })
    .filter((s) => s.bufs.length > 0 || s.table !== null)
    .map((s): ChainSpec => {
      const all = sorted([...s.bufs, ...(s.table?.bufs ?? [])]);
      const nd = s.bufs.length;
      return {
        bufs: all.slice(0, nd),
        table: s.table ? { at: s.table.at, bufs: all.slice(nd), lenDelta: 0, withNext: false, nested: false } : null,
        corrupt: 'none',
      };
    });
  const table = fc.record({
    at: addrArb,
    bufs: fc.array(anyBuf, { minLength: 1, maxLength: o.maxTable ?? 6 }),
    lenDelta: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(-16, -1, 8, -1_000_000) }),
    withNext: fc.oneof({ weight: 8, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    nested: fc.oneof({ weight: 8, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  });
  const hostile: fc.Arbitrary<ChainSpec> = fc
    .record({
      bufs: fc.array(anyBuf, { minLength: 0, maxLength: o.maxDirect ?? 3 }),
      table: fc.option(table, { freq: 3 }),
      corrupt: fc.oneof(
        { weight: 6, arbitrary: fc.constant('none' as const) },
        { weight: 1, arbitrary: fc.constant('loop' as const) },
        { weight: 1, arbitrary: fc.constant('bad-next' as const) },
      ),
    })
    .filter((s) => s.bufs.length > 0 || s.table !== null);
  return fc.oneof(good, hostile);
}

export interface QueueLayout {
  size: number;
  desc: number;
  avail: number;
  used: number;
}
export const usedRingBytes = (l: QueueLayout): number => 6 + 8 * l.size;

/** The driver side of one split queue in a ModelRam. */
export class QueueDriver {
  availIdx = 0;
  usedSeen = 0;
  private readonly free: number[];
  /** Chains posted and not completed yet: head → descriptor indexes. */
  readonly inflight = new Map<number, number[]>();

  constructor(
    readonly ram: ModelRam,
    readonly l: QueueLayout,
  ) {
    this.free = Array.from({ length: l.size }, (_, i) => i);
    ram.write(l.avail, new Uint8Array(6 + 2 * l.size));
    ram.write(l.used, new Uint8Array(usedRingBytes(l)));
  }

  get freeDescriptors(): number {
    return this.free.length;
  }

  /** Write the chain's descriptors and table (not its data) and publish it; undefined if it does not fit. */
  post(spec: ChainSpec): number | undefined {
    const n = spec.bufs.length + (spec.table ? 1 : 0);
    if (n === 0 || n > this.free.length) return undefined;
    const idx = this.free.splice(0, n);
    const { desc, size } = this.l;
    const lastDirect = n - 1;
    spec.bufs.forEach((b, i) => {
      const more = i < lastDirect;
      let flags = (b.write ? WRITE : 0) | (more ? NEXT : 0);
      let next = more ? idx[i + 1] : 0;
      if (!more && spec.corrupt !== 'none') {
        flags |= NEXT;
        next = spec.corrupt === 'loop' ? idx[0] : size + (i % 7);
      }
      this.ram.writeDesc(desc + 16 * idx[i], b.addr, b.len, flags, next);
    });
    const t = spec.table;
    if (t) {
      const m = t.bufs.length;
      t.bufs.forEach((b, j) => {
        const more = j < m - 1;
        let flags = (b.write ? WRITE : 0) | (more ? NEXT : 0) | (j === 0 && t.nested ? INDIRECT : 0);
        let next = more ? j + 1 : 0;
        if (!more && spec.corrupt !== 'none') {
          flags |= NEXT;
          next = spec.corrupt === 'loop' ? 0 : m + 3;
        }
        const at = t.at + BigInt(16 * j);
        if (inRam(at, 16)) this.ram.writeDesc(Number(at), b.addr, b.len, flags, next);
      });
      const len = Math.max(0, 16 * m + t.lenDelta);
      this.ram.writeDesc(desc + 16 * idx[lastDirect], t.at, len, INDIRECT | (t.withNext ? NEXT : 0), t.withNext ? idx[0] : 0);
    }
    this.inflight.set(idx[0], idx);
    this.publish(idx[0]);
    return idx[0];
  }

  /** Fill the chain's in-RAM device-readable buffers with bytes derived from `seed` (what a guest sends). */
  fillReadable(spec: ChainSpec, seed: number): void {
    let k = seed;
    for (const b of [...spec.bufs, ...(spec.table?.bufs ?? [])]) {
      if (b.write || b.len === 0 || b.len > 0x4000 || !inRam(b.addr, b.len)) continue;
      const bytes = new Uint8Array(b.len);
      for (let i = 0; i < bytes.length; i++) bytes[i] = (Math.imul(k++, 0x9e3779b1) >>> 24) & 0xff;
      this.ram.write(Number(b.addr), bytes);
    }
  }

  publish(head: number): void {
    const { avail, size } = this.l;
    this.ram.write16(avail + 4 + 2 * (this.availIdx % size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.ram.write16(avail + 2, this.availIdx);
  }

  setAvailFlags(flags: number): void {
    this.ram.write16(this.l.avail, flags);
  }

  /** Used entries the device published since the last call (each must be a chain in flight; it is freed). */
  takeUsed(): Array<{ id: number; len: number }> {
    const { used, size } = this.l;
    const out: Array<{ id: number; len: number }> = [];
    const idx = this.ram.mem.read16(used + 2);
    while (this.usedSeen !== idx) {
      const o = used + 4 + 8 * (this.usedSeen % size);
      const e = { id: this.ram.mem.read32(o), len: this.ram.mem.read32(o + 4) };
      const d = this.inflight.get(e.id);
      expect(d, `used id ${e.id} is not a chain in flight`).toBeDefined();
      this.inflight.delete(e.id);
      this.free.push(...d!);
      out.push(e);
      this.usedSeen = (this.usedSeen + 1) & 0xffff;
    }
    return out;
  }
}

export interface GuardLog {
  enters: number;
  leaves: number;
  notifies: number;
  /** rings() calls currently running. */
  depth: number;
}

/**
 * A SplitQueue in a real ActiveQueue. The guard runs ring accesses inline (rings = fn => fn()), checks
 * that enter() happens inside rings(), records enter/leave/notifyUsed, and calls `onPublish` after a
 * rings() call that moved used.idx (the moment the driver can see the new used entries).
 */
export function benchQueue(
  ram: ModelRam,
  l: QueueLayout,
  opts: { index: number; indirect: boolean; eventIdx?: boolean; onPublish?: () => void },
): { aq: ActiveQueue; sq: SplitQueue; log: GuardLog; stats: SharedArrayBuffer; drv: QueueDriver } {
  const drv = new QueueDriver(ram, l);
  const sq = new SplitQueue(ram.mem, { size: l.size, descAddr: l.desc, driverAddr: l.avail, deviceAddr: l.used, eventIdx: opts.eventIdx ?? false, indirect: opts.indirect });
  const log: GuardLog = { enters: 0, leaves: 0, notifies: 0, depth: 0 };
  const guard: QueueGuard = {
    rings<T>(fn: () => T): T {
      const before = sq.usedIdx;
      log.depth++;
      let r: T;
      try {
        r = fn();
      } finally {
        log.depth--;
      }
      if (sq.usedIdx !== before) opts.onPublish?.();
      return r;
    },
    enter() {
      expect(log.depth, 'enter() outside rings()').toBe(1);
      log.enters++;
    },
    leave() {
      log.leaves++;
    },
    notifyUsed() {
      log.notifies++;
    },
  };
  const stats = createTransportStats();
  const aq = new ActiveQueue({ index: opts.index, queue: sq, guard, mem: ram.mem, descAddr: l.desc, stats });
  return { aq, sq, log, stats, drv };
}

/** Chains the queue rejected, from the transport counters. */
export function brokenChains(stats: SharedArrayBuffer): number {
  return readTransportStats(stats).brokenChains;
}
