// COM1's output under PUT /serial's rate_limiter: Firecracker's one token bucket for the serial
// console's output bytes. The guest is never slowed down by it: what exceeds the bucket is dropped (and
// counted as uart.missed_write_count), so a guest flooding its console cannot fill the host's disk or
// log pipeline faster than the limit. Each byte costs one token; a chunk is cut at the last byte the
// bucket can pay for, and the bytes after it are dropped until the bucket has refilled.
import { TokenBucket, type TokenBucketConfig } from '../devices/rate-limiter.js';

export interface SerialOutCounts {
  /** Bytes passed on to the serial output. */
  written: number;
  /** Bytes dropped: over the rate limit, or the output (a full pipe) could not take them. */
  dropped: number;
}

export class SerialOutLimiter {
  readonly counts: SerialOutCounts = { written: 0, dropped: 0 };
  private readonly bucket?: TokenBucket;

  constructor(rate: TokenBucketConfig | undefined, now: () => number = () => performance.now()) {
    if (rate) this.bucket = new TokenBucket(rate, now);
  }

  /** The part of `chunk` the limit lets through (a prefix; all of it without a limit). */
  admit(chunk: Buffer): Buffer {
    let n = chunk.length;
    if (this.bucket) {
      n = Math.max(0, Math.min(n, Math.floor(this.bucket.available() + 1e-9)));
      if (n > 0) this.bucket.consume(n);
    }
    this.counts.dropped += chunk.length - n;
    return n === chunk.length ? chunk : chunk.subarray(0, n);
  }

  /** Bytes admitted and written. */
  wrote(n: number): void {
    this.counts.written += n;
  }

  /** Bytes admitted but lost by the output. */
  lost(n: number): void {
    this.counts.dropped += n;
  }
}
