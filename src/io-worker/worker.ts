// One virtio device's data path: a worker_thread woken through libuv (uv_poll watchers from the
// addon) or, for a device with `wakeups: 'epoll'`, by its own epoll set (epoll-loop.ts), on its queue
// ioeventfds, its control eventfd and any host fd its backend watches. A kick never
// exits to userspace on the vCPU: KVM signals the queue's ioeventfd, this thread's loop wakes, the
// backend reads the ring straight out of the shared guest RAM, does its work (preadv/pwritev for a
// disk, the CSPRNG for rng, the console rings), publishes used entries and pulses the irqfd. Register
// accesses are served by the vCPU workers over the shared transport state; they write the control
// eventfd when the device must act (DRIVER_OK, FAILED, reset). The main thread is on none of these
// paths. The device kind comes from the registry; this file knows no device.
import { parentPort } from 'node:worker_threads';
import { VirtioMmioDeviceRunner } from '../devices/virtio/activation.js';
import { addonFdPoll, POLL_READABLE, type BackendEnv, type FdPoll } from '../devices/virtio/device.js';
import { VirtioMmioTransport } from '../devices/virtio/mmio.js';
import { virtioDeviceType } from '../devices/virtio/registry.js';
import { loadAddon } from '../kvm/addon.js';
import { installSeccomp } from '../seccomp/install.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { EpollLoop } from './epoll-loop.js';
import type { IoWorkerCommand, IoWorkerData, IoWorkerMessage } from './protocol.js';

const port = parentPort;
if (!port) throw new Error('I/O worker must run in a worker_thread');
const addon = loadAddon();
// Loaded: from here the worker needs no file (a process-wide filter may now be installed).
port.postMessage({ type: 'loaded' } satisfies IoWorkerMessage);
const data = await new Promise<IoWorkerData>((resolve) => port.once('message', resolve));

function post(m: IoWorkerMessage): void {
  port!.postMessage(m);
}

const watchers: number[] = [];
const polls = new Set<FdPoll>();
let stopped = false;
let runner: VirtioMmioDeviceRunner | undefined;

const type = virtioDeviceType(data.kind);
/** The device's own epoll set, when it waits there instead of on libuv (VirtioDeviceType.wakeups). */
const loop = type.wakeups === 'epoll' ? new EpollLoop(addon) : undefined;

function watch(fd: number, eventfd: boolean, onReady: () => void): () => void {
  if (loop) {
    const token = loop.add(fd, POLL_READABLE, eventfd, () => {
      if (!stopped) onReady();
    });
    return () => loop.remove(token);
  }
  const cb = (_fd: number, _count?: bigint, error?: string): void => {
    if (stopped) return;
    if (error) {
      post({ type: 'log', name: data.name, level: 'error', msg: `${data.name}: fd watch failed (${error})` });
      return;
    }
    onReady();
  };
  const id = eventfd ? addon.watchEventfd(fd, cb) : addon.watchFd(fd, cb);
  watchers.push(id);
  return () => {
    addon.unwatch(id);
    const i = watchers.indexOf(id);
    if (i >= 0) watchers.splice(i, 1);
  };
}

const env: BackendEnv = {
  addon,
  watchFd: (fd, onReady) => watch(fd, false, () => runner!.guarded(onReady)),
  watchEventfd: (fd, onReady) => watch(fd, true, () => runner!.guarded(onReady)),
  pollFd: (fd, events, onReady) => {
    if (loop) {
      const token = loop.add(fd, events, false, (ready) => {
        if (!stopped) runner!.guarded(() => onReady(ready));
      });
      return { set: (e) => loop.set(token, e), close: () => loop.remove(token) };
    }
    const p = addonFdPoll(addon, fd, events, (ready) => !stopped && onReady(ready), (fn) => runner!.guarded(fn), (error) =>
      post({ type: 'log', name: data.name, level: 'error', msg: `${data.name}: fd watch failed (${error})` }),
    );
    polls.add(p);
    return { set: (e) => p.set(e), close: () => (polls.delete(p), p.close()) };
  },
  log: (level, msg) => runner!.logLimited(level, `${data.name}: ${msg}`),
  guarded: (fn) => runner!.guarded(fn),
};
const backend = type.createBackend(data.params, env);
runner = new VirtioMmioDeviceRunner({
  name: data.name,
  transport: new VirtioMmioTransport(data.transport),
  mem: new GuestMemory(data.memory),
  backend,
  signal: () => addon.eventfdWrite(data.irqFd, 1n),
  stats: data.stats,
  log: (level, msg) => post({ type: 'log', name: data.name, level, msg }),
});
const r = runner;
watch(data.controlFd, true, () => r.onControl());
data.queueFds.forEach((fd, i) => watch(fd, true, () => r.onKick(i)));
// The backend holds every fd it opens for its lifetime and the watchers exist: from here the thread
// serves guest-driven requests with only its role's syscalls (src/seccomp/roles.ts, io:<kind>).
installSeccomp(addon, { kind: 'io', device: data.kind }, data.seccomp, data.name);

port.on('message', (m: IoWorkerCommand) => {
  if (m.type === 'reconfigure') {
    let error: string | undefined;
    try {
      if (stopped || !backend.reconfigure) throw new Error(`${data.name} takes no runtime reconfiguration`);
      backend.reconfigure(m.msg);
    } catch (e) {
      error = (e as Error).message;
    }
    post({ type: 'reconfigured', id: m.id, ...(error !== undefined ? { error } : {}) });
    return;
  }
  if (m.type !== 'stop' || stopped) return;
  stopped = true;
  for (const id of [...watchers]) addon.unwatch(id);
  for (const p of [...polls]) p.close();
  try {
    backend.close?.();
  } finally {
    port.close();
  }
});
// Kicks or status changes that happened before the watchers existed are still pending in the
// eventfds (their counters), so the first loop turn delivers them. An epoll-waiting device blocks
// from its first immediate on (after this module's evaluation), until 'stop'; an exception from a
// handler ends the worker as an uncaught exception would.
if (loop) {
  setImmediate(() => {
    loop.run(() => stopped).catch((e: unknown) =>
      setImmediate(() => {
        throw e;
      }),
    );
  });
}
