// The virtio-mmio reset fence (virtio 1.2 §2.4: once the driver reads Status 0 after writing 0, the
// device must not touch the queues or their buffers any more). The driver's Status=0 write runs in a
// worker_thread, as it does on a vCPU worker (it blocks in Atomics.wait while device work is in
// flight); this thread plays the device's I/O worker: ring accesses in withRings, work on popped
// buffers bracketed by enterWork()/leaveWork() (ActiveQueue.service does exactly that), driven through
// VirtioMmioDeviceRunner as the I/O worker drives it.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import {
  VIRTIO_F_VERSION_1,
  VIRTIO_MMIO_STATUS,
  VIRTIO_STATUS_ACKNOWLEDGE as ACK,
  VIRTIO_STATUS_DRIVER as DRIVER,
  VIRTIO_STATUS_DRIVER_OK as DRIVER_OK,
  VIRTIO_STATUS_FEATURES_OK as FEATURES_OK,
  VIRTQ_DESC_F_WRITE,
  featureBit,
} from '../../src/devices/virtio/constants.js';
import { VirtioMmioDeviceRunner } from '../../src/devices/virtio/activation.js';
import type { ActiveDevice, VirtioDeviceBackend } from '../../src/devices/virtio/device.js';
import { VirtioMmioTransport } from '../../src/devices/virtio/mmio.js';
import { type ActiveQueue, createTransportStats } from '../../src/devices/virtio/queue-service.js';
import type { DescriptorChain } from '../../src/devices/virtio/queue.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { transpileForWorkers } from './transpile-for-workers.js';
import { driverOk, initDriver } from './virtio-driver.js';
import { writeDescriptor } from './virtq-descriptor.js';

// ---- the driver's reset, in a worker --------------------------------------------------------------
// ctl words: GO (this thread → worker: write Status 0 now), STARTED (worker: about to write),
// DONE (worker: the write returned), READY (worker: running and waiting for GO).
const GO = 0;
const STARTED = 1;
const DONE = 2;
const READY = 3;

const root = transpileForWorkers(['devices/virtio/mmio.ts', 'devices/virtio/constants.ts', 'shared/lock.ts'], 'kindling-reset-fence-');
const workerFile = join(root, 'reset-worker.mjs');
writeFileSync(
  workerFile,
  `import { workerData } from 'node:worker_threads';
   import { VirtioMmioTransport } from './devices/virtio/mmio.js';
   const t = new VirtioMmioTransport(workerData.state, { notify: () => undefined });
   const ctl = new Int32Array(workerData.ctl);
   Atomics.store(ctl, ${READY}, 1);
   Atomics.notify(ctl, ${READY});
   while (Atomics.load(ctl, ${GO}) === 0) Atomics.wait(ctl, ${GO}, 0, 1000);
   Atomics.store(ctl, ${STARTED}, 1);
   Atomics.notify(ctl, ${STARTED});
   t.write(${VIRTIO_MMIO_STATUS}, 4, 0); // the driver's reset (blocks while device work is in flight)
   Atomics.store(ctl, ${DONE}, 1);
   Atomics.notify(ctl, ${DONE});`,
);

interface ResetDriver {
  ctl: Int32Array;
  /** Tell the worker to write Status 0. */
  go(): void;
  /** Resolves once the worker's write returned. */
  done: Promise<void>;
}

const workers: Worker[] = [];
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.terminate()));
});

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function resetDriver(state: SharedArrayBuffer): Promise<ResetDriver> {
  const ctl = new Int32Array(new SharedArrayBuffer(16));
  const w = new Worker(workerFile, { workerData: { state, ctl: ctl.buffer } });
  workers.push(w);
  const failed = new Promise<never>((_, reject) => w.once('error', reject));
  await Promise.race([until(() => Atomics.load(ctl, READY) === 1), failed]);
  const done = Promise.race([until(() => Atomics.load(ctl, DONE) === 1, 10_000), failed]);
  done.catch(() => undefined);
  return {
    ctl,
    go: () => {
      Atomics.store(ctl, GO, 1);
      Atomics.notify(ctl, GO);
    },
    done,
  };
}

/** Block this thread for `ms` (the device side is busy: no event-loop turn). */
function busyWait(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

// ---- device and driver set-up ---------------------------------------------------------------------
const RAM = 1 << 20;
const QSIZE = 8;
const DESC = 0x1000;
const AVAIL = 0x2000;
const USED = 0x3000;
const DATA = 0x10000;
const BUF = 512;

function setup() {
  const state = VirtioMmioTransport.createState({ deviceId: 4, deviceFeatures: 0n, queueMaxSizes: [16], configSize: 0 });
  const drv = new VirtioMmioTransport(state, { notify: () => undefined });
  const t = new VirtioMmioTransport(state);
  const buffer = new SharedArrayBuffer(RAM);
  const mem = new GuestMemory([{ slot: 0, gpa: 0, size: RAM, buffer }]);
  initDriver(drv, featureBit(VIRTIO_F_VERSION_1), [{ index: 0, size: QSIZE, desc: DESC, avail: AVAIL, used: USED }]);
  driverOk(drv);
  // Four device-writable buffers posted: one batch for the device.
  for (let i = 0; i < 4; i++) {
    writeDescriptor(mem, DESC + 16 * i, DATA + BUF * i, BUF, VIRTQ_DESC_F_WRITE);
    mem.write16(AVAIL + 4 + 2 * i, i);
  }
  mem.write16(AVAIL + 2, 4);
  return { state, drv, t, mem, buffer };
}

describe('virtio-mmio reset fence (virtio 1.2 §2.4)', () => {
  it('a driver Status=0 write waits for in-flight device work: Status does not read 0 until leaveWork()', async () => {
    const { state, drv, t } = setup();
    const gen = t.generation();
    // The device took buffers and works on them (as ActiveQueue.service: enterWork inside withRings).
    expect(t.withRings(gen, () => (t.enterWork(), true))).toBe(true);
    expect(t.workInFlight()).toBe(1);

    const reset = await resetDriver(state);
    reset.go();
    await until(() => Atomics.load(reset.ctl, STARTED) === 1);
    await new Promise((r) => setTimeout(r, 300));
    // The write has not completed, the registers are untouched, the generation is the old one…
    expect(Atomics.load(reset.ctl, DONE)).toBe(0);
    expect(drv.read(VIRTIO_MMIO_STATUS, 4)).toBe(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    expect(t.generation()).toBe(gen);
    // …but the reset is pending: the device can no longer start new ring work of this generation.
    expect(t.withRings(gen, () => 1)).toBeUndefined();

    t.leaveWork();
    await reset.done;
    expect(drv.read(VIRTIO_MMIO_STATUS, 4)).toBe(0);
    expect(t.generation()).not.toBe(gen);
    expect(t.withRings(gen, () => 1)).toBeUndefined();
    expect(t.withRings(t.generation(), () => 1)).toBe(1);
  });

  it('a batch straddling the reset publishes nothing and writes nothing into guest RAM after Status reads 0', async () => {
    const { state, drv, t, mem, buffer } = setup();
    const reset = await resetDriver(state);
    const statusAtWrites: number[] = [];
    let duringBatch: { status: number; done: number; resetPending: boolean } | undefined;
    let result: unknown = 'not called';
    let queue: ActiveQueue | undefined;

    /** The device's work on one chain: "I/O" into the chain's buffer, in pieces. */
    const handle = (chain: DescriptorChain): number => {
      if (chain.head === 0) {
        // The driver resets while this batch is in flight.
        reset.go();
        Atomics.wait(reset.ctl, STARTED, 0, 5000);
        busyWait(200);
        duringBatch = {
          status: drv.read(VIRTIO_MMIO_STATUS, 4),
          done: Atomics.load(reset.ctl, DONE),
          resetPending: t.withRings(t.generation(), () => 1) === undefined,
        };
      }
      for (const s of chain.writable) {
        for (let off = 0; off < s.length; off += 128) {
          statusAtWrites.push(t.status());
          new Uint8Array(s.buffer, s.offset + off, Math.min(128, s.length - off)).fill(0xa0 + chain.head);
        }
      }
      return chain.writableBytes;
    };
    const backend: VirtioDeviceBackend = {
      activate: (d: ActiveDevice) => void (queue = d.queues[0]),
      processQueue: (i) => void (result = queue && i === 0 ? queue.service(handle) : 'no queue'),
      reset: () => undefined,
      save: () => ({}),
      restore: () => undefined,
    };
    const runner = new VirtioMmioDeviceRunner({ name: 'virtio-fence', transport: t, mem, backend, signal: () => undefined, stats: createTransportStats(), log: () => undefined });
    runner.onControl(); // DRIVER_OK: activate, and the catch-up pass serves the posted batch

    // The batch was in flight when the driver wrote 0: the write had not returned, Status was not 0.
    expect(duringBatch).toEqual({ status: ACK | DRIVER | FEATURES_OK | DRIVER_OK, done: 0, resetPending: true });
    // Every write into guest RAM happened before Status read 0.
    expect(statusAtWrites.length).toBe(4 * (BUF / 128));
    expect(statusAtWrites.filter((s) => s === 0)).toEqual([]);
    // The batch's completions were not published: service() saw the reset.
    expect(result).toBeUndefined();
    expect(mem.read16(USED + 2)).toBe(0);

    await reset.done;
    expect(drv.read(VIRTIO_MMIO_STATUS, 4)).toBe(0);
    // From here on the old generation must not change a byte of guest RAM.
    const snapshot = Buffer.from(new Uint8Array(buffer).slice());
    expect(queue!.service(handle)).toBeUndefined();
    expect(queue!.push(0, BUF)).toBe(false);
    expect(queue!.work(() => mem.fill(DATA, BUF, 0xee))).toBeUndefined();
    expect(queue!.pop()).toBeUndefined();
    runner.onKick(0);
    runner.onControl();
    expect(Buffer.from(buffer).equals(snapshot)).toBe(true);
    expect(mem.read16(USED + 2)).toBe(0);
    expect(statusAtWrites.length).toBe(4 * (BUF / 128)); // handle() never ran again
  });
});
