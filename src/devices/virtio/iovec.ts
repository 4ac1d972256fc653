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

/** Copy the first out.length bytes of a segment list into `out` (as many as there are); the number copied. Allocates nothing. */
export function gatherInto(segs: readonly MemorySegment[], out: Uint8Array): number {
  let pos = 0;
  for (const s of segs) {
    if (pos >= out.length) break;
    const view = wholeView(s.buffer);
    const k = Math.min(s.length, out.length - pos);
    for (let i = 0; i < k; i++) out[pos + i] = view[s.offset + i];
    pos += k;
  }
  return pos;
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

/** One byte view per guest-RAM buffer, made once (a hot path writes a few bytes per frame). */
const wholeViews = new WeakMap<ArrayBufferLike, Uint8Array>();
function wholeView(buffer: ArrayBufferLike): Uint8Array {
  let v = wholeViews.get(buffer);
  if (v === undefined) wholeViews.set(buffer, (v = new Uint8Array(buffer)));
  return v;
}

/**
 * Write `bytes` at offset `at` of a segment list (as far as the segments reach); the number written.
 * Unlike scatterBytes(splitSegments(segs, at)[1], bytes) it allocates nothing per call.
 */
export function scatterBytesAt(segs: readonly MemorySegment[], at: number, bytes: Uint8Array): number {
  let pos = 0;
  let done = 0;
  for (const s of segs) {
    if (done >= bytes.length) break;
    const end = pos + s.length;
    if (end > at + done) {
      const from = at + done - pos;
      const view = wholeView(s.buffer);
      const k = Math.min(s.length - from, bytes.length - done);
      for (let i = 0; i < k; i++) view[s.offset + from + i] = bytes[done + i];
      done += k;
    }
    pos = end;
  }
  return done;
}

/** The segments as Uint8Array views straight over guest RAM (no copies). */
export function segmentViews(segs: readonly MemorySegment[]): Uint8Array[] {
  return segs.map((s) => new Uint8Array(s.buffer, s.offset, s.length));
}

/** The addon's limit on distinct buffers in one packed vectored call. */
export const PACKED_MAX_BUFFERS = 64;

/**
 * An iovec for the addon's packed vectored calls (readvPacked, writevPacked, preadvPacked…): triples
 * (buffer index, offset, length) in one reused Float64Array and the distinct SharedArrayBuffers they
 * index. add() appends segments until IOV_MAX entries or 64 buffers; what did not fit is reported, so
 * a caller never hands the kernel more than it packed.
 */
export class PackedIov {
  readonly iov: Float64Array;
  readonly buffers: SharedArrayBuffer[] = [];
  count = 0;
  /** Bytes described by the packed entries. */
  bytes = 0;

  constructor(readonly max: number) {
    this.iov = new Float64Array(3 * max);
  }

  clear(): this {
    this.buffers.length = 0;
    this.count = 0;
    this.bytes = 0;
    return this;
  }

  /** Append one range; false (nothing added) when the iovec or the buffer list is full. */
  addRange(buffer: SharedArrayBuffer, offset: number, length: number): boolean {
    if (length <= 0) return true;
    if (this.count === this.max) return false;
    let b = this.buffers.indexOf(buffer);
    if (b < 0) {
      if (this.buffers.length === PACKED_MAX_BUFFERS) return false;
      b = this.buffers.push(buffer) - 1;
    }
    const i = 3 * this.count++;
    this.iov[i] = b;
    this.iov[i + 1] = offset;
    this.iov[i + 2] = length;
    this.bytes += length;
    return true;
  }

  /** Append segments in order; false when not all of them fit (those that fit stay added). */
  add(segs: readonly MemorySegment[]): boolean {
    for (const s of segs) if (!this.addRange(s.buffer, s.offset, s.length)) return false;
    return true;
  }

  /**
   * Append bytes [skip, skip + max) of the segments in order (as far as they reach); false when not
   * all of those fit (those that fit stay added).
   */
  addSlice(segs: readonly MemorySegment[], skip: number, max = Infinity): boolean {
    let pos = 0;
    let room = max;
    for (const s of segs) {
      if (room <= 0) break;
      const from = Math.max(skip - pos, 0);
      pos += s.length;
      if (from >= s.length) continue;
      const take = Math.min(s.length - from, room);
      if (!this.addRange(s.buffer, s.offset + from, take)) return false;
      room -= take;
    }
    return true;
  }
}

/** dst := the entries of src from byte `skip` on, at most `max` bytes (src is not changed). */
export function slicePacked(src: PackedIov, skip: number, max: number, dst: PackedIov): PackedIov {
  dst.clear();
  let pos = 0;
  for (let i = 0; i < src.count && dst.bytes < max; i++) {
    const b = src.iov[3 * i];
    const off = src.iov[3 * i + 1];
    const len = src.iov[3 * i + 2];
    const from = Math.max(skip - pos, 0);
    pos += len;
    if (from >= len) continue;
    const take = Math.min(len - from, max - dst.bytes);
    if (!dst.addRange(src.buffers[b], off + from, take)) break;
  }
  return dst;
}
