import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ByteRing } from '../../src/shared/byte-ring.js';
import { SabMutex } from '../../src/shared/lock.js';
import { runs } from '../fuzz/budget.js';
import { transpileForWorkers } from './transpile-for-workers.js';

/** Transpile src/ files for a plain Node worker and add a worker script next to them. */
function buildWorker(files: string[], script: string): string {
  const root = transpileForWorkers(files, 'kindling-ring-test-');
  const file = join(root, 'worker.mjs');
  writeFileSync(file, script);
  return file;
}

function done(w: Worker): Promise<unknown> {
  return new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
}

describe('ByteRing', () => {
  it('rounds capacity up to a power of two and attaches from another instance', () => {
    const r = ByteRing.create(100);
    expect(r.capacity).toBe(128);
    expect(r.sab.byteLength).toBe(ByteRing.bytesFor(100));
    const other = new ByteRing(r.sab);
    expect(other.capacity).toBe(128);
    expect(r.push(Uint8Array.of(1, 2, 3))).toBe(3);
    expect(other.available()).toBe(3);
    expect(other.pop(2)).toEqual(Uint8Array.of(1, 2));
    expect(r.pop()).toEqual(Uint8Array.of(3));
    expect(r.pop()).toEqual(new Uint8Array(0));
    expect(() => new ByteRing(new SharedArrayBuffer(64))).toThrow();
  });

  it('accepts only what fits and wraps around correctly (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.uint8Array({ maxLength: 40 }).map((b) => ({ push: b })), fc.nat(40).map((n) => ({ pop: n }))), { maxLength: 80 }),
        (ops) => {
          const r = ByteRing.create(32);
          const model: number[] = [];
          for (const op of ops) {
            if ('push' in op) {
              const n = r.push(op.push);
              expect(n).toBe(Math.min(op.push.length, 32 - model.length));
              model.push(...op.push.subarray(0, n));
            } else {
              const out = r.pop(op.pop);
              expect([...out]).toEqual(model.splice(0, Math.min(op.pop, model.length)));
            }
            expect(r.available()).toBe(model.length);
            expect(r.free()).toBe(32 - model.length);
          }
        },
      ),
      { numRuns: runs(300) },
    );
  });

  it('survives 32-bit index wrap-around', () => {
    const r = ByteRing.create(8);
    const hdr = new Int32Array(r.sab, 0, 2);
    hdr[0] = 0x7ffffffe; // head
    hdr[1] = 0x7ffffffe; // tail
    expect(r.push(Uint8Array.of(1, 2, 3, 4, 5))).toBe(5);
    expect(r.available()).toBe(5);
    expect(r.pop()).toEqual(Uint8Array.of(1, 2, 3, 4, 5));
    hdr[0] = -2;
    hdr[1] = -2;
    expect(r.push(Uint8Array.of(9, 8, 7))).toBe(3);
    expect(r.pop()).toEqual(Uint8Array.of(9, 8, 7));
  });

  it('pushBlocking gives up when shouldAbort says so', () => {
    const r = ByteRing.create(2);
    expect(r.pushBlocking(1, () => false)).toBe(true);
    expect(r.pushBlocking(2, () => false)).toBe(true);
    let calls = 0;
    const t0 = performance.now();
    expect(r.pushBlocking(3, () => ++calls > 3)).toBe(false);
    expect(calls).toBe(4);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(r.pop()).toEqual(Uint8Array.of(1, 2));
  });

  it('waitAsync times out when empty and resolves at once when data is there', async () => {
    const r = ByteRing.create(16);
    const t0 = performance.now();
    expect(await r.waitAsync(30)).toBe(false);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(20);
    r.push(Uint8Array.of(1));
    expect(await r.waitAsync(10000)).toBe(true);
  });

  it('streams bytes from a blocking producer worker to an async consumer, intact', async () => {
    const file = buildWorker(
      ['shared/byte-ring.ts'],
      `import { workerData, parentPort } from 'node:worker_threads';
       import { ByteRing } from './shared/byte-ring.js';
       const ring = new ByteRing(workerData.sab);
       const n = workerData.n;
       let i = 0;
       while (i < n) {
         if (i % 100 === 0) {
           // a burst through push(), topped up with pushBlocking when the ring is full
           const chunk = Uint8Array.from({ length: Math.min(37, n - i) }, (_, k) => (i + k) & 0xff);
           let off = 0;
           while (off < chunk.length) {
             off += ring.push(chunk.subarray(off));
             if (off < chunk.length) ring.pushBlocking(chunk[off++], () => false);
           }
           i += chunk.length;
         } else {
           ring.pushBlocking(i & 0xff, () => false);
           i++;
         }
       }
       parentPort.postMessage('done');`,
    );
    const ring = ByteRing.create(256);
    const n = 200000;
    const w = new Worker(file, { workerData: { sab: ring.sab, n } });
    const finished = done(w);
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      if (!(await ring.waitAsync(1000))) continue;
      const chunk = ring.pop();
      expect(got + chunk.length).toBeLessThanOrEqual(n);
      out.set(chunk, got);
      got += chunk.length;
    }
    await finished;
    await w.terminate();
    expect(ring.available()).toBe(0);
    let bad = -1;
    for (let k = 0; k < n && bad < 0; k++) if (out[k] !== (k & 0xff)) bad = k;
    expect(bad).toBe(-1);
  }, 20000);
});

describe('SabMutex', () => {
  it('locks, unlocks, tryLocks and runs withLock', () => {
    const i32 = new Int32Array(new SharedArrayBuffer(8));
    const m = new SabMutex(i32, 1);
    expect(m.tryLock()).toBe(true);
    expect(m.tryLock()).toBe(false);
    m.unlock();
    expect(m.withLock(() => 42)).toBe(42);
    expect(i32[1]).toBe(0);
    expect(() => m.withLock(() => { throw new Error('x'); })).toThrow('x');
    expect(i32[1]).toBe(0);
    expect(() => new SabMutex(new Int32Array(4), 0)).toThrow();
    expect(() => new SabMutex(i32, 2)).toThrow();
  });

  it('gives mutual exclusion to three workers and the main thread', async () => {
    const file = buildWorker(
      ['shared/lock.ts'],
      `import { workerData, parentPort } from 'node:worker_threads';
       import { SabMutex } from './shared/lock.js';
       const i32 = new Int32Array(workerData.sab);
       const m = new SabMutex(i32, 0);
       for (let i = 0; i < workerData.n; i++) {
         m.lock();
         // non-atomic read-modify-write over two words: torn without the lock
         const v = i32[1]; i32[2] = v; i32[1] = v + 1;
         if ((i & 255) === 0) { const t = Date.now(); while (Date.now() === t) {} }
         m.unlock();
       }
       parentPort.postMessage('done');`,
    );
    const sab = new SharedArrayBuffer(16);
    const i32 = new Int32Array(sab);
    const n = 20000;
    const ws = [0, 1, 2].map(() => new Worker(file, { workerData: { sab, n } }));
    const all = Promise.all(ws.map(done));
    const m = new SabMutex(i32, 0);
    let mine = 0;
    const deadline = Date.now() + 10000;
    let finished = false;
    void all.then(() => (finished = true));
    while (!finished && Date.now() < deadline) {
      for (let k = 0; k < 100; k++) {
        m.withLock(() => {
          i32[1] = i32[1] + 1;
        });
        mine++;
      }
      await new Promise((r) => setImmediate(r));
    }
    await all;
    await Promise.all(ws.map((w) => w.terminate()));
    expect(i32[1]).toBe(3 * n + mine);
    expect(i32[0]).toBe(0);
  }, 20000);
});
