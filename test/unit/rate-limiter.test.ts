// Firecracker-style token buckets (src/devices/rate-limiter.ts) on a fake clock: a device that asks
// blocked() before each unit of work, pays consume(n) after it and, when blocked, sleeps waitMs() gets
// size/refill_time on average (plus the one-time burst), whatever the unit sizes — within 10 % over a
// run of 20+ refill periods — and never moves work while in debt.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GRACE_MS, RateLimiter, TokenBucket, rateLimiter, validTokenBucket } from '../../src/devices/rate-limiter.js';
import { runs } from '../fuzz/budget.js';

describe('token bucket', () => {
  it('starts full, spends the burst first, refills continuously up to size, goes into debt and says when it is paid', () => {
    let t = 0;
    const b = new TokenBucket({ size: 1000, refillTimeMs: 100, oneTimeBurst: 500 }, () => t);
    expect(b.available()).toBe(1500);
    b.consume(1200);
    expect(b.available()).toBe(300);
    t = 50;
    expect(b.available()).toBe(800);
    t = 1000;
    expect(b.available()).toBe(1000); // never above size; the burst is gone
    b.consume(3000);
    expect(b.inDebt()).toBe(true);
    // 2000 owed at 10 per ms: paid at 200 ms, but a debt one more ms of refill pays (GRACE_MS) no longer blocks.
    expect(b.waitMs()).toBe(199);
    t += 198;
    expect(b.inDebt()).toBe(true);
    expect(b.waitMs()).toBe(1);
    t += 1;
    expect(b.inDebt()).toBe(false);
    expect(b.waitMs()).toBe(0);
  });

  it('rejects buckets that cannot refill', () => {
    expect(validTokenBucket({ size: 0, refillTimeMs: 100 })).toMatch(/size/);
    expect(validTokenBucket({ size: 10, refillTimeMs: 0 })).toMatch(/refill_time/);
    expect(validTokenBucket({ size: 10, refillTimeMs: 5, oneTimeBurst: -1 })).toMatch(/one_time_burst/);
    expect(() => new TokenBucket({ size: 1.5, refillTimeMs: 1 }, () => 0)).toThrow(RangeError);
    expect(rateLimiter({})).toBeUndefined();
  });

  it('property: the rate over a long run is within 10 % of size/refill_time (+ burst), for any unit sizes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1000, max: 10_000_000 }),
        fc.integer({ min: 1, max: 1000 }),
        fc.integer({ min: 0, max: 100_000 }),
        fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 20 }),
        fc.option(fc.integer({ min: 1, max: 5000 }), { nil: undefined }),
        fc.array(fc.double({ min: 0, max: 0.95, noNaN: true }), { minLength: 1, maxLength: 8 }),
        (size, refillTimeMs, burst, permille, opsSize, lateness) => {
          // Units from size/1000 to 3 × size (larger than the bucket: paid in debt).
          const units = permille.map((u) => Math.ceil((size * u) / 1000));
          let t = 0;
          const lim = new RateLimiter({ bandwidth: { size, refillTimeMs, oneTimeBurst: burst }, ...(opsSize ? { ops: { size: opsSize, refillTimeMs } } : {}) }, () => t);
          const horizon = 40 * refillTimeMs;
          let bytes = 0;
          let ops = 0;
          let i = 0;
          let wakes = 0;
          for (let steps = 0; t < horizon; steps++) {
            // Each unit is at least size/1000 bytes and time must pass: far fewer steps than this.
            if (steps > 200_000) throw new Error(`no time passed after ${steps} units (${bytes} bytes at t=${t} ms)`);
            if (lim.blocked()) {
              const w = lim.waitMs();
              expect(w).toBeGreaterThan(0);
              // The timer fires up to a millisecond late (whole-ms resolution, a busy loop).
              t += w + lateness[wakes++ % lateness.length];
              continue;
            }
            const n = units[i++ % units.length];
            lim.consume(n);
            bytes += n;
            ops++;
          }
          // At most what the buckets allow in t ms, plus the one unit paid after it moved.
          const maxUnit = Math.max(...units);
          // (and what GRACE_MS of refill pays).
          expect(bytes).toBeLessThanOrEqual(size * (1 + (t + GRACE_MS) / refillTimeMs) + burst + maxUnit);
          if (opsSize) expect(ops).toBeLessThanOrEqual(opsSize * (1 + (t + GRACE_MS) / refillTimeMs) + 1);
          // And at least 90 % of the binding limit's rate.
          const avgUnit = bytes / ops;
          const limit = Math.min(size / refillTimeMs, opsSize ? (opsSize / refillTimeMs) * avgUnit : Infinity);
          expect(bytes / t).toBeGreaterThanOrEqual(0.9 * limit);
          // Late timers cost nothing over the run: within 3 % (plus the burst, the first bucket and one unit).
          expect(bytes).toBeGreaterThanOrEqual(0.97 * Math.min(limit * t, size * (t / refillTimeMs)) - maxUnit);
        },
      ),
      { numRuns: runs(200) },
    );
  });
});
