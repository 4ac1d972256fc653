import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { AccessSize } from '../../src/devices/bus.js';
import {
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_BLOCK,
  VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_CONFIG_GENERATION as CONFIG_GENERATION,
  VIRTIO_MMIO_DEVICE_FEATURES as DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL as DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_DRIVER_FEATURES as DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL as DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_INTERRUPT_ACK as INTERRUPT_ACK,
  VIRTIO_MMIO_INTERRUPT_STATUS as INTERRUPT_STATUS,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_QUEUE_DESC_HIGH as QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW as QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_DEVICE_HIGH as QUEUE_DEVICE_HIGH,
  VIRTIO_MMIO_QUEUE_DEVICE_LOW as QUEUE_DEVICE_LOW,
  VIRTIO_MMIO_QUEUE_DRIVER_HIGH as QUEUE_DRIVER_HIGH,
  VIRTIO_MMIO_QUEUE_DRIVER_LOW as QUEUE_DRIVER_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY as QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM as QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX as QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_READY as QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL as QUEUE_SEL,
  VIRTIO_MMIO_SHM_BASE_LOW,
  VIRTIO_MMIO_SHM_LEN_HIGH,
  VIRTIO_MMIO_SHM_LEN_LOW,
  VIRTIO_MMIO_SHM_SEL,
  VIRTIO_MMIO_STATUS as STATUS,
  VIRTIO_MMIO_VENDOR_ID,
  VIRTIO_MMIO_VENDOR_ID_KINDLING,
  VIRTIO_MMIO_VERSION,
  VIRTIO_STATUS_ACKNOWLEDGE as ACK,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET as NEEDS_RESET,
  VIRTIO_STATUS_DRIVER as DRIVER,
  VIRTIO_STATUS_DRIVER_OK as DRIVER_OK,
  VIRTIO_STATUS_FAILED as FAILED,
  VIRTIO_STATUS_FEATURES_OK as FEATURES_OK,
  featureBit,
} from '../../src/devices/virtio/constants.js';
import { type VirtioMmioEvent, type VirtioMmioSnapshot, VirtioMmioTransport } from '../../src/devices/virtio/mmio.js';
import { runs } from '../fuzz/budget.js';

const OFFERED = featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(VIRTIO_F_EVENT_IDX) | (1n << 5n);
const V1 = featureBit(VIRTIO_F_VERSION_1);
const QUEUES = [256, 128];
const CONFIG = Uint8Array.from([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa]);

interface Rig {
  sab: SharedArrayBuffer;
  a: VirtioMmioTransport;
  b: VirtioMmioTransport;
  worker: VirtioMmioTransport;
  events: VirtioMmioEvent[];
  configWrites: Array<[number, number, number]>;
}

function rig(opts: { validate?: (f: bigint) => boolean } = {}): Rig {
  const sab = VirtioMmioTransport.createState({ deviceId: VIRTIO_ID_BLOCK, deviceFeatures: OFFERED, queueMaxSizes: QUEUES, configSize: 12, config: CONFIG });
  const events: VirtioMmioEvent[] = [];
  const configWrites: Array<[number, number, number]> = [];
  const env = {
    notify: (e: VirtioMmioEvent) => void events.push(e),
    configWrite: (o: number, s: AccessSize, v: number) => void configWrites.push([o, s, v]),
    validateFeatures: opts.validate,
  };
  return { sab, a: new VirtioMmioTransport(sab, env), b: new VirtioMmioTransport(sab, env), worker: new VirtioMmioTransport(sab), events, configWrites };
}

const r = (t: VirtioMmioTransport, off: number): number => t.read(off, 4);
const w = (t: VirtioMmioTransport, off: number, v: number): void => t.write(off, 4, v);

function writeFeatures(t: VirtioMmioTransport, f: bigint): void {
  w(t, DRIVER_FEATURES_SEL, 0);
  w(t, DRIVER_FEATURES, Number(f & 0xffffffffn));
  w(t, DRIVER_FEATURES_SEL, 1);
  w(t, DRIVER_FEATURES, Number((f >> 32n) & 0xffffffffn));
}

function readDeviceFeatures(t: VirtioMmioTransport): bigint {
  w(t, DEVICE_FEATURES_SEL, 0);
  const lo = BigInt(r(t, DEVICE_FEATURES));
  w(t, DEVICE_FEATURES_SEL, 1);
  return (BigInt(r(t, DEVICE_FEATURES)) << 32n) | lo;
}

/** The §3.1.1 driver initialization sequence (with the §4.2.3.2 virtqueue setup). */
function driverInit(t: VirtioMmioTransport, features = OFFERED | V1): void {
  w(t, STATUS, 0);
  w(t, STATUS, ACK);
  w(t, STATUS, ACK | DRIVER);
  expect(readDeviceFeatures(t) & features).toBe(features);
  writeFeatures(t, features);
  w(t, STATUS, ACK | DRIVER | FEATURES_OK);
  expect(r(t, STATUS) & FEATURES_OK).toBe(FEATURES_OK);
  QUEUES.forEach((max, i) => {
    w(t, QUEUE_SEL, i);
    expect(r(t, QUEUE_READY)).toBe(0);
    expect(r(t, QUEUE_NUM_MAX)).toBe(max);
    w(t, QUEUE_NUM, max / 2);
    const base = 0x1_0000_0000 + 0x10000 * i;
    w(t, QUEUE_DESC_LOW, base % 2 ** 32);
    w(t, QUEUE_DESC_HIGH, Math.floor(base / 2 ** 32));
    w(t, QUEUE_DRIVER_LOW, (base + 0x1000) % 2 ** 32);
    w(t, QUEUE_DRIVER_HIGH, 1);
    w(t, QUEUE_DEVICE_LOW, (base + 0x2000) % 2 ** 32);
    w(t, QUEUE_DEVICE_HIGH, 1);
    w(t, QUEUE_READY, 1);
    expect(r(t, QUEUE_READY)).toBe(1);
  });
  w(t, STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
}

/** Every register the guest can read, per queue and per feature page, as the guest sees it. */
function registerDump(t: VirtioMmioTransport): Record<string, number> {
  const snap = t.snapshot();
  const out: Record<string, number> = {};
  for (let off = 0; off < 0x100; off += 4) out[`r${off.toString(16)}`] = r(t, off);
  for (let sel = 0; sel < 3; sel++) {
    w(t, DEVICE_FEATURES_SEL, sel);
    out[`devfeat${sel}`] = r(t, DEVICE_FEATURES);
    w(t, DRIVER_FEATURES_SEL, sel);
    out[`drvfeat${sel}`] = r(t, DRIVER_FEATURES);
  }
  for (let q = 0; q <= QUEUES.length; q++) {
    w(t, QUEUE_SEL, q);
    for (const off of [QUEUE_NUM_MAX, QUEUE_NUM, QUEUE_READY, QUEUE_DESC_LOW, QUEUE_DESC_HIGH, QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH, QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH]) {
      out[`q${q}.${off.toString(16)}`] = r(t, off);
    }
  }
  for (let i = 0; i < 16; i++) out[`cfg${i}`] = t.read(VIRTIO_MMIO_CONFIG + i, 1);
  // Restore the selectors (the dump must not change state).
  w(t, DEVICE_FEATURES_SEL, snap.deviceFeaturesSel);
  w(t, DRIVER_FEATURES_SEL, snap.driverFeaturesSel);
  w(t, QUEUE_SEL, snap.queueSel);
  return out;
}

describe('virtio-mmio identification', () => {
  it('reads magic, version 2, device id, vendor, features with VERSION_1, queue sizes', () => {
    const { a } = rig();
    expect(r(a, VIRTIO_MMIO_MAGIC_VALUE)).toBe(0x74726976);
    expect(r(a, VIRTIO_MMIO_VERSION)).toBe(2);
    expect(r(a, VIRTIO_MMIO_DEVICE_ID)).toBe(2);
    expect(r(a, VIRTIO_MMIO_VENDOR_ID)).toBe(VIRTIO_MMIO_VENDOR_ID_KINDLING);
    expect(Buffer.from(new Uint32Array([VIRTIO_MMIO_VENDOR_ID_KINDLING]).buffer).toString('latin1')).toBe('KDLG');
    expect(readDeviceFeatures(a)).toBe(OFFERED | V1);
    w(a, DEVICE_FEATURES_SEL, 2);
    expect(r(a, DEVICE_FEATURES)).toBe(0);
    w(a, QUEUE_SEL, 1);
    expect(r(a, QUEUE_NUM_MAX)).toBe(128);
    expect(r(a, QUEUE_NUM)).toBe(128);
    w(a, QUEUE_SEL, 2);
    expect(r(a, QUEUE_NUM_MAX)).toBe(0);
    expect(r(a, QUEUE_READY)).toBe(0);
    w(a, VIRTIO_MMIO_SHM_SEL, 0);
    expect(r(a, VIRTIO_MMIO_SHM_LEN_LOW)).toBe(0xffffffff);
    expect(r(a, VIRTIO_MMIO_SHM_LEN_HIGH)).toBe(0xffffffff);
    expect(r(a, VIRTIO_MMIO_SHM_BASE_LOW)).toBe(0);
    expect(r(a, CONFIG_GENERATION)).toBe(0);
    expect(r(a, STATUS)).toBe(0);
    expect(a.deviceFeatures()).toBe(OFFERED | V1);
  });

  it('validates createState options', () => {
    const ok = { deviceId: 2, deviceFeatures: 0n, queueMaxSizes: [16], configSize: 8 };
    expect(() => VirtioMmioTransport.createState(ok)).not.toThrow();
    expect(() => VirtioMmioTransport.createState({ ...ok, queueMaxSizes: [100] })).toThrow(RangeError);
    expect(() => VirtioMmioTransport.createState({ ...ok, queueMaxSizes: [65536] })).toThrow(RangeError);
    expect(() => VirtioMmioTransport.createState({ ...ok, configSize: 0xf01 })).toThrow(RangeError);
    expect(() => VirtioMmioTransport.createState({ ...ok, deviceFeatures: featureBit(VIRTIO_F_RING_PACKED) })).toThrow(RangeError);
    expect(() => VirtioMmioTransport.createState({ ...ok, deviceFeatures: 1n << 64n })).toThrow(RangeError);
    expect(() => new VirtioMmioTransport(new SharedArrayBuffer(256))).toThrow(TypeError);
  });
});

describe('virtio-mmio initialization (§3.1)', () => {
  it('a normal driver init sequence succeeds and the worker sees the configuration', () => {
    const { a, worker, events } = rig();
    const gen = worker.generation();
    driverInit(a);
    expect(r(a, STATUS)).toBe(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    expect(events).toEqual(['reset', 'status']);
    expect(worker.status()).toBe(15);
    expect(worker.generation()).toBe(gen + 1); // the init's own reset
    expect(worker.driverFeatures()).toBe(OFFERED | V1);
    expect(worker.queueConfig(0)).toEqual({ index: 0, maxSize: 256, size: 128, ready: true, descAddr: 0x1_0000_0000, driverAddr: 0x1_0000_1000, deviceAddr: 0x1_0000_2000 });
    expect(worker.queueConfig(1)).toMatchObject({ size: 64, ready: true, descAddr: 0x1_0001_0000 });
    expect(() => worker.queueConfig(2)).toThrow(RangeError);
  });

  it('both vCPU instances drive the same device', () => {
    const { a, b } = rig();
    w(a, STATUS, ACK);
    w(b, STATUS, ACK | DRIVER);
    expect(r(a, STATUS)).toBe(3);
    w(a, QUEUE_SEL, 1);
    expect(r(b, QUEUE_NUM_MAX)).toBe(128);
  });

  const refused: Array<[string, bigint]> = [
    ['without VERSION_1', OFFERED],
    ['with an unoffered low bit', OFFERED | V1 | 1n],
    ['with an unoffered high bit', OFFERED | V1 | featureBit(33)],
  ];
  for (const [what, f] of refused) {
    it(`refuses FEATURES_OK ${what}`, () => {
      const { a } = rig();
      w(a, STATUS, ACK);
      w(a, STATUS, ACK | DRIVER);
      writeFeatures(a, f);
      w(a, STATUS, ACK | DRIVER | FEATURES_OK);
      expect(r(a, STATUS)).toBe(ACK | DRIVER);
      // The driver may fix its features and retry, or give up.
      writeFeatures(a, V1);
      w(a, STATUS, ACK | DRIVER | FEATURES_OK);
      expect(r(a, STATUS)).toBe(ACK | DRIVER | FEATURES_OK);
    });
  }

  it('refuses FEATURES_OK after a non-zero write to a feature page ≥ 2, until reset', () => {
    const { a } = rig();
    w(a, STATUS, ACK);
    w(a, STATUS, ACK | DRIVER);
    writeFeatures(a, V1);
    w(a, DRIVER_FEATURES_SEL, 2);
    w(a, DRIVER_FEATURES, 1);
    w(a, STATUS, ACK | DRIVER | FEATURES_OK);
    expect(r(a, STATUS)).toBe(ACK | DRIVER);
    w(a, STATUS, ACK | DRIVER | FAILED);
    expect(r(a, STATUS)).toBe(ACK | DRIVER | FAILED);
    w(a, STATUS, ACK | DRIVER | FEATURES_OK | FAILED);
    expect(r(a, STATUS)).toBe(ACK | DRIVER | FAILED); // after FAILED only reset
    w(a, STATUS, 0);
    expect(r(a, STATUS)).toBe(0);
    driverInit(a);
    expect(r(a, STATUS)).toBe(15);
  });

  it('asks the device (validateFeatures) at FEATURES_OK', () => {
    const { a } = rig({ validate: (f) => (f & featureBit(VIRTIO_F_EVENT_IDX)) === 0n });
    w(a, STATUS, ACK);
    w(a, STATUS, ACK | DRIVER);
    writeFeatures(a, OFFERED | V1);
    w(a, STATUS, ACK | DRIVER | FEATURES_OK);
    expect(r(a, STATUS)).toBe(ACK | DRIVER);
    writeFeatures(a, V1 | featureBit(VIRTIO_F_INDIRECT_DESC));
    w(a, STATUS, ACK | DRIVER | FEATURES_OK);
    expect(r(a, STATUS)).toBe(ACK | DRIVER | FEATURES_OK);
  });

  it('ignores out-of-order, bit-clearing and reserved status writes', () => {
    const { a, events } = rig();
    for (const v of [DRIVER, FEATURES_OK, DRIVER_OK, ACK | FEATURES_OK, 0x10, 0x20, 0x100, ACK | 0x100]) {
      w(a, STATUS, v);
      expect(r(a, STATUS), `write ${v}`).toBe(0);
    }
    w(a, STATUS, ACK | DRIVER); // two steps at once, in order: accepted
    expect(r(a, STATUS)).toBe(3);
    w(a, STATUS, ACK); // clears DRIVER
    expect(r(a, STATUS)).toBe(3);
    w(a, STATUS, ACK | DRIVER | DRIVER_OK); // DRIVER_OK without FEATURES_OK
    expect(r(a, STATUS)).toBe(3);
    writeFeatures(a, V1);
    w(a, STATUS, 15); // FEATURES_OK and DRIVER_OK together
    expect(r(a, STATUS)).toBe(15);
    w(a, STATUS, 11); // clearing DRIVER_OK
    expect(r(a, STATUS)).toBe(15);
    expect(events).toEqual(['status']);
    w(a, STATUS, 15 | FAILED);
    expect(r(a, STATUS)).toBe(15 | FAILED);
    expect(events).toEqual(['status', 'status']);
  });

  it('ignores non-32-bit and unaligned register accesses', () => {
    const { a } = rig();
    expect(a.read(VIRTIO_MMIO_MAGIC_VALUE, 1)).toBe(0);
    expect(a.read(VIRTIO_MMIO_MAGIC_VALUE, 2)).toBe(0);
    expect(a.read(0x2, 4)).toBe(0);
    a.write(STATUS, 1, ACK);
    a.write(STATUS, 2, ACK);
    a.write(STATUS + 1, 4, ACK);
    expect(r(a, STATUS)).toBe(0);
  });
});

describe('virtio-mmio queue and feature registers', () => {
  it('queue registers are writable only between FEATURES_OK and DRIVER_OK, while the queue is not ready', () => {
    const { a, worker } = rig();
    w(a, STATUS, ACK);
    w(a, STATUS, ACK | DRIVER);
    w(a, QUEUE_NUM, 16); // before FEATURES_OK: ignored
    w(a, QUEUE_DESC_LOW, 0x1000);
    w(a, QUEUE_READY, 1);
    expect(worker.queueConfig(0)).toMatchObject({ size: 256, descAddr: 0, ready: false });
    writeFeatures(a, V1);
    w(a, STATUS, ACK | DRIVER | FEATURES_OK);
    w(a, DRIVER_FEATURES_SEL, 0);
    w(a, DRIVER_FEATURES, 0xffffffff); // features locked after FEATURES_OK
    expect(worker.driverFeatures()).toBe(V1);
    w(a, QUEUE_NUM, 16);
    w(a, QUEUE_DESC_LOW, 0x1000);
    w(a, QUEUE_READY, 1);
    w(a, QUEUE_NUM, 32); // ready: locked
    w(a, QUEUE_DESC_LOW, 0x2000);
    w(a, QUEUE_DEVICE_HIGH, 7);
    expect(worker.queueConfig(0)).toMatchObject({ size: 16, descAddr: 0x1000, deviceAddr: 0, ready: true });
    w(a, QUEUE_READY, 0); // the driver may take it back before DRIVER_OK
    w(a, QUEUE_NUM, 32);
    w(a, QUEUE_READY, 1);
    expect(worker.queueConfig(0)).toMatchObject({ size: 32, ready: true });
    w(a, QUEUE_SEL, 1);
    w(a, STATUS, 15);
    w(a, QUEUE_NUM, 8); // after DRIVER_OK: locked even though queue 1 is not ready
    w(a, QUEUE_READY, 1);
    w(a, QUEUE_SEL, 0);
    w(a, QUEUE_READY, 0);
    expect(worker.queueConfig(1)).toMatchObject({ size: 128, ready: false });
    expect(worker.queueConfig(0)).toMatchObject({ size: 32, ready: true });
  });

  it('QueueNotify reaches the worker for existing queues only', () => {
    const { a, events } = rig();
    w(a, QUEUE_NOTIFY, 1);
    w(a, QUEUE_NOTIFY, 2);
    w(a, QUEUE_NOTIFY, 0x10000);
    a.write(QUEUE_NOTIFY, 2, 0);
    expect(events).toEqual([{ queue: 1 }]);
  });

  it('InterruptStatus / InterruptACK, raiseInterrupt with generations', () => {
    const { a, worker } = rig();
    driverInit(a);
    const gen = worker.generation();
    expect(worker.raiseInterrupt(VIRTIO_MMIO_INT_VRING, gen)).toBe(true);
    expect(worker.raiseInterrupt(VIRTIO_MMIO_INT_VRING)).toBe(false);
    expect(r(a, INTERRUPT_STATUS)).toBe(1);
    expect(worker.raiseInterrupt(VIRTIO_MMIO_INT_CONFIG | VIRTIO_MMIO_INT_VRING)).toBe(true);
    w(a, INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    expect(r(a, INTERRUPT_STATUS)).toBe(2);
    w(a, INTERRUPT_ACK, 2);
    expect(worker.interruptStatus()).toBe(0);
    w(a, STATUS, 0);
    expect(worker.raiseInterrupt(VIRTIO_MMIO_INT_VRING, gen)).toBe(false); // stale
    expect(r(a, INTERRUPT_STATUS)).toBe(0);
    expect(worker.withRings(gen, () => 1)).toBeUndefined();
    expect(worker.withRings(worker.generation(), () => 1)).toBe(1);
  });

  it('setNeedsReset: sticky bit plus a config-change interrupt once DRIVER_OK is set', () => {
    const { a, worker } = rig();
    expect(worker.setNeedsReset()).toBe(false);
    expect(r(a, STATUS)).toBe(0); // not while reset
    w(a, STATUS, ACK);
    expect(worker.setNeedsReset()).toBe(false); // no interrupt before DRIVER_OK
    expect(r(a, STATUS)).toBe(ACK | NEEDS_RESET);
    w(a, STATUS, ACK | DRIVER); // the driver's write keeps the device's bit
    expect(r(a, STATUS)).toBe(ACK | DRIVER | NEEDS_RESET);
    w(a, STATUS, 0);
    driverInit(a);
    const gen = worker.generation();
    expect(worker.setNeedsReset(gen + 1)).toBe(false); // wrong generation
    expect(worker.setNeedsReset(gen)).toBe(true);
    expect(r(a, STATUS)).toBe(15 | NEEDS_RESET);
    expect(r(a, INTERRUPT_STATUS)).toBe(VIRTIO_MMIO_INT_CONFIG);
    w(a, STATUS, 0);
    expect(r(a, STATUS)).toBe(0);
    expect(r(a, INTERRUPT_STATUS)).toBe(0);
  });

  it('config space: 8/16/32-bit reads, generation, forwarded writes', () => {
    const { a, worker, configWrites } = rig();
    expect(a.read(VIRTIO_MMIO_CONFIG, 1)).toBe(0x11);
    expect(a.read(VIRTIO_MMIO_CONFIG + 2, 2)).toBe(0x4433);
    expect(a.read(VIRTIO_MMIO_CONFIG + 4, 4)).toBe(0x88776655);
    expect(a.read(VIRTIO_MMIO_CONFIG + 1, 4)).toBe(0x55443322);
    expect(a.read(VIRTIO_MMIO_CONFIG + 10, 4)).toBe(0); // beyond the 10 given bytes of 12
    expect(a.read(VIRTIO_MMIO_CONFIG + 11, 2)).toBe(0);
    expect(a.read(0xffc, 4)).toBe(0);
    worker.setConfig(Uint8Array.from([0xde, 0xad]), 8);
    expect(r(a, CONFIG_GENERATION)).toBe(1);
    expect(a.read(VIRTIO_MMIO_CONFIG + 8, 2)).toBe(0xadde);
    expect(() => worker.setConfig(new Uint8Array(4), 10)).toThrow(RangeError);
    a.write(VIRTIO_MMIO_CONFIG + 4, 2, 0xbeef);
    a.write(VIRTIO_MMIO_CONFIG + 10, 4, 1); // crosses the end: dropped
    expect(configWrites).toEqual([[4, 2, 0xbeef]]);
    expect(a.read(VIRTIO_MMIO_CONFIG + 4, 2)).toBe(0x6655); // the device decides what a write does
  });
});

describe('virtio-mmio reset', () => {
  it('returns every register to its initial value', () => {
    const { a, b, worker, events } = rig();
    const initial = registerDump(a);
    const initialSnap = a.snapshot();
    driverInit(a);
    w(b, DEVICE_FEATURES_SEL, 1);
    w(b, QUEUE_SEL, 1);
    w(b, VIRTIO_MMIO_SHM_SEL, 3);
    worker.raiseInterrupt(3);
    worker.setNeedsReset();
    expect(registerDump(b)).not.toEqual(initial);
    w(b, STATUS, 0);
    expect(events.at(-1)).toBe('reset');
    expect(registerDump(a)).toEqual(initial);
    expect(a.snapshot()).toEqual(initialSnap);
  });
});

// ---- model-based test -------------------------------------------------------------------------------

const VALID_STATUS = new Set<number>([0, FAILED, FAILED | NEEDS_RESET]);
for (const base of [1, 3, 11, 15]) for (const f of [0, FAILED]) for (const n of [0, NEEDS_RESET]) VALID_STATUS.add(base | f | n);

interface Model {
  initial: Record<string, number>;
}
interface Real extends Rig {
  inst: VirtioMmioTransport[];
}

/** Checks that hold after every command. */
function invariants(real: Real, before: VirtioMmioSnapshot, cmd: { resets: boolean }): void {
  const s = real.worker.snapshot();
  expect(VALID_STATUS.has(s.status), `status 0x${s.status.toString(16)}`).toBe(true);
  if (s.status & FEATURES_OK) {
    expect(s.driverFeatures & ~(OFFERED | V1)).toBe(0n);
    expect(s.driverFeatures & V1).toBe(V1);
    expect(s.driverFeaturesHigh).toBe(false);
  }
  expect(s.interruptStatus & ~3).toBe(0);
  if (!cmd.resets) {
    // No bit is ever cleared without a reset.
    expect(s.status & before.status).toBe(before.status);
    // Queue configuration is frozen once DRIVER_OK is set.
    if (before.status & DRIVER_OK) expect(s.queues).toEqual(before.queues);
    // A ready queue's size and addresses are frozen (only QueueReady itself may change, before DRIVER_OK).
    before.queues.forEach((q, i) => {
      if (q.ready) expect({ ...s.queues[i], ready: true, raw: [] }).toEqual({ ...q, raw: [] });
    });
    if (before.status & FEATURES_OK) expect(s.driverFeatures).toBe(before.driverFeatures);
  }
}

class ReadCmd implements fc.Command<Model, Real> {
  constructor(
    readonly i: number,
    readonly off: number,
    readonly size: AccessSize,
  ) {}
  check(): boolean {
    return true;
  }
  run(_m: Model, real: Real): void {
    const before = real.worker.snapshot();
    const v = real.inst[this.i].read(this.off, this.size);
    expect(Number.isInteger(v) && v >= 0 && v < 2 ** (8 * this.size)).toBe(true);
    if (this.size === 4 && this.off === STATUS) expect(v).toBe(before.status);
    expect(real.worker.snapshot()).toEqual(before); // reads have no side effects
  }
  toString(): string {
    return `read${this.size * 8}(${this.i}, 0x${this.off.toString(16)})`;
  }
}

class WriteCmd implements fc.Command<Model, Real> {
  constructor(
    readonly i: number,
    readonly off: number,
    readonly size: AccessSize,
    readonly value: number,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: Model, real: Real): void {
    const before = real.worker.snapshot();
    const nEvents = real.events.length;
    const resets = this.size === 4 && this.off === STATUS && this.value === 0;
    real.inst[this.i].write(this.off, this.size, this.value);
    invariants(real, before, { resets });
    const s = real.worker.snapshot();
    const newEvents = real.events.slice(nEvents);
    if (resets) {
      expect(registerDump(real.worker)).toEqual(m.initial);
      expect(newEvents).toEqual(['reset']);
    } else if ((s.status & DRIVER_OK) !== 0 && (before.status & DRIVER_OK) === 0) {
      expect(newEvents).toEqual(['status']);
    } else {
      expect(newEvents.includes('reset')).toBe(false);
    }
    if (this.size !== 4 && this.off < VIRTIO_MMIO_CONFIG) expect(s).toEqual(before);
  }
  toString(): string {
    return `write${this.size * 8}(${this.i}, 0x${this.off.toString(16)}, 0x${this.value.toString(16)})`;
  }
}

class Write64Cmd implements fc.Command<Model, Real> {
  constructor(
    readonly i: number,
    readonly off: number,
    readonly value: bigint,
  ) {}
  check(): boolean {
    return true;
  }
  run(_m: Model, real: Real): void {
    const before = real.worker.snapshot();
    const t = real.inst[this.i];
    t.write(this.off, 4, Number(this.value & 0xffffffffn));
    t.write(this.off + 4, 4, Number(this.value >> 32n));
    invariants(real, before, { resets: false });
  }
  toString(): string {
    return `write64(${this.i}, 0x${this.off.toString(16)}, 0x${this.value.toString(16)})`;
  }
}

class InitCmd implements fc.Command<Model, Real> {
  constructor(
    readonly i: number,
    readonly features: bigint,
    /** Stop after FEATURES_OK (queue setup window open) instead of going on to DRIVER_OK. */
    readonly partial: boolean,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: Model, real: Real): void {
    const t = real.inst[this.i];
    w(t, STATUS, 0);
    expect(registerDump(real.worker)).toEqual(m.initial);
    w(t, STATUS, ACK);
    w(t, STATUS, ACK | DRIVER);
    writeFeatures(t, this.features);
    w(t, STATUS, ACK | DRIVER | FEATURES_OK);
    const ok = (this.features & ~(OFFERED | V1)) === 0n && (this.features & V1) !== 0n;
    expect(r(t, STATUS)).toBe(ok ? 11 : 3);
    if (this.partial) return;
    w(t, QUEUE_SEL, 0);
    w(t, QUEUE_NUM, 64);
    w(t, QUEUE_READY, 1);
    w(t, STATUS, ok ? 15 : 3 | FAILED);
    expect(VALID_STATUS.has(r(t, STATUS))).toBe(true);
  }
  toString(): string {
    return `init(${this.i}, 0x${this.features.toString(16)}${this.partial ? ', partial' : ''})`;
  }
}

class WorkerCmd implements fc.Command<Model, Real> {
  constructor(
    readonly op: 'needs-reset' | 'raise',
    readonly bits: number,
  ) {}
  check(): boolean {
    return true;
  }
  run(_m: Model, real: Real): void {
    const before = real.worker.snapshot();
    if (this.op === 'needs-reset') real.worker.setNeedsReset(real.worker.generation());
    else real.worker.raiseInterrupt(this.bits, real.worker.generation());
    invariants(real, before, { resets: false });
  }
  toString(): string {
    return `worker.${this.op}(${this.bits})`;
  }
}

describe('virtio-mmio model-based', () => {
  it('arbitrary accesses from two vCPU instances keep the state machine within the spec', () => {
    const inst = fc.integer({ min: 0, max: 1 });
    const regOff = fc.integer({ min: 0, max: 0x3f }).map((k) => 4 * k);
    const anyOff = fc.oneof({ arbitrary: regOff, weight: 6 }, { arbitrary: fc.integer({ min: 0, max: 0x1ff }), weight: 2 }, { arbitrary: fc.integer({ min: 0, max: 0xfff }), weight: 1 });
    const size = fc.constantFrom<AccessSize>(1, 2, 4);
    const statusVal = fc.constantFrom(0, 1, 2, 3, 4, 8, 11, 15, 128, 0x83, 0x8b, 64, 67, 75, 79, 0x10, 0x100);
    const featVal = fc.constantFrom(0, 1, 0x20, 0x30000000, 0x30000020, 0xffffffff, 2, 3);
    const value = fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 0xffffffff }));
    const features = fc.oneof(fc.constant(OFFERED | V1), fc.constant(V1), fc.constant(OFFERED), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
    const commands = [
      fc.tuple(inst, anyOff, size).map(([i, o, s]) => new ReadCmd(i, o, s)),
      fc.tuple(inst, anyOff, size, value).map(([i, o, s, v]) => new WriteCmd(i, o, s, v)),
      fc.tuple(inst, statusVal).map(([i, v]) => new WriteCmd(i, STATUS, 4, v)),
      fc.tuple(inst, featVal).map(([i, v]) => new WriteCmd(i, DRIVER_FEATURES, 4, v)),
      fc.tuple(inst, fc.constantFrom(DRIVER_FEATURES_SEL, DEVICE_FEATURES_SEL, QUEUE_SEL, VIRTIO_MMIO_SHM_SEL), fc.integer({ min: 0, max: 3 })).map(([i, o, v]) => new WriteCmd(i, o, 4, v)),
      fc.tuple(inst, fc.constantFrom(QUEUE_DESC_LOW, QUEUE_DRIVER_LOW, QUEUE_DEVICE_LOW), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })).map(([i, o, v]) => new Write64Cmd(i, o, v)),
      fc.tuple(inst, fc.constantFrom(QUEUE_NUM, QUEUE_READY), fc.constantFrom(0, 1, 16, 256, 512)).map(([i, o, v]) => new WriteCmd(i, o, 4, v)),
      fc.tuple(inst, features, fc.boolean()).map(([i, f, p]) => new InitCmd(i, f, p)),
      inst.map((i) => new WriteCmd(i, STATUS, 4, 0)),
      fc.constantFrom<'needs-reset' | 'raise'>('needs-reset', 'raise').chain((op) => fc.integer({ min: 1, max: 3 }).map((b) => new WorkerCmd(op, b))),
    ];
    fc.assert(
      fc.property(fc.commands(commands, { maxCommands: 60, size: 'large' }), (cmds) => {
        const base = rig();
        const real: Real = { ...base, inst: [base.a, base.b] };
        const model: Model = { initial: registerDump(real.worker) };
        fc.modelRun(() => ({ model, real }), cmds);
      }),
      { numRuns: runs(400) },
    );
  });
});
