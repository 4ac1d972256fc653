import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemory, type MemorySegment, type SlotDescriptor } from '../../src/memory/guest-memory.js';
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT as INDIRECT,
  VIRTQ_DESC_F_NEXT as NEXT,
  VIRTQ_DESC_F_WRITE as WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from '../../src/devices/virtio/constants.js';
import { type DescriptorChain, SplitQueue, type SplitQueueConfig, VirtqueueError, type VirtqueueErrorKind } from '../../src/devices/virtio/queue.js';
import { runs } from '../fuzz/budget.js';
import { writeDescriptor } from './virtq-descriptor.js';

// ---- helpers --------------------------------------------------------------------------------------

function memory(slots: Array<{ gpa: number; size: number }>): { mem: GuestMemory; slots: SlotDescriptor[] } {
  const descs = slots.map((s, i) => ({ slot: i, gpa: s.gpa, size: s.size, buffer: new SharedArrayBuffer(s.size) }));
  return { mem: new GuestMemory(descs), slots: descs };
}

interface Layout {
  size: number;
  desc: number;
  avail: number;
  used: number;
}

/** Plays the driver: writes descriptors, publishes heads, reads the used ring. */
class Driver {
  availIdx: number;
  constructor(
    readonly mem: GuestMemory,
    readonly l: Layout,
    startIdx = 0,
  ) {
    this.availIdx = startIdx;
    mem.writeBytes(l.avail + 2, new Uint8Array([startIdx & 0xff, startIdx >> 8]));
  }
  /** Write a 16-byte descriptor at any guest address (table entry or indirect-table entry). */
  writeDescAt(gpa: number, addr: bigint | number, len: number, flags: number, next = 0): void {
    writeDescriptor(this.mem, gpa, addr, len, flags, next);
  }
  desc(i: number, addr: bigint | number, len: number, flags: number, next = 0): void {
    this.writeDescAt(this.l.desc + 16 * i, addr, len, flags, next);
  }
  private w16(gpa: number, v: number): void {
    this.mem.writeBytes(gpa, new Uint8Array([v & 0xff, (v >> 8) & 0xff]));
  }
  private r16(gpa: number): number {
    const b = this.mem.readBytes(gpa, 2);
    return b[0] | (b[1] << 8);
  }
  private r32(gpa: number): number {
    return new DataView(this.mem.readBytes(gpa, 4).buffer).getUint32(0, true);
  }
  publish(...heads: number[]): void {
    for (const h of heads) {
      this.w16(this.l.avail + 4 + 2 * (this.availIdx % this.l.size), h);
      this.availIdx = (this.availIdx + 1) & 0xffff;
    }
    this.w16(this.l.avail + 2, this.availIdx);
  }
  setAvailIdx(v: number): void {
    this.availIdx = v & 0xffff;
    this.w16(this.l.avail + 2, this.availIdx);
  }
  setAvailFlags(f: number): void {
    this.w16(this.l.avail, f);
  }
  setUsedEvent(v: number): void {
    this.w16(this.l.avail + 4 + 2 * this.l.size, v);
  }
  usedIdx(): number {
    return this.r16(this.l.used + 2);
  }
  usedFlags(): number {
    return this.r16(this.l.used);
  }
  availEvent(): number {
    return this.r16(this.l.used + 4 + 8 * this.l.size);
  }
  usedElem(k: number): { id: number; len: number } {
    const o = this.l.used + 4 + 8 * (k % this.l.size);
    return { id: this.r32(o), len: this.r32(o + 4) };
  }
}

const L4: Layout = { size: 4, desc: 0x1000, avail: 0x2000, used: 0x3000 };

function setup(opts: { size?: number; eventIdx?: boolean; indirect?: boolean; slots?: Array<{ gpa: number; size: number }>; layout?: Partial<Layout>; start?: number } = {}) {
  const { mem, slots } = memory(opts.slots ?? [{ gpa: 0, size: 0x10000 }]);
  const l: Layout = { ...L4, size: opts.size ?? 4, ...opts.layout };
  const drv = new Driver(mem, l, opts.start ?? 0);
  const q = new SplitQueue(mem, {
    size: l.size,
    descAddr: l.desc,
    driverAddr: l.avail,
    deviceAddr: l.used,
    eventIdx: opts.eventIdx ?? false,
    indirect: opts.indirect ?? false,
    lastAvailIdx: opts.start,
    usedIdx: opts.start,
  });
  return { mem, slots, drv, q, l };
}

function popError(q: SplitQueue): VirtqueueError {
  try {
    q.pop();
  } catch (e) {
    if (e instanceof VirtqueueError) return e;
    throw e;
  }
  throw new Error('pop() did not throw');
}

function expectChainError(q: SplitQueue, kind: VirtqueueErrorKind, head: number): void {
  const e = popError(q);
  expect(e.kind).toBe(kind);
  expect(e.fatal).toBe(false);
  expect(e.head).toBe(head);
}

const segs = (s: MemorySegment[]): Array<[number, number]> => s.map((x) => [x.gpa, x.length]);

// ---- tests ----------------------------------------------------------------------------------------

describe('SplitQueue construction', () => {
  const { mem } = memory([{ gpa: 0, size: 0x10000 }]);
  const base: SplitQueueConfig = { size: 4, descAddr: 0x1000, driverAddr: 0x2000, deviceAddr: 0x3000, eventIdx: false, indirect: false };
  const bad = (over: Partial<SplitQueueConfig>): void => {
    let err: unknown;
    try {
      new SplitQueue(mem, { ...base, ...over });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VirtqueueError);
    expect((err as VirtqueueError).kind).toBe('invalid-config');
    expect((err as VirtqueueError).fatal).toBe(true);
  };

  it('accepts a valid configuration (sizes 1 and 32768 too)', () => {
    expect(new SplitQueue(mem, base).size).toBe(4);
    expect(new SplitQueue(mem, { ...base, size: 1 }).size).toBe(1);
    const big = memory([{ gpa: 0, size: 0x100000 }]).mem;
    expect(new SplitQueue(big, { ...base, size: 32768, descAddr: 0, driverAddr: 0x80000, deviceAddr: 0x90000 }).size).toBe(32768);
  });

  it('rejects sizes that are not a power of two ≤ 32768', () => {
    for (const size of [0, 3, 6, 65536, 32769, -4, 2.5, NaN]) bad({ size });
  });

  it('rejects misaligned rings', () => {
    bad({ descAddr: 0x1008 });
    bad({ driverAddr: 0x2001 });
    bad({ deviceAddr: 0x3002 });
  });

  it('rejects rings not entirely inside guest RAM', () => {
    bad({ descAddr: 0x10000 - 48 }); // 64-byte table, 48 bytes left
    bad({ driverAddr: 0x10000 - 12 }); // 6 + 2*4 = 14 bytes
    bad({ deviceAddr: 0x10000 - 36 }); // 6 + 8*4 = 38 bytes
    bad({ descAddr: 2 ** 53 });
    bad({ deviceAddr: -4 });
    bad({ driverAddr: 0x20000 });
  });

  it('rejects resume indices that are not 16-bit', () => {
    bad({ lastAvailIdx: 0x10000 });
    bad({ usedIdx: -1 });
  });
});

describe('SplitQueue pop / pushUsed', () => {
  it('returns nothing on an empty ring', () => {
    const { q } = setup();
    expect(q.pop()).toBeUndefined();
    expect(q.hasAvailable()).toBe(false);
  });

  it('walks a readable + writable chain and publishes the used element', () => {
    const { q, drv } = setup();
    drv.desc(0, 0x4000, 16, NEXT, 2);
    drv.desc(2, 0x5000, 512, NEXT | WRITE, 3);
    drv.desc(3, 0x6000, 1, WRITE);
    drv.publish(0);
    expect(q.hasAvailable()).toBe(true);
    const c = q.pop() as DescriptorChain;
    expect(c.head).toBe(0);
    expect(segs(c.readable)).toEqual([[0x4000, 16]]);
    expect(segs(c.writable)).toEqual([
      [0x5000, 512],
      [0x6000, 1],
    ]);
    expect(c.readableBytes).toBe(16);
    expect(c.writableBytes).toBe(513);
    expect(q.lastPopVisited).toBe(3);
    expect(q.pop()).toBeUndefined();
    q.pushUsed(c.head, 513);
    expect(drv.usedIdx()).toBe(1);
    expect(drv.usedElem(0)).toEqual({ id: 0, len: 513 });
  });

  it('walks an indirect table after direct descriptors', () => {
    const { q, drv } = setup({ indirect: true });
    drv.desc(1, 0x4000, 8, NEXT, 0);
    drv.desc(0, 0x8000, 48, INDIRECT);
    drv.writeDescAt(0x8000, 0x4100, 4, NEXT, 2);
    drv.writeDescAt(0x8020, 0x4200, 100, NEXT | WRITE, 1);
    drv.writeDescAt(0x8010, 0x4300, 1, WRITE);
    drv.publish(1);
    const c = q.pop() as DescriptorChain;
    expect(c.head).toBe(1);
    expect(segs(c.readable)).toEqual([
      [0x4000, 8],
      [0x4100, 4],
    ]);
    expect(segs(c.writable)).toEqual([
      [0x4200, 100],
      [0x4300, 1],
    ]);
  });

  it('accepts an indirect table with exactly queue-size entries', () => {
    const { q, drv } = setup({ indirect: true });
    drv.desc(0, 0x8000, 64, INDIRECT);
    for (let j = 0; j < 4; j++) drv.writeDescAt(0x8000 + 16 * j, 0x4000 + j, 1, j < 3 ? NEXT : 0, j + 1);
    drv.publish(0);
    expect((q.pop() as DescriptorChain).readableBytes).toBe(4);
    expect(q.lastPopVisited).toBe(5);
  });

  it('rejects bad pushUsed arguments with RangeError (caller bugs)', () => {
    const { q } = setup();
    expect(() => q.pushUsed(4, 0)).toThrow(RangeError);
    expect(() => q.pushUsed(0, 2 ** 32)).toThrow(RangeError);
  });

  it('wraps the 16-bit indices', () => {
    const { q, drv } = setup({ start: 0xfffe });
    for (let i = 0; i < 4; i++) drv.desc(i, 0x4000 + 0x100 * i, 10 + i, WRITE);
    drv.publish(3, 1, 0, 2);
    expect(drv.availIdx).toBe(2);
    const heads: number[] = [];
    for (let c = q.pop(); c; c = q.pop()) heads.push(c.head);
    expect(heads).toEqual([3, 1, 0, 2]);
    expect(q.lastAvailIdx).toBe(2);
    for (const h of heads) q.pushUsed(h, 7);
    expect(q.usedIdx).toBe(2);
    expect(drv.usedIdx()).toBe(2);
    expect(drv.usedElem(0xfffe)).toEqual({ id: 3, len: 7 });
    expect(drv.usedElem(0xffff)).toEqual({ id: 1, len: 7 });
    expect(drv.usedElem(0x10000)).toEqual({ id: 0, len: 7 });
  });

  it('keeps working across many wraps of the indices', () => {
    const { q, drv } = setup();
    for (let i = 0; i < 4; i++) drv.desc(i, 0x4000, 1, 0);
    let popped = 0;
    for (let round = 0; round < 70000 / 3; round++) {
      drv.publish(round % 4, (round + 1) % 4, (round + 2) % 4);
      for (let c = q.pop(); c; c = q.pop()) {
        q.pushUsed(c.head, 0);
        popped++;
      }
      expect(drv.usedIdx()).toBe(drv.availIdx);
    }
    expect(popped).toBeGreaterThan(65536);
  });
});

describe('SplitQueue errors', () => {
  it("'loop' in a direct chain (per chain; the queue goes on)", () => {
    const { q, drv } = setup();
    drv.desc(0, 0x4000, 1, NEXT, 1);
    drv.desc(1, 0x4000, 1, NEXT, 0);
    drv.desc(2, 0x4000, 1, 0);
    drv.publish(0, 2);
    expectChainError(q, 'loop', 0);
    expect(q.lastPopVisited).toBeLessThanOrEqual(4);
    expect((q.pop() as DescriptorChain).head).toBe(2);
    expect(q.broken).toBeUndefined();
  });

  it("'loop' inside an indirect table", () => {
    const { q, drv } = setup({ size: 8, indirect: true });
    drv.desc(0, 0x8000, 32, INDIRECT);
    drv.writeDescAt(0x8000, 0x4000, 1, NEXT, 1);
    drv.writeDescAt(0x8010, 0x4000, 1, NEXT, 0);
    drv.publish(0);
    expectChainError(q, 'loop', 0);
  });

  it("'chain-too-long' when direct + indirect descriptors exceed the queue size", () => {
    const { q, drv } = setup({ indirect: true });
    drv.desc(0, 0x4000, 1, NEXT, 1);
    drv.desc(1, 0x8000, 64, INDIRECT);
    for (let j = 0; j < 4; j++) drv.writeDescAt(0x8000 + 16 * j, 0x4000, 1, j < 3 ? NEXT : 0, j + 1);
    drv.publish(0);
    expectChainError(q, 'chain-too-long', 0);
    expect(q.lastPopVisited).toBeLessThanOrEqual(5);
  });

  it("'chain-too-long' for a huge acyclic indirect table, bounded work", () => {
    const { q, drv } = setup({ indirect: true, slots: [{ gpa: 0, size: 0x40000 }] });
    const n = 0x1000;
    drv.desc(0, 0x10000, 16 * n, INDIRECT);
    for (let j = 0; j < n; j++) drv.writeDescAt(0x10000 + 16 * j, 0x4000, 1, NEXT, j + 1);
    drv.publish(0);
    expectChainError(q, 'chain-too-long', 0);
    expect(q.lastPopVisited).toBe(5);
  });

  it("'out-of-range': buffer just past the end of RAM, at 2^64-1, in a hole, 2^53", () => {
    const { q, drv } = setup({ slots: [{ gpa: 0, size: 0x10000 }, { gpa: 0x20000, size: 0x1000 }] });
    drv.desc(0, 0x10000 - 4, 5, 0); // one byte past slot 0
    drv.desc(1, 0xffffffffffffffffn, 1, 0);
    drv.desc(2, 0x18000, 1, 0); // hole
    drv.desc(3, 2n ** 53n, 1, WRITE);
    drv.publish(0, 1, 2, 3);
    for (const h of [0, 1, 2, 3]) expectChainError(q, 'out-of-range', h);
    drv.desc(0, 0x21000 - 4, 4, 0); // exactly the last bytes of RAM: fine
    drv.desc(1, 0x21000, 0, 0); // empty buffer at the very end: fine
    drv.publish(0, 1);
    expect(segs((q.pop() as DescriptorChain).readable)).toEqual([[0x21000 - 4, 4]]);
    expect((q.pop() as DescriptorChain).readable).toEqual([]);
  });

  it("'out-of-range' for an indirect table outside RAM", () => {
    const { q, drv } = setup({ indirect: true });
    drv.desc(0, 0x10000 - 16, 32, INDIRECT);
    drv.desc(1, 0xfffffffffffffff0n, 16, INDIRECT);
    drv.publish(0, 1);
    expectChainError(q, 'out-of-range', 0);
    expectChainError(q, 'out-of-range', 1);
  });

  it("'bad-index': next ≥ queue size (per chain) and indirect next ≥ table size", () => {
    const { q, drv } = setup({ indirect: true });
    drv.desc(0, 0x4000, 1, NEXT, 4);
    drv.desc(1, 0x8000, 32, INDIRECT);
    drv.writeDescAt(0x8000, 0x4000, 1, NEXT, 2);
    drv.publish(0, 1);
    expectChainError(q, 'bad-index', 0);
    expectChainError(q, 'bad-index', 1);
  });

  it("'bad-index' for a head ≥ queue size is fatal and sticky", () => {
    const { q, drv } = setup();
    drv.desc(0, 0x4000, 1, 0);
    drv.publish(4, 0);
    const e = popError(q);
    expect(e.kind).toBe('bad-index');
    expect(e.fatal).toBe(true);
    expect(q.broken).toBe(e);
    expect(popError(q)).toBe(e);
  });

  it("'bad-indirect': not negotiated, nested, bad length, zero length, INDIRECT|NEXT", () => {
    const off = setup({ indirect: false });
    off.drv.desc(0, 0x8000, 16, INDIRECT);
    off.drv.writeDescAt(0x8000, 0x4000, 1, 0);
    off.drv.publish(0);
    expectChainError(off.q, 'bad-indirect', 0);

    const { q, drv } = setup({ size: 8, indirect: true });
    drv.desc(0, 0x8000, 16, INDIRECT);
    drv.writeDescAt(0x8000, 0x9000, 16, INDIRECT); // nested
    drv.writeDescAt(0x9000, 0x4000, 1, 0);
    drv.desc(1, 0x9000, 20, INDIRECT);
    drv.desc(2, 0x9000, 0, INDIRECT);
    drv.desc(3, 0x9000, 16, INDIRECT | NEXT, 4);
    drv.desc(4, 0x4000, 1, 0);
    drv.publish(0, 1, 2, 3);
    for (const h of [0, 1, 2, 3]) expectChainError(q, 'bad-indirect', h);
  });

  it("'order': a readable descriptor after a writable one (also a zero-length one, also via indirect)", () => {
    const { q, drv } = setup({ indirect: true });
    drv.desc(0, 0x4000, 1, WRITE | NEXT, 1);
    drv.desc(1, 0x4000, 1, 0);
    drv.desc(2, 0x4000, 0, WRITE | NEXT, 1);
    drv.desc(3, 0x4000, 1, WRITE | NEXT, 1);
    drv.publish(0, 2);
    expectChainError(q, 'order', 0);
    expectChainError(q, 'order', 2);
    drv.desc(3, 0x4000, 1, WRITE | NEXT, 0);
    drv.desc(0, 0x8000, 16, INDIRECT);
    drv.writeDescAt(0x8000, 0x4000, 1, 0);
    drv.publish(3);
    expectChainError(q, 'order', 3);
  });

  it("'avail-overrun' when avail.idx runs more than size ahead: fatal", () => {
    const { q, drv } = setup();
    drv.desc(0, 0x4000, 1, 0);
    drv.setAvailIdx(5);
    const e = popError(q);
    expect(e.kind).toBe('avail-overrun');
    expect(e.fatal).toBe(true);
    expect(e.head).toBeUndefined();
    expect(q.lastAvailIdx).toBe(0);
    expect(popError(q)).toBe(e);
  });

  it("'length-overflow' when the chain totals more than 2^32-1 bytes", () => {
    // 8192 indirect descriptors of 512 KiB each, all over the same RAM: 2^32 bytes.
    const size = 16384;
    const l: Layout = { size, desc: 0x100000, avail: 0x140000, used: 0x150000 };
    const { q, drv } = setup({ size, indirect: true, layout: l, slots: [{ gpa: 0, size: 0x200000 }] });
    const n = 8192;
    const table = 0x180000;
    drv.desc(0, table, 16 * n, INDIRECT);
    for (let j = 0; j < n; j++) drv.writeDescAt(table + 16 * j, 0, 0x80000, j < n - 1 ? NEXT : 0, j + 1);
    drv.publish(0);
    expectChainError(q, 'length-overflow', 0);
    // One descriptor fewer fits exactly below 2^32.
    drv.writeDescAt(table + 16 * (n - 2), 0, 0x80000, 0);
    drv.publish(0);
    expect((q.pop() as DescriptorChain).readableBytes).toBe(2 ** 32 - 0x80000);
  });
});

describe('SplitQueue across RAM slots', () => {
  it('splits a buffer that spans two adjacent slots', () => {
    const { q, drv, slots } = setup({ slots: [{ gpa: 0, size: 0x8000 }, { gpa: 0x8000, size: 0x8000 }] });
    drv.desc(0, 0x7ff0, 0x20, WRITE);
    drv.publish(0);
    const c = q.pop() as DescriptorChain;
    expect(segs(c.writable)).toEqual([
      [0x7ff0, 0x10],
      [0x8000, 0x10],
    ]);
    expect(c.writable[0].buffer).toBe(slots[0].buffer);
    expect(c.writable[1].buffer).toBe(slots[1].buffer);
    expect(c.writable[1].offset).toBe(0);
  });

  it('rejects a buffer spanning two slots with a hole between them', () => {
    const { q, drv } = setup({ slots: [{ gpa: 0, size: 0x8000 }, { gpa: 0x9000, size: 0x8000 }] });
    drv.desc(0, 0x7ff0, 0x20, 0);
    drv.publish(0);
    expectChainError(q, 'out-of-range', 0);
  });

  const straddlers: Array<{ what: string; l: Layout; table: number }> = [
    { what: 'descriptor table', l: { size: 4, desc: 0x7fe0, avail: 0x100, used: 0x200 }, table: 0x300 },
    { what: 'available ring', l: { size: 4, desc: 0x1000, avail: 0x7ff8, used: 0x200 }, table: 0x300 },
    { what: 'used ring', l: { size: 4, desc: 0x1000, avail: 0x100, used: 0x7ff4 }, table: 0x300 },
    { what: 'indirect table', l: { size: 4, desc: 0x1000, avail: 0x100, used: 0x200 }, table: 0x7ff2 },
  ];
  for (const boundary of [0x7ffa, 0x7ff9]) {
    for (const { what, l, table } of straddlers) {
      it(`works when the ${what} straddles an unaligned slot boundary (0x${boundary.toString(16)})`, () => {
        const { q, drv } = setup({
          indirect: true,
          eventIdx: true,
          layout: l,
          slots: [
            { gpa: 0, size: boundary },
            { gpa: boundary, size: 0x10000 - boundary },
          ],
        });
        drv.desc(3, 0x4000, 2, NEXT, 1);
        drv.desc(1, table, 32, INDIRECT); // with the table at 0x7fe0, descriptor 1 straddles
        drv.writeDescAt(table, boundary - 3, 6, NEXT | WRITE, 1); // buffer straddles as well
        drv.writeDescAt(table + 16, 0x5000, 4, WRITE);
        for (let round = 0; round < 6; round++) {
          drv.publish(3);
          const c = q.pop() as DescriptorChain;
          expect(segs(c.readable)).toEqual([[0x4000, 2]]);
          expect(segs(c.writable)).toEqual([
            [boundary - 3, 3],
            [boundary, 3],
            [0x5000, 4],
          ]);
          drv.setUsedEvent(round);
          q.pushUsed(3, 10 + round);
          expect(drv.usedIdx()).toBe(round + 1);
          expect(drv.usedElem(round)).toEqual({ id: 3, len: 10 + round });
          expect(q.needsInterrupt()).toBe(true);
          expect(q.enableNotification()).toBe(false);
          expect(drv.availEvent()).toBe(round + 1);
        }
      });
    }
  }
});

describe('SplitQueue notification suppression', () => {
  it('without event idx: used.flags NO_NOTIFY and avail.flags NO_INTERRUPT', () => {
    const { q, drv } = setup();
    drv.desc(0, 0x4000, 1, 0);
    q.disableNotification();
    expect(drv.usedFlags()).toBe(VIRTQ_USED_F_NO_NOTIFY);
    expect(q.enableNotification()).toBe(false);
    expect(drv.usedFlags()).toBe(0);
    expect(q.needsInterrupt()).toBe(false); // nothing pushed
    drv.publish(0);
    q.pushUsed((q.pop() as DescriptorChain).head, 0);
    expect(q.needsInterrupt()).toBe(true);
    expect(q.needsInterrupt()).toBe(false); // already signalled
    drv.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    drv.publish(0);
    q.pushUsed((q.pop() as DescriptorChain).head, 0);
    expect(q.needsInterrupt()).toBe(false);
  });

  it('without event idx: used.flags follows every disable/enable, stored only when it changes', () => {
    const { q, drv, mem, l } = setup();
    for (let round = 0; round < 3; round++) {
      q.disableNotification();
      expect(drv.usedFlags()).toBe(VIRTQ_USED_F_NO_NOTIFY);
      // A repeated disable is not stored again (used.flags shares a cache line with used.idx): a
      // value planted in the meantime stays.
      mem.write16(l.used, 0x8000 | VIRTQ_USED_F_NO_NOTIFY);
      q.disableNotification();
      expect(drv.usedFlags()).toBe(0x8000 | VIRTQ_USED_F_NO_NOTIFY);
      expect(q.enableNotification()).toBe(false);
      expect(drv.usedFlags()).toBe(0);
    }
  });

  it('enableNotification reports work that arrived while notifications were off (no lost wake-up)', () => {
    for (const eventIdx of [false, true]) {
      const { q, drv } = setup({ eventIdx });
      drv.desc(0, 0x4000, 1, 0);
      q.disableNotification();
      drv.publish(0); // the driver saw NO_NOTIFY (or a stale avail_event) and did not kick
      expect(q.enableNotification()).toBe(true);
      expect(q.pop()).toBeDefined();
      expect(q.enableNotification()).toBe(false);
    }
  });

  it('with event idx: avail_event = last_avail_idx, used.flags untouched', () => {
    const { q, drv } = setup({ eventIdx: true, start: 0xfffe });
    for (let i = 0; i < 4; i++) drv.desc(i, 0x4000, 1, 0);
    drv.publish(0, 1, 2);
    q.disableNotification();
    expect(drv.usedFlags()).toBe(0);
    while (q.pop());
    expect(q.enableNotification()).toBe(false);
    expect(drv.availEvent()).toBe(1);
    q.setAvailEvent();
    expect(drv.availEvent()).toBe(1);
  });

  it('with event idx: vring_need_event semantics, including wrap-around', () => {
    const { q, drv } = setup({ eventIdx: true, start: 0xfffc });
    for (let i = 0; i < 4; i++) drv.desc(i, 0x4000, 1, 0);
    drv.publish(0, 1, 2, 3);
    const heads: number[] = [];
    for (let c = q.pop(); c; c = q.pop()) heads.push(c.head);
    // The driver wants an interrupt once used.idx passes 0xfffe (i.e. when entry 0xfffe is used).
    drv.setUsedEvent(0xfffe);
    q.pushUsed(heads[0], 0); // used.idx 0xfffd
    expect(q.needsInterrupt()).toBe(false);
    q.pushUsed(heads[1], 0); // 0xfffe
    expect(q.needsInterrupt()).toBe(false);
    q.pushUsed(heads[2], 0); // 0xffff: crossed
    expect(q.needsInterrupt()).toBe(true);
    drv.setUsedEvent(0xffff); // already passed: no interrupt for the next one...
    q.pushUsed(heads[3], 0); // 0x0000 — new - event - 1 = 0 < new - old = 1 → interrupt
    expect(q.needsInterrupt()).toBe(true);
    // Batch: two pushes across the event in one check.
    drv.publish(0, 1);
    const a = q.pop() as DescriptorChain;
    const b = q.pop() as DescriptorChain;
    drv.setUsedEvent(0);
    q.pushUsed(a.head, 0);
    q.pushUsed(b.head, 0);
    expect(q.needsInterrupt()).toBe(true);
    drv.setUsedEvent(5);
    expect(q.needsInterrupt()).toBe(false);
  });
});

// ---- property test --------------------------------------------------------------------------------

type RefResult = { ok: true; readable: Array<[number, number]>; writable: Array<[number, number]> } | { ok: false; kind: VirtqueueErrorKind; fatal: boolean };

/** Straightforward reference walk (same checks, written independently of the implementation's data structures). */
function reference(mem: GuestMemory, l: Layout, indirectOk: boolean, last: number): { res: RefResult | undefined; next: number } {
  const rd = (gpa: number, n: number): DataView => new DataView(mem.readBytes(gpa, n).buffer);
  const availIdx = rd(l.avail + 2, 2).getUint16(0, true);
  const pending = (availIdx - last) & 0xffff;
  if (pending === 0) return { res: undefined, next: last };
  if (pending > l.size) return { res: { ok: false, kind: 'avail-overrun', fatal: true }, next: last };
  const head = rd(l.avail + 4 + 2 * (last % l.size), 2).getUint16(0, true);
  const next = (last + 1) & 0xffff;
  if (head >= l.size) return { res: { ok: false, kind: 'bad-index', fatal: true }, next };
  const fail = (kind: VirtqueueErrorKind): { res: RefResult; next: number } => ({ res: { ok: false, kind, fatal: false }, next });
  const readable: Array<[number, number]> = [];
  const writable: Array<[number, number]> = [];
  let count = 0;
  let total = 0;
  let sawW = false;
  const desc = (gpa: number) => {
    const v = rd(gpa, 16);
    return { addr: v.getBigUint64(0, true), len: v.getUint32(8, true), flags: v.getUint16(12, true), next: v.getUint16(14, true) };
  };
  const add = (d: { addr: bigint; len: number; flags: number }): VirtqueueErrorKind | undefined => {
    if (++count > l.size) return 'chain-too-long';
    const w = (d.flags & WRITE) !== 0;
    if (!w && sawW) return 'order';
    if (total + d.len > 0xffffffff) return 'length-overflow';
    if (d.addr >= 2n ** 53n || !mem.isRam(Number(d.addr), d.len)) return 'out-of-range';
    for (const s of mem.segments(Number(d.addr), d.len)) (w ? writable : readable).push([s.gpa, s.length]);
    total += d.len;
    if (w) sawW = true;
    return undefined;
  };
  const seen = new Set<number>();
  let i = head;
  for (;;) {
    if (seen.has(i)) return fail('loop');
    seen.add(i);
    const d = desc(l.desc + 16 * i);
    if (d.flags & INDIRECT) {
      if (!indirectOk || d.flags & NEXT || d.len === 0 || d.len % 16) return fail('bad-indirect');
      if (d.addr >= 2n ** 53n || !mem.isRam(Number(d.addr), d.len)) return fail('out-of-range');
      const n = d.len / 16;
      const seenInd = new Set<number>();
      let j = 0;
      for (;;) {
        if (j >= n) return fail('bad-index');
        if (seenInd.has(j)) return fail('loop');
        if (count >= l.size) return fail('chain-too-long');
        seenInd.add(j);
        const e = desc(Number(d.addr) + 16 * j);
        if (e.flags & INDIRECT) return fail('bad-indirect');
        const k = add(e);
        if (k) return fail(k);
        if (!(e.flags & NEXT)) break;
        j = e.next;
      }
      break;
    }
    const k = add(d);
    if (k) return fail(k);
    if (!(d.flags & NEXT)) break;
    if (d.next >= l.size) return fail('bad-index');
    i = d.next;
  }
  return { res: { ok: true, readable, writable }, next };
}

describe('SplitQueue property: arbitrary rings', () => {
  const LAYOUTS: Array<Array<{ gpa: number; size: number }>> = [
    [{ gpa: 0, size: 0x10000 }],
    [
      { gpa: 0, size: 0x8000 },
      { gpa: 0x8000, size: 0x8000 },
    ],
    [
      { gpa: 0, size: 0x8000 },
      { gpa: 0x9000, size: 0x8000 },
    ],
    [
      { gpa: 0, size: 0x7ff9 },
      { gpa: 0x7ff9, size: 0x8007 },
    ],
  ];
  const TABLES = [0x1000, 0x7fc0, 0xfff0];

  const interestingAddr = fc
    .oneof(
      fc.constantFrom(0, 0x4000, 0x7ff0, 0x7ff9, 0x7ffa, 0x8000, 0x8ff8, 0x9000, 0xfff0, 0xffff, 0x10000, 0x11000, 0x17000),
      fc.integer({ min: 0, max: 0x18000 }),
      fc.constantFrom(2 ** 53 - 1, 2 ** 53, 2 ** 32 - 1, 2 ** 64 - 1, 2 ** 64 - 16),
    )
    .map((a) => BigInt.asUintN(64, BigInt(a)));
  const addr = fc.oneof(
    { arbitrary: fc.integer({ min: 0x4000, max: 0x7f00 }).map(BigInt), weight: 6 },
    { arbitrary: interestingAddr, weight: 3 },
    { arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), weight: 1 },
  );
  const len = fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 0x200 }), weight: 6 },
    { arbitrary: fc.constantFrom(0, 1, 0x1000, 0x8000, 0xffffffff, 0x80000000), weight: 2 },
    { arbitrary: fc.integer({ min: 0, max: 0xffffffff }), weight: 1 },
  );
  const flags = fc.oneof(
    { arbitrary: fc.constantFrom(0, NEXT, WRITE, NEXT | WRITE), weight: 8 },
    { arbitrary: fc.integer({ min: 0, max: 7 }), weight: 2 },
    { arbitrary: fc.integer({ min: 0, max: 0xffff }), weight: 1 },
  );
  const next = fc.oneof({ arbitrary: fc.integer({ min: 0, max: 15 }), weight: 8 }, { arbitrary: fc.integer({ min: 0, max: 0xffff }), weight: 1 });
  const bufferDesc = fc.record({ addr, len, flags, next });
  const indirectDesc = fc.record({
    addr: fc.oneof({ arbitrary: fc.constantFrom(...TABLES).map(BigInt), weight: 6 }, { arbitrary: addr, weight: 1 }),
    len: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 20 }).map((k) => 16 * k), weight: 6 }, { arbitrary: len, weight: 1 }),
    flags: fc.oneof({ arbitrary: fc.constant(INDIRECT), weight: 6 }, { arbitrary: fc.integer({ min: 0, max: 7 }).map((f) => f | INDIRECT), weight: 1 }),
    next,
  });
  const desc = fc.oneof({ arbitrary: bufferDesc, weight: 2 }, { arbitrary: indirectDesc, weight: 1 });
  const tableEntry = fc.oneof({ arbitrary: bufferDesc, weight: 12 }, { arbitrary: indirectDesc, weight: 1 });

  it('yields in-RAM chains or VirtqueueErrors, with bounded work, matching the reference walk', () => {
    const outcomes = new Map<string, number>();
    const seen = (k: string): void => void outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    fc.assert(
      fc.property(
        fc.record({
          layout: fc.integer({ min: 0, max: LAYOUTS.length - 1 }),
          size: fc.oneof({ arbitrary: fc.constantFrom(1, 2), weight: 3 }, { arbitrary: fc.constantFrom(4, 8, 16), weight: 2 }),
          eventIdx: fc.boolean(),
          indirect: fc.oneof({ arbitrary: fc.constant(true), weight: 3 }, { arbitrary: fc.constant(false), weight: 1 }),
          descs: fc.array(desc, { minLength: 16, maxLength: 16 }),
          tables: fc.array(fc.record({ sequential: fc.boolean(), entries: fc.array(tableEntry, { maxLength: 20 }) }), { minLength: 3, maxLength: 3 }),
          heads: fc.array(next, { minLength: 16, maxLength: 16 }),
          start: fc.oneof(fc.constant(0), fc.constantFrom(0xfff0, 0xfffe, 0xffff), fc.integer({ min: 0, max: 0xffff })),
          // Entries published: usually 0..size (scaled below), sometimes anything (overrun).
          pending: fc.oneof(
            { arbitrary: fc.integer({ min: 0, max: 16 }).map((n) => ({ scaled: true, n })), weight: 8 },
            { arbitrary: fc.integer({ min: 0, max: 0xffff }).map((n) => ({ scaled: false, n })), weight: 1 },
          ),
        }),
        (p) => {
          const slotsDef = LAYOUTS[p.layout];
          const { mem, slots } = memory(slotsDef);
          const l: Layout = { size: p.size, desc: 0x100, avail: 0x300, used: 0x400 };
          const drv = new Driver(mem, l, p.start);
          p.descs.slice(0, p.size).forEach((d, i) => drv.desc(i, d.addr, d.len, d.flags, d.next < 16 ? d.next % p.size : d.next));
          p.tables.forEach((t, k) => {
            t.entries.forEach((d, j) => {
              const gpa = TABLES[k] + 16 * j;
              // A sequential table is laid out the way drivers do: entry j chains to j+1, readable
              // entries first. Other tables keep their arbitrary flags.
              const last = j === t.entries.length - 1;
              const half = j >= t.entries.length / 2 ? d.flags & WRITE : 0;
              const f = t.sequential ? (last ? 0 : NEXT) | half : d.flags;
              if (mem.isRam(gpa, 16)) drv.writeDescAt(gpa, d.addr, d.len, f, t.sequential ? j + 1 : d.next);
            });
          });
          const heads = p.heads.slice(0, p.size).map((h) => (h < 16 ? h % p.size : h));
          heads.forEach((h, k) => {
            const v = new Uint8Array([h & 0xff, h >> 8]);
            mem.writeBytes(l.avail + 4 + 2 * ((p.start + k) % p.size), v);
          });
          drv.setAvailIdx(p.start + (p.pending.scaled ? p.pending.n % (p.size + 1) : p.pending.n));

          const q = new SplitQueue(mem, { size: p.size, descAddr: l.desc, driverAddr: l.avail, deviceAddr: l.used, eventIdx: p.eventIdx, indirect: p.indirect, lastAvailIdx: p.start, usedIdx: p.start });
          let last = p.start;
          for (let iter = 0; iter < p.size + 2; iter++) {
            const ref = reference(mem, l, p.indirect, last);
            let chain: DescriptorChain | undefined;
            let error: VirtqueueError | undefined;
            try {
              chain = q.pop();
            } catch (e) {
              if (!(e instanceof VirtqueueError)) throw e; // anything else fails the property
              error = e;
            }
            expect(q.lastPopVisited).toBeLessThanOrEqual(p.size + 1);
            if (ref.res === undefined) {
              expect(chain).toBeUndefined();
              expect(error).toBeUndefined();
              return;
            }
            last = ref.next;
            seen(ref.res.ok ? (ref.res.readable.length + ref.res.writable.length > 1 ? 'ok-multi' : 'ok') : ref.res.kind);
            expect(q.lastAvailIdx).toBe(last);
            if (!ref.res.ok) {
              expect(error?.kind).toBe(ref.res.kind);
              expect(error?.fatal).toBe(ref.res.fatal);
              if (ref.res.fatal) {
                expect(() => q.pop()).toThrow(error);
                return;
              }
              expect(error?.head).toBeLessThan(p.size);
              continue;
            }
            expect(error).toBeUndefined();
            const c = chain as DescriptorChain;
            expect(segs(c.readable)).toEqual(ref.res.readable);
            expect(segs(c.writable)).toEqual(ref.res.writable);
            // Independent check against the slot list.
            for (const s of [...c.readable, ...c.writable]) {
              const slot = slots.find((x) => x.buffer === s.buffer);
              expect(slot).toBeDefined();
              if (!slot) return;
              expect(s.length).toBeGreaterThan(0);
              expect(s.offset).toBeGreaterThanOrEqual(0);
              expect(s.offset + s.length).toBeLessThanOrEqual(slot.size);
              expect(s.gpa).toBe(slot.gpa + s.offset);
            }
            const sum = (xs: MemorySegment[]): number => xs.reduce((a, x) => a + x.length, 0);
            expect(sum(c.readable)).toBe(c.readableBytes);
            expect(sum(c.writable)).toBe(c.writableBytes);
            expect(c.readableBytes + c.writableBytes).toBeLessThanOrEqual(0xffffffff);
            q.pushUsed(c.head, 0);
          }
        },
      ),
      { numRuns: runs(3000) },
    );
    if (process.env.VQ_STATS) console.log(JSON.stringify([...outcomes]));
    // The generator reaches every outcome.
    for (const k of ['ok', 'ok-multi', 'loop', 'chain-too-long', 'out-of-range', 'bad-index', 'bad-indirect', 'order', 'avail-overrun', 'length-overflow']) {
      expect(outcomes.get(k) ?? 0, `${k} in ${JSON.stringify([...outcomes])}`).toBeGreaterThan(0);
    }
  });
});
