import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MmioBus, PioBus, allOnes, type AccessSize, type BusAccessSize, type ByteDevice, type PioDevice } from '../../src/devices/bus.js';
import { DebugExit, DEBUG_EXIT_PORT } from '../../src/devices/legacy/debug-exit.js';
import { PostCode, POST_PORT } from '../../src/devices/legacy/post.js';
import { Serial16550 } from '../../src/devices/legacy/serial.js';
import { runs } from '../fuzz/budget.js';
import { expectSameBytes } from '../fuzz/bytes.js';

/** A byte-wide register file that records accesses. */
class Regs implements ByteDevice {
  readonly mem: Uint8Array;
  readonly log: string[] = [];
  constructor(n: number, fill = 0) {
    this.mem = new Uint8Array(n).map((_, i) => (fill + i) & 0xff);
  }
  read(offset: number): number {
    this.log.push(`r${offset}`);
    return this.mem[offset];
  }
  write(offset: number, value: number): void {
    this.log.push(`w${offset}=${value}`);
    this.mem[offset] = value;
  }
}

/** A wide device that records (offset, size, value). */
class Wide implements PioDevice {
  readonly log: [string, number, number, number][] = [];
  read(offset: number, size: AccessSize): number {
    this.log.push(['r', offset, size, 0]);
    return size === 4 ? 0xdeadbeef : size === 2 ? 0xbeef : 0xef;
  }
  write(offset: number, size: AccessSize, value: number): void {
    this.log.push(['w', offset, size, value]);
  }
}

describe('PioBus', () => {
  it('routes by range with offsets relative to the base', () => {
    const bus = new PioBus();
    const a = new Wide();
    const b = new Wide();
    bus.register(0x3f8, 8, new Wide(), 'com1');
    bus.register(0x60, 5, a, 'i8042');
    bus.register(0xcf8, 8, b, 'pci');
    expect(bus.ranges().map((r) => r.name)).toEqual(['i8042', 'com1', 'pci']);
    expect(bus.read(0x64, 1)).toBe(0xef);
    expect(a.log).toEqual([['r', 4, 1, 0]]);
    bus.write(0xcfc, 4, 0x80000000);
    expect(b.log).toEqual([['w', 4, 4, 0x80000000]]);
    expect(bus.read(0xcfc, 4)).toBe(0xdeadbeef);
    expect(bus.lookup(0x3ff)).toEqual({ base: 0x3f8, length: 8, name: 'com1' });
    expect(bus.lookup(0x400)).toBeUndefined();
  });

  it('rejects overlapping and out-of-space ranges', () => {
    const bus = new PioBus();
    bus.register(0x60, 5, new Wide(), 'i8042');
    expect(() => bus.register(0x64, 1, new Wide(), 'x')).toThrow(/overlaps i8042/);
    expect(() => bus.register(0x5c, 5, new Wide(), 'y')).toThrow(/overlaps i8042/);
    expect(() => bus.register(0x50, 0x20, new Wide(), 'z')).toThrow(/overlaps/);
    expect(() => bus.register(0xfffe, 4, new Wide(), 'big')).toThrow(RangeError);
    expect(() => bus.register(0x10, 0, new Wide(), 'empty')).toThrow(RangeError);
    bus.register(0x65, 1, new Wide(), 'adjacent');
    bus.register(0x5f, 1, new Wide(), 'adjacent-below');
  });

  it('reads all-ones and drops writes on unknown ports, reporting each port once', () => {
    const seen: [string, number][] = [];
    const bus = new PioBus((kind, port) => seen.push([kind, port]));
    expect(bus.read(0x80, 1)).toBe(0xff);
    expect(bus.read(0x80, 2)).toBe(0xffff);
    expect(bus.read(0x80, 4)).toBe(0xffffffff);
    bus.write(0x80, 1, 0);
    bus.write(0x81, 2, 0);
    expect(bus.read(0x81, 1)).toBe(0xff);
    expect(seen).toEqual([
      ['read', 0x80],
      ['write', 0x81],
    ]);
    expect(allOnes(1)).toBe(0xff);
    expect(allOnes(2)).toBe(0xffff);
    expect(allOnes(4)).toBe(0xffffffff);
  });

  it('splits multi-byte accesses to byte-wide devices (little-endian)', () => {
    const bus = new PioBus();
    const regs = new Regs(8, 0x10);
    bus.registerBytewise(0x3f8, 8, regs, 'com1');
    expect(bus.read(0x3f8, 2)).toBe(0x1110);
    expect(bus.read(0x3fa, 4)).toBe(0x15141312);
    expect(regs.log).toEqual(['r0', 'r1', 'r2', 'r3', 'r4', 'r5']);
    regs.log.length = 0;
    bus.write(0x3fc, 2, 0xabcd);
    expect(regs.log).toEqual(['w4=205', 'w5=171']);
  });

  it('splits accesses that straddle a range end; the outside bytes read all-ones', () => {
    const seen: number[] = [];
    const bus = new PioBus((_k, p) => seen.push(p));
    const regs = new Regs(8, 0x10);
    bus.registerBytewise(0x3f8, 8, regs, 'com1');
    expect(bus.read(0x3fe, 4)).toBe(0xffff1716);
    expect(bus.read(0x3f6, 4)).toBe(0x1110ffff);
    expect(seen).toEqual([0x400, 0x401, 0x3f6, 0x3f7]);
    const wide = new Wide();
    bus.register(0x500, 4, wide, 'wide');
    expect(bus.read(0x502, 4)).toBe(0xffffefef);
    expect(wide.log).toEqual([
      ['r', 2, 1, 0],
      ['r', 3, 1, 0],
    ]);
  });

  it('a 16-bit in on the UART reads RBR then IER as two byte accesses', () => {
    const bus = new PioBus();
    const uart = new Serial16550(Serial16550.createState(), { tx: () => undefined, irq: () => undefined });
    bus.registerBytewise(0x3f8, 8, uart, 'com1');
    uart.receive(Uint8Array.of(0x41));
    bus.write(0x3f9, 1, 0x05);
    expect(bus.read(0x3f8, 2)).toBe(0x0541);
    expect(bus.read(0x3fd, 1) & 1).toBe(0);
  });

  it('routes every byte to the right place (property)', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 0xfff0 }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.constantFrom<AccessSize>(1, 2, 4)), { maxLength: 60 }),
        (bases, accesses) => {
          const bus = new PioBus();
          const owner = new Map<number, Regs>();
          const sorted = [...bases].sort((x, y) => x - y);
          for (let i = 0; i < sorted.length; i++) {
            const len = Math.max(1, Math.min(8, (sorted[i + 1] ?? 0x10000) - sorted[i]));
            const regs = new Regs(len, sorted[i]);
            bus.registerBytewise(sorted[i], len, regs, `d${i}`);
            for (let k = 0; k < len; k++) owner.set(sorted[i] + k, regs);
          }
          for (const [port, size] of accesses) {
            let expected = 0;
            for (let k = 0; k < size; k++) {
              const p = port + k;
              const r = owner.get(p);
              const base = bus.lookup(p)?.base ?? 0;
              expected += (r ? r.mem[p - base] : 0xff) * 2 ** (8 * k);
            }
            expect(bus.read(port, size)).toBe(expected);
          }
        },
      ),
      { numRuns: runs(200) },
    );
  });
});

describe('MmioBus', () => {
  it('handles addresses above 4 GiB, sizes 1/2/4/8 and byte buffers', () => {
    const seen: number[] = [];
    const bus = new MmioBus((_k, a) => seen.push(a));
    const wide = new Wide();
    const base = 0xd000_0000_0;
    bus.register(base, 0x1000, wide, 'virtio0');
    expect(bus.read(base + 0x70, 4)).toBe(0xdeadbeef);
    expect(bus.read(base + 0x70, 8)).toBe(0xdeadbeef * 2 ** 32 + 0xdeadbeef);
    bus.write(base + 0x10, 8, 0x1_0000_0002);
    expect(wide.log.slice(-2)).toEqual([
      ['w', 0x10, 4, 2],
      ['w', 0x14, 4, 1],
    ]);
    const data = new Uint8Array(4);
    bus.readBytes(base, data);
    expect([...data]).toEqual([0xef, 0xbe, 0xad, 0xde]);
    bus.writeBytes(base + 0x20, Uint8Array.of(1, 2));
    expect(wide.log.at(-1)).toEqual(['w', 0x20, 2, 0x0201]);
    const unk = new Uint8Array(8);
    bus.readBytes(0xfee0_0000, unk);
    expect([...unk]).toEqual(new Array(8).fill(0xff));
    expect(bus.read(0xfee0_0000, 4)).toBe(0xffffffff);
    expect(seen).toEqual([0xfee0_0000, 0xfee0_0004]);
    expect(() => bus.register(base + 0xfff, 2, new Wide(), 'overlap')).toThrow(/overlaps virtio0/);
  });
});

describe('debug-exit and POST ports', () => {
  it('debug-exit ends with value & 0xff on 1–4 byte writes and reads all-ones', () => {
    const codes: number[] = [];
    const bus = new PioBus();
    bus.register(DEBUG_EXIT_PORT, DebugExit.LENGTH, new DebugExit({ exit: (c) => codes.push(c) }), 'debug-exit');
    bus.write(0xf4, 1, 3);
    bus.write(0xf4, 2, 0x1234);
    bus.write(0xf4, 4, 0xffffff01);
    expect(codes).toEqual([3, 0x34, 0x01]);
    expect(bus.read(0xf4, 1)).toBe(0xff);
    expect(bus.read(0xf4, 4)).toBe(0xffffffff);
  });

  it('POST port remembers the last value across instances', () => {
    const state = PostCode.createState();
    const seen: number[] = [];
    const bus = new PioBus();
    bus.register(POST_PORT, PostCode.LENGTH, new PostCode(state, { onCode: (v) => seen.push(v) }), 'post');
    bus.write(0x80, 1, 0x1ab);
    expect(bus.read(0x80, 1)).toBe(0xab);
    const other = new PostCode(state);
    expect(other.last()).toBe(0xab);
    other.write(0, 4, 0xcafef00d);
    expect(other.read(0, 4)).toBe(0xcafef00d);
    expect(other.read(0, 2)).toBe(0xf00d);
    expect(seen).toEqual([0xab]);
  });
});

// ---- the buses against a model -----------------------------------------------------------------
//
// The model is a list of ranges searched linearly, each backed by a byte array, and a statement of
// how the bus splits an access (src/devices/bus.ts): 8 bytes → two 4-byte accesses, low half first;
// an access wholly inside one range → one device access; an access wholly outside every range
// (starting in no range, and no range starting inside it) → unknown (all-ones on read, dropped on
// write, reported once per start address); anything else → one byte access per byte. readInto and
// writeFrom split a `len`-byte access the same way for len 1/2/4/8 and into bytes for other lengths.

/** Device memory of any length (a range may be 2^53 bytes long): bytes start as a pattern, writes are kept. */
class Sparse {
  private readonly written = new Map<number, number>();
  constructor(
    readonly length: number,
    private readonly seed: number,
  ) {}
  get(i: number): number {
    return this.written.get(i) ?? (this.seed * 37 + i * 11) & 0xff;
  }
  set(i: number, v: number): void {
    this.written.set(i, v & 0xff);
  }
  /** The first `n` bytes. */
  head(n: number): Uint8Array {
    return Uint8Array.from({ length: Math.min(n, this.length) }, (_, i) => this.get(i));
  }
}

/** A wide device over device memory that logs every access and checks it stays inside its range. */
class MemDevice implements PioDevice {
  constructor(
    readonly name: string,
    readonly mem: Sparse,
    readonly log: string[],
    /** Garbage the device leaves above the access size in what it returns (the bus must mask it). */
    readonly junk: number,
  ) {}
  private check(offset: number, size: AccessSize): void {
    if (!(size === 1 || size === 2 || size === 4) || !Number.isInteger(offset) || offset < 0 || offset + size > this.mem.length) {
      throw new Error(`${this.name}: access ${offset}/${size} outside its ${this.mem.length} bytes`);
    }
  }
  read(offset: number, size: AccessSize): number {
    this.check(offset, size);
    this.log.push(`${this.name} r${offset}/${size}`);
    let v = 0;
    for (let i = 0; i < size; i++) v += this.mem.get(offset + i) * 2 ** (8 * i);
    return size === 4 ? v : v + this.junk * 2 ** (8 * size);
  }
  write(offset: number, size: AccessSize, value: number): void {
    this.check(offset, size);
    if (!Number.isInteger(value) || value < 0 || value >= 2 ** (8 * size)) throw new Error(`${this.name}: value ${value} wider than ${size} bytes`);
    this.log.push(`${this.name} w${offset}/${size}=${value}`);
    for (let i = 0; i < size; i++) this.mem.set(offset + i, Math.floor(value / 2 ** (8 * i)));
  }
}

interface ModelRange {
  base: number;
  len: number;
  name: string;
  mem: Sparse;
}

type Piece = { r: ModelRange; addr: number; size: AccessSize } | { r: undefined; addr: number; size: AccessSize };

class BusModel {
  readonly ranges: ModelRange[] = [];
  readonly log: string[] = [];
  readonly reported: Array<[string, number]> = [];
  private readonly seen = new Set<number>();
  constructor(readonly limit: number) {}

  /** Whether the bus must accept [base, base+len). */
  accepts(base: number, len: number): 'ok' | 'range' | 'overlap' {
    if (len <= 0 || base < 0 || base + len > this.limit) return 'range';
    return this.ranges.some((r) => base < r.base + r.len && r.base < base + len) ? 'overlap' : 'ok';
  }
  owner(a: number): ModelRange | undefined {
    return this.ranges.find((r) => a >= r.base && a < r.base + r.len);
  }
  split(addr: number, size: BusAccessSize): Piece[] {
    if (size === 8) return [...this.split(addr, 4), ...this.split(addr + 4, 4)];
    const r = this.owner(addr);
    if (r !== undefined && addr + size <= r.base + r.len) return [{ r, addr, size }];
    if (r === undefined && !this.ranges.some((x) => x.base > addr && x.base < addr + size)) return [{ r: undefined, addr, size }];
    const out: Piece[] = [];
    for (let i = 0; i < size; i++) out.push(...this.split(addr + i, 1));
    return out;
  }
  splitLen(addr: number, len: number): Piece[] {
    if (len === 1 || len === 2 || len === 4 || len === 8) return this.split(addr, len);
    const out: Piece[] = [];
    for (let i = 0; i < len; i++) out.push(...this.split(addr + i, 1));
    return out;
  }
  private unknown(kind: string, addr: number): void {
    if (this.seen.has(addr) || this.seen.size >= 4096) return;
    this.seen.add(addr);
    this.reported.push([kind, addr]);
  }
  /** The bytes a read of the pieces returns, little-endian, logging the device accesses. */
  readPieces(pieces: Piece[]): number[] {
    const bytes: number[] = [];
    for (const p of pieces) {
      if (p.r === undefined) {
        this.unknown('read', p.addr);
        for (let i = 0; i < p.size; i++) bytes.push(0xff);
      } else {
        this.log.push(`${p.r.name} r${p.addr - p.r.base}/${p.size}`);
        for (let i = 0; i < p.size; i++) bytes.push(p.r.mem.get(p.addr - p.r.base + i));
      }
    }
    return bytes;
  }
  /** Write `bytes` (little-endian) through the pieces. */
  writePieces(pieces: Piece[], bytes: number[]): void {
    let k = 0;
    for (const p of pieces) {
      const chunk = bytes.slice(k, k + p.size);
      k += p.size;
      if (p.r === undefined) {
        this.unknown('write', p.addr);
        continue;
      }
      let v = 0;
      chunk.forEach((b, i) => (v += b * 2 ** (8 * i)));
      this.log.push(`${p.r.name} w${p.addr - p.r.base}/${p.size}=${v}`);
      chunk.forEach((b, i) => p.r.mem.set(p.addr - p.r.base + i, b));
    }
  }
}

const leBytes = (v: number, n: number): number[] => Array.from({ length: n }, (_, i) => Math.floor(v / 2 ** (8 * i)) % 256);
const leValue = (bytes: number[]): number => bytes.reduce((acc, b, i) => acc + b * 2 ** (8 * i), 0);

type Op =
  | { op: 'read'; at: number; size: BusAccessSize }
  | { op: 'write'; at: number; size: BusAccessSize; value: number }
  | { op: 'readInto'; at: number; len: number }
  | { op: 'writeFrom'; at: number; len: number; bytes: number[] };

function opArb(sizes: BusAccessSize[], span: number): fc.Arbitrary<Op> {
  const at = fc.integer({ min: -8, max: span + 8 });
  const size = fc.constantFrom(...sizes);
  const maxLen = sizes.includes(8) ? 8 : 4;
  return fc.oneof(
    fc.record({ op: fc.constant('read' as const), at, size }),
    size.chain((s) =>
      fc.record({
        op: fc.constant('write' as const),
        at,
        size: fc.constant(s),
        // an 8-byte value through write() is exact below 2^53; wider values are truncated, as the device sees them
        value: s === 8 ? fc.maxSafeNat() : fc.oneof(fc.nat({ max: 2 ** (8 * s) - 1 }), fc.constant(2 ** (8 * s) - 1)),
      }),
    ),
    fc.record({ op: fc.constant('readInto' as const), at, len: fc.integer({ min: 1, max: maxLen }) }),
    fc.integer({ min: 1, max: maxLen }).chain((len) =>
      fc.record({ op: fc.constant('writeFrom' as const), at, len: fc.constant(len), bytes: fc.array(fc.nat(255), { minLength: len, maxLength: len }) }),
    ),
  );
}

/** Run registrations and accesses on `bus` and on the model; every outcome must agree. */
/** Outcome kinds the properties must reach (counted over all runs). */
type Reached = Record<'overlap' | 'range' | 'split' | 'unknown' | 'wide' | 'junk', number>;
const reachedNone = (): Reached => ({ overlap: 0, range: 0, split: 0, unknown: 0, wide: 0, junk: 0 });

function checkAgainstModel(
  reached: Reached,
  bus: PioBus | MmioBus,
  limit: number,
  origin: number,
  regs: Array<{ off: number; len: number; junk: number }>,
  ops: Op[],
): void {
  const model = new BusModel(limit);
  const log: string[] = [];
  const reported: Array<[string, number]> = [];
  bus.onUnknown = (kind, address) => reported.push([kind, address]);
  regs.forEach((g, i) => {
    const base = origin + g.off;
    const name = `d${i}`;
    const verdict = model.accepts(base, g.len);
    if (verdict !== 'ok') reached[verdict]++;
    else if (g.junk) reached.junk++;
    const reg = (): void => bus.register(base, g.len, new MemDevice(name, new Sparse(g.len, i), log, g.junk), name);
    if (verdict === 'ok') {
      reg();
      model.ranges.push({ base, len: g.len, name, mem: new Sparse(g.len, i) });
    } else if (verdict === 'range') expect(reg).toThrow(RangeError);
    else expect(reg).toThrow(/overlaps d\d+/);
  });
  expect(bus.ranges().map((r) => [r.base, r.length, r.name])).toEqual(
    [...model.ranges].sort((a, b) => a.base - b.base).map((r) => [r.base, r.len, r.name]),
  );
  const run = new DataView(new ArrayBuffer(16));
  for (const o of ops) {
    const at = origin + o.at;
    if (at < 0) continue;
    const pieces = o.op === 'read' || o.op === 'write' ? model.split(at, o.size) : model.splitLen(at, o.len);
    if (pieces.some((p) => p.r === undefined)) reached.unknown++;
    if (pieces.length > 1 && pieces.some((p) => p.size === 1) && pieces.some((p) => p.r !== undefined)) reached.split++;
    if ((o.op === 'read' || o.op === 'write') && o.size === 8 && pieces.some((p) => p.r !== undefined)) reached.wide++;
    if (o.op === 'read') {
      const bytes = model.readPieces(model.split(at, o.size));
      const want = o.size === 8 ? leValue(bytes.slice(0, 4)) + leValue(bytes.slice(4)) * 2 ** 32 : leValue(bytes);
      expect(bus.read(at, o.size), `read ${at}/${o.size}`).toBe(want);
    } else if (o.op === 'write') {
      const bytes = o.size === 8 ? [...leBytes(o.value % 2 ** 32, 4), ...leBytes(Math.floor(o.value / 2 ** 32), 4)] : leBytes(o.value, o.size);
      model.writePieces(model.split(at, o.size), bytes);
      bus.write(at, o.size, o.value);
    } else if (o.op === 'readInto') {
      run.setBigUint64(4, 0x5555555555555555n, true);
      run.setUint32(12, 0x55555555, true);
      const bytes = model.readPieces(model.splitLen(at, o.len));
      bus.readInto(at, o.len, run, 4);
      expect(Array.from({ length: 12 }, (_, i) => run.getUint8(4 + i)), `readInto ${at}/${o.len}`).toEqual([...bytes, ...new Array<number>(12 - o.len).fill(0x55)]);
    } else {
      o.bytes.forEach((b, i) => run.setUint8(4 + i, b));
      model.writePieces(model.splitLen(at, o.len), o.bytes);
      bus.writeFrom(at, o.len, run, 4);
    }
    expect(log, `device accesses after ${o.op} at ${at}`).toEqual(model.log);
  }
  expect(reported).toEqual(model.reported);
  // Writes landed exactly where the model put them, and nowhere else (every access is within the
  // first 0x120 bytes of any range).
  for (const r of bus.ranges()) expect(bus.lookup(r.base)?.name).toBe(r.name);
  for (const r of model.ranges) {
    const want = r.mem.head(0x120);
    const bytes = new Uint8Array(want.length);
    bus.readBytes(r.base, bytes);
    expectSameBytes(bytes, want, `${r.name} contents`);
  }
}

const regArb = (maxLen: number): fc.Arbitrary<{ off: number; len: number; junk: number }> =>
  fc.record({
    off: fc.integer({ min: -4, max: 0x100 }),
    len: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 1, max: 0x30 }) }, { weight: 1, arbitrary: fc.constantFrom(0, -1, maxLen) }),
    junk: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 0xffff })),
  });

describe('unknown-access reports', () => {
  it('are made once per address and stop after 4096 distinct addresses (a guest can touch any number)', () => {
    const seen: number[] = [];
    const bus = new MmioBus((_k, a) => seen.push(a));
    bus.register(2 ** 33, 0x1000, new Wide(), 'dev');
    for (let i = 0; i < 5000; i++) expect(bus.read(2 ** 32 + 8 * i, 8)).toBe(2 ** 64 - 1);
    for (let i = 0; i < 10; i++) bus.write(2 ** 32, 4, i);
    expect(seen).toHaveLength(4096);
    expect(new Set(seen).size).toBe(4096);
    expect(seen.slice(0, 4)).toEqual([2 ** 32, 2 ** 32 + 4, 2 ** 32 + 8, 2 ** 32 + 12]);
    expect(bus.read(2 ** 33, 4)).toBe(0xdeadbeef);
  });
});

describe('buses against a model (property)', () => {
  it('PioBus: registration refusals, reads and writes of 1/2/4 bytes, straddles, unknown ports', () => {
    const reached = reachedNone();
    fc.assert(
      fc.property(
        fc.constantFrom(0, 0x3f0, 0x10000 - 0x100),
        fc.array(regArb(0x10000), { maxLength: 10 }),
        fc.array(opArb([1, 2, 4], 0x100), { maxLength: 40 }),
        (origin, regs, ops) => checkAgainstModel(reached, new PioBus(), 0x10000, origin, regs, ops),
      ),
      { numRuns: runs(300) },
    );
    expect(Object.entries(reached).filter(([k, n]) => n === 0 && k !== 'wide')).toEqual([]);
  });

  it('MmioBus: the same with 8-byte accesses (split 4+4) and addresses above 4 GiB up to 2^53', () => {
    const reached = reachedNone();
    fc.assert(
      fc.property(
        fc.constantFrom(0, 0xd000_0000, 2 ** 32 - 0x80, 2 ** 40 + 0x1000, Number.MAX_SAFE_INTEGER - 0x100),
        fc.array(regArb(Number.MAX_SAFE_INTEGER), { maxLength: 10 }),
        fc.array(opArb([1, 2, 4, 8], 0x100), { maxLength: 40 }),
        (origin, regs, ops) => checkAgainstModel(reached, new MmioBus(), Number.MAX_SAFE_INTEGER, origin, regs, ops),
      ),
      { numRuns: runs(300) },
    );
    expect(Object.entries(reached).filter(([, n]) => n === 0)).toEqual([]);
  });
});
