// PUT /serial's rate limiter (src/api-server/serial-out.ts) on a fake clock: over any sequence of
// chunks and pauses, what passes is a prefix of each chunk, never more than the bucket could pay for
// (size + one-time burst + refill), all of it while tokens last, and every byte is either written or
// counted as dropped.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SerialOutLimiter } from '../../src/api-server/serial-out.js';

describe('serial output rate limiter', () => {
  it('admits a prefix of each chunk, bounded by size + burst + refill, and drops the rest', () => {
    fc.assert(
      fc.property(
        fc.record({ size: fc.integer({ min: 1, max: 5000 }), refillTimeMs: fc.integer({ min: 1, max: 2000 }), oneTimeBurst: fc.integer({ min: 0, max: 3000 }) }),
        fc.array(fc.record({ len: fc.integer({ min: 0, max: 3000 }), waitMs: fc.integer({ min: 0, max: 500 }) }), { maxLength: 40 }),
        (rate, steps) => {
          let t = 0;
          const lim = new SerialOutLimiter(rate, () => t);
          let admitted = 0;
          let offered = 0;
          let credit = rate.size + rate.oneTimeBurst; // what the bucket can have paid for by now, at most
          let level = rate.size; // a model of the bucket: budget (capped at size) and the burst
          let burst = rate.oneTimeBurst;
          for (const s of steps) {
            t += s.waitMs;
            credit += (s.waitMs * rate.size) / rate.refillTimeMs;
            level = Math.min(rate.size, level + (s.waitMs * rate.size) / rate.refillTimeMs);
            const chunk = Buffer.alloc(s.len, 0x61 + (offered % 26));
            const a = lim.admit(chunk);
            expect(a.equals(chunk.subarray(0, a.length))).toBe(true);
            // Everything passes while the model has tokens for it; otherwise exactly what it has.
            const can = Math.floor(level + burst + 1e-9);
            expect(a.length).toBe(Math.max(0, Math.min(s.len, can)));
            const fromBurst = Math.min(burst, a.length);
            burst -= fromBurst;
            level -= a.length - fromBurst;
            lim.wrote(a.length);
            admitted += a.length;
            offered += s.len;
            expect(admitted).toBeLessThanOrEqual(credit + 1e-6);
          }
          expect(lim.counts).toEqual({ written: admitted, dropped: offered - admitted });
        },
      ),
    );
  });

  it('without a limit everything passes; bytes the output loses count as dropped', () => {
    const lim = new SerialOutLimiter(undefined);
    const b = Buffer.from('hello');
    expect(lim.admit(b)).toBe(b);
    lim.lost(5);
    expect(lim.counts).toEqual({ written: 0, dropped: 5 });
  });

  it('refills at size per refill_time: 100 bytes per second lets 100, then 50 after half a second', () => {
    let t = 0;
    const lim = new SerialOutLimiter({ size: 100, refillTimeMs: 1000 }, () => t);
    expect(lim.admit(Buffer.alloc(250)).length).toBe(100);
    expect(lim.admit(Buffer.alloc(10)).length).toBe(0);
    t = 500;
    expect(lim.admit(Buffer.alloc(250)).length).toBe(50);
    expect(lim.counts.dropped).toBe(150 + 10 + 200);
  });
});
