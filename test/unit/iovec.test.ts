// Segment-list helpers (src/devices/virtio/iovec.ts) over arbitrary segment lists in two buffers:
// scatterBytesAt writes exactly what scatterBytes does on the list split at the offset, and touches
// nothing outside the segments; splitSegments keeps every byte in order.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { gatherBytes, scatterBytes, scatterBytesAt, splitSegments } from '../../src/devices/virtio/iovec.js';
import type { MemorySegment } from '../../src/memory/guest-memory.js';

const SIZE = 256;
const segments = fc.array(fc.record({ b: fc.integer({ min: 0, max: 1 }), offset: fc.integer({ min: 0, max: SIZE - 1 }), length: fc.integer({ min: 0, max: 40 }) }), { maxLength: 8 });

describe('iovec helpers', () => {
  it('scatterBytesAt(segs, at, bytes) = scatterBytes(splitSegments(segs, at)[1], bytes), and nothing else changes', () => {
    fc.assert(
      fc.property(segments, fc.integer({ min: 0, max: 400 }), fc.uint8Array({ maxLength: 24 }), (raw, atRaw, bytes) => {
        // Mostly inside the list (where a write can cross a segment's end), sometimes at or past its end.
        const listBytes = raw.reduce((x, r) => x + r.length, 0);
        const at = atRaw % 8 === 0 ? atRaw : atRaw % (listBytes + 1);
        const mk = (): { bufs: SharedArrayBuffer[]; segs: MemorySegment[] } => {
          const bufs = [new SharedArrayBuffer(SIZE + 64), new SharedArrayBuffer(SIZE + 64)];
          // Segments do not overlap each other in this model: each gets its own span.
          let next = [0, 0];
          const segs = raw.map((r) => {
            const offset = next[r.b];
            next[r.b] += r.length;
            return { buffer: bufs[r.b], offset, length: r.length, gpa: 0x1000 * r.b + offset };
          });
          return { bufs, segs };
        };
        const a = mk();
        const b = mk();
        const n = scatterBytesAt(a.segs, at, bytes);
        const m = scatterBytes(splitSegments(b.segs, at)[1], bytes);
        expect(n).toBe(m);
        for (let i = 0; i < 2; i++) expect(Buffer.from(a.bufs[i]).equals(Buffer.from(b.bufs[i]))).toBe(true);
        const total = a.segs.reduce((x, s) => x + s.length, 0);
        expect(n).toBe(Math.max(0, Math.min(bytes.length, total - at)));
        if (n > 0) expect([...gatherBytes(splitSegments(a.segs, at)[1], n)]).toEqual([...bytes.subarray(0, n)]);
      }),
    );
  });
});
