// virtio-mmio transport, version 2 register layout (virtio 1.2 §4.2.2).
//
// Every register lives in one SharedArrayBuffer (createState), so each vCPU worker builds its own
// VirtioMmioTransport over the same state and serves whichever vCPU exits; the device's I/O worker
// builds one too and uses the worker-side helpers (queueConfig, driverFeatures, status, generation,
// raiseInterrupt, setNeedsReset, setConfig, withRings). The class keeps no state in JS fields besides
// typed-array views, two SabMutex handles and the env.
//
// Register accesses (offsets 0x000–0x0fc) must be 32-bit and aligned (§4.2.2.2: "the driver MUST use
// only 32-bit wide and aligned reads and writes"); other widths/alignments read 0 and drop writes.
// Config space (0x100 + configSize) takes 8/16/32-bit reads at any offset; bytes outside it read 0.
//
// Status state machine (§2.1, §3.1.1). Valid values: 0, ACK, ACK|DRIVER, …|FEATURES_OK,
// …|DRIVER_OK, each optionally |FAILED and (device-set) |DEVICE_NEEDS_RESET, plus FAILED alone.
// A driver write of 0 resets. A non-zero write is honoured only if it keeps every set bit (the
// driver MUST NOT clear bits; the NEEDS_RESET bit in the written value is ignored and preserved) and
// leads to the next valid value (several steps at once are accepted in order), or sets FAILED;
// after FAILED only a reset is accepted. FEATURES_OK is not latched (the driver re-reads and sees
// it clear, §3.1.1 step 6) unless the driver features are a subset of the offered ones, include
// VIRTIO_F_VERSION_1, no bit ≥ 64 was written and env.validateFeatures (if any) agrees.
// Anything else is ignored.
//
// Queue registers (QueueNum, QueueDesc*, QueueDriver*, QueueDevice*, QueueReady) are writable only
// while FEATURES_OK is set, DRIVER_OK and FAILED are not, and (except QueueReady) the queue is not
// ready. QueueNum is stored as written; the device validates sizes/addresses when it builds its
// SplitQueue at DRIVER_OK (and sets NEEDS_RESET if they are bad). DriverFeatures is writable only
// while DRIVER is set and FEATURES_OK/FAILED are not.
//
// env.notify (called with no lock held, on the vCPU's thread):
//   'status'     DRIVER_OK or FAILED was just latched: the worker (re)reads the configuration
//   'reset'      the driver wrote 0 to Status; registers are already back to their initial values
//   { queue }    QueueNotify for an existing queue reached userspace (no ioeventfd caught it)
//
// Reset vs the I/O worker (virtio 1.2 §2.4: after the driver reads Status 0 the device must not touch
// the queues or their buffers). Reset bumps a generation counter. Worker calls that take a generation
// (raiseInterrupt, setNeedsReset, withRings) do nothing if it is stale. withRings runs the worker's
// ring accesses under a second mutex that the reset path also takes. Work on popped buffers outside
// that mutex (disk I/O into guest RAM, status bytes) is bracketed by enterWork() (inside withRings)
// and leaveWork(). A Status=0 write first fences: it marks a reset pending under the ring lock (from
// then on withRings refuses, so no new work starts and nothing is published), waits until no work is
// in flight (Atomics.wait on the vCPU's thread, in slices, giving up only if env.stopping() says the
// VM is going away), and only then resets the registers, so Status reads 0 only once no write of the
// old generation can still land in guest RAM.
//
// Lock order: ring lock, then state lock. Neither is held while calling env.notify/env.configWrite.

import type { AccessSize, MmioDevice } from '../bus.js';
import { SabMutex } from '../../shared/lock.js';
import {
  VIRTIO_F_NOTIFICATION_DATA,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_RING_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_CONFIG_GENERATION,
  VIRTIO_MMIO_CONFIG_MAX,
  VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INTERRUPT_ACK,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_DEVICE_HIGH,
  VIRTIO_MMIO_QUEUE_DEVICE_LOW,
  VIRTIO_MMIO_QUEUE_DRIVER_HIGH,
  VIRTIO_MMIO_QUEUE_DRIVER_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_SHM_BASE_HIGH,
  VIRTIO_MMIO_SHM_BASE_LOW,
  VIRTIO_MMIO_SHM_LEN_HIGH,
  VIRTIO_MMIO_SHM_LEN_LOW,
  VIRTIO_MMIO_SHM_SEL,
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VENDOR_ID,
  VIRTIO_MMIO_VENDOR_ID_KINDLING,
  VIRTIO_MMIO_VERSION,
  VIRTIO_MMIO_VERSION_2,
  VIRTIO_STATUS_ACKNOWLEDGE,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  VIRTIO_STATUS_DRIVER,
  VIRTIO_STATUS_DRIVER_OK,
  VIRTIO_STATUS_FAILED,
  VIRTIO_STATUS_FEATURES_OK,
  VIRTQ_MAX_SIZE,
  featureBit,
} from './constants.js';

export type VirtioMmioEvent = 'status' | 'reset' | { queue: number };

export interface VirtioMmioEnv {
  /** Wake the device's I/O worker. Called with no lock held. */
  notify: (event: VirtioMmioEvent) => void;
  /** A guest write to config space (offset relative to 0x100, inside configSize). No lock held. */
  configWrite?: (offset: number, size: AccessSize, value: number) => void;
  /**
   * Device-specific check of the driver's features at FEATURES_OK (after the generic checks).
   * Called with the state lock held: must be pure and quick.
   */
  validateFeatures?: (features: bigint) => boolean;
  /** True once the VM is going away: a reset stops waiting for in-flight device work. */
  stopping?: () => boolean;
}

export interface VirtioMmioStateOptions {
  deviceId: number;
  /** Offered features; VIRTIO_F_VERSION_1 is always added. */
  deviceFeatures: bigint;
  /** QueueNumMax of each queue (powers of two, 1..32768). */
  queueMaxSizes: number[];
  /** Bytes of device-specific configuration space (≤ 0xf00). */
  configSize: number;
  /** Initial config space contents (≤ configSize bytes), without a generation bump. */
  config?: Uint8Array;
}

export interface QueueConfig {
  index: number;
  /** QueueNumMax. */
  maxSize: number;
  /** QueueNum as the driver wrote it (initially QueueNumMax); not validated. */
  size: number;
  ready: boolean;
  /** Addresses as numbers; values ≥ 2^53 are not safe integers (SplitQueue rejects them). */
  descAddr: number;
  driverAddr: number;
  deviceAddr: number;
}

/** Every guest-visible register, read without side effects (tests, debugging). */
export interface VirtioMmioSnapshot {
  status: number;
  deviceFeaturesSel: number;
  driverFeaturesSel: number;
  driverFeatures: bigint;
  driverFeaturesHigh: boolean;
  queueSel: number;
  interruptStatus: number;
  shmSel: number;
  configGeneration: number;
  queues: Array<QueueConfig & { raw: number[] }>;
}

// ---- state layout (Int32 words) -----------------------------------------------------------------
const W_LOCK = 0;
const W_RING_LOCK = 1;
const W_STATUS = 2;
const W_DEV_FEAT_SEL = 3;
const W_DRV_FEAT_SEL = 4;
const W_DRV_FEAT_0 = 5;
const W_DRV_FEAT_1 = 6;
/** Non-zero once the driver wrote a non-zero value to a DriverFeatures page ≥ 2. */
const W_DRV_FEAT_HIGH = 7;
const W_QUEUE_SEL = 8;
const W_INT_STATUS = 9;
const W_CONFIG_GEN = 10;
const W_SHM_SEL = 11;
const W_RESET_GEN = 12;
const W_DEVICE_ID = 13;
const W_DEV_FEAT_0 = 14;
const W_DEV_FEAT_1 = 15;
const W_NUM_QUEUES = 16;
const W_CONFIG_SIZE = 17;
const W_LAYOUT_MAGIC = 18;
/** Device work on popped buffers in flight (enterWork/leaveWork). */
const W_BUSY = 19;
/** Resets waiting for in-flight work to end: withRings refuses while non-zero. */
const W_RESETTING = 20;
const HEADER_WORDS = 32;
// Per queue.
const Q_NUM_MAX = 0;
const Q_NUM = 1;
const Q_READY = 2;
const Q_DESC_LO = 3;
const Q_DESC_HI = 4;
const Q_DRIVER_LO = 5;
const Q_DRIVER_HI = 6;
const Q_DEVICE_LO = 7;
const Q_DEVICE_HI = 8;
const Q_WORDS = 16;
const LAYOUT_MAGIC = 0x6b766d32; // "2mvk"
const MAX_QUEUES = 1024;
/** Longest single Atomics.wait of a reset waiting for in-flight work before env.stopping() is asked. */
const RESET_WAIT_SLICE_MS = 20;

const S_ACK = VIRTIO_STATUS_ACKNOWLEDGE;
const S_DRIVER = VIRTIO_STATUS_DRIVER;
const S_FEATURES_OK = VIRTIO_STATUS_FEATURES_OK;
const S_DRIVER_OK = VIRTIO_STATUS_DRIVER_OK;
const S_NEEDS_RESET = VIRTIO_STATUS_DEVICE_NEEDS_RESET;
const S_FAILED = VIRTIO_STATUS_FAILED;
/** The driver-settable status values, in initialization order (without FAILED). */
const STATUS_CHAIN: readonly number[] = [0, S_ACK, S_ACK | S_DRIVER, S_ACK | S_DRIVER | S_FEATURES_OK, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK];
const DRIVER_SETTABLE = S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK | S_FAILED;

/** Features this transport (split rings, no notification data, no queue reset) cannot provide. */
const UNSUPPORTED_FEATURES = featureBit(VIRTIO_F_RING_PACKED) | featureBit(VIRTIO_F_NOTIFICATION_DATA) | featureBit(VIRTIO_F_RING_RESET);

/** Whether a status value is one the transport can ever hold (tests use this as the invariant). */
export function isValidVirtioStatus(status: number): boolean {
  if (status === 0) return true;
  if (!Number.isInteger(status) || status < 0 || status > 0xff) return false;
  const base = status & ~(S_FAILED | S_NEEDS_RESET);
  if (!STATUS_CHAIN.includes(base)) return false;
  if (base === 0) return status === S_FAILED || status === (S_FAILED | S_NEEDS_RESET);
  return true;
}

function configOffset(numQueues: number): number {
  return (HEADER_WORDS + Q_WORDS * numQueues) * 4;
}

function hi32(v: bigint): number {
  return Number((v >> 32n) & 0xffffffffn);
}
function lo32(v: bigint): number {
  return Number(v & 0xffffffffn);
}

export class VirtioMmioTransport implements MmioDevice {
  /** Allocate and initialise the shared register state for one device. */
  static createState(opts: VirtioMmioStateOptions): SharedArrayBuffer {
    const { deviceId, queueMaxSizes, configSize } = opts;
    if (!Number.isInteger(deviceId) || deviceId < 0 || deviceId > 0xffffffff) throw new RangeError(`virtio-mmio: bad device id ${deviceId}`);
    if (opts.deviceFeatures < 0n || opts.deviceFeatures >= 1n << 64n) throw new RangeError('virtio-mmio: device features must be a u64');
    const features = opts.deviceFeatures | featureBit(VIRTIO_F_VERSION_1);
    if ((features & UNSUPPORTED_FEATURES) !== 0n) {
      throw new RangeError('virtio-mmio: RING_PACKED, NOTIFICATION_DATA and RING_RESET are not supported by this transport');
    }
    if (queueMaxSizes.length > MAX_QUEUES) throw new RangeError(`virtio-mmio: at most ${MAX_QUEUES} queues`);
    for (const n of queueMaxSizes) {
      if (!Number.isInteger(n) || n < 1 || n > VIRTQ_MAX_SIZE || (n & (n - 1)) !== 0) {
        throw new RangeError(`virtio-mmio: queue max size ${n} is not a power of two in 1..${VIRTQ_MAX_SIZE}`);
      }
    }
    if (!Number.isInteger(configSize) || configSize < 0 || configSize > VIRTIO_MMIO_CONFIG_MAX) {
      throw new RangeError(`virtio-mmio: config size ${configSize} not in 0..${VIRTIO_MMIO_CONFIG_MAX}`);
    }
    if (opts.config && opts.config.length > configSize) throw new RangeError('virtio-mmio: initial config larger than configSize');
    const cfgOff = configOffset(queueMaxSizes.length);
    const sab = new SharedArrayBuffer(cfgOff + ((configSize + 3) & ~3));
    const w = new Int32Array(sab);
    w[W_DEVICE_ID] = deviceId | 0;
    w[W_DEV_FEAT_0] = lo32(features) | 0;
    w[W_DEV_FEAT_1] = hi32(features) | 0;
    w[W_NUM_QUEUES] = queueMaxSizes.length;
    w[W_CONFIG_SIZE] = configSize;
    w[W_LAYOUT_MAGIC] = LAYOUT_MAGIC;
    queueMaxSizes.forEach((n, i) => {
      w[HEADER_WORDS + Q_WORDS * i + Q_NUM_MAX] = n;
    });
    if (opts.config) new Uint8Array(sab, cfgOff, configSize).set(opts.config);
    const t = new VirtioMmioTransport(sab, { notify: () => undefined });
    t.resetRegisters();
    Atomics.store(w, W_RESET_GEN, 0);
    return sab;
  }

  private readonly w: Int32Array;
  private readonly cfg: Uint8Array;
  private readonly lock: SabMutex;
  private readonly ringLock: SabMutex;
  private readonly env: VirtioMmioEnv;
  readonly numQueues: number;
  readonly configSize: number;
  readonly deviceId: number;

  constructor(state: SharedArrayBuffer, env?: VirtioMmioEnv) {
    if (!(state instanceof SharedArrayBuffer) || state.byteLength < HEADER_WORDS * 4) throw new TypeError('virtio-mmio: bad state buffer');
    this.w = new Int32Array(state);
    if (this.w[W_LAYOUT_MAGIC] !== LAYOUT_MAGIC) throw new TypeError('virtio-mmio: state not made by createState');
    this.numQueues = this.w[W_NUM_QUEUES];
    this.configSize = this.w[W_CONFIG_SIZE];
    this.deviceId = this.w[W_DEVICE_ID] >>> 0;
    const cfgOff = configOffset(this.numQueues);
    if (state.byteLength < cfgOff + this.configSize) throw new TypeError('virtio-mmio: state buffer too small');
    this.cfg = new Uint8Array(state, cfgOff, this.configSize);
    this.lock = new SabMutex(this.w, W_LOCK);
    this.ringLock = new SabMutex(this.w, W_RING_LOCK);
    this.env = env ?? { notify: () => undefined };
  }

  // ---- guest side (MmioDevice) ----------------------------------------------------------------

  read(offset: number, size: AccessSize): number {
    if (offset >= VIRTIO_MMIO_CONFIG) return this.readConfig(offset - VIRTIO_MMIO_CONFIG, size);
    if (size !== 4 || (offset & 3) !== 0 || offset < 0) return 0;
    const w = this.w;
    switch (offset) {
      case VIRTIO_MMIO_MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
      case VIRTIO_MMIO_VERSION:
        return VIRTIO_MMIO_VERSION_2;
      case VIRTIO_MMIO_DEVICE_ID:
        return this.deviceId;
      case VIRTIO_MMIO_VENDOR_ID:
        return VIRTIO_MMIO_VENDOR_ID_KINDLING;
      case VIRTIO_MMIO_DEVICE_FEATURES: {
        const sel = Atomics.load(w, W_DEV_FEAT_SEL);
        return sel === 0 ? w[W_DEV_FEAT_0] >>> 0 : sel === 1 ? w[W_DEV_FEAT_1] >>> 0 : 0;
      }
      case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        return Atomics.load(w, W_DEV_FEAT_SEL) >>> 0;
      case VIRTIO_MMIO_DRIVER_FEATURES:
        return this.lock.withLock(() => {
          const sel = w[W_DRV_FEAT_SEL];
          return sel === 0 ? w[W_DRV_FEAT_0] >>> 0 : sel === 1 ? w[W_DRV_FEAT_1] >>> 0 : 0;
        });
      case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        return Atomics.load(w, W_DRV_FEAT_SEL) >>> 0;
      case VIRTIO_MMIO_QUEUE_SEL:
        return Atomics.load(w, W_QUEUE_SEL) >>> 0;
      case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return this.readQueueWord(Q_NUM_MAX);
      case VIRTIO_MMIO_QUEUE_NUM:
        return this.readQueueWord(Q_NUM);
      case VIRTIO_MMIO_QUEUE_READY:
        return this.readQueueWord(Q_READY);
      case VIRTIO_MMIO_QUEUE_DESC_LOW:
        return this.readQueueWord(Q_DESC_LO);
      case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        return this.readQueueWord(Q_DESC_HI);
      case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
        return this.readQueueWord(Q_DRIVER_LO);
      case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
        return this.readQueueWord(Q_DRIVER_HI);
      case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
        return this.readQueueWord(Q_DEVICE_LO);
      case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
        return this.readQueueWord(Q_DEVICE_HI);
      case VIRTIO_MMIO_INTERRUPT_STATUS:
        return Atomics.load(w, W_INT_STATUS) >>> 0;
      case VIRTIO_MMIO_STATUS:
        return Atomics.load(w, W_STATUS) >>> 0;
      case VIRTIO_MMIO_SHM_SEL:
        return Atomics.load(w, W_SHM_SEL) >>> 0;
      case VIRTIO_MMIO_SHM_LEN_LOW:
      case VIRTIO_MMIO_SHM_LEN_HIGH:
        return 0xffffffff; // no shared memory regions: length -1
      case VIRTIO_MMIO_SHM_BASE_LOW:
      case VIRTIO_MMIO_SHM_BASE_HIGH:
        return 0;
      case VIRTIO_MMIO_CONFIG_GENERATION:
        return Atomics.load(w, W_CONFIG_GEN) >>> 0;
      default:
        return 0;
    }
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (offset >= VIRTIO_MMIO_CONFIG) {
      const off = offset - VIRTIO_MMIO_CONFIG;
      if (off + size <= this.configSize && this.env.configWrite) this.env.configWrite(off, size, value >>> 0);
      return;
    }
    if (size !== 4 || (offset & 3) !== 0 || offset < 0) return;
    const v = value >>> 0;
    const w = this.w;
    switch (offset) {
      case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        Atomics.store(w, W_DEV_FEAT_SEL, v | 0);
        return;
      case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        Atomics.store(w, W_DRV_FEAT_SEL, v | 0);
        return;
      case VIRTIO_MMIO_QUEUE_SEL:
        Atomics.store(w, W_QUEUE_SEL, v | 0);
        return;
      case VIRTIO_MMIO_SHM_SEL:
        Atomics.store(w, W_SHM_SEL, v | 0);
        return;
      case VIRTIO_MMIO_DRIVER_FEATURES:
        this.lock.withLock(() => {
          const st = w[W_STATUS];
          if ((st & S_DRIVER) === 0 || (st & (S_FEATURES_OK | S_FAILED)) !== 0) return;
          const sel = w[W_DRV_FEAT_SEL];
          if (sel === 0) w[W_DRV_FEAT_0] = v | 0;
          else if (sel === 1) w[W_DRV_FEAT_1] = v | 0;
          else if (v !== 0) w[W_DRV_FEAT_HIGH] = 1;
        });
        return;
      case VIRTIO_MMIO_QUEUE_NUM:
        this.writeQueueWord(Q_NUM, v);
        return;
      case VIRTIO_MMIO_QUEUE_DESC_LOW:
        this.writeQueueWord(Q_DESC_LO, v);
        return;
      case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        this.writeQueueWord(Q_DESC_HI, v);
        return;
      case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
        this.writeQueueWord(Q_DRIVER_LO, v);
        return;
      case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
        this.writeQueueWord(Q_DRIVER_HI, v);
        return;
      case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
        this.writeQueueWord(Q_DEVICE_LO, v);
        return;
      case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
        this.writeQueueWord(Q_DEVICE_HI, v);
        return;
      case VIRTIO_MMIO_QUEUE_READY:
        if (v > 1) return;
        this.lock.withLock(() => {
          const base = this.queueBase(w[W_QUEUE_SEL] >>> 0);
          if (base < 0 || !this.queueSetupAllowed()) return;
          w[base + Q_READY] = v;
        });
        return;
      case VIRTIO_MMIO_QUEUE_NOTIFY:
        if (v < this.numQueues) this.env.notify({ queue: v });
        return;
      case VIRTIO_MMIO_INTERRUPT_ACK:
        Atomics.and(w, W_INT_STATUS, ~v);
        return;
      case VIRTIO_MMIO_STATUS:
        this.writeStatus(v);
        return;
      default:
        return; // read-only, legacy, unknown: ignored
    }
  }

  // ---- worker side ----------------------------------------------------------------------------

  /** Device status register. */
  status(): number {
    return Atomics.load(this.w, W_STATUS) >>> 0;
  }

  /** Reset generation: changes on every reset (driver write of 0 to Status). */
  generation(): number {
    return Atomics.load(this.w, W_RESET_GEN) >>> 0;
  }

  /** Offered features (including VIRTIO_F_VERSION_1). */
  deviceFeatures(): bigint {
    return (BigInt(this.w[W_DEV_FEAT_1] >>> 0) << 32n) | BigInt(this.w[W_DEV_FEAT_0] >>> 0);
  }

  /** Features the driver accepted (meaningful once FEATURES_OK is set). */
  driverFeatures(): bigint {
    return this.lock.withLock(() => (BigInt(this.w[W_DRV_FEAT_1] >>> 0) << 32n) | BigInt(this.w[W_DRV_FEAT_0] >>> 0));
  }

  /** Consistent snapshot of one queue's registers. */
  queueConfig(index: number): QueueConfig {
    if (!Number.isInteger(index) || index < 0 || index >= this.numQueues) throw new RangeError(`virtio-mmio: no queue ${index}`);
    return this.lock.withLock(() => this.queueConfigLocked(index));
  }

  /** Current InterruptStatus. */
  interruptStatus(): number {
    return Atomics.load(this.w, W_INT_STATUS) >>> 0;
  }

  /**
   * Set InterruptStatus bits (VIRTIO_MMIO_INT_VRING / _CONFIG). Returns whether any bit was newly
   * set (then pulse the irqfd). With `generation`, does nothing (false) if a reset happened since.
   */
  raiseInterrupt(bits: number, generation?: number): boolean {
    const w = this.w;
    if (generation === undefined) {
      const old = Atomics.or(w, W_INT_STATUS, bits);
      return (old & bits) !== bits;
    }
    return this.lock.withLock(() => {
      if (w[W_RESET_GEN] >>> 0 !== generation) return false;
      const old = Atomics.or(w, W_INT_STATUS, bits);
      return (old & bits) !== bits;
    });
  }

  /**
   * Set DEVICE_NEEDS_RESET (ignored while Status is 0 or for a stale generation) and, if DRIVER_OK is
   * set, the config-change interrupt bit (§2.1.2). Returns whether InterruptStatus changed (pulse
   * the irqfd).
   */
  setNeedsReset(generation?: number): boolean {
    const w = this.w;
    return this.lock.withLock(() => {
      if (generation !== undefined && w[W_RESET_GEN] >>> 0 !== generation) return false;
      const st = w[W_STATUS];
      if (st === 0) return false;
      Atomics.store(w, W_STATUS, st | S_NEEDS_RESET);
      if ((st & S_DRIVER_OK) === 0) return false;
      const old = Atomics.or(w, W_INT_STATUS, VIRTIO_MMIO_INT_CONFIG);
      return (old & VIRTIO_MMIO_INT_CONFIG) === 0;
    });
  }

  /**
   * Replace config-space bytes at `offset` and bump ConfigGeneration. Does not interrupt: after a
   * change the guest should see, call raiseInterrupt(VIRTIO_MMIO_INT_CONFIG) if DRIVER_OK is set.
   */
  setConfig(bytes: Uint8Array, offset = 0): void {
    if (!Number.isInteger(offset) || offset < 0 || offset + bytes.length > this.configSize) throw new RangeError('virtio-mmio: config write outside config space');
    this.lock.withLock(() => {
      this.cfg.set(bytes, offset);
      Atomics.add(this.w, W_CONFIG_GEN, 1);
    });
  }

  /** Copy of the config space. */
  config(): Uint8Array {
    return this.lock.withLock(() => this.cfg.slice());
  }

  /**
   * Run `fn` (the worker's ring accesses: pop/pushUsed) unless a reset happened since `generation`;
   * the guest's reset waits for a running `fn` to finish. Keep `fn` short: no I/O, no blocking.
   */
  withRings<T>(generation: number, fn: () => T): T | undefined {
    this.ringLock.lock();
    try {
      if (Atomics.load(this.w, W_RESET_GEN) >>> 0 !== generation || Atomics.load(this.w, W_RESETTING) !== 0) return undefined;
      return fn();
    } finally {
      this.ringLock.unlock();
    }
  }

  /**
   * Mark device work on popped buffers as in flight; call only inside withRings (which checked the
   * generation and that no reset is pending). A reset waits until every enterWork has its leaveWork.
   */
  enterWork(): void {
    Atomics.add(this.w, W_BUSY, 1);
  }

  leaveWork(): void {
    // Only a reset waits on W_BUSY, and it raises W_RESETTING before it reads W_BUSY: if this load
    // misses its W_RESETTING, its read of W_BUSY (after ours, seq-cst) already sees the decrement.
    if (Atomics.sub(this.w, W_BUSY, 1) === 1 && Atomics.load(this.w, W_RESETTING) !== 0) Atomics.notify(this.w, W_BUSY);
  }

  /** Device work in flight (tests, diagnostics). */
  workInFlight(): number {
    return Atomics.load(this.w, W_BUSY);
  }

  /** Every register without side effects. */
  snapshot(): VirtioMmioSnapshot {
    const w = this.w;
    return this.lock.withLock(() => {
      const queues: Array<QueueConfig & { raw: number[] }> = [];
      for (let i = 0; i < this.numQueues; i++) {
        const b = HEADER_WORDS + Q_WORDS * i;
        const raw: number[] = [];
        for (let k = 0; k <= Q_DEVICE_HI; k++) raw.push(w[b + k] >>> 0);
        queues.push({ ...this.queueConfigLocked(i), raw });
      }
      return {
        status: w[W_STATUS] >>> 0,
        deviceFeaturesSel: w[W_DEV_FEAT_SEL] >>> 0,
        driverFeaturesSel: w[W_DRV_FEAT_SEL] >>> 0,
        driverFeatures: (BigInt(w[W_DRV_FEAT_1] >>> 0) << 32n) | BigInt(w[W_DRV_FEAT_0] >>> 0),
        driverFeaturesHigh: w[W_DRV_FEAT_HIGH] !== 0,
        queueSel: w[W_QUEUE_SEL] >>> 0,
        interruptStatus: w[W_INT_STATUS] >>> 0,
        shmSel: w[W_SHM_SEL] >>> 0,
        configGeneration: w[W_CONFIG_GEN] >>> 0,
        queues,
      };
    });
  }

  // ---- internals ------------------------------------------------------------------------------

  private queueBase(sel: number): number {
    return sel < this.numQueues ? HEADER_WORDS + Q_WORDS * sel : -1;
  }

  private queueConfigLocked(i: number): QueueConfig {
    const w = this.w;
    const b = HEADER_WORDS + Q_WORDS * i;
    const addr = (lo: number, hi: number): number => (w[b + hi] >>> 0) * 2 ** 32 + (w[b + lo] >>> 0);
    return {
      index: i,
      maxSize: w[b + Q_NUM_MAX] >>> 0,
      size: w[b + Q_NUM] >>> 0,
      ready: w[b + Q_READY] === 1,
      descAddr: addr(Q_DESC_LO, Q_DESC_HI),
      driverAddr: addr(Q_DRIVER_LO, Q_DRIVER_HI),
      deviceAddr: addr(Q_DEVICE_LO, Q_DEVICE_HI),
    };
  }

  private readQueueWord(word: number): number {
    return this.lock.withLock(() => {
      const base = this.queueBase(this.w[W_QUEUE_SEL] >>> 0);
      return base < 0 ? 0 : this.w[base + word] >>> 0;
    });
  }

  /** Queue setup registers may change: FEATURES_OK set, DRIVER_OK and FAILED clear. Lock held. */
  private queueSetupAllowed(): boolean {
    const st = this.w[W_STATUS];
    return (st & S_FEATURES_OK) !== 0 && (st & (S_DRIVER_OK | S_FAILED)) === 0;
  }

  private writeQueueWord(word: number, v: number): void {
    this.lock.withLock(() => {
      const base = this.queueBase(this.w[W_QUEUE_SEL] >>> 0);
      if (base < 0 || !this.queueSetupAllowed() || this.w[base + Q_READY] !== 0) return;
      this.w[base + word] = v | 0;
    });
  }

  private featuresAcceptable(): boolean {
    const w = this.w;
    if (w[W_DRV_FEAT_HIGH] !== 0) return false;
    const lo = w[W_DRV_FEAT_0] >>> 0;
    const hi = w[W_DRV_FEAT_1] >>> 0;
    if ((lo & ~w[W_DEV_FEAT_0]) !== 0 || (hi & ~w[W_DEV_FEAT_1]) !== 0) return false;
    if ((hi & (1 << (VIRTIO_F_VERSION_1 - 32))) === 0) return false;
    const validate = this.env.validateFeatures;
    return validate === undefined || validate((BigInt(hi) << 32n) | BigInt(lo));
  }

  private writeStatus(v: number): void {
    if (v === 0) {
      this.ringLock.withLock(() => Atomics.add(this.w, W_RESETTING, 1));
      try {
        this.waitForWork();
        this.ringLock.lock();
        try {
          this.lock.withLock(() => this.resetRegisters());
        } finally {
          this.ringLock.unlock();
        }
      } finally {
        this.ringLock.withLock(() => Atomics.sub(this.w, W_RESETTING, 1));
      }
      this.env.notify('reset');
      return;
    }
    const notify = this.lock.withLock((): boolean => {
      const w = this.w;
      const cur = w[W_STATUS];
      const needsReset = cur & S_NEEDS_RESET;
      const curD = cur & ~S_NEEDS_RESET;
      const d = v & ~S_NEEDS_RESET;
      if ((d & ~DRIVER_SETTABLE) !== 0) return false; // reserved bits
      if ((curD & S_FAILED) !== 0) return false; // only a reset leaves FAILED
      if ((d & S_FAILED) !== 0) {
        Atomics.store(w, W_STATUS, cur | S_FAILED);
        return true;
      }
      if ((d & curD) !== curD || d === curD || !STATUS_CHAIN.includes(d)) return false;
      if ((d & S_FEATURES_OK) !== 0 && (curD & S_FEATURES_OK) === 0 && !this.featuresAcceptable()) return false;
      Atomics.store(w, W_STATUS, d | needsReset);
      return (d & S_DRIVER_OK) !== 0 && (curD & S_DRIVER_OK) === 0;
    });
    if (notify) this.env.notify('status');
  }

  /** Wait until no device work is in flight (or the VM is stopping). */
  private waitForWork(): void {
    for (;;) {
      const busy = Atomics.load(this.w, W_BUSY);
      if (busy <= 0) return;
      if (this.env.stopping?.()) return;
      Atomics.wait(this.w, W_BUSY, busy, RESET_WAIT_SLICE_MS);
    }
  }

  /** Every mutable register back to its initial value (both locks held, or during createState). */
  private resetRegisters(): void {
    const w = this.w;
    Atomics.store(w, W_STATUS, 0);
    w[W_DEV_FEAT_SEL] = 0;
    w[W_DRV_FEAT_SEL] = 0;
    w[W_DRV_FEAT_0] = 0;
    w[W_DRV_FEAT_1] = 0;
    w[W_DRV_FEAT_HIGH] = 0;
    w[W_QUEUE_SEL] = 0;
    w[W_SHM_SEL] = 0;
    Atomics.store(w, W_INT_STATUS, 0);
    for (let i = 0; i < this.numQueues; i++) {
      const b = HEADER_WORDS + Q_WORDS * i;
      w[b + Q_NUM] = w[b + Q_NUM_MAX];
      for (const k of [Q_READY, Q_DESC_LO, Q_DESC_HI, Q_DRIVER_LO, Q_DRIVER_HI, Q_DEVICE_LO, Q_DEVICE_HI]) w[b + k] = 0;
    }
    Atomics.add(w, W_RESET_GEN, 1);
  }

  /** Config-space read of 1/2/4 bytes at `off` (LE); bytes outside the config space read 0. */
  private readConfig(off: number, size: AccessSize): number {
    return this.lock.withLock(() => {
      let v = 0;
      for (let i = 0; i < size; i++) {
        const k = off + i;
        const b = k < this.configSize ? this.cfg[k] : 0;
        v += b * 2 ** (8 * i);
      }
      return v;
    });
  }
}
