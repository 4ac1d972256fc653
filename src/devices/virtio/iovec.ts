// Scatter-gather helpers over a descriptor chain's guest-RAM segments (as SplitQueue.pop returns them,
// already bounds-checked and split at slot boundaries). Every device uses these instead of walking
// segments by hand; none of them touches memory outside the segments it is given.
import type { MemorySegment } from '../../memory/guest-memory.js';

/** [0, at) and [at, end) of a segment list. */
export function splitSegments(segs: readonly MemorySegment[], at: number): [MemorySegment[], MemorySegment[]] {
  const a: MemorySegment[] = [];
  const b: MemorySegment[] = [];
  let pos = 0;
  for (const s of segs) {
    if (pos + s.length <= at) a.push(s);
    else if (pos >= at) b.push(s);
    else {
      const k = at - pos;
      a.push({ buffer: s.buffer, offset: s.offset, length: k, gpa: s.gpa });
      b.push({ buffer: s.buffer, offset: s.offset + k, length: s.length - k, gpa: s.gpa + k });
    }
    pos += s.length;
  }
  return [a, b];
}

/** Copy the first `n` bytes of a segment list (n ≤ their total). */
export function gatherBytes(segs: readonly MemorySegment[], n: number): Uint8Array {
  const out = new Uint8Array(n);
  let pos = 0;
  for (const s of segs) {
    if (pos >= n) break;
    const k = Math.min(s.length, n - pos);
    out.set(new Uint8Array(s.buffer, s.offset, k), pos);
    pos += k;
  }
  return out;
}

/** Copy `bytes` into the start of a segment list (as much as fits); returns the bytes copied. */
export function scatterBytes(segs: readonly MemorySegment[], bytes: Uint8Array): number {
  let pos = 0;
  for (const s of segs) {
    if (pos >= bytes.length) break;
    const k = Math.min(s.length, bytes.length - pos);
    new Uint8Array(s.buffer, s.offset, k).set(bytes.subarray(pos, pos + k));
    pos += k;
  }
  return pos;
}


/** The segments as Uint8Array views straight over guest RAM (no copies). */
export function segmentViews(segs: readonly MemorySegment[]): Uint8Array[] {
  return segs.map((s) => new Uint8Array(s.buffer, s.offset, s.length));
}
