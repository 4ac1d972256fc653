// Waking JS on eventfds (native/poll.cc): uv_poll watchers on a thread's own event loop
// (watchEventfd/watchFd/unwatch/refWatch) and the blocking epoll calls (epoll*), exercised in
// worker_threads the way virtio I/O workers use them. KVM-dependent tests (an EINTR from a vCPU kick,
// ioeventfd → watcher end to end) skip loudly when /dev/kvm is absent.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { loadAddon, type KvmAddon } from '../../src/kvm/addon.js';
import { makeRealModeVm } from './real-mode-vm.js';

const hasKvm = existsSync('/dev/kvm');
if (!hasKvm) console.warn('*** test/kvm/addon-poll.test.ts: /dev/kvm is absent — SKIPPING the KVM-dependent poll tests ***');

const addonPath = fileURLToPath(new URL('../../native/build/Release/kindling.node', import.meta.url));
const k: KvmAddon = loadAddon();
const C = k.constants;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function thrown(f: () => unknown): Error & { code?: string; syscall?: string } {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a throw');
}

// ---- an I/O worker driven by messages -----------------------------------------------------------
// in:  {cmd:'watch', fd, raw?} → {id}      callbacks post {ev:'kick', fd, count} then {ev:'tick'} from a nextTick
//      {cmd:'unwatch', id} → {ok}          {cmd:'ref', id, ref} → {ok}
//      {cmd:'hold', sab}: blocks the worker's loop in Atomics.wait until sab[0] != 0 (sab[1] = 1 once blocked)
//      {cmd:'unwatchInCallback', fd} → {id}; the first callback unwatches itself
const ioWorkerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const a = require(workerData.addonPath);
const post = (m) => parentPort.postMessage(m);
function onKick(fd, count, error) {
  if (count === undefined) count = a.eventfdRead(fd);
  post({ ev: 'kick', fd, count, error });
  process.nextTick(() => post({ ev: 'tick', fd }));
}
parentPort.on('message', (m) => {
  if (m.cmd === 'watch') post({ id: m.raw ? a.watchFd(m.fd, onKick) : a.watchEventfd(m.fd, onKick) });
  else if (m.cmd === 'unwatch') post({ ok: a.unwatch(m.id) });
  else if (m.cmd === 'ref') post({ ok: a.refWatch(m.id, m.ref) });
  else if (m.cmd === 'hold') {
    const i32 = new Int32Array(m.sab);
    Atomics.store(i32, 1, 1);
    Atomics.wait(i32, 0, 0, 10000);
    post({ held: true });
  } else if (m.cmd === 'unwatchInCallback') {
    const id = a.watchEventfd(m.fd, (fd, count) => {
      post({ ev: 'kick', fd, count, unwatched: a.unwatch(id), again: a.unwatch(id) });
    });
    post({ id });
  }
});
`;

type Msg = Record<string, unknown>;

class IoWorker {
  readonly w: Worker;
  private queue: Msg[] = [];
  private waiters: { pred: (m: Msg) => boolean; resolve: (m: Msg) => void }[] = [];
  readonly kicks: Msg[] = [];
  readonly errors: Error[] = [];
  constructor(source = ioWorkerSource) {
    this.w = new Worker(source, { eval: true, workerData: { addonPath } });
    this.w.on('error', (e) => this.errors.push(e));
    this.w.on('message', (m: Msg) => {
      if (m.ev === 'kick') this.kicks.push(m);
      const i = this.waiters.findIndex((w) => w.pred(m));
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(m);
      else this.queue.push(m);
    });
  }
  next(pred: (m: Msg) => boolean = () => true, timeoutMs = 5000): Promise<Msg> {
    const i = this.queue.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('timed out waiting for a worker message')), timeoutMs);
      this.waiters.push({ pred, resolve: (m) => (clearTimeout(t), resolve(m)) });
    });
  }
  async send(m: Msg): Promise<Msg> {
    this.w.postMessage(m);
    return this.next((r) => r.ev === undefined);
  }
  kicksSum(fd: number): bigint {
    return this.kicks.filter((m) => m.fd === fd).reduce((s, m) => s + (m.count as bigint), 0n);
  }
  async waitSum(fd: number, want: bigint, timeoutMs = 5000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.kicksSum(fd) < want) {
      if (Date.now() > end) throw new Error(`kicks on fd ${fd} sum to ${this.kicksSum(fd)}, want ${want}`);
      await sleep(2);
    }
  }
}

const workers: Worker[] = [];
const fds: number[] = [];
function efd(flags = 0): number {
  const fd = k.eventfd(0, flags);
  fds.push(fd);
  return fd;
}
function ioWorker(source?: string): IoWorker {
  const w = new IoWorker(source);
  workers.push(w.w);
  return w;
}

afterAll(async () => {
  await Promise.all(workers.map((w) => w.terminate()));
  for (const fd of fds) {
    try {
      k.close(fd);
    } catch {
      /* closed by the test */
    }
  }
});

// ================================================================================================

describe('uv_poll watchers (watchEventfd / watchFd)', () => {
  it('an eventfd written on the main thread wakes the worker; nextTicks run right after the callback', async () => {
    const io = ioWorker();
    const fd = efd();
    const { id } = await io.send({ cmd: 'watch', fd });
    expect(typeof id).toBe('number');
    expect(id).toBeGreaterThan(0);
    k.eventfdWrite(fd, 1n);
    const kick = await io.next((m) => m.ev === 'kick');
    expect(kick).toMatchObject({ fd, count: 1n });
    expect(await io.next()).toMatchObject({ ev: 'tick', fd }); // the callback's nextTick, before anything else
    for (let i = 0; i < 10; i++) {
      k.eventfdWrite(fd, 2n);
      await io.waitSum(fd, 1n + 2n * BigInt(i + 1));
    }
    expect(io.kicks.every((m) => (m.count as bigint) > 0n)).toBe(true);
    expect(await io.send({ cmd: 'unwatch', id })).toEqual({ ok: true });
    expect(io.errors).toEqual([]);
  });

  it('writes made before the worker loop turns coalesce into one callback with their sum', async () => {
    const io = ioWorker();
    const fd = efd();
    await io.send({ cmd: 'watch', fd });
    const sab = new SharedArrayBuffer(8);
    const i32 = new Int32Array(sab);
    io.w.postMessage({ cmd: 'hold', sab });
    while (Atomics.load(i32, 1) === 0) await sleep(1); // the worker's loop is now blocked
    k.eventfdWrite(fd, 1n);
    k.eventfdWrite(fd, 1n);
    k.eventfdWrite(fd, 1n);
    Atomics.store(i32, 0, 1);
    Atomics.notify(i32, 0);
    await io.next((m) => m.held === true);
    await io.waitSum(fd, 3n);
    await sleep(20);
    expect(io.kicks.map((m) => m.count)).toEqual([3n]);
  });

  it('several eventfds in one worker each report to their own callback', async () => {
    const io = ioWorker();
    const a = efd();
    const b = efd();
    await io.send({ cmd: 'watch', fd: a });
    await io.send({ cmd: 'watch', fd: b });
    k.eventfdWrite(b, 5n);
    k.eventfdWrite(a, 7n);
    await io.waitSum(a, 7n);
    await io.waitSum(b, 5n);
    expect(io.kicksSum(a)).toBe(7n);
    expect(io.kicksSum(b)).toBe(5n);
  });

  it('unwatch stops callbacks and leaves the counter unread; unwatch of an unknown id is false', async () => {
    const io = ioWorker();
    const fd = efd();
    const { id } = await io.send({ cmd: 'watch', fd });
    k.eventfdWrite(fd, 1n);
    await io.waitSum(fd, 1n);
    expect(await io.send({ cmd: 'unwatch', id })).toEqual({ ok: true });
    k.eventfdWrite(fd, 4n);
    await sleep(100);
    expect(io.kicksSum(fd)).toBe(1n);
    expect(k.eventfdRead(fd)).toBe(4n); // libuv made the fd non-blocking: an empty read is 0n, not a hang
    expect(k.eventfdRead(fd)).toBe(0n);
    expect(await io.send({ cmd: 'unwatch', id })).toEqual({ ok: false });
    expect(k.unwatch(id as number)).toBe(false); // another thread's id is unknown here
    expect(k.refWatch(id as number, false)).toBe(false);
  });

  it('a callback may unwatch itself; no further callbacks', async () => {
    const io = ioWorker();
    const fd = efd();
    await io.send({ cmd: 'unwatchInCallback', fd });
    k.eventfdWrite(fd, 2n);
    expect(await io.next((m) => m.ev === 'kick')).toMatchObject({ fd, count: 2n, unwatched: true, again: false });
    k.eventfdWrite(fd, 1n);
    await sleep(100);
    expect(io.kicks.length).toBe(1);
  });

  it('watchFd: the callback reads the fd itself', async () => {
    const io = ioWorker();
    const fd = efd();
    const { id } = await io.send({ cmd: 'watch', fd, raw: true });
    k.eventfdWrite(fd, 3n);
    await io.waitSum(fd, 3n);
    k.eventfdWrite(fd, 2n);
    await io.waitSum(fd, 5n);
    await io.send({ cmd: 'unwatch', id });
    expect(io.kicks.every((m) => m.count !== 0n)).toBe(true);
  });

  it('works on the calling thread itself, and close(fd) unwatches the fd first', async () => {
    const fd = k.eventfd(0, 0);
    const seen: bigint[] = [];
    const id = k.watchEventfd(fd, (f, count) => {
      expect(f).toBe(fd);
      seen.push(count);
    });
    k.eventfdWrite(fd, 9n);
    while (seen.length === 0) await sleep(1);
    expect(seen).toEqual([9n]);
    k.close(fd);
    expect(k.unwatch(id)).toBe(false);
  });

  it('argument and syscall errors', () => {
    expect(() => k.watchEventfd(-1, () => {})).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'uv_poll_init' }));
    expect(() => k.watchEventfd(0x7ffffff0, () => {})).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => k.watchEventfd(efd(), 'nope' as unknown as () => void)).toThrow(TypeError);
    expect(() => k.watchEventfd('3' as unknown as number, () => {})).toThrow(TypeError);
    const dir = mkdtempSync(join(tmpdir(), 'kindling-poll-'));
    try {
      const p = join(dir, 'f');
      writeFileSync(p, 'x');
      const file = k.openFile(p, C.O_RDONLY, 0);
      const e = thrown(() => k.watchEventfd(file, () => {}));
      expect(e.code).toBe('EPERM'); // regular files cannot be polled
      expect(e.syscall).toBe('uv_poll_init');
      k.close(file);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const fd = efd();
    const id = k.watchEventfd(fd, () => {});
    expect(thrown(() => k.watchEventfd(fd, () => {})).code).toBe('EEXIST');
    expect(k.unwatch(id)).toBe(true);
    const id2 = k.watchFd(fd, () => {}); // the fd is free again
    expect(k.unwatch(id2)).toBe(true);
  });

  it('a throwing callback is an uncaught exception of the worker', async () => {
    const fd = efd();
    const w = new Worker(
      `const a = require(${JSON.stringify(addonPath)});
       a.watchEventfd(${fd}, () => { throw new Error('boom from callback'); });
       require('node:worker_threads').parentPort.postMessage('ready');`,
      { eval: true },
    );
    workers.push(w);
    await new Promise((r) => w.once('message', r));
    const err = new Promise<Error>((r) => w.once('error', r));
    const exit = new Promise<number>((r) => w.once('exit', r));
    k.eventfdWrite(fd, 1n);
    expect((await err).message).toBe('boom from callback');
    expect(await exit).toBe(1);
  });

  it('a watcher keeps the worker alive like a socket; after unwatch or refWatch(false) it does not', async () => {
    const run = async (body: string, kick: boolean) => {
      const fd = efd();
      const w = new Worker(`const a = require(${JSON.stringify(addonPath)}); const fd = ${fd};\n${body}`, { eval: true });
      workers.push(w);
      let exited = false;
      const exit = new Promise<number>((r) => w.once('exit', (c) => ((exited = true), r(c))));
      // A worker that nothing holds exits as soon as its script ends; under load starting one can take
      // several hundred ms, so wait long enough for that before judging (a held one waits for the kick).
      await Promise.race([exit, sleep(1500)]);
      const aliveBefore = !exited;
      if (kick) k.eventfdWrite(fd, 1n);
      const code = await Promise.race([exit, sleep(3000).then(() => -1)]);
      return { aliveBefore, code };
    };
    // ref'd: alive until the callback unwatches
    expect(await run('const id = a.watchEventfd(fd, () => a.unwatch(id));', true)).toEqual({ aliveBefore: true, code: 0 });
    // unwatched at once: exits at once
    expect(await run('a.unwatch(a.watchEventfd(fd, () => {}));', false)).toEqual({ aliveBefore: false, code: 0 });
    // unref'd: exits at once, the watcher does not hold it
    expect(await run('a.refWatch(a.watchEventfd(fd, () => {}), false);', false)).toEqual({ aliveBefore: false, code: 0 });
    // unref'd then ref'd again: alive
    expect(await run('const id = a.watchEventfd(fd, () => a.unwatch(id)); a.refWatch(id, false); a.refWatch(id);', true)).toEqual({
      aliveBefore: true,
      code: 0,
    });
  });

  it('terminating or exiting workers with live, firing watchers does not crash (20× each, in a child process)', () => {
    // A child process, so that a crash (the hazard: a callback into a dying env) fails this test
    // instead of killing the test runner.
    const script = `
      const { Worker } = require('node:worker_threads');
      const a = require(${JSON.stringify(addonPath)});
      const src = \`
        const { parentPort, workerData } = require('node:worker_threads');
        const a = require(workerData.addonPath);
        let n = 0;
        for (const fd of workerData.fds) a.watchEventfd(fd, (f, c) => {
          n++;
          if (workerData.exitIn === 'callback' && n === 3) process.exit(0);
          Promise.resolve().then(() => { n++; });
        });
        if (workerData.extra) a.refWatch(a.watchFd(workerData.extra, () => {}), false);
        parentPort.postMessage('ready');
      \`;
      (async () => {
        for (const exitIn of ['terminate', 'callback', 'terminate-busy']) {
          for (let i = 0; i < 20; i++) {
            const fds = [0, 1, 2, 3].map(() => a.eventfd(0, 0));
            const extra = a.eventfd(1, 0); // always readable, never read: fires every loop turn
            const w = new Worker(src, { eval: true, workerData: { addonPath: ${JSON.stringify(addonPath)}, fds, exitIn, extra } });
            w.on('error', (e) => { console.error('worker error', e); process.exit(3); });
            await new Promise((r) => w.once('message', r));
            const exited = new Promise((r) => w.once('exit', r));
            let writing = true;
            const pump = (async () => { while (writing) { for (const fd of fds) a.eventfdWrite(fd, 1n); await new Promise((r) => setImmediate(r)); } })();
            if (exitIn === 'terminate') { for (const fd of fds) a.eventfdWrite(fd, 1n); await w.terminate(); }
            else if (exitIn === 'terminate-busy') { await new Promise((r) => setTimeout(r, i % 5)); await w.terminate(); }
            await exited;
            writing = false;
            await pump;
            for (const fd of [...fds, extra]) a.close(fd);
          }
        }
        console.log('ok');
      })();
    `;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
    expect(r.stdout.trim()).toBe('ok');
  });
});

// ================================================================================================

describe('epoll', () => {
  it('epollWait returns the tokens of the ready fds and times out with 0', () => {
    const ep = k.epollCreate();
    fds.push(ep);
    const a = efd();
    const b = efd();
    const c = efd();
    k.epollAdd(ep, a, 11);
    k.epollAdd(ep, b, -22);
    k.epollAdd(ep, c, 0x7fffffff);
    const tokens = new Int32Array(8);
    let t0 = performance.now();
    expect(k.epollWait(ep, tokens, 50)).toBe(0);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(45);
    expect(k.epollWait(ep, tokens, 0)).toBe(0);

    k.eventfdWrite(b, 1n);
    expect(k.epollWait(ep, tokens, 1000)).toBe(1);
    expect(tokens[0]).toBe(-22);
    // level-triggered: still ready until read
    expect(k.epollWait(ep, tokens, 0)).toBe(1);
    expect(k.eventfdRead(b)).toBe(1n);
    expect(k.epollWait(ep, tokens, 0)).toBe(0);

    k.eventfdWrite(a, 1n);
    k.eventfdWrite(c, 1n);
    const n = k.epollWait(ep, tokens, 1000);
    expect(n).toBe(2);
    expect([...tokens.subarray(0, n)].sort((x, y) => x - y)).toEqual([11, 0x7fffffff]);
    // a 1-element array reports one at a time
    expect(k.epollWait(ep, new Int32Array(1), 0)).toBe(1);

    k.epollDel(ep, a);
    k.epollDel(ep, c);
    expect(k.epollWait(ep, tokens, 0)).toBe(0);
    t0 = performance.now();
    expect(k.epollWait(ep, tokens, 30)).toBe(0);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(25);
  });

  it('drain: epollWait reads the counters of drain fds into counts', () => {
    const ep = k.epollCreate();
    fds.push(ep);
    const a = efd();
    const b = efd();
    k.epollAdd(ep, a, 1, true);
    k.epollAdd(ep, b, 2); // not drained
    k.eventfdWrite(a, 3n);
    k.eventfdWrite(a, 4n);
    k.eventfdWrite(b, 5n);
    const tokens = new Int32Array(4);
    const counts = new BigUint64Array(4);
    const n = k.epollWait(ep, tokens, 1000, counts);
    expect(n).toBe(2);
    const got = new Map([...tokens.subarray(0, n)].map((t, i) => [t, counts[i]]));
    expect(got).toEqual(new Map([[1, 7n], [2, 0n]]));
    expect(k.eventfdRead(a)).toBe(0n); // drained; and epollAdd(drain) made it non-blocking
    expect(k.epollWait(ep, tokens, 0, counts)).toBe(1); // b is still ready
    expect(tokens[0]).toBe(2);
    expect(k.eventfdRead(b)).toBe(5n);
  });

  it('a worker blocked in epollWait is woken by an eventfd from the main thread with the right token', async () => {
    const ep = k.epollCreate();
    fds.push(ep);
    const kickFd = efd();
    const ctl = efd();
    const src = `
      const { parentPort, workerData } = require('node:worker_threads');
      const a = require(workerData.addonPath);
      const { ep, kickFd, ctl } = workerData;
      a.epollAdd(ep, kickFd, 100, true);
      a.epollAdd(ep, ctl, 200, true);
      const tokens = new Int32Array(4), counts = new BigUint64Array(4);
      parentPort.postMessage({ ev: 'ready' });
      const seen = [];
      for (;;) {
        const n = a.epollWait(ep, tokens, 5000, counts);
        if (n === 0) { seen.push('timeout'); break; }
        let stop = false;
        for (let i = 0; i < n; i++) { seen.push([tokens[i], counts[i]]); if (tokens[i] === 200) stop = true; }
        parentPort.postMessage({ ev: 'woke', n });
        if (stop) break;
      }
      parentPort.postMessage({ ev: 'done', seen });
    `;
    const worker = new Worker(src, { eval: true, workerData: { addonPath, ep, kickFd, ctl } });
    workers.push(worker);
    const msgs: Msg[] = [];
    const waitFor = (ev: string) =>
      new Promise<Msg>((resolve) => {
        const check = () => {
          const m = msgs.find((x) => x.ev === ev);
          if (m) resolve(m);
          else setTimeout(check, 2);
        };
        check();
      });
    worker.on('message', (m: Msg) => msgs.push(m));
    await waitFor('ready');
    await sleep(20);
    k.eventfdWrite(kickFd, 2n);
    await waitFor('woke');
    k.eventfdWrite(ctl, 1n);
    const done = await waitFor('done');
    expect(done.seen).toEqual([
      [100, 2n],
      [200, 1n],
    ]);
  });

  it('errors: EEXIST, ENOENT, EBADF, EINVAL, bad arrays', () => {
    const ep = k.epollCreate();
    fds.push(ep);
    const a = efd();
    k.epollAdd(ep, a, 1);
    expect(thrown(() => k.epollAdd(ep, a, 1))).toMatchObject({ code: 'EEXIST', syscall: 'epoll_ctl' });
    k.epollDel(ep, a);
    expect(thrown(() => k.epollDel(ep, a))).toMatchObject({ code: 'ENOENT', syscall: 'epoll_ctl' });
    expect(thrown(() => k.epollAdd(ep, -1, 1))).toMatchObject({ code: 'EBADF' });
    expect(thrown(() => k.epollAdd(a, a, 1))).toMatchObject({ code: 'EINVAL' }); // not an epoll fd
    expect(thrown(() => k.epollWait(-1, new Int32Array(1), 0))).toMatchObject({ code: 'EBADF', syscall: 'epoll_wait' });
    expect(() => k.epollWait(ep, new Uint32Array(1) as unknown as Int32Array, 0)).toThrow(TypeError);
    expect(() => k.epollWait(ep, new Int32Array(0), 0)).toThrow(RangeError);
    expect(() => k.epollWait(ep, new Int32Array(4), 0, new BigUint64Array(2))).toThrow(RangeError);
    expect(() => k.epollAdd(ep, a, 2 ** 31)).toThrow(RangeError);
  });
});

// ================================================================================================

describe.skipIf(!hasKvm)('with KVM', () => {

  it('epollWait returns 0 (not a throw) when a vCPU kick signal interrupts it', async () => {
    const kvm = k.open('/dev/kvm');
    const vm = k.createVm(kvm, 0);
    const vcpu = k.createVcpu(vm, 0);
    const ep = k.epollCreate();
    const idle = k.eventfd(0, 0);
    k.epollAdd(ep, idle, 1);
    try {
      const w = new Worker(
        `const { parentPort, workerData: d } = require('node:worker_threads');
         const a = require(d.addonPath);
         const run = a.mapRun(d.vcpu, d.size);
         const h = a.registerVcpuThread(d.vcpu, run);
         parentPort.postMessage({ h });
         const t0 = performance.now();
         const n = a.epollWait(d.ep, new Int32Array(4), 10000);
         parentPort.postMessage({ n, ms: performance.now() - t0 });
         a.unregisterVcpuThread(h);`,
        { eval: true, workerData: { addonPath, vcpu, size: k.getVcpuMmapSize(kvm), ep } },
      );
      workers.push(w);
      // Listened for from the start: the worker exits right after its last message, and an 'exit'
      // emitted while this test sleeps between polls of msgs would be missed by a later once().
      let gone = false;
      const exited = new Promise((r) => w.once('exit', (c) => ((gone = true), r(c))));
      let failure: unknown;
      w.on('error', (e) => (failure = e));
      const msgs: Msg[] = [];
      w.on('message', (m: Msg) => msgs.push(m));
      while (msgs.length < 1 && !gone) await sleep(1);
      expect(failure).toBeUndefined();
      await sleep(100); // let it block in epoll_wait
      expect(k.kick(msgs[0].h as number)).toBe(true);
      while (msgs.length < 2 && !gone) await sleep(1);
      expect(failure).toBeUndefined();
      expect(msgs[1].n).toBe(0);
      expect(msgs[1].ms as number).toBeLessThan(5000);
      await exited;
    } finally {
      k.close(ep);
      k.close(idle);
      k.close(vcpu);
      k.closeVm(vm);
      k.close(kvm);
    }
  });

  it('ioeventfd end to end: 100 guest OUTs to a PIO port wake the worker watcher, with no exits to userspace', async () => {
    const kvm = k.open('/dev/kvm');
    // mov dx,0x3f8; mov cx,100; L: out dx,al; loop L; hlt
    const t = makeRealModeVm(k, kvm, [0xba, 0xf8, 0x03, 0xb9, 0x64, 0x00, 0xee, 0xe2, 0xfd, 0xf4]);
    const { vm, vcpu } = t;
    const notify = efd();
    k.ioeventfd(vm, 0x3f8n, 1, notify, C.KVM_IOEVENTFD_FLAG_PIO, 0n);
    const io = ioWorker();
    const { id } = await io.send({ cmd: 'watch', fd: notify });

    const run = k.mapRun(vcpu, k.getVcpuMmapSize(kvm));
    const h = k.registerVcpuThread(vcpu, run);
    try {
      const dv = new DataView(run);
      let exits = 0;
      for (;;) {
        expect(k.run(vcpu, h)).toBe(0);
        const reason = dv.getUint32(8, true);
        if (reason === C.KVM_EXIT_HLT) break;
        exits++;
        expect(exits).toBeLessThan(10);
      }
      expect(exits).toBe(0); // every OUT was absorbed by the ioeventfd
      await io.waitSum(notify, 100n);
      expect(io.kicksSum(notify)).toBe(100n);
      expect(io.kicks.length).toBeLessThanOrEqual(100);
    } finally {
      k.unregisterVcpuThread(h);
      await io.send({ cmd: 'unwatch', id });
      k.ioeventfd(vm, 0x3f8n, 1, notify, C.KVM_IOEVENTFD_FLAG_PIO | C.KVM_IOEVENTFD_FLAG_DEASSIGN, 0n);
      t.close();
      k.close(kvm);
    }
  });
});
