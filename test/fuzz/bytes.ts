// Byte-array equality for properties. vitest's deep equality walks a typed array element by element
// through its generic machinery (~10 ms for 32 KiB), which makes a 100 000-run fuzz pass take hours;
// Buffer.equals is a memcmp. On a mismatch the assertion names the first differing byte.
import { expect } from 'vitest';

export function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what = 'bytes'): void {
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const e = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.equals(e)) return;
  expect(a.length, `${what}: length`).toBe(e.length);
  const i = a.findIndex((b, k) => b !== e[k]);
  expect({ offset: i, byte: a[i] }, `${what}: first difference`).toEqual({ offset: i, byte: e[i] });
}
