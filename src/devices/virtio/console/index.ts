// virtio-console (virtio 1.2 §5.3, device id 3), one port (no VIRTIO_CONSOLE_F_MULTIPORT): queue 0 is
// receiveq0 (device → driver: host input lands in the driver's device-writable buffers), queue 1 is
// transmitq0 (driver → device: guest output). Linux binds it as hvc0.
//
// Host side (src/devices/virtio/console/host.ts, main thread) and device side (this backend, in the
// device's I/O worker) share three single-producer/single-consumer byte rings and one eventfd:
//   input   host → guest   producer: main thread (vm.console writes); consumer: the backend
//   output  guest → host   producer: the backend (transmitq data);    consumer: main thread
//   emerg   guest → host   producer: vCPU workers (emerg_wr config writes, serialised by a SAB
//                          mutex); consumer: main thread
//   wakeFd  written by the main thread after it pushed input, or after it drained output while the
//           backend waits for room (WAITING_ROOM word): the backend's host-event watcher
//
// Back-pressure both ways, with bounded memory: when the output ring is full the backend keeps the
// transmit chain it is copying (offset remembered), does not complete it, and resumes when the host
// drained: the guest's transmitq fills and its writes block. When the guest posts no receive buffers
// the input ring fills, and the host stream stops accepting writes until there is room.
//
// Emergency write (VIRTIO_CONSOLE_F_EMERG_WRITE): a driver write to config field emerg_wr (offset 8)
// outputs its low byte at once, without any queue (configWrite runs on the vCPU worker). Config
// space: cols/rows (VIRTIO_CONSOLE_F_SIZE; 80x24 unless the options give a size), max_nr_ports 1.
import { ByteRing } from '../../../shared/byte-ring.js';
import { SabMutex } from '../../../shared/lock.js';
import { VIRTIO_ID_CONSOLE, featureBit } from '../constants.js';
import { checkDeviceState, type ActiveDevice, type VirtioDeviceBackend, type VirtioDeviceType } from '../device.js';
import { segmentViews } from '../iovec.js';
import type { ActiveQueue } from '../queue-service.js';
import type { DescriptorChain } from '../queue.js';

export const VIRTIO_CONSOLE_F_SIZE = 0;
export const VIRTIO_CONSOLE_F_MULTIPORT = 1;
export const VIRTIO_CONSOLE_F_EMERG_WRITE = 2;

/** struct virtio_console_config { le16 cols; le16 rows; le32 max_nr_ports; le32 emerg_wr; } */
export const CONSOLE_CFG_COLS = 0;
export const CONSOLE_CFG_ROWS = 2;
export const CONSOLE_CFG_MAX_NR_PORTS = 4;
export const CONSOLE_CFG_EMERG_WR = 8;
export const CONSOLE_CONFIG_SIZE = 12;

export const CONSOLE_RX = 0;
export const CONSOLE_TX = 1;
/**
 * QueueNumMax of both queues. 256, as for blk and rng: a vhost-user frontend such as Linux's
 * virtio_uml sizes every ring at 256 without asking, and a smaller maximum refuses its SET_VRING_NUM.
 */
export const CONSOLE_QUEUE_SIZE = 256;
/** Host-side ring sizes: enough for a burst of output without waiting for the main thread. */
export const CONSOLE_OUTPUT_BYTES = 64 * 1024;
export const CONSOLE_INPUT_BYTES = 16 * 1024;
export const CONSOLE_EMERG_BYTES = 4 * 1024;

// Control words (Int32 in params.control).
const C_EMERG_LOCK = 0;
/** Non-zero while the backend holds a transmit chain waiting for room in the output ring. */
export const C_WAITING_ROOM = 1;
const C_EMERG_DROPPED = 2;
const C_RX_BYTES = 3;
const C_TX_BYTES = 4;
const C_WORDS = 8;

export interface ConsoleOptions {
  /** Terminal size for VIRTIO_CONSOLE_F_SIZE (default 80x24). */
  cols?: number;
  rows?: number;
}

export interface ConsoleParams {
  input: SharedArrayBuffer;
  output: SharedArrayBuffer;
  emerg: SharedArrayBuffer;
  control: SharedArrayBuffer;
  /** eventfd: host → backend "input arrived / output drained". */
  wakeFd: number;
  cols: number;
  rows: number;
}

export interface ConsoleStats {
  /** Bytes delivered to the guest (receiveq0). */
  rxBytes: number;
  /** Bytes the guest transmitted (transmitq0). */
  txBytes: number;
  /** Emergency-write bytes dropped because the host did not read them in time. */
  emergDropped: number;
}

export function readConsoleStats(params: Pick<ConsoleParams, 'control'>): ConsoleStats {
  const c = new Int32Array(params.control);
  return { rxBytes: Atomics.load(c, C_RX_BYTES) >>> 0, txBytes: Atomics.load(c, C_TX_BYTES) >>> 0, emergDropped: Atomics.load(c, C_EMERG_DROPPED) >>> 0 };
}

export function consoleConfigSpace(cols: number, rows: number): Uint8Array {
  const b = new Uint8Array(CONSOLE_CONFIG_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(CONSOLE_CFG_COLS, cols, true);
  v.setUint16(CONSOLE_CFG_ROWS, rows, true);
  v.setUint32(CONSOLE_CFG_MAX_NR_PORTS, 1, true);
  return b;
}

/** Emergency write from any vCPU worker: one byte into the emerg ring (dropped and counted if full). */
export function emergencyWrite(params: Pick<ConsoleParams, 'emerg' | 'control'>, byte: number): void {
  const c = new Int32Array(params.control);
  const ring = new ByteRing(params.emerg);
  const ok = new SabMutex(c, C_EMERG_LOCK).withLock(() => ring.tryPushByte(byte & 0xff));
  if (!ok) Atomics.add(c, C_EMERG_DROPPED, 1);
}

/** A transmit chain being copied into the output ring. */
interface PendingTx {
  chain: DescriptorChain;
  /** Bytes of chain.readable already copied out. */
  done: number;
}

export class ConsoleBackend implements VirtioDeviceBackend {
  private readonly input: ByteRing;
  private readonly output: ByteRing;
  private readonly control: Int32Array;
  private rx: ActiveQueue | undefined;
  private tx: ActiveQueue | undefined;
  private pending: PendingTx | undefined;

  /**
   * `guarded` runs deferred work (a transmit retried later on this loop turn) fenced like a kick, so
   * an exception there sets NEEDS_RESET instead of escaping (BackendEnv.guarded).
   */
  constructor(
    params: ConsoleParams,
    private readonly guarded: (fn: () => void) => void = (fn) => fn(),
  ) {
    this.input = new ByteRing(params.input);
    this.output = new ByteRing(params.output);
    this.control = new Int32Array(params.control, 0, C_WORDS);
  }

  activate(d: ActiveDevice): void {
    this.rx = d.queues[CONSOLE_RX];
    this.tx = d.queues[CONSOLE_TX];
    this.pending = undefined;
  }

  processQueue(index: number): void {
    if (index === CONSOLE_RX) this.deliverInput();
    else if (index === CONSOLE_TX) this.transmit();
  }

  /** The host wrote input or drained output. */
  hostEvent(): void {
    this.transmit();
    this.deliverInput();
  }

  reset(): void {
    this.rx = undefined;
    this.tx = undefined;
    this.pending = undefined;
    Atomics.store(this.control, C_WAITING_ROOM, 0);
  }

  /**
   * The counters and undelivered bytes live in shared memory (the control words and the rings), not
   * here. Not captured yet: a transmit chain held while the output ring is full (taken from the ring,
   * partly copied); a snapshot must first let the host drain until no chain is held
   * (C_WAITING_ROOM reads 0), or this state must grow the chain's head and progress.
   */
  save(): { kind: 'console'; version: 1 } {
    return { kind: 'console', version: 1 };
  }

  restore(state: unknown): void {
    checkDeviceState(state, 'console', 1);
    this.reset();
  }

  /** Move host input into receive buffers while there is both. */
  private deliverInput(): void {
    const q = this.rx;
    if (!q || this.input.available() === 0) return;
    q.work(() => {
      while (this.input.available() > 0) {
        const c = q.pop();
        if (!c) return; // no buffer posted: input waits in the ring (and the host's writes wait for room)
        let n = 0;
        for (const view of segmentViews(c.writable)) {
          const k = this.input.popInto(view); // straight into the guest's buffer
          n += k;
          if (k < view.length) break;
        }
        Atomics.add(this.control, C_RX_BYTES, n);
        if (!q.push(c.head, n)) return;
      }
    });
  }

  /** Copy transmit chains into the output ring; hold the current one when the ring is full. */
  private transmit(): void {
    const q = this.tx;
    if (!q) return;
    q.work(() => {
      for (;;) {
        let p = this.pending;
        if (!p) {
          const c = q.pop();
          if (!c) return;
          p = this.pending = { chain: c, done: 0 };
        }
        let pos = 0;
        for (const view of segmentViews(p.chain.readable)) {
          if (pos + view.length <= p.done) {
            pos += view.length;
            continue;
          }
          const from = p.done - pos;
          const n = this.output.push(view.subarray(from));
          p.done += n;
          Atomics.add(this.control, C_TX_BYTES, n);
          pos += view.length;
          if (from + n < view.length) {
            // Output ring full: wait for the host to drain it (it writes wakeFd when it sees this flag).
            Atomics.store(this.control, C_WAITING_ROOM, 1);
            if (this.output.free() === 0) return;
            Atomics.store(this.control, C_WAITING_ROOM, 0);
            return this.transmitLater();
          }
        }
        this.pending = undefined;
        if (!q.push(p.chain.head, 0)) return;
      }
    });
  }

  /** The host made room between the full ring and the flag: go round again on this loop turn. */
  private transmitLater(): void {
    queueMicrotask(() => this.guarded(() => this.transmit()));
  }
}

export const consoleDeviceType: VirtioDeviceType<ConsoleOptions, ConsoleParams> = {
  kind: 'console',
  deviceId: VIRTIO_ID_CONSOLE,
  prepare(options, host) {
    const wakeFd = host.addon.eventfd(0, 0);
    const cols = options.cols && options.cols > 0 && options.cols <= 0xffff ? options.cols : 80;
    const rows = options.rows && options.rows > 0 && options.rows <= 0xffff ? options.rows : 24;
    return {
      params: {
        input: ByteRing.create(CONSOLE_INPUT_BYTES).sab,
        output: ByteRing.create(CONSOLE_OUTPUT_BYTES).sab,
        emerg: ByteRing.create(CONSOLE_EMERG_BYTES).sab,
        control: new SharedArrayBuffer(C_WORDS * 4),
        wakeFd,
        cols,
        rows,
      },
      release: () => host.addon.close(wakeFd),
    };
  },
  describe(p) {
    return {
      features: featureBit(VIRTIO_CONSOLE_F_SIZE) | featureBit(VIRTIO_CONSOLE_F_EMERG_WRITE),
      queues: [
        { name: 'receiveq0', maxSize: CONSOLE_QUEUE_SIZE },
        { name: 'transmitq0', maxSize: CONSOLE_QUEUE_SIZE },
      ],
      config: consoleConfigSpace(p.cols, p.rows),
    };
  },
  configWrite(p, _config, offset, _size, value) {
    // emerg_wr: the low byte of a write that starts at the field is output at once (§5.3.4).
    if (offset === CONSOLE_CFG_EMERG_WR) emergencyWrite(p, value & 0xff);
  },
  createBackend(p, env) {
    const b = new ConsoleBackend(p, env.guarded);
    env.watchEventfd(p.wakeFd, () => b.hostEvent());
    return b;
  },
};
