// The epoll-waiting I/O worker loop (src/io-worker/epoll-loop.ts), on this test's own thread: while
// it blocks in epollWait its handlers run for their fds, and libuv still runs everything else in time
// (a setTimeout armed from a handler fires when due, a MessagePort message is delivered), a blocked
// worker still ends on terminate(), set(0) takes an fd out of the set, ready bits say
// readable/writable, a throwing handler ends run(), and stop closes the epoll fd. Needs no KVM
// (eventfds, socketpairs).
import { MessageChannel, Worker } from 'node:worker_threads';
import { existsSync, readlinkSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFinished } from 'vitest';
import { EpollLoop } from '../../src/io-worker/epoll-loop.js';
import { loadAddon } from '../../src/kvm/addon.js';

const addon = loadAddon();
const EFD_NONBLOCK = 0o4000;
const fdTarget = (fd: number): string | undefined => {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
};

/** A worker_thread running `body` with `parentPort`, `addon` and a fresh `loop` (the built dist/ modules) in scope. */
function loopWorker(body: string): Worker {
  const built = fileURLToPath(new URL('../../dist/io-worker/epoll-loop.js', import.meta.url));
  const addonModule = fileURLToPath(new URL('../../dist/kvm/addon.js', import.meta.url));
  expect(existsSync(built), 'dist/ is built by npm test (node scripts/build.mjs ts)').toBe(true);
  const w = new Worker(
    `
    const { parentPort } = require('node:worker_threads');
    (async () => {
      const { EpollLoop } = await import(${JSON.stringify(built)});
      const { loadAddon } = await import(${JSON.stringify(addonModule)});
      const addon = loadAddon();
      const loop = new EpollLoop(addon);
      ${body}
    })();
    `,
    { eval: true },
  );
  onTestFinished(() => void w.terminate());
  return w;
}

describe('EpollLoop', () => {
  it('serves a drained eventfd while libuv timers fire on time and messages arrive', async () => {
    const loop = new EpollLoop(addon);
    const efd = addon.eventfd(0, EFD_NONBLOCK);
    const { port1, port2 } = new MessageChannel();
    let kicks = 0;
    let message: unknown;
    let timerLateMs = -1;
    let stopped = false;
    port1.on('message', (m) => {
      message = m;
      stopped = true;
    });
    loop.add(efd, 1, true, (ready) => {
      expect(ready & 1).toBe(1);
      kicks++;
      if (kicks === 1) {
        // Armed from inside the blocked loop: libuv must still run it when due.
        const t0 = performance.now();
        setTimeout(() => {
          timerLateMs = performance.now() - t0 - 40;
          addon.eventfdWrite(efd, 5n);
        }, 40);
      } else {
        // A message to this very thread: delivered only if the loop hands libuv its turn.
        port2.postMessage({ kicks });
      }
    });
    setTimeout(() => addon.eventfdWrite(efd, 1n), 10);
    const t0 = performance.now();
    await loop.run(() => stopped);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(kicks).toBe(2); // the counter was drained each time: one call per write
    expect(timerLateMs).toBeGreaterThanOrEqual(-1);
    expect(timerLateMs).toBeLessThan(100); // generous: this host is shared; a loop that never yields hangs instead
    expect(message).toEqual({ kicks: 2 });
    port1.close();
    addon.close(efd);
  });

  it('in a worker of its own (no other timers): messages from the main thread reach it while it blocks, and stop ends it', async () => {
    const w = loopWorker(`
        const efd = addon.eventfd(0, ${EFD_NONBLOCK});
        let kicks = 0;
        let stopped = false;
        // The handler answers each kick (the main thread sends the next one only then).
        loop.add(efd, 1, true, () => parentPort.postMessage({ kicked: ++kicks }));
        parentPort.on('message', (m) => {
          if (m === 'kick') addon.eventfdWrite(efd, 1n);
          else if (m === 'stop') {
            stopped = true;
            parentPort.postMessage({ stopping: true });
          }
        });
        const t0 = process.cpuUsage();
        parentPort.postMessage({ ready: true });
        await loop.run(() => stopped);
        const c = process.cpuUsage(t0);
        parentPort.postMessage({ done: true, kicks, cpuMs: (c.user + c.system) / 1000 });
    `);
    const replies: Array<Record<string, unknown>> = [];
    const next = (): Promise<Record<string, unknown>> => new Promise((r) => w.once('message', r));
    expect(await next()).toEqual({ ready: true });
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, 100)); // idle: the loop must sleep, not spin
    for (const m of ['kick', 'kick', 'stop']) {
      w.postMessage(m);
      replies.push(await next());
    }
    const done = await next();
    const wallMs = performance.now() - t0;
    await w.terminate();
    expect(replies).toEqual([{ kicked: 1 }, { kicked: 2 }, { stopping: true }]);
    expect(done).toMatchObject({ done: true, kicks: 2 });
    expect(done.cpuMs as number).toBeLessThan(wallMs / 2);
  }, 10_000);

  it('a worker blocked in it with nothing to wake it (no timers, idle fds) still ends at once on terminate()', async () => {
    const w = loopWorker(`
        loop.add(addon.eventfd(0, ${EFD_NONBLOCK}), 1, true, () => undefined);
        parentPort.postMessage('ready');
        await loop.run(() => false);
    `);
    await new Promise((r) => w.once('message', r));
    await new Promise((r) => setTimeout(r, 100)); // now blocked in epoll_wait without a timeout
    const t0 = performance.now();
    await w.terminate(); // Node wakes the worker's loop, whose fd is in the set
    expect(performance.now() - t0).toBeLessThan(1000);
  }, 10_000);

  it('set(0) takes an fd out of the set, set() changes what is polled (writable, then both), and stop closes the epoll fd', async () => {
    const loop = new EpollLoop(addon);
    expect(fdTarget(loop.fd)).toBe('anon_inode:[eventpoll]');
    const [a, b] = addon.socketpair();
    const seen: number[] = [];
    let stopped = false;
    const token = loop.add(a, 2, false, (ready) => {
      seen.push(ready);
      if (seen.length === 1) {
        // epoll_ctl MOD: now readable too (a byte is waiting), still writable.
        writeSync(b, 'x');
        loop.set(token, 3);
      }
      if (seen.length === 3) {
        // Still writable (level-triggered), but no longer polled: no fourth call.
        loop.set(token, 0);
        setTimeout(() => (stopped = true), 50);
      }
    });
    await loop.run(() => stopped);
    expect(seen).toEqual([2, 3, 3]);
    expect(fdTarget(loop.fd)).toBeUndefined();
    addon.close(a);
    addon.close(b);
  });

  it('a handler that throws ends run() with its exception', async () => {
    const loop = new EpollLoop(addon);
    const efd = addon.eventfd(1, EFD_NONBLOCK);
    loop.add(efd, 1, true, () => {
      throw new Error('device bug');
    });
    await expect(loop.run(() => false)).rejects.toThrow('device bug');
    addon.close(efd);
  });
});
