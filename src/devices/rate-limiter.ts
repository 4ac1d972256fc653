// Firecracker's I/O rate limiter (its `RateLimiter`: a token bucket for bytes and one for operations),
// pure, with the clock injected. A bucket of `size` tokens refills `size` tokens every `refillTimeMs`
// (continuously, not in steps) and never holds more than `size`; `oneTimeBurst` extra tokens are spent
// first and never refilled.
//
// The device asks before it starts a unit of work (`blocked()`: is either bucket in debt?) and pays
// after it (`consume(bytes)`: one op and the bytes), so a frame or a request larger than the bucket is
// never stuck: it is let through and the bucket goes into debt, which the following work waits out.
// Over any long run the rate is therefore size/refill_time (plus the burst once), whatever the unit
// sizes. `waitMs()` says when the debt is paid: the device arms one timer for that moment and resumes
// its queue from it (no polling).
//
// Timers have whole-millisecond resolution and fire late, so a debt that one more millisecond of
// refill pays (GRACE_MS) does not block: otherwise each late timer's extra tokens would be thrown
// away by rounding the next wait up to a whole millisecond, and a queue that waits on every request
// (one op at a time, 2 ms apart) ran 7 % under its limit. Tokens are never created by this: the
// work let through early leaves the bucket that much deeper in debt, so the long-run rate is exact.
export interface TokenBucketConfig {
  /** Tokens (bytes or operations) per refill period, and the bucket's capacity. */
  size: number;
  /** Extra tokens available once, at the start. */
  oneTimeBurst?: number;
  /** Milliseconds in which an empty bucket refills to `size`. */
  refillTimeMs: number;
}

export interface RateLimiterConfig {
  bandwidth?: TokenBucketConfig;
  ops?: TokenBucketConfig;
}

export function validTokenBucket(b: TokenBucketConfig): string | undefined {
  if (!Number.isSafeInteger(b.size) || b.size < 1) return 'size must be a whole number ≥ 1';
  if (!Number.isSafeInteger(b.refillTimeMs) || b.refillTimeMs < 1) return 'refill_time must be a whole number of ms ≥ 1';
  if (b.oneTimeBurst !== undefined && (!Number.isSafeInteger(b.oneTimeBurst) || b.oneTimeBurst < 0)) return 'one_time_burst must be a whole number ≥ 0';
  return undefined;
}

/** A debt that this many milliseconds of refill pay does not block (the timers' resolution). */
export const GRACE_MS = 1;

export class TokenBucket {
  private budget: number;
  private burst: number;
  private last: number;
  readonly size: number;
  private readonly perMs: number;

  constructor(
    cfg: TokenBucketConfig,
    private readonly now: () => number,
  ) {
    const bad = validTokenBucket(cfg);
    if (bad) throw new RangeError(`token bucket: ${bad}`);
    this.size = cfg.size;
    this.perMs = cfg.size / cfg.refillTimeMs;
    this.budget = cfg.size;
    this.burst = cfg.oneTimeBurst ?? 0;
    this.last = now();
  }

  private refill(): void {
    const t = this.now();
    const dt = t - this.last;
    this.last = t;
    if (dt > 0) this.budget = Math.min(this.size, this.budget + dt * this.perMs);
  }

  /** Whether the bucket is in debt beyond GRACE_MS of refill (no work may start; with nothing left, one more unit may). */
  inDebt(): boolean {
    this.refill();
    return this.budget + this.burst < -this.perMs * GRACE_MS;
  }

  /** Pay `n` tokens: the one-time burst first, then the budget (which may go into debt). */
  consume(n: number): void {
    this.refill();
    const fromBurst = Math.min(this.burst, n);
    this.burst -= fromBurst;
    this.budget -= n - fromBurst;
  }

  /** Milliseconds until the debt no longer blocks (0 when it does not). */
  waitMs(): number {
    this.refill();
    const owed = -(this.budget + this.burst) - this.perMs * GRACE_MS;
    return owed <= 0 ? 0 : Math.max(1, Math.ceil(owed / this.perMs - 1e-9));
  }

  /** Tokens available now (for tests and stats). */
  available(): number {
    this.refill();
    return this.budget + this.burst;
  }
}

export class RateLimiter {
  readonly bandwidth: TokenBucket | undefined;
  readonly ops: TokenBucket | undefined;

  constructor(cfg: RateLimiterConfig, now: () => number = () => performance.now()) {
    this.bandwidth = cfg.bandwidth ? new TokenBucket(cfg.bandwidth, now) : undefined;
    this.ops = cfg.ops ? new TokenBucket(cfg.ops, now) : undefined;
  }

  /** Whether work must wait (either bucket in debt). */
  blocked(): boolean {
    return (this.bandwidth?.inDebt() ?? false) || (this.ops?.inDebt() ?? false);
  }

  /** Pay for one operation of `bytes` bytes. */
  consume(bytes: number): void {
    this.bandwidth?.consume(bytes);
    this.ops?.consume(1);
  }

  /** Milliseconds until work may start again. */
  waitMs(): number {
    return Math.max(this.bandwidth?.waitMs() ?? 0, this.ops?.waitMs() ?? 0);
  }
}

/** A limiter when the config limits anything (a bucket with a size), else undefined. */
export function rateLimiter(cfg: RateLimiterConfig | undefined, now?: () => number): RateLimiter | undefined {
  if (!cfg || (!cfg.bandwidth && !cfg.ops)) return undefined;
  return new RateLimiter(cfg, now);
}
