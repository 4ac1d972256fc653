// VirtioMmioDeviceRunner (src/devices/virtio/activation.ts) without workers or eventfds: this thread
// plays the driver (register writes through a VirtioMmioTransport over the shared state, rings in a
// SharedArrayBuffer "guest RAM") and the I/O worker (calling onControl()/onKick(i) where the
// eventfds would fire), with a fake backend that records what the runner asks of it.
import { beforeEach, describe, expect, it } from 'vitest';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_INTERRUPT_ACK,
  VIRTIO_MMIO_INT_CONFIG,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_STATUS,
  VIRTIO_STATUS_ACKNOWLEDGE as ACK,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET as NEEDS_RESET,
  VIRTIO_STATUS_DRIVER as DRIVER,
  VIRTIO_STATUS_DRIVER_OK as DRIVER_OK,
  VIRTIO_STATUS_FAILED as FAILED,
  VIRTIO_STATUS_FEATURES_OK as FEATURES_OK,
  VIRTQ_DESC_F_WRITE,
  featureBit,
} from '../../src/devices/virtio/constants.js';
import { VirtioMmioDeviceRunner } from '../../src/devices/virtio/activation.js';
import type { ActiveDevice, VirtioDeviceBackend } from '../../src/devices/virtio/device.js';
import { VirtioMmioTransport } from '../../src/devices/virtio/mmio.js';
import { type ActiveQueue, createTransportStats, readTransportStats } from '../../src/devices/virtio/queue-service.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { initDriver } from './virtio-driver.js';
import { writeDescriptor } from './virtq-descriptor.js';

const RAM = 1 << 20;
const QMAX = [16, 16];
const QSIZE = 8;
/** Ring addresses of queue i. */
const rings = (i: number) => ({ desc: 0x1000 + 0x3000 * i, avail: 0x2000 + 0x3000 * i, used: 0x3000 + 0x3000 * i });
const DATA = 0x10000;

/** What the fake backend was asked to do, in order. */
type Call = { op: 'activate'; queues: number[]; features: bigint } | { op: 'process'; index: number } | { op: 'reset' };

class FakeBackend implements VirtioDeviceBackend {
  calls: Call[] = [];
  queues: ReadonlyArray<ActiveQueue | undefined> = [];
  /** Throw from the next processQueue (a backend bug / a fatal queue error). */
  throwOnProcess: Error | undefined;
  activate(dev: ActiveDevice): void {
    this.queues = dev.queues;
    this.calls.push({ op: 'activate', queues: dev.queues.flatMap((q, i) => (q ? [i] : [])), features: dev.features });
  }
  processQueue(index: number): void {
    this.calls.push({ op: 'process', index });
    if (this.throwOnProcess) throw this.throwOnProcess;
    // Serve like a simple device: fill each writable buffer with 0xab, used length = bytes written.
    this.queues[index]?.service((chain) => {
      for (const s of chain.writable) new Uint8Array(s.buffer, s.offset, s.length).fill(0xab);
      return chain.writableBytes;
    });
  }
  reset(): void {
    this.queues = [];
    this.calls.push({ op: 'reset' });
  }
  save(): unknown {
    return {};
  }
  restore(): void {}
  /** Calls since the last take(). */
  take(): Call[] {
    const c = this.calls;
    this.calls = [];
    return c;
  }
}

interface Rig {
  mem: GuestMemory;
  /** The driver's view (a vCPU worker's transport). */
  drv: VirtioMmioTransport;
  /** The device's view (the I/O worker's transport). */
  t: VirtioMmioTransport;
  backend: FakeBackend;
  runner: VirtioMmioDeviceRunner;
  stats: SharedArrayBuffer;
  signals: number;
  logs: string[];
  /** Driver-side avail.idx per queue. */
  availIdx: number[];
}

let rig: Rig;

function makeRig(): Rig {
  const sab = VirtioMmioTransport.createState({ deviceId: 4, deviceFeatures: 0n, queueMaxSizes: QMAX, configSize: 0 });
  const mem = new GuestMemory([{ slot: 0, gpa: 0, size: RAM, buffer: new SharedArrayBuffer(RAM) }]);
  const stats = createTransportStats();
  const backend = new FakeBackend();
  const r: Rig = {
    mem,
    drv: new VirtioMmioTransport(sab, { notify: () => undefined }),
    t: new VirtioMmioTransport(sab),
    backend,
    stats,
    signals: 0,
    logs: [],
    availIdx: QMAX.map(() => 0),
    runner: undefined as unknown as VirtioMmioDeviceRunner,
  };
  r.runner = new VirtioMmioDeviceRunner({
    name: 'virtio-test',
    transport: r.t,
    mem,
    backend,
    signal: () => void r.signals++,
    stats,
    log: (_level, msg) => void r.logs.push(msg),
  });
  return r;
}

beforeEach(() => {
  rig = makeRig();
});

const wr = (off: number, v: number): void => rig.drv.write(off, 4, v);
const status = (): number => rig.drv.read(VIRTIO_MMIO_STATUS, 4);
const stats = () => readTransportStats(rig.stats);

/** §3.1.1 up to (not including) DRIVER_OK, with `queues` set up and enabled. */
function initUpToQueues(queues: number[], opts: { size?: number; desc?: number } = {}): void {
  rig.mem.fill(0, 0x10000, 0); // fresh rings
  rig.availIdx = QMAX.map(() => 0);
  initDriver(
    rig.drv,
    featureBit(VIRTIO_F_VERSION_1),
    queues.map((i) => ({ index: i, size: opts.size ?? QSIZE, desc: opts.desc ?? rings(i).desc, avail: rings(i).avail, used: rings(i).used })),
  );
}

function driverOk(): void {
  wr(VIRTIO_MMIO_STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  expect(status() & DRIVER_OK).toBe(DRIVER_OK);
}

/** Initialise and activate: DRIVER_OK, then the control eventfd fires. */
function bringUp(queues: number[]): void {
  initUpToQueues(queues);
  driverOk();
  rig.runner.onControl();
}

/** Post one 64-byte device-writable buffer (descriptor `head`) on queue q. */
function post(q: number, head = 0): void {
  const a = rings(q);
  writeDescriptor(rig.mem, a.desc + 16 * head, DATA + 0x1000 * q + 64 * head, 64, VIRTQ_DESC_F_WRITE);
  rig.mem.write16(a.avail + 4 + 2 * (rig.availIdx[q] % QSIZE), head);
  rig.availIdx[q] = (rig.availIdx[q] + 1) & 0xffff;
  rig.mem.write16(a.avail + 2, rig.availIdx[q]);
}

const usedIdx = (q: number): number => rig.mem.read16(rings(q).used + 2);

describe('VirtioMmioDeviceRunner: activation', () => {
  it('activates only after DRIVER_OK, with exactly the queues the driver enabled, then catches up on earlier kicks', () => {
    initUpToQueues([0]);
    post(0);
    // Control and kicks before DRIVER_OK: nothing is activated or served.
    rig.runner.onControl();
    rig.runner.onKick(0);
    rig.runner.onKick(1);
    expect(rig.runner.isActive).toBe(false);
    expect(rig.backend.take()).toEqual([{ op: 'reset' }]); // the first wake-up adopts the current generation
    expect(usedIdx(0)).toBe(0);
    expect(stats().activations).toBe(0);

    driverOk();
    rig.runner.onControl();
    expect(rig.runner.isActive).toBe(true);
    // activate() with queue 0 only (queue 1 was never made ready), then one catch-up pass on queue 0.
    expect(rig.backend.take()).toEqual([
      { op: 'activate', queues: [0], features: 1n << BigInt(VIRTIO_F_VERSION_1) },
      { op: 'process', index: 0 },
    ]);
    const q0 = rig.backend.queues[0]!;
    expect(q0.index).toBe(0);
    expect(q0.size).toBe(QSIZE);
    expect(rig.backend.queues[1]).toBeUndefined();
    // The buffer posted before DRIVER_OK was served by the catch-up pass, and the driver interrupted.
    expect(usedIdx(0)).toBe(1);
    expect(rig.mem.read32(rings(0).used + 4)).toBe(0);
    expect(rig.mem.read32(rings(0).used + 8)).toBe(64);
    expect(rig.mem.read8(DATA)).toBe(0xab);
    expect(rig.t.interruptStatus() & VIRTIO_MMIO_INT_VRING).toBe(VIRTIO_MMIO_INT_VRING);
    expect(rig.signals).toBe(1);
    expect(stats()).toMatchObject({ activations: 1, interrupts: 1, batches: 1, wakeups: 4, needsReset: 0, resets: 0 });

    // A second control wake-up (e.g. a config write) does not activate again.
    rig.runner.onControl();
    expect(rig.backend.take()).toEqual([]);
    expect(stats().activations).toBe(1);
  });

  it('serves one processQueue per kick of an enabled queue; a kick of a disabled queue is ignored', () => {
    bringUp([0]);
    rig.backend.take();
    for (let k = 0; k < 3; k++) {
      post(0, k);
      wr(VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
      rig.runner.onKick(0);
      expect(usedIdx(0)).toBe(k + 1);
      expect(rig.t.interruptStatus() & VIRTIO_MMIO_INT_VRING).toBe(VIRTIO_MMIO_INT_VRING);
    }
    rig.runner.onKick(1);
    expect(rig.backend.take()).toEqual([
      { op: 'process', index: 0 },
      { op: 'process', index: 0 },
      { op: 'process', index: 0 },
    ]);
    // Each kick published one batch and (InterruptStatus acked in between) raised one interrupt.
    expect(stats()).toMatchObject({ batches: 3, interrupts: 3 });
    expect(rig.signals).toBe(3);
  });

  it('a driver reset (new generation) resets the backend; the old queues are dead; kicks wait for the next DRIVER_OK', () => {
    bringUp([0, 1]);
    expect(rig.backend.take()).toEqual([
      { op: 'reset' },
      { op: 'activate', queues: [0, 1], features: 1n << BigInt(VIRTIO_F_VERSION_1) },
      { op: 'process', index: 0 },
      { op: 'process', index: 1 },
    ]);
    const oldQ = rig.backend.queues[0]!;
    const gen = rig.t.generation();
    wr(VIRTIO_MMIO_STATUS, 0);
    expect(rig.t.generation()).not.toBe(gen);
    rig.runner.onControl();
    expect(rig.backend.take()).toEqual([{ op: 'reset' }]);
    expect(rig.runner.isActive).toBe(false);
    expect(stats().resets).toBe(1);
    // The ActiveQueue of the old generation refuses to touch the rings.
    post(0);
    expect(oldQ.service(() => 64)).toBeUndefined();
    expect(oldQ.hasAvailable()).toBe(false);
    expect(usedIdx(0)).toBe(0);

    // Kicks while the driver re-initialises are not served (initUpToQueues' own reset is one more
    // generation: the backend is reset again)…
    initUpToQueues([0]);
    post(0);
    rig.runner.onKick(0);
    expect(rig.backend.take()).toEqual([{ op: 'reset' }]);
    expect(usedIdx(0)).toBe(0);
    // …and served once DRIVER_OK is seen.
    driverOk();
    rig.runner.onKick(0);
    expect(rig.backend.take()).toEqual([
      { op: 'activate', queues: [0], features: 1n << BigInt(VIRTIO_F_VERSION_1) },
      { op: 'process', index: 0 },
      { op: 'process', index: 0 },
    ]);
    expect(usedIdx(0)).toBe(1);
    expect(stats()).toMatchObject({ activations: 2, resets: 2 });
  });

  it('FAILED stops service until a reset, even with DRIVER_OK still set', () => {
    bringUp([0]);
    rig.backend.take();
    wr(VIRTIO_MMIO_STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK | FAILED);
    expect(status() & FAILED).toBe(FAILED);
    rig.runner.onControl();
    expect(rig.runner.isActive).toBe(false);
    expect(rig.backend.take()).toEqual([{ op: 'reset' }]);
    post(0);
    rig.runner.onKick(0);
    rig.runner.onControl();
    expect(rig.backend.take()).toEqual([]);
    expect(usedIdx(0)).toBe(0);
    expect(stats().activations).toBe(1);

    bringUp([0]);
    expect(rig.runner.isActive).toBe(true);
    expect(stats().activations).toBe(2);
  });
});

describe('VirtioMmioDeviceRunner: DEVICE_NEEDS_RESET', () => {
  it('a throwing backend → NEEDS_RESET + config interrupt + signal; kicks ignored until the driver resets; then it activates again', () => {
    bringUp([0]);
    rig.backend.take();
    const signals0 = rig.signals;
    rig.backend.throwOnProcess = new Error('backend bug');
    post(0);
    rig.runner.onKick(0); // must not throw out of the runner
    expect(status() & NEEDS_RESET).toBe(NEEDS_RESET);
    expect(status() & DRIVER_OK).toBe(DRIVER_OK); // the other bits stay
    expect(rig.t.interruptStatus() & VIRTIO_MMIO_INT_CONFIG).toBe(VIRTIO_MMIO_INT_CONFIG);
    expect(rig.signals).toBe(signals0 + 1);
    expect(rig.runner.isActive).toBe(false);
    expect(rig.backend.take()).toEqual([{ op: 'process', index: 0 }, { op: 'reset' }]);
    expect(stats()).toMatchObject({ needsReset: 1, logSuppressed: 0 });
    expect(rig.logs).toEqual(['virtio-test: device needs reset: backend bug']);

    // Broken: kicks and control wake-ups do nothing, even once the backend would work again.
    rig.backend.throwOnProcess = undefined;
    rig.runner.onKick(0);
    rig.runner.onControl();
    expect(rig.backend.take()).toEqual([]);
    expect(usedIdx(0)).toBe(0);
    expect(rig.signals).toBe(signals0 + 1);

    // The driver resets and re-initialises: served again.
    bringUp([0]);
    expect(status() & NEEDS_RESET).toBe(0);
    expect(rig.runner.isActive).toBe(true);
    post(0);
    rig.runner.onKick(0);
    expect(usedIdx(0)).toBe(1);
    expect(stats()).toMatchObject({ needsReset: 1, activations: 2 });
  });

  it('a queue the device cannot build (QueueNum > QueueNumMax, rings outside RAM) → NEEDS_RESET at DRIVER_OK, no activate()', () => {
    for (const bad of [{ size: 32 }, { desc: RAM + 0x1000 }]) {
      initUpToQueues([0], bad);
      driverOk();
      rig.backend.take();
      const signals0 = rig.signals;
      rig.runner.onControl();
      expect(status() & NEEDS_RESET, JSON.stringify(bad)).toBe(NEEDS_RESET);
      expect(rig.t.interruptStatus() & VIRTIO_MMIO_INT_CONFIG).toBe(VIRTIO_MMIO_INT_CONFIG);
      expect(rig.signals).toBe(signals0 + 1);
      expect(rig.backend.take().some((c) => c.op === 'activate')).toBe(false);
      expect(rig.runner.isActive).toBe(false);
    }
    expect(stats()).toMatchObject({ needsReset: 2, activations: 0 });
    expect(rig.logs[0]).toMatch(/^virtio-test: device needs reset: queue 0: QueueNum 32 > QueueNumMax 16$/);
  });

  it('log lines are rate-limited: 200 NEEDS_RESETs give at most a burst of lines; the rest are counted as suppressed', () => {
    rig.backend.throwOnProcess = new Error('boom');
    const N = 200;
    for (let k = 0; k < N; k++) {
      bringUp([0]);
      rig.runner.onKick(0);
      expect(status() & NEEDS_RESET).toBe(NEEDS_RESET);
    }
    const s = stats();
    // The catch-up pass at activation already throws: one NEEDS_RESET per cycle, the kick is ignored.
    expect(s.needsReset).toBe(N);
    expect(s.activations).toBe(N);
    expect(rig.logs.length).toBeGreaterThanOrEqual(1);
    expect(rig.logs.length).toBeLessThanOrEqual(11); // burst of 10 (+1 if the clock ticked past 2 s)
    expect(s.logSuppressed).toBe(N - rig.logs.length);
    expect(rig.logs.every((l) => l.startsWith('virtio-test: device needs reset: boom'))).toBe(true);
  });
});
