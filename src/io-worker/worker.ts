// One virtio-blk device: a worker_thread woken through libuv (uv_poll watchers from the addon) on its
// queue ioeventfds and its control eventfd. A kick never exits to userspace on the vCPU: KVM signals
// the queue's ioeventfd, this thread's loop wakes, the worker reads the ring straight out of the
// shared guest RAM, moves data with preadv/pwritev on the guest-RAM buffers, publishes the used
// entries and pulses the irqfd. Register accesses (status, features, queue setup) are served by the
// vCPU workers over the shared transport state; they write the control eventfd when the device must
// act (DRIVER_OK, FAILED, reset). The main thread is on none of these paths.
//
// Guest input never throws out of the loop: a malformed chain completes (IOERR where it has a status
// byte), a broken queue or an exception in the device logic sets DEVICE_NEEDS_RESET.
import { parentPort } from 'node:worker_threads';
import { FileBackend } from '../devices/virtio/block/file-backend.js';
import {
  BlockDevice,
  STAT_INTERRUPTS,
  STAT_NEEDS_RESET,
  STAT_WAKEUPS,
  serviceQueue,
} from '../devices/virtio/block/device.js';
import { loadAddon } from '../kvm/addon.js';
import { GuestMemory } from '../memory/guest-memory.js';
import {
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_STATUS_DEVICE_NEEDS_RESET,
  VIRTIO_STATUS_DRIVER_OK,
  VIRTIO_STATUS_FAILED,
  featureBit,
} from '../virtio/constants.js';
import { VirtioMmioTransport } from '../virtio/mmio.js';
import { SplitQueue } from '../virtio/queue.js';
import type { IoWorkerCommand, IoWorkerData, IoWorkerMessage } from './protocol.js';

const port = parentPort;
if (!port) throw new Error('I/O worker must run in a worker_thread');
const addon = loadAddon();
const data = await new Promise<IoWorkerData>((resolve) => port.once('message', resolve));

function post(m: IoWorkerMessage): void {
  port!.postMessage(m);
}
function log(level: 'info' | 'warn' | 'error', msg: string): void {
  post({ type: 'log', index: data.index, level, msg });
}

const mem = new GuestMemory(data.memory);
const transport = new VirtioMmioTransport(data.transport);
const device = new BlockDevice(
  { sectors: data.disk.sectors, readOnly: data.disk.readOnly, serial: data.disk.serial },
  new FileBackend(addon, data.disk.fd),
  data.stats,
);

/** Reset generation the current queue belongs to (-1: none seen yet). */
let gen = -1;
let queue: SplitQueue | undefined;
let descAddr = 0;
/** NEEDS_RESET was set for this generation: ignore kicks until the driver resets. */
let broken = false;
let stopped = false;

function pulse(): void {
  device.count(STAT_INTERRUPTS);
  addon.eventfdWrite(data.irqFd, 1n);
}

/** Bring the worker's view in line with the registers: drop queues on reset, build them at DRIVER_OK. */
function reconcile(): void {
  for (;;) {
    const g = transport.generation();
    if (g !== gen) {
      gen = g;
      queue = undefined;
      broken = false;
    }
    const st = transport.status();
    if ((st & VIRTIO_STATUS_FAILED) !== 0) queue = undefined; // the driver gave up: serve nothing until a reset
    if (queue || broken) return;
    if ((st & VIRTIO_STATUS_DRIVER_OK) === 0 || (st & (VIRTIO_STATUS_FAILED | VIRTIO_STATUS_DEVICE_NEEDS_RESET)) !== 0) return;
    const qc = transport.queueConfig(0);
    const features = transport.driverFeatures();
    if (transport.generation() !== g) continue; // a reset raced with the reads: start over
    if (!qc.ready) return; // the driver did not enable queue 0: nothing to serve
    if (qc.size > qc.maxSize) throw new Error(`queue 0: QueueNum ${qc.size} > QueueNumMax ${qc.maxSize}`);
    queue = new SplitQueue(mem, {
      size: qc.size,
      descAddr: qc.descAddr,
      driverAddr: qc.driverAddr,
      deviceAddr: qc.deviceAddr,
      eventIdx: (features & featureBit(VIRTIO_F_EVENT_IDX)) !== 0n,
      indirect: (features & featureBit(VIRTIO_F_INDIRECT_DESC)) !== 0n,
    });
    descAddr = qc.descAddr;
    return;
  }
}

function needsReset(e: unknown): void {
  const g = gen;
  broken = true;
  queue = undefined;
  device.count(STAT_NEEDS_RESET);
  log('warn', `virtio-blk${data.index}: device needs reset: ${(e as Error)?.message ?? String(e)}`);
  try {
    if (transport.setNeedsReset(g)) pulse();
  } catch {
    // nothing more we can do; the driver will time out
  }
}

function onWake(_fd: number, _count: bigint, error?: string): void {
  if (stopped) return;
  if (error) {
    log('error', `virtio-blk${data.index}: eventfd watch failed (${error})`);
    return;
  }
  device.count(STAT_WAKEUPS);
  try {
    reconcile();
    const q = queue;
    if (!q) return;
    const g = gen;
    serviceQueue(
      q,
      device,
      mem,
      descAddr,
      (fn) => transport.withRings(g, fn),
      (irq) => {
        if (irq && transport.raiseInterrupt(VIRTIO_MMIO_INT_VRING, g)) pulse();
      },
    );
  } catch (e) {
    needsReset(e);
  }
}

const watchers = [data.controlFd, ...data.queueFds].map((fd) => addon.watchEventfd(fd, onWake));

port.on('message', (m: IoWorkerCommand) => {
  if (m.type !== 'stop' || stopped) return;
  stopped = true;
  for (const id of watchers) addon.unwatch(id);
  post({ type: 'stopped', index: data.index });
  port.close();
});

post({ type: 'ready', index: data.index });
// Kicks or status changes that happened before the watchers existed are still pending in the
// eventfds (their counters), so the first loop turn delivers them.
