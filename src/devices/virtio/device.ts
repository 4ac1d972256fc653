// The virtio device contract: what a device kind provides, split along kindling's thread boundary.
//
//   VirtioDeviceType  one object per device kind (src/devices/virtio/<kind>/index.ts), listed once in
//                     registry.ts. Every part of it is importable on any thread:
//     .kind, .deviceId           registry key and the virtio device id (virtio 1.2 §5)
//     .prepare(opts, host)       main thread, before the VM exists: turn the user's options into plain,
//                                structured-cloneable params (open and lock an image, create the
//                                SharedArrayBuffers and eventfds the device shares with the host
//                                side); returns them with a release function
//     .describe(params)          pure: offered features, queues (spec names and QueueNumMax), initial
//                                config-space bytes. The transport is built from this.
//     .validateFeatures(p, f)    pure, optional: device-specific check when the driver sets FEATURES_OK
//                                (runs on whichever vCPU worker took the exit, under the transport lock)
//     .configWrite(p, cfg, …)    optional: a driver write to config space (vCPU worker, no lock held)
//     .createBackend(p, env)     I/O worker: the device's data path (VirtioDeviceBackend)
//
//   VirtioDeviceBackend  lives in the device's I/O worker. It never sees the transport: it is given
//                        guest memory, the negotiated features and its queues (ActiveQueue, which hides
//                        how kicks arrive and how the driver is interrupted), so the same backend can be
//                        served over virtio-mmio (ioeventfd/irqfd) or over vhost-user (kick/call fds).
//     activate(dev)        DRIVER_OK: the queues the driver enabled (undefined where it did not)
//     processQueue(i)      queue i was kicked (or a catch-up pass right after activate)
//     reset()              the driver reset the device (or it went to NEEDS_RESET): drop all queue state
//     save()/restore(s)    plain data for snapshots: what the backend holds beyond guest RAM and the
//                          transport registers (counters, pending host data, connection tables…)
//     close()              the VM is going away
//
// Guest input is hostile: a backend never throws on guest data. A malformed chain completes with an
// error status (or used length 0); anything the backend throws is treated as a device bug or a broken
// queue by the runner: DEVICE_NEEDS_RESET plus a config interrupt, and the device is idle until reset.
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { ActiveQueue, ServiceResult } from './queue-service.js';

/** One virtqueue as the device offers it. */
export interface VirtqueueSpec {
  /** Name as the device's section of the virtio spec gives it (requestq, receiveq0, transmitq0, …). */
  name: string;
  /** QueueNumMax: a power of two, 1..32768. */
  maxSize: number;
}

/** What the transport needs to present a device (pure data). */
export interface VirtioDeviceDescription {
  /** Offered device features; VIRTIO_F_VERSION_1 is added by the transport. */
  features: bigint;
  queues: VirtqueueSpec[];
  /** Initial config space; its length is the config-space size. */
  config: Uint8Array;
}

/** Config-space access for configWrite hooks (the transport's shared config bytes). */
export interface ConfigSpace {
  /** Current config bytes (a copy). */
  read(): Uint8Array;
  /** Replace bytes at `offset` and bump ConfigGeneration. */
  write(bytes: Uint8Array, offset: number): void;
}

/** Main-thread services a device's prepare() may use. */
export interface HostContext {
  /** The addon (open files, eventfds, locks). Typed loosely here so this module stays pure. */
  addon: import('../../kvm/addon.js').KvmAddon;
}

/** What prepare() returns: the params every thread gets, and how to release what prepare() took. */
export interface PreparedDevice<P> {
  params: P;
  /** Release what prepare() took (close fds, unlock images). Called once, after the I/O worker ended. */
  release(): void;
}

/** Services the I/O worker offers a backend. */
export interface BackendEnv {
  addon: import('../../kvm/addon.js').KvmAddon;
  /** Watch a host fd for readability on the I/O worker's loop; the callback runs on this thread. */
  watchFd(fd: number, onReady: () => void): () => void;
  /** Watch an eventfd (drained natively) on the I/O worker's loop. */
  watchEventfd(fd: number, onReady: () => void): () => void;
  /**
   * Poll a host fd for the events in `events` (POLL_READABLE | POLL_WRITABLE; 0 = not polled), level-
   * triggered, changed with set(): a device polls for readability only while it can take data and for
   * writability only while output is pending. onReady(ready) runs fenced like watchFd's callback.
   */
  pollFd(fd: number, events: number, onReady: (ready: number) => void): FdPoll;
  /** A rate-limited log line (guest-triggered events must not flood the host log). */
  log(level: 'info' | 'warn' | 'error', msg: string): void;
  /**
   * Run `fn` in the device's fenced context: when it throws, the device goes to NEEDS_RESET instead of
   * the exception escaping (use for work started from a host fd, outside processQueue).
   */
  guarded(fn: () => void): void;
}

export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;

/** A host fd polled for a changeable set of events (BackendEnv.pollFd). */
export interface FdPoll {
  set(events: number): void;
  close(): void;
}

/** The device side once the driver set DRIVER_OK. */
export interface ActiveDevice {
  mem: GuestMemory;
  /** Features the driver accepted. */
  features: bigint;
  /** Indexed like VirtioDeviceDescription.queues; undefined where the driver did not enable the queue. */
  queues: ReadonlyArray<ActiveQueue | undefined>;
}

export interface VirtioDeviceBackend {
  activate(dev: ActiveDevice): void;
  processQueue(index: number): void;
  reset(): void;
  save(): unknown;
  restore(state: unknown): void;
  close?(): void;
  /** Runtime reconfiguration from the main thread (e.g. a new rate limiter); throws on a message it does not take. */
  reconfigure?(msg: unknown): void;
}

/**
 * restore()'s check of a state's identity: `state` must be what save() of a `kind` backend returns,
 * in format `version` (throws one line otherwise).
 */
export function checkDeviceState(state: unknown, kind: string, version: number): void {
  const s = state as { kind?: unknown; version?: unknown } | null;
  if (s?.kind !== kind || s.version !== version) throw new Error(`virtio-${kind}: not a virtio-${kind} state`);
}

/**
 * The one pending resume of a throttled queue (a rate limiter in debt): arm(ms, fn) runs fn after ms
 * (at least 1) in the device's guarded context, unless a resume is already pending; cancel() drops
 * it (reset, close, new limits). No polling: one timer for the moment the debt is paid.
 */
export class ResumeTimer {
  private t: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly guarded: (fn: () => void) => void) {}

  get armed(): boolean {
    return this.t !== undefined;
  }

  arm(ms: number, fn: () => void): void {
    if (this.t !== undefined) return;
    this.t = setTimeout(() => {
      this.t = undefined;
      this.guarded(fn);
    }, Math.max(1, ms));
  }

  cancel(): void {
    clearTimeout(this.t);
    this.t = undefined;
  }
}

/**
 * The backend of a device with one request queue (queue 0) whose requests complete within the
 * wake-up that took them (virtio-blk, virtio-rng): `serve(queue)` runs one pass of the standard loop
 * (ActiveQueue.service). Nothing is held between wake-ups, so its state is only its kind and format.
 *
 * A rate-limited device's pass may end `throttled` (its limiter in debt, requests left available):
 * `throttle.waitMs()` says when the debt is paid, and one timer resumes the queue then, in the
 * device's guarded context (no polling; a kick meanwhile finds the limiter still in debt and leaves
 * the armed timer alone). A reset cancels it. `reconfigure(msg)` is the device's runtime reconfiguration
 * (a new rate limiter from the API), run on the backend's thread.
 */
export class RequestQueueBackend implements VirtioDeviceBackend {
  private queue: ActiveQueue | undefined;
  private readonly resume: ResumeTimer | undefined;

  constructor(
    private readonly kind: string,
    private readonly serve: (queue: ActiveQueue) => Omit<ServiceResult, 'batches'> | undefined,
    private readonly throttle?: {
      waitMs(): number;
      guarded(fn: () => void): void;
      reconfigure?(msg: unknown): void;
    },
  ) {
    this.resume = throttle ? new ResumeTimer(throttle.guarded) : undefined;
  }

  activate(dev: ActiveDevice): void {
    this.queue = dev.queues[0];
  }

  processQueue(index: number): void {
    if (index !== 0 || !this.queue) return;
    const r = this.serve(this.queue);
    if (r?.throttled && this.resume && !this.resume.armed) this.resume.arm(this.throttle!.waitMs(), () => this.processQueue(0));
  }

  /** Runtime reconfiguration (IoWorkerCommand 'reconfigure'); then the queue is served again, as the limits may have changed. */
  reconfigure(msg: unknown): void {
    if (!this.throttle?.reconfigure) throw new Error(`virtio-${this.kind}: takes no runtime reconfiguration`);
    this.throttle.reconfigure(msg);
    this.resume?.cancel();
    this.throttle.guarded(() => this.processQueue(0));
  }

  reset(): void {
    this.queue = undefined;
    this.resume?.cancel();
  }

  close(): void {
    this.resume?.cancel();
  }

  save(): { kind: string; version: 1 } {
    return { kind: this.kind, version: 1 };
  }

  restore(state: unknown): void {
    checkDeviceState(state, this.kind, 1);
    this.queue = undefined;
  }
}

export interface VirtioDeviceType<O, P> {
  /** Registry key ('blk', 'rng', 'console'). */
  readonly kind: string;
  /** virtio device id (§5). */
  readonly deviceId: number;
  /**
   * How the I/O worker waits: 'libuv' (default) wakes the backend through uv_poll watchers on the
   * worker's event loop; 'epoll' blocks the worker in its own epoll set and returns to the event
   * loop only for messages and timers (src/io-worker/epoll-loop.ts), for a device whose wake-ups
   * are its cost (a NIC). The backend sees the same BackendEnv either way.
   */
  readonly wakeups?: 'libuv' | 'epoll';
  /** Main thread: options → params (may open files, create SABs and eventfds). */
  prepare(options: O, host: HostContext): PreparedDevice<P>;
  describe(params: P): VirtioDeviceDescription;
  validateFeatures?(params: P, features: bigint): boolean;
  configWrite?(params: P, config: ConfigSpace, offset: number, size: 1 | 2 | 4, value: number): void;
  createBackend(params: P, env: BackendEnv): VirtioDeviceBackend;
}

/**
 * A VirtioDeviceType with its option and param types erased (what the registry stores). Method
 * parameters are compared bivariantly, so every concrete device type is assignable to it; the params
 * a thread receives were produced by the same type's prepare().
 */
export type AnyVirtioDeviceType = VirtioDeviceType<unknown, unknown>;

/**
 * BackendEnv.pollFd over the addon's watchFdEvents (what the I/O worker and the vhost-user server
 * give their backends): `fenced` runs the callback in the device's guarded context.
 */
export function addonFdPoll(
  addon: Pick<import('../../kvm/addon.js').KvmAddon, 'watchFdEvents' | 'setWatchEvents' | 'unwatch'>,
  fd: number,
  events: number,
  onReady: (ready: number) => void,
  fenced: (fn: () => void) => void,
  onError: (error: string) => void,
): FdPoll {
  let current = events;
  const id = addon.watchFdEvents(fd, events, (_fd: number, ready: number, error?: string) => {
    if (error) onError(error);
    else fenced(() => onReady(ready));
  });
  let closed = false;
  return {
    set(e: number): void {
      if (closed || e === current) return;
      current = e;
      addon.setWatchEvents(id, e);
    },
    close(): void {
      if (closed) return;
      closed = true;
      addon.unwatch(id);
    },
  };
}
