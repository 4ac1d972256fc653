// The I/O worker's wake-up loop for a device that declares `wakeups: 'epoll'` (virtio-net): its fds
// (queue ioeventfds, the control eventfd, the backend's host fds) sit in one epoll set of the
// worker's own, and the worker blocks in the addon's epollWait, dispatching each ready fd straight to
// its handler, in place of libuv waking it through uv_poll watchers. That is Cloud Hypervisor's one
// epoll thread per device, and option (c) of docs/architecture.md's uv_poll-vs-epoll measurement.
// It saves what libuv and Node do around every wake-up: the loop turn (clock reads, timers, the
// check phase's native-immediate scope, which allocates an object every turn) and a
// napi_make_callback per ready fd (an async-context push and pop, a microtask checkpoint).
//
// The worker's libuv loop still owns everything else (the MessagePort the main thread posts 'stop'
// and 'reconfigure' on, setTimeout for a rate limiter's resume, teardown): its backend fd is in the
// set too, and the wait's timeout is until libuv's earliest timer (loopTimeout, clock updated first).
// When that fd is readable or the timeout expires, run() yields one turn to the libuv loop
// (setImmediate) and then blocks again. A worker being terminated is woken the same way (Node
// signals its loop), and its JS stops at the next call.
//
// Handlers run outside any libuv callback: microtasks they queue run at the next yield. The device
// code on this path is synchronous (its promises, if any, are not on the data path).
import type { KvmAddon } from '../kvm/addon.js';

/** Token of the libuv backend fd; fds get 1, 2, … */
const LOOP_TOKEN = 0;
/** Ready fds taken per epollWait. */
const MAX_EVENTS = 64;

type Handler = (ready: number) => void;

interface Entry {
  fd: number;
  drain: boolean;
  /** Events polled for (1 readable, 2 writable); 0: not in the epoll set. */
  events: number;
  handler: Handler;
}

export class EpollLoop {
  private readonly ep: number;
  private readonly tokens = new Int32Array(MAX_EVENTS);
  private readonly counts = new BigUint64Array(MAX_EVENTS);
  private readonly ready = new Int32Array(MAX_EVENTS);
  /** Indexed by token (LOOP_TOKEN's slot unused); undefined once removed. */
  private readonly entries: Array<Entry | undefined> = [undefined];
  private closed = false;

  constructor(private readonly addon: Pick<KvmAddon, 'epollCreate' | 'epollAdd' | 'epollMod' | 'epollDel' | 'epollWait' | 'loopFd' | 'loopTimeout' | 'close'>) {
    this.ep = addon.epollCreate();
    try {
      addon.epollAdd(this.ep, addon.loopFd(), LOOP_TOKEN);
    } catch (e) {
      addon.close(this.ep);
      throw e;
    }
  }

  /** The epoll set's fd (closed when run() ends). */
  get fd(): number {
    return this.ep;
  }

  /**
   * Watch `fd` for `events` (1 readable, 2 writable, 0: registered, not polled yet); an eventfd with
   * `drain` has its counter read natively before `handler` runs. Returns the watch's token.
   */
  add(fd: number, events: number, drain: boolean, handler: Handler): number {
    const token = this.entries.length;
    const e: Entry = { fd, drain, events: 0, handler };
    this.entries.push(e);
    this.set(token, events);
    return token;
  }

  /** Poll the watch for other events (0 takes its fd out of the set: an idle fd's errors or hang-up are not reported either). */
  set(token: number, events: number): void {
    const e = this.entries[token];
    if (!e || this.closed || e.events === events) return;
    if (events === 0) this.addon.epollDel(this.ep, e.fd);
    else if (e.events === 0) this.addon.epollAdd(this.ep, e.fd, token, e.drain, events);
    else this.addon.epollMod(this.ep, e.fd, token, events, e.drain);
    e.events = events;
  }

  remove(token: number): void {
    this.set(token, 0);
    this.entries[token] = undefined;
  }

  /**
   * Wait and dispatch until `stopped()` says so (checked before every wait and every handler), then
   * close the epoll set. A handler that throws ends the loop with that exception.
   */
  async run(stopped: () => boolean): Promise<void> {
    const { addon, ep, tokens, counts, ready, entries } = this;
    try {
      while (!stopped()) {
        const timeout = addon.loopTimeout();
        let toLoop = timeout === 0; // a timer is due
        if (!toLoop) {
          const n = addon.epollWait(ep, tokens, timeout, counts, ready);
          if (n === 0) toLoop = true; // a timer is due (or EINTR): let libuv run it
          for (let i = 0; i < n && !stopped(); i++) {
            const t = tokens[i];
            if (t === LOOP_TOKEN) {
              toLoop = true;
              continue;
            }
            const e = entries[t];
            // A drained eventfd whose counter another reader took (count 0) has nothing new.
            if (e && e.events !== 0 && (!e.drain || counts[i] !== 0n)) e.handler(ready[i]);
          }
        }
        if (toLoop) await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      this.close();
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.addon.close(this.ep);
  }
}
