// Single-producer/single-consumer byte ring in a SharedArrayBuffer.
//
// Layout: 8 Int32 header words, then `capacity` data bytes (capacity is a power of two).
//   HEAD / TAIL are free-running 32-bit counters (wrap at 2^32); used = (TAIL - HEAD) | 0.
//   DATA_SEQ is bumped and notified by the producer when it publishes bytes while the consumer has
//   announced (CONSUMER_WAITING) that it is about to sleep; SPACE_SEQ likewise by the consumer when it
//   frees space while the producer sleeps in pushBlocking (PRODUCER_WAITING).
//
// Exactly one thread may push at a time and exactly one may pop at a time (they may differ). Several
// would-be producers must serialize themselves with their own lock (the UART does: its TX lock).

const HEAD = 0;
const TAIL = 1;
const CAPACITY = 2;
const DATA_SEQ = 3;
const CONSUMER_WAITING = 4;
const SPACE_SEQ = 5;
const PRODUCER_WAITING = 6;
const HEADER_WORDS = 8;
const HEADER_BYTES = HEADER_WORDS * 4;
/** Longest single Atomics.wait in pushBlocking before shouldAbort() is consulted again. */
const BLOCK_SLICE_MS = 10;

type WaitAsyncResult =
  | { async: false; value: 'not-equal' | 'timed-out' }
  | { async: true; value: Promise<'ok' | 'timed-out'> };
type WaitAsyncFn = (typedArray: Int32Array, index: number, value: number, timeout?: number) => WaitAsyncResult;

const atomicsWaitAsync: WaitAsyncFn | undefined = (Atomics as unknown as { waitAsync?: WaitAsyncFn }).waitAsync;

function roundUpPow2(n: number): number {
  let c = 2;
  while (c < n) c *= 2;
  return c;
}

export class ByteRing {
  /** The shared buffer; post it to a worker and attach there with `new ByteRing(sab)`. */
  readonly sab: SharedArrayBuffer;
  /** Usable capacity in bytes (a power of two). */
  readonly capacity: number;
  private readonly i32: Int32Array;
  private readonly data: Uint8Array;
  private readonly mask: number;

  /** Allocate a ring of at least `capacity` bytes (rounded up to a power of two, 2 ≤ capacity ≤ 2^30). */
  static create(capacity: number): ByteRing {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 2 ** 30) throw new RangeError(`ByteRing capacity ${capacity} out of range`);
    const cap = roundUpPow2(capacity);
    const sab = new SharedArrayBuffer(HEADER_BYTES + cap);
    new Int32Array(sab, 0, HEADER_WORDS)[CAPACITY] = cap;
    return new ByteRing(sab);
  }

  /** Bytes of SharedArrayBuffer a ring of `capacity` needs (after rounding). */
  static bytesFor(capacity: number): number {
    return HEADER_BYTES + roundUpPow2(capacity);
  }

  /** Attach to a ring made by ByteRing.create (possibly in another thread). */
  constructor(sab: SharedArrayBuffer) {
    if (sab.byteLength < HEADER_BYTES + 2) throw new RangeError('ByteRing buffer too small');
    this.sab = sab;
    this.i32 = new Int32Array(sab, 0, HEADER_WORDS);
    const cap = Atomics.load(this.i32, CAPACITY);
    if (cap < 2 || (cap & (cap - 1)) !== 0 || HEADER_BYTES + cap > sab.byteLength) throw new RangeError('not a ByteRing buffer (bad capacity word)');
    this.capacity = cap;
    this.mask = cap - 1;
    this.data = new Uint8Array(sab, HEADER_BYTES, cap);
  }

  /** Bytes ready to pop. */
  available(): number {
    return (Atomics.load(this.i32, TAIL) - Atomics.load(this.i32, HEAD)) | 0;
  }

  /** Bytes that can be pushed without waiting. */
  free(): number {
    return this.capacity - this.available();
  }

  // ---- producer side ---------------------------------------------------------------------------

  /** Push as many of `bytes` as fit; returns the count accepted (0 when full). Never blocks. */
  push(bytes: Uint8Array): number {
    const a = this.i32;
    const tail = Atomics.load(a, TAIL);
    const used = (tail - Atomics.load(a, HEAD)) | 0;
    const n = Math.min(bytes.length, this.capacity - used);
    if (n <= 0) return 0;
    const start = tail & this.mask;
    const first = Math.min(n, this.capacity - start);
    this.data.set(first === bytes.length ? bytes : bytes.subarray(0, first), start);
    if (n > first) this.data.set(bytes.subarray(first, n), 0);
    this.publish((tail + n) | 0);
    return n;
  }

  /** Push one byte if there is room; never blocks. */
  tryPushByte(byte: number): boolean {
    const a = this.i32;
    const tail = Atomics.load(a, TAIL);
    if (((tail - Atomics.load(a, HEAD)) | 0) >= this.capacity) return false;
    this.data[tail & this.mask] = byte;
    this.publish((tail + 1) | 0);
    return true;
  }

  /**
   * Push one byte, sleeping (Atomics.wait, in slices of ≤10 ms) while the ring is full. Returns true
   * once pushed, false if shouldAbort() returned true first (the byte is then dropped).
   * Blocks the calling thread: workers only (Atomics.wait on Node's main thread would stall the loop).
   */
  pushBlocking(byte: number, shouldAbort: () => boolean): boolean {
    const a = this.i32;
    for (;;) {
      if (this.tryPushByte(byte)) return true;
      if (shouldAbort()) return false;
      const seq = Atomics.load(a, SPACE_SEQ);
      Atomics.store(a, PRODUCER_WAITING, 1);
      if (this.free() > 0) continue; // the consumer made room between our check and the flag
      Atomics.wait(a, SPACE_SEQ, seq, BLOCK_SLICE_MS);
    }
  }

  private publish(newTail: number): void {
    const a = this.i32;
    Atomics.store(a, TAIL, newTail);
    if (Atomics.load(a, CONSUMER_WAITING) !== 0) {
      Atomics.store(a, CONSUMER_WAITING, 0);
      Atomics.add(a, DATA_SEQ, 1);
      Atomics.notify(a, DATA_SEQ);
    }
  }

  // ---- consumer side ---------------------------------------------------------------------------

  /** Pop up to `max` bytes (default: all available) into a new array; empty array when none. */
  pop(max: number = this.capacity): Uint8Array {
    const out = new Uint8Array(Math.max(0, Math.min(max, this.available())));
    this.popInto(out); // only this consumer moves HEAD: all of `out` is filled
    return out;
  }

  /** Pop up to `dst.length` bytes straight into `dst` (e.g. a guest buffer); returns how many. */
  popInto(dst: Uint8Array): number {
    const a = this.i32;
    const head = Atomics.load(a, HEAD);
    const n = Math.min(dst.length, (Atomics.load(a, TAIL) - head) | 0);
    if (n <= 0) return 0;
    const start = head & this.mask;
    const first = Math.min(n, this.capacity - start);
    dst.set(this.data.subarray(start, start + first), 0);
    if (n > first) dst.set(this.data.subarray(0, n - first), first);
    Atomics.store(a, HEAD, (head + n) | 0);
    if (Atomics.load(a, PRODUCER_WAITING) !== 0) {
      Atomics.store(a, PRODUCER_WAITING, 0);
      Atomics.add(a, SPACE_SEQ, 1);
      Atomics.notify(a, SPACE_SEQ);
    }
    return n;
  }

  /**
   * Producer side, without blocking the thread: resolve when there is room or after `timeoutMs`;
   * resolves to free() > 0 (for a producer on an event loop, e.g. the main thread's console input).
   */
  spaceAsync(timeoutMs: number): Promise<boolean> {
    return this.waitFor(() => this.free() > 0, SPACE_SEQ, PRODUCER_WAITING, timeoutMs);
  }

  /**
   * Resolve when bytes are available or after `timeoutMs`; resolves to available() > 0.
   * Does not block the thread (Atomics.waitAsync; falls back to a timer where it is missing).
   */
  waitAsync(timeoutMs: number): Promise<boolean> {
    return this.waitFor(() => this.available() > 0, DATA_SEQ, CONSUMER_WAITING, timeoutMs);
  }

  /**
   * Wait without blocking for `ready()`: announce the wait in `waitingFlag` (the other side then bumps
   * and notifies `seqWord` when it changes the ring), re-check, then Atomics.waitAsync on the sequence.
   */
  private async waitFor(ready: () => boolean, seqWord: number, waitingFlag: number, timeoutMs: number): Promise<boolean> {
    const a = this.i32;
    if (ready()) return true;
    const seq = Atomics.load(a, seqWord);
    Atomics.store(a, waitingFlag, 1);
    if (ready()) return true;
    if (atomicsWaitAsync !== undefined) {
      const r = atomicsWaitAsync(a, seqWord, seq, timeoutMs);
      if (r.async) await r.value;
    } else {
      await new Promise<void>((resolve) => setTimeout(resolve, Math.min(timeoutMs, 5)));
    }
    return ready();
  }
}
