// A token bucket for log lines a guest can trigger (NEEDS_RESET, unhandled accesses, bad requests):
// at most `burst` lines at once and `perSecond` on average; what is dropped is counted, and the next
// line that gets through says how many were suppressed. A guest can therefore not flood the host log,
// and nothing is silently lost from the count.
export interface RateLimiterOptions {
  /** Lines allowed at once (bucket size). */
  burst: number;
  /** Average lines per second after the burst. */
  perSecond: number;
  /** Clock in ms (tests). */
  now?: () => number;
}

export class RateLimiter {
  private tokens: number;
  private last: number;
  private suppressedSince = 0;
  /** Lines dropped in all. */
  suppressed = 0;
  private readonly burst: number;
  private readonly perMs: number;
  private readonly now: () => number;

  constructor(opts: RateLimiterOptions) {
    if (!(opts.burst >= 1) || !(opts.perSecond > 0)) throw new RangeError('RateLimiter: burst ≥ 1 and perSecond > 0');
    this.burst = opts.burst;
    this.perMs = opts.perSecond / 1000;
    this.now = opts.now ?? (() => performance.now());
    this.tokens = opts.burst;
    this.last = this.now();
  }

  /**
   * Whether a line may be written now. When it may, `suppressed` (the return value's field) is how many
   * lines were dropped since the last one that got through (to mention in this one).
   */
  take(): { ok: true; suppressed: number } | { ok: false } {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + (t - this.last) * this.perMs);
    this.last = t;
    if (this.tokens < 1) {
      this.suppressed++;
      this.suppressedSince++;
      return { ok: false };
    }
    this.tokens -= 1;
    const n = this.suppressedSince;
    this.suppressedSince = 0;
    return { ok: true, suppressed: n };
  }
}
