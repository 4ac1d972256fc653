// The device-status state machine on the device side of virtio-mmio (virtio 1.2 §2.1, §3.1): keeps a
// backend in step with the transport registers that the vCPU workers serve. It is plain code driven by
// two entry points, so unit tests run it without workers or eventfds:
//
//   onControl()   the control eventfd fired (a vCPU latched DRIVER_OK or FAILED, or the driver reset)
//   onKick(i)     queue i's ioeventfd fired
//
// On every wake-up it first reconciles: a new reset generation → backend.reset() and forget the
// queues; FAILED → stop serving until a reset; DRIVER_OK (without FAILED / NEEDS_RESET) → build a
// SplitQueue for every queue the driver enabled, wrap each in an ActiveQueue whose guard is this
// transport's (generation-checked ring lock, in-flight work marks, InterruptStatus + irqfd), then
// backend.activate() and one processQueue() per active queue to catch up on kicks that came before.
//
// Anything thrown on these paths (a fatal VirtqueueError, a bad queue configuration, a backend bug)
// sets DEVICE_NEEDS_RESET and the config-change interrupt (§2.1.2); the device then ignores kicks
// until the driver resets it. Guest-triggered log lines are rate-limited.
import type { GuestMemory } from '../../memory/guest-memory.js';
import { RateLimiter } from '../../shared/rate-limit.js';
import {
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  VIRTIO_STATUS_DRIVER_OK,
  VIRTIO_STATUS_FAILED,
  featureBit,
} from './constants.js';
import type { VirtioDeviceBackend } from './device.js';
import type { VirtioMmioTransport } from './mmio.js';
import { SplitQueue } from './queue.js';
import {
  ActiveQueue,
  TSTAT_ACTIVATIONS,
  TSTAT_INTERRUPTS,
  TSTAT_LOG_SUPPRESSED,
  TSTAT_NEEDS_RESET,
  TSTAT_RESETS,
  TSTAT_WAKEUPS,
  countTransport,
} from './queue-service.js';

export interface MmioRunnerOptions {
  /** Device name for log lines (virtio-blk0, virtio-rng…). */
  name: string;
  transport: VirtioMmioTransport;
  mem: GuestMemory;
  backend: VirtioDeviceBackend;
  /** Signal the driver: write the irqfd (the InterruptStatus bit is already set). */
  signal: () => void;
  /** Transport counters (createTransportStats). */
  stats: SharedArrayBuffer;
  log: (level: 'info' | 'warn' | 'error', msg: string) => void;
}

/** Guest-triggered warnings: 10 at once, then one every 2 s. */
const LOG_BURST = 10;
const LOG_PER_SECOND = 0.5;

export class VirtioMmioDeviceRunner {
  private readonly o: MmioRunnerOptions;
  /** Reset generation the current activation belongs to (-1: none seen yet). */
  private gen = -1;
  private active = false;
  /** NEEDS_RESET was set for this generation: ignore kicks until the driver resets. */
  private broken = false;
  private queues: Array<ActiveQueue | undefined> = [];
  private readonly limiter = new RateLimiter({ burst: LOG_BURST, perSecond: LOG_PER_SECOND });

  constructor(opts: MmioRunnerOptions) {
    this.o = opts;
  }

  /** Whether the backend is activated (DRIVER_OK seen for the current generation). */
  get isActive(): boolean {
    return this.active;
  }

  /** The control eventfd fired: status change or reset. */
  onControl(): void {
    this.wake(() => this.reconcile());
  }

  /** Queue `index`'s notification fired. */
  onKick(index: number): void {
    this.wake(() => {
      this.reconcile();
      if (this.active && this.queues[index]) this.o.backend.processQueue(index);
    });
  }

  /** Run backend work started by a host event (an fd the backend watches), fenced like a kick. */
  guarded(fn: () => void): void {
    this.wake(() => {
      this.reconcile();
      if (this.active) fn();
    });
  }

  /** A rate-limited log line (guest-triggered events). */
  logLimited(level: 'info' | 'warn' | 'error', msg: string): void {
    const r = this.limiter.take();
    if (!r.ok) {
      countTransport(this.o.stats, TSTAT_LOG_SUPPRESSED);
      return;
    }
    this.o.log(level, r.suppressed ? `${msg} (${r.suppressed} similar lines suppressed)` : msg);
  }

  private wake(fn: () => void): void {
    countTransport(this.o.stats, TSTAT_WAKEUPS);
    try {
      fn();
    } catch (e) {
      this.needsReset(e);
    }
  }

  private pulse(): void {
    countTransport(this.o.stats, TSTAT_INTERRUPTS);
    this.o.signal();
  }

  private deactivate(): void {
    const wasActive = this.active;
    this.active = false;
    this.queues = [];
    if (wasActive) this.o.backend.reset();
  }

  /** Bring the backend in line with the registers. */
  private reconcile(): void {
    const t = this.o.transport;
    for (;;) {
      const g = t.generation();
      if (g !== this.gen) {
        if (this.gen !== -1) countTransport(this.o.stats, TSTAT_RESETS);
        this.active = false;
        this.queues = [];
        this.o.backend.reset();
        this.gen = g;
        this.broken = false;
      }
      const st = t.status();
      if ((st & VIRTIO_STATUS_FAILED) !== 0) {
        this.deactivate(); // the driver gave up: serve nothing until a reset
        return;
      }
      if (this.active || this.broken) return;
      if ((st & VIRTIO_STATUS_DRIVER_OK) === 0 || (st & VIRTIO_STATUS_DEVICE_NEEDS_RESET) !== 0) return;
      const configs = Array.from({ length: t.numQueues }, (_, i) => t.queueConfig(i));
      const features = t.driverFeatures();
      if (t.generation() !== g) continue; // a reset raced with the reads: start over
      const queues: Array<ActiveQueue | undefined> = configs.map((qc) => {
        if (!qc.ready) return undefined;
        if (qc.size > qc.maxSize) throw new Error(`queue ${qc.index}: QueueNum ${qc.size} > QueueNumMax ${qc.maxSize}`);
        const queue = new SplitQueue(this.o.mem, {
          size: qc.size,
          descAddr: qc.descAddr,
          driverAddr: qc.driverAddr,
          deviceAddr: qc.deviceAddr,
          eventIdx: (features & featureBit(VIRTIO_F_EVENT_IDX)) !== 0n,
          indirect: (features & featureBit(VIRTIO_F_INDIRECT_DESC)) !== 0n,
        });
        return new ActiveQueue({
          index: qc.index,
          queue,
          mem: this.o.mem,
          descAddr: qc.descAddr,
          stats: this.o.stats,
          guard: {
            rings: (fn) => t.withRings(g, fn),
            enter: () => t.enterWork(),
            leave: () => t.leaveWork(),
            notifyUsed: () => {
              if (t.raiseInterrupt(VIRTIO_MMIO_INT_VRING, g)) this.pulse();
            },
          },
        });
      });
      this.queues = queues;
      this.active = true;
      countTransport(this.o.stats, TSTAT_ACTIVATIONS);
      this.o.backend.activate({ mem: this.o.mem, features, queues });
      // Kicks that arrived before DRIVER_OK was seen (or while the worker started) are served now.
      queues.forEach((q, i) => {
        if (q && this.active) this.o.backend.processQueue(i);
      });
      return;
    }
  }

  private needsReset(e: unknown): void {
    const g = this.gen;
    this.broken = true;
    try {
      this.deactivate();
    } catch {
      // a backend that fails to reset is still idle: it gets no more kicks until the driver resets
    }
    countTransport(this.o.stats, TSTAT_NEEDS_RESET);
    this.logLimited('warn', `${this.o.name}: device needs reset: ${e instanceof Error ? e.message : String(e)}`);
    try {
      if (this.o.transport.setNeedsReset(g)) this.pulse();
    } catch {
      // nothing more we can do; the driver will time out
    }
  }
}
