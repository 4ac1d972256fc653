// A virtqueue as a device backend sees it once the driver set DRIVER_OK: the split ring (SplitQueue)
// plus the transport's side of it, hidden behind a QueueGuard so that the backend does not know whether
// it is served over virtio-mmio (ring lock in the register SAB, irqfd) or over vhost-user (call fd).
//
// Reset fencing (virtio 1.2 §2.4: once the driver reads Status 0 the device must not touch the queues
// or the buffers any more). Ring accesses (pop, push) run inside guard.rings(), which the transport's
// reset path also takes, and which refuses to run for a stale generation. Work on popped buffers that
// happens outside the ring lock (disk I/O into guest RAM, status bytes, copies) is bracketed by
// guard.enter()/leave(): the transport's reset waits until no such work is in flight before Status
// reads 0. So after a reset has completed, no write of the old generation can land in guest RAM.
//
//   service(handle)  the standard loop: pop a batch, run handle(chain) → used length outside the ring
//                    lock, publish the batch, interrupt if the driver wants it; repeat until the ring
//                    is empty with notifications re-enabled (event idx or NO_NOTIFY)
//   work(fn) + pop() + push()  for devices that take chains on their own schedule (a receive queue
//                    filled when host data arrives, a transmit chain held while the host is full)
//
// Per-chain errors from SplitQueue (loops, bad indices, buffers outside RAM…) complete the chain with
// onBroken(head)'s used length (0 by default; virtio-blk writes IOERR into the status byte through
// completeBrokenChain). A fatal VirtqueueError propagates: the runner sets DEVICE_NEEDS_RESET.
import type { GuestMemory } from '../../memory/guest-memory.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_SIZE } from './constants.js';
import { VirtqueueError, type DescriptorChain, type SplitQueue } from './queue.js';

/** The transport's side of one active queue. */
export interface QueueGuard {
  /** Run `fn` (ring accesses only: short, no I/O) in the ring critical section; undefined if the device was reset since. */
  rings<T>(fn: () => T): T | undefined;
  /** Mark work on popped buffers in flight. Called inside rings(); the driver's reset waits for leave(). */
  enter(): void;
  leave(): void;
  /** Used-buffer notification: raise the interrupt cause and signal the driver (irqfd / call fd). */
  notifyUsed(): void;
}

/** Transport-level counters of one device (Int32 words in a SAB, readable from any thread). */
export const TSTAT_WAKEUPS = 0;
export const TSTAT_INTERRUPTS = 1;
export const TSTAT_BATCHES = 2;
export const TSTAT_NEEDS_RESET = 3;
export const TSTAT_BROKEN_CHAINS = 4;
export const TSTAT_ACTIVATIONS = 5;
export const TSTAT_RESETS = 6;
/** Log lines suppressed by the rate limit. */
export const TSTAT_LOG_SUPPRESSED = 7;
const TSTAT_WORDS = 8;

export interface TransportStats {
  /** Times the device's worker was woken (kick, control or host fd). */
  wakeups: number;
  /** Interrupts signalled to the driver (irqfd / call fd writes). */
  interrupts: number;
  /** Used-ring publishes. */
  batches: number;
  /** Times DEVICE_NEEDS_RESET was set. */
  needsReset: number;
  /** Chains the queue rejected (loops, bad indices, buffers outside RAM…), completed as errors. */
  brokenChains: number;
  /** DRIVER_OK activations. */
  activations: number;
  /** Driver resets seen by the device. */
  resets: number;
  /** Guest-triggered log lines dropped by the rate limit. */
  logSuppressed: number;
}

export function createTransportStats(): SharedArrayBuffer {
  return new SharedArrayBuffer(TSTAT_WORDS * 4);
}

export function readTransportStats(sab: SharedArrayBuffer): TransportStats {
  const w = new Int32Array(sab, 0, TSTAT_WORDS);
  const g = (i: number): number => Atomics.load(w, i) >>> 0;
  return {
    wakeups: g(TSTAT_WAKEUPS),
    interrupts: g(TSTAT_INTERRUPTS),
    batches: g(TSTAT_BATCHES),
    needsReset: g(TSTAT_NEEDS_RESET),
    brokenChains: g(TSTAT_BROKEN_CHAINS),
    activations: g(TSTAT_ACTIVATIONS),
    resets: g(TSTAT_RESETS),
    logSuppressed: g(TSTAT_LOG_SUPPRESSED),
  };
}

/** One Int32Array per stats buffer, made once (countTransport runs on every wake-up). */
const statViews = new WeakMap<SharedArrayBuffer, Int32Array>();

export function countTransport(sab: SharedArrayBuffer, stat: number, n = 1): void {
  let w = statViews.get(sab);
  if (w === undefined) statViews.set(sab, (w = new Int32Array(sab, 0, TSTAT_WORDS)));
  Atomics.add(w, stat, n);
}

export interface ServiceResult {
  /** Chains completed. */
  completed: number;
  /** The driver asked to be interrupted for something completed in this call. */
  interrupt: boolean;
  /** Used-ring publishes in this call. */
  batches: number;
  /** The limiter was in debt before the ring was empty: chains are left available (its timer's turn). */
  throttled?: boolean;
}

/** q.pop() with a chain the queue rejected returned as its per-chain VirtqueueError (a fatal one is thrown); undefined when the ring is empty. */
function popChain(q: SplitQueue): DescriptorChain | VirtqueueError | undefined {
  try {
    return q.pop();
  } catch (e) {
    if (e instanceof VirtqueueError && !e.fatal && e.head !== undefined) return e;
    throw e;
  }
}

/** The default used length of a rejected chain: nothing written. */
const unused = (): number => 0;

const NONE: ArrayLike<number> = [];

/** Most chains taken per pass before their completions are published. */
export const MAX_BATCH = 64;

export class ActiveQueue {
  readonly index: number;
  readonly size: number;
  readonly queue: SplitQueue;
  private readonly guard: QueueGuard;
  private readonly mem: GuestMemory;
  private readonly descAddr: number;
  private readonly stats: Int32Array;
  // Made once: work() and pop() run per request or frame and pass these to guard.rings().
  private readonly enterFn = (): boolean => (this.guard.enter(), true);
  private readonly takeOneFn = (): DescriptorChain | VirtqueueError | undefined => this.takeOne();
  private readonly takeQuietFn = (): DescriptorChain | VirtqueueError | undefined => {
    this.queue.disableNotification();
    return popChain(this.queue);
  };
  private readonly armFn = (): boolean => this.queue.enableNotification();
  private readonly quietFn = (): boolean => (this.queue.disableNotification(), true);
  private readonly hasAvailableFn = (): boolean => this.queue.hasAvailable();
  /** What pushMany publishes, read by publishFn in the ring critical section (no closure per publish). */
  private pubHeads: ArrayLike<number> = NONE;
  private pubLens: ArrayLike<number> = NONE;
  private pubN = 0;
  /** push()'s one element (plain arrays: pushUsed still sees the caller's numbers unconverted). */
  private readonly oneHead = [0];
  private readonly oneLen = [0];
  private readonly publishFn = (): boolean => {
    const heads = this.pubHeads;
    const lens = this.pubLens;
    for (let i = 0; i < this.pubN; i++) this.queue.pushUsed(heads[i], lens[i]);
    return this.queue.needsInterrupt();
  };

  constructor(opts: {
    index: number;
    queue: SplitQueue;
    guard: QueueGuard;
    mem: GuestMemory;
    descAddr: number;
    stats: SharedArrayBuffer;
  }) {
    this.index = opts.index;
    this.queue = opts.queue;
    this.size = opts.queue.size;
    this.guard = opts.guard;
    this.mem = opts.mem;
    this.descAddr = opts.descAddr;
    this.stats = new Int32Array(opts.stats, 0, TSTAT_WORDS);
  }

  /**
   * Best effort for a rejected chain: if its last descriptor is device-writable, non-empty and in RAM,
   * write `status` into its last byte and return 1, else 0 (see completeBrokenChain).
   */
  failChain(head: number, status: number): number {
    return completeBrokenChain(this.mem, this.descAddr, this.size, head, status);
  }

  /**
   * Serve every available chain: `handle(chain)` returns the used length (bytes written into the
   * chain's device-writable buffers); a chain the queue rejected completes with `onBroken(head)`'s
   * used length (default 0). Returns undefined if the device was reset meanwhile. Throws the queue's
   * fatal VirtqueueError (the runner turns it into NEEDS_RESET). With a rate `limiter` (the handler
   * pays it), chains are taken one at a time and only while it is out of debt; otherwise the pass
   * ends with `throttled` and the remaining chains stay available (notifications stay as they are:
   * the caller resumes the queue itself, from a timer).
   */
  service(
    handle: (chain: DescriptorChain) => number,
    onBroken: (head: number) => number = () => 0,
    limiter?: { blocked(): boolean },
  ): ServiceResult | undefined {
    const maxBatch = limiter ? 1 : MAX_BATCH;
    let completed = 0;
    let batches = 0;
    let anyInterrupt = false;
    const heads: number[] = [];
    const lens: number[] = [];
    const q = this.queue;
    for (;;) {
      if (limiter?.blocked()) return { completed, interrupt: anyInterrupt, batches, throttled: true };
      const batch = this.guard.rings(() => {
        const out = this.takeAvailable(maxBatch);
        if (out.length > 0) this.guard.enter();
        return out;
      });
      if (batch === undefined) return undefined;
      if (batch.length === 0) return { completed, interrupt: anyInterrupt, batches };
      let irq: boolean | undefined;
      try {
        heads.length = 0;
        lens.length = 0;
        for (const item of batch) {
          if (item instanceof VirtqueueError) {
            Atomics.add(this.stats, TSTAT_BROKEN_CHAINS, 1);
            heads.push(item.head!);
            lens.push(onBroken(item.head!));
          } else {
            heads.push(item.head);
            lens.push(handle(item));
          }
        }
        irq = this.guard.rings(() => {
          for (let i = 0; i < heads.length; i++) q.pushUsed(heads[i], lens[i]);
          return q.needsInterrupt();
        });
      } finally {
        this.guard.leave();
      }
      if (irq === undefined) return undefined;
      Atomics.add(this.stats, TSTAT_BATCHES, 1);
      batches++;
      completed += heads.length;
      if (irq) {
        anyInterrupt = true;
        this.guard.notifyUsed();
      }
    }
  }

  /**
   * Run `fn` as in-flight work of the current generation (it may pop, fill and push chains). Returns
   * undefined without running it if the device was reset since. The driver's reset waits for it.
   */
  work<T>(fn: () => T): T | undefined {
    if (this.guard.rings(this.enterFn) === undefined) return undefined;
    try {
      return fn();
    } finally {
      this.guard.leave();
    }
  }

  /**
   * Take the next available chain; undefined when there is none (notifications are then re-enabled,
   * so the driver's next kick wakes the device) or the device was reset. Rejected chains are completed
   * on the way with onBroken(head)'s used length. Call inside work(): the chain's buffers are then
   * read and written as in-flight work the driver's reset waits for.
   */
  pop(onBroken: (head: number) => number = unused): DescriptorChain | undefined {
    return this.popWith(this.takeOneFn, onBroken);
  }

  /**
   * pop() for a device that needs the driver's kicks only when it has run out of buffers (a receive
   * queue: QEMU's virtio-net policy): notifications stay suppressed when the ring is empty, so the
   * driver posting buffers does not exit to the device; the device calls arm() when it is starved.
   */
  popQuiet(onBroken: (head: number) => number = unused): DescriptorChain | undefined {
    return this.popWith(this.takeQuietFn, onBroken);
  }

  /**
   * Re-enable driver notifications and re-check the ring: true when chains are available (pop them;
   * a kick for them may have been suppressed), false when the driver's next kick will wake the
   * device, undefined when the device was reset.
   */
  arm(): boolean | undefined {
    return this.guard.rings(this.armFn);
  }

  private popWith(take: () => DescriptorChain | VirtqueueError | undefined, onBroken: (head: number) => number): DescriptorChain | undefined {
    for (;;) {
      const r = this.guard.rings(take);
      if (!(r instanceof VirtqueueError)) return r;
      Atomics.add(this.stats, TSTAT_BROKEN_CHAINS, 1);
      const len = onBroken(r.head!);
      this.push(r.head!, len);
    }
  }

  /** takeAvailable(1) without its array: the chain, its per-chain VirtqueueError, or undefined (none). */
  private takeOne(): DescriptorChain | VirtqueueError | undefined {
    const q = this.queue;
    for (;;) {
      q.disableNotification();
      const c = popChain(q);
      if (c) return c;
      if (!q.enableNotification()) return undefined;
    }
  }

  /**
   * Pop up to `max` available chains (inside rings()): a chain the queue rejected is returned as its
   * per-chain VirtqueueError (its head is to be completed); a fatal one is thrown. When the ring is
   * empty, notifications are re-enabled and the ring re-checked (a chain added meanwhile may have had
   * its notification suppressed); so an empty result means the driver's next kick wakes the device.
   */
  private takeAvailable(max: number): Array<DescriptorChain | VirtqueueError> {
    const q = this.queue;
    const out: Array<DescriptorChain | VirtqueueError> = [];
    for (;;) {
      q.disableNotification();
      while (out.length < max) {
        const c = popChain(q);
        if (!c) break;
        out.push(c);
      }
      if (out.length > 0 || !q.enableNotification()) return out;
    }
  }

  /**
   * Suppress driver notifications without popping (a device about to busy-poll the ring; see
   * busy-poll.ts): it must arm() before it sleeps. False when the device was reset.
   */
  quiet(): boolean {
    return this.guard.rings(this.quietFn) === true;
  }

  /** Whether the driver has made chains available that were not popped yet. */
  hasAvailable(): boolean {
    return this.guard.rings(this.hasAvailableFn) === true;
  }

  /**
   * Publish several used chains in order (heads[i] with lens[i], i < n) as one batch: one ring
   * critical section and at most one interrupt. False if the device was reset.
   */
  pushMany(heads: ArrayLike<number>, lens: ArrayLike<number>, n = heads.length): boolean {
    if (n === 0) return true;
    this.pubHeads = heads;
    this.pubLens = lens;
    this.pubN = n;
    const irq = this.guard.rings(this.publishFn);
    if (irq === undefined) return false;
    Atomics.add(this.stats, TSTAT_BATCHES, 1);
    if (irq) this.guard.notifyUsed();
    return true;
  }

  /** Publish one used chain and interrupt if the driver wants it. False if the device was reset. */
  push(head: number, len: number): boolean {
    this.oneHead[0] = head;
    this.oneLen[0] = len;
    return this.pushMany(this.oneHead, this.oneLen, 1);
  }
}

/**
 * Best effort for a chain the queue rejected (per-chain VirtqueueError): find the chain's last
 * descriptor by walking it again (bounded by the queue size and the indirect table's size, one level
 * of indirection) and, if it is device-writable, non-empty and in RAM, write `status` into its last
 * byte. Returns the used length to publish (1 if a status was written, else 0). Never throws on guest
 * data. (An indirect chain longer than the queue, which QEMU and Linux allow but the spec forbids and
 * SplitQueue rejects, is answered this way.)
 */
export function completeBrokenChain(mem: GuestMemory, descAddr: number, queueSize: number, head: number, status: number): number {
  const readDesc = (gpa: number): { addr: number; len: number; flags: number; next: number } | undefined => {
    try {
      const lo = mem.read32(gpa);
      const hi = mem.read32(gpa + 4);
      if (hi >= 0x200000) return { addr: Number.MAX_SAFE_INTEGER, len: mem.read32(gpa + 8), flags: mem.read16(gpa + 12), next: mem.read16(gpa + 14) };
      return { addr: hi * 2 ** 32 + lo, len: mem.read32(gpa + 8), flags: mem.read16(gpa + 12), next: mem.read16(gpa + 14) };
    } catch {
      return undefined;
    }
  };
  let last: { addr: number; len: number; flags: number } | undefined;
  let i = head;
  for (let steps = 0; steps <= queueSize && i < queueSize; steps++) {
    const d = readDesc(descAddr + VIRTQ_DESC_SIZE * i);
    if (!d) return 0;
    if (d.flags & VIRTQ_DESC_F_INDIRECT) {
      // Entries reachable through a 16-bit `next` (the table may legitimately be longer than the
      // queue: the queue's chain-length rule is what may have rejected it).
      const n = Math.min(Math.floor(d.len / VIRTQ_DESC_SIZE), 0x10000);
      let j = 0;
      for (let k = 0; k < n && j < n; k++) {
        const e = readDesc(d.addr + VIRTQ_DESC_SIZE * j);
        if (!e) return 0;
        if (!(e.flags & VIRTQ_DESC_F_NEXT)) {
          last = e;
          break;
        }
        j = e.next;
      }
      break;
    }
    if (!(d.flags & VIRTQ_DESC_F_NEXT)) {
      last = d;
      break;
    }
    i = d.next;
  }
  if (!last || !(last.flags & VIRTQ_DESC_F_WRITE) || last.len === 0) return 0;
  const at = last.addr + last.len - 1;
  if (!Number.isSafeInteger(at) || !mem.isRam(at, 1)) return 0;
  mem.write8(at, status);
  return 1;
}
