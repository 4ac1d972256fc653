// The guest-memory accessor: no sequence of reads and writes at arbitrary (address, length) can
// touch bytes outside the slots. Checked with guard bytes around small slots carved out of one
// larger buffer, and against a simple model of the slots' contents.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemory, GuestMemoryError } from '../../src/memory/guest-memory.js';
import { runs } from '../fuzz/budget.js';
import { expectSameBytes } from '../fuzz/bytes.js';

const GUARD = 64;
const GUARD_BYTE = 0xa5;

/** Two adjacent RAM slots [0, 4096) and [4096, 6144), a hole, then [12288, 14336); each slot its own SAB. */
function setup() {
  const layout = [
    { slot: 0, gpa: 0, size: 4096 },
    { slot: 1, gpa: 4096, size: 2048 },
    { slot: 2, gpa: 12288, size: 2048 },
  ];
  const slots = layout.map((l) => ({ ...l, buffer: new SharedArrayBuffer(l.size) }));
  return { mem: new GuestMemory(slots), slots };
}

// Addresses anywhere, and biased to within a few bytes of every slot edge and the hole.
const edges = [0, 4096, 6144, 12288, 14336];
const addr = fc.oneof(
  fc.integer({ min: -16, max: 20000 }),
  fc.tuple(fc.constantFrom(...edges), fc.integer({ min: -9, max: 9 })).map(([e, d]) => e + d),
);
const op = fc.oneof(
  fc.record({ kind: fc.constant('write' as const), gpa: addr, data: fc.uint8Array({ maxLength: 300 }) }),
  fc.record({ kind: fc.constant('read' as const), gpa: addr, len: fc.integer({ min: 0, max: 300 }) }),
  fc.record({ kind: fc.constant('w32' as const), gpa: addr, v: fc.nat() }),
  fc.record({ kind: fc.constant('fill' as const), gpa: addr, len: fc.integer({ min: 0, max: 9000 }), v: fc.nat(255) }),
  // Addresses no RAM can have: beyond 2^53, fractional, negative, NaN/Infinity.
  fc.record({
    kind: fc.constant('huge' as const),
    gpa: fc.oneof(fc.constant(2 ** 53), fc.constant(Number.MAX_SAFE_INTEGER), fc.double().filter((d) => !Number.isSafeInteger(d) || d < 0)),
    len: fc.integer({ min: 0, max: 8 }),
  }),
);

describe('GuestMemory', () => {
  it('reads what was written across a slot boundary and refuses the hole', () => {
    const { mem } = setup();
    mem.writeBytes(4090, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    expect([...mem.readBytes(4090, 10)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(mem.segments(4090, 10).map((s) => s.length)).toEqual([6, 4]);
    expect(() => mem.readBytes(6140, 8)).toThrow(GuestMemoryError);
    expect(() => mem.subarray(4090, 10)).toThrow(GuestMemoryError); // views never span slots
  });

  it('regression (found by npm run fuzz, seed 330615502): a zero-length read at 0 is valid; NaN, fractional and negative addresses are not', () => {
    const { mem } = setup();
    expect(mem.readBytes(0, 0)).toHaveLength(0);
    for (const bad of [Number.NaN, 0.5, -1, Infinity, 2 ** 53]) expect(() => mem.readBytes(bad, 1)).toThrow(GuestMemoryError);
  });

  it('property: arbitrary accesses either succeed exactly like the model or throw GuestMemoryError and change nothing', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const { mem, slots } = setup();
        const end = Math.max(...slots.map((s) => s.gpa + s.size));
        const inSlot = (x: number) => slots.some((s) => x >= s.gpa && x < s.gpa + s.size);
        // A zero-length range is valid where a byte could be (or at the very end of RAM).
        const inRam = (a: number, n: number) =>
          Number.isSafeInteger(a) && a >= 0 && (n === 0 ? inSlot(a) || a === end : [...Array(n).keys()].every((i) => inSlot(a + i)));
        const model = new Map<number, number>(); // gpa -> byte (absent = 0)
        const snapshot = () => Buffer.concat(slots.map((s) => new Uint8Array(s.buffer)));
        for (const o of ops) {
          const before = snapshot();
          const len = o.kind === 'write' ? o.data.length : o.kind === 'w32' ? 4 : o.len;
          const ok = o.kind !== 'huge' && inRam(o.gpa, len) && !(o.kind === 'w32' && !slots.some((s) => o.gpa >= s.gpa && o.gpa + 4 <= s.gpa + s.size));
          let threw: unknown;
          let got: Uint8Array | undefined;
          try {
            if (o.kind === 'write') mem.writeBytes(o.gpa, o.data);
            else if (o.kind === 'read') got = mem.readBytes(o.gpa, o.len);
            else if (o.kind === 'w32') mem.write32(o.gpa, o.v);
            else if (o.kind === 'fill') mem.fill(o.gpa, o.len, o.v);
            else got = mem.readBytes(o.gpa, o.len);
          } catch (e) {
            threw = e;
          }
          if (!ok) {
            expect(threw).toBeInstanceOf(GuestMemoryError);
            expectSameBytes(snapshot(), before, 'RAM after a refused access'); // nothing written
            continue;
          }
          expect(threw).toBeUndefined();
          if (o.kind === 'write') o.data.forEach((b, i) => model.set(o.gpa + i, b));
          else if (o.kind === 'w32') for (let i = 0; i < 4; i++) model.set(o.gpa + i, Math.floor(o.v / 256 ** i) & 0xff);
          else if (o.kind === 'fill') for (let i = 0; i < o.len; i++) model.set(o.gpa + i, o.v);
          else expectSameBytes(got!, Uint8Array.from({ length: o.len }, (_, i) => model.get(o.gpa + i) ?? 0), 'read');
        }
        // Final contents equal the model everywhere; memory outside the slots is unreachable by construction
        // (each slot has its own SAB), so equality of every slot byte proves no stray writes.
        for (const s of slots) {
          const bytes = new Uint8Array(s.buffer);
          for (let i = 0; i < s.size; i++) if (bytes[i] !== (model.get(s.gpa + i) ?? 0)) expect([s.gpa + i, bytes[i]]).toEqual([s.gpa + i, model.get(s.gpa + i) ?? 0]);
        }
      }),
      { numRuns: runs(200) },
    );
  });

  it('property: a slot carved from the middle of a larger buffer never lets accesses reach the guard bytes', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: -200, max: 5000 }), fc.uint8Array({ minLength: 1, maxLength: 200 })), { maxLength: 30 }), (writes) => {
        // GuestMemory views start at offset 0 of a slot's buffer and end at `size`; a slot smaller than
        // its buffer leaves the tail as a guard.
        const size = 4096;
        const buffer = new SharedArrayBuffer(size + GUARD);
        new Uint8Array(buffer, size).fill(GUARD_BYTE);
        const mem = new GuestMemory([{ slot: 0, gpa: 0, size, buffer }]);
        for (const [gpa, data] of writes) {
          try {
            mem.writeBytes(gpa, data);
          } catch (e) {
            expect(e).toBeInstanceOf(GuestMemoryError);
          }
          try {
            mem.write32(gpa, 0xffffffff);
          } catch (e) {
            expect(e).toBeInstanceOf(GuestMemoryError);
          }
        }
        expect([...new Uint8Array(buffer, size)].every((b) => b === GUARD_BYTE)).toBe(true);
      }),
      { numRuns: runs(300) },
    );
  });
});
