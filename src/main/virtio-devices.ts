// The VM's virtio-mmio devices, main-thread side (in the role of Firecracker's MMIODeviceManager):
// one place that turns "a device of kind K with options O" into a placed, wired device, and one list
// of placement records from which everything else is derived.
//
// add(kind, options, name) — in this order, undone on failure:
//   1. the kind's prepare() (open and lock an image, create rings and eventfds) → params
//   2. describe(params) → features, queues, config bytes → the shared register state (createState)
//   3. a window and GSI from the resource allocator
//   4. an irqfd on the GSI, a control eventfd, and one KVM ioeventfd per queue on QueueNotify with
//      datamatch = the queue index (a kick never exits to userspace)
//
// From the records: cmdlineWords() (virtio_mmio.device=…), acpiDevices() (DSDT LNRO0005 nodes),
// vcpuState() (what every vCPU worker registers on its MMIO bus), workerData(i) (what device i's I/O
// worker gets). close() deassigns and closes everything, and releases what prepare() took, after the
// I/O workers have ended.
import type { SeccompMode } from '../seccomp/roles.js';
import { createTransportStats } from '../devices/virtio/queue-service.js';
import { VIRTIO_MMIO_QUEUE_NOTIFY } from '../devices/virtio/constants.js';
import { VirtioMmioTransport } from '../devices/virtio/mmio.js';
import { virtioDeviceType, type VirtioDeviceKind } from '../devices/virtio/registry.js';
import type { IoWorkerData } from '../io-worker/protocol.js';
import type { IoEventAddress, VmFd } from '../kvm/vm-fd.js';
import type { SlotDescriptor } from '../memory/guest-memory.js';
import type { VirtioMmioDeviceState } from '../vcpu-worker/protocol.js';
import { MmioResourceAllocator, virtioMmioCmdlineWord, type MmioLayout, type VirtioMmioSlot } from './resources.js';

/** QueueNotify is a 32-bit register: the ioeventfd matches 4-byte writes of the queue index. */
export const VIRTIO_MMIO_NOTIFY_WIDTH = 4;

/** One placed virtio device: where it is, what it shares, and the fds wired to KVM. */
export interface VirtioPlacement {
  /** virtio-blk0, virtio-rng, virtio-console … (log lines, bus names, stats). */
  name: string;
  kind: VirtioDeviceKind;
  slot: VirtioMmioSlot;
  /** The kind's params (from prepare()), given to the vCPU workers and the I/O worker. */
  params: unknown;
  /** VirtioMmioTransport.createState */
  transport: SharedArrayBuffer;
  /** Transport counters (readTransportStats). */
  stats: SharedArrayBuffer;
  controlFd: number;
  queueFds: number[];
  irqFd: number;
  release: () => void;
}

/** A device's QueueNotify register, where its queue ioeventfds listen (datamatch = queue index). */
function queueNotify(p: VirtioPlacement): IoEventAddress {
  return { space: 'mmio', addr: p.slot.base + VIRTIO_MMIO_QUEUE_NOTIFY, len: VIRTIO_MMIO_NOTIFY_WIDTH };
}

export class VirtioMmioDevices {
  readonly placements: VirtioPlacement[] = [];
  private readonly resources: MmioResourceAllocator;
  private closed = false;

  constructor(
    private readonly vm: VmFd,
    layout: MmioLayout = {},
  ) {
    this.resources = new MmioResourceAllocator(layout);
  }

  /** Place one device of `kind` named `name` (see the header). */
  add(kind: VirtioDeviceKind, options: unknown, name: string): VirtioPlacement {
    if (this.closed) throw new Error('virtio devices already closed');
    const type = virtioDeviceType(kind);
    const vm = this.vm;
    const a = vm.addon;
    const prepared = type.prepare(options, { addon: a });
    const p: VirtioPlacement = {
      name,
      kind,
      slot: { base: 0, size: 0, gsi: -1 },
      params: prepared.params,
      transport: new SharedArrayBuffer(0),
      stats: createTransportStats(),
      controlFd: -1,
      queueFds: [],
      irqFd: -1,
      release: prepared.release,
    };
    try {
      const d = type.describe(prepared.params);
      p.transport = VirtioMmioTransport.createState({
        deviceId: type.deviceId,
        deviceFeatures: d.features,
        queueMaxSizes: d.queues.map((q) => q.maxSize),
        configSize: d.config.length,
        config: d.config,
      });
      p.slot = this.resources.allocate();
      p.controlFd = a.eventfd(0, 0);
      p.irqFd = a.eventfd(0, 0);
      vm.registerIrqfd(p.irqFd, p.slot.gsi);
      d.queues.forEach((_, q) => {
        const fd = a.eventfd(0, 0);
        p.queueFds.push(fd);
        vm.registerIoeventfd(fd, queueNotify(p), BigInt(q));
      });
    } catch (e) {
      this.unwire(p);
      throw e;
    }
    this.placements.push(p);
    return p;
  }

  /** Kernel command-line words announcing every device, in placement order. */
  cmdlineWords(): string[] {
    return this.placements.map((p) => virtioMmioCmdlineWord(p.slot));
  }

  /** The DSDT's virtio-mmio nodes. */
  acpiDevices(): VirtioMmioSlot[] {
    return this.placements.map((p) => p.slot);
  }

  /** What every vCPU worker needs to serve the register windows. */
  vcpuState(): VirtioMmioDeviceState[] {
    return this.placements.map((p) => ({
      name: p.name,
      kind: p.kind,
      params: p.params,
      base: p.slot.base,
      size: p.slot.size,
      state: p.transport,
      controlFd: p.controlFd,
      queueFds: p.queueFds,
    }));
  }

  /** What device `index`'s I/O worker needs. */
  workerData(index: number, memory: SlotDescriptor[], seccomp: SeccompMode): IoWorkerData {
    const p = this.placements[index];
    return {
      kind: p.kind,
      name: p.name,
      params: p.params,
      memory,
      transport: p.transport,
      controlFd: p.controlFd,
      queueFds: p.queueFds,
      irqFd: p.irqFd,
      stats: p.stats,
      seccomp,
    };
  }

  /** Deassign ioeventfds/irqfds, close eventfds, release what prepare() took. Call after the I/O workers ended. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.placements) this.unwire(p);
  }

  private unwire(p: VirtioPlacement): void {
    const vm = this.vm;
    const a = vm.addon;
    const quiet = (f: () => void): void => {
      try {
        f();
      } catch {
        // the VM fd may already be gone; closing the fds is what matters
      }
    };
    p.queueFds.forEach((fd, q) => {
      quiet(() => vm.unregisterIoeventfd(fd, queueNotify(p), BigInt(q)));
      quiet(() => a.close(fd));
    });
    p.queueFds = [];
    if (p.irqFd >= 0) {
      quiet(() => vm.unregisterIrqfd(p.irqFd, p.slot.gsi));
      quiet(() => a.close(p.irqFd));
      p.irqFd = -1;
    }
    if (p.controlFd >= 0) quiet(() => a.close(p.controlFd));
    p.controlFd = -1;
    quiet(p.release);
    p.release = () => undefined;
  }
}
