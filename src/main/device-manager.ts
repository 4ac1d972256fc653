// Creates the shared state of the platform's legacy devices, wires COM1's interrupt (an eventfd
// registered as KVM_IRQFD on its GSI) and moves console bytes between the UART and vm.serial on the
// main thread. The vCPU workers serve the guest's register accesses (src/vcpu-worker/legacy-bus.ts).
// Also opens the disk images and wires the virtio-blk devices (VirtioBlockDevices) whose data path
// runs in I/O workers.
import { COM1_GSI } from '../arch/x86_64/layout.js';
import { AcpiSleep } from '../devices/legacy/acpi-sleep.js';
import { I8042 } from '../devices/legacy/i8042.js';
import { PostCode } from '../devices/legacy/post.js';
import { Serial16550 } from '../devices/legacy/serial.js';
import { statSync } from 'node:fs';
import {
  BLK_CONFIG_SIZE,
  BLK_QUEUE_SIZE,
  VIRTIO_BLK_ID_BYTES,
  blockConfigSpace,
  blockDeviceFeatures,
  blockSerial,
  createBlockStats,
} from '../devices/virtio/block/device.js';
import { virtioMmioSlot, type VirtioMmioSlot } from '../devices/virtio/slots.js';
import type { IoWorkerData } from '../io-worker/protocol.js';
import type { KvmAddon } from '../kvm/addon.js';
import type { SlotDescriptor } from '../memory/guest-memory.js';
import { ByteRing } from '../shared/byte-ring.js';
import { VIRTIO_ID_BLOCK, VIRTIO_MMIO_QUEUE_NOTIFY } from '../virtio/constants.js';
import { VirtioMmioTransport } from '../virtio/mmio.js';
import type { LegacyDeviceState, VirtioMmioDeviceState } from '../vcpu-worker/protocol.js';

/** Console output ring: big enough that a guest printing a screenful never waits for the main thread. */
const SERIAL_TX_RING_BYTES = 64 * 1024;
const KVM_IRQFD_FLAG_DEASSIGN = 1;
const KVM_IOEVENTFD_FLAG_DATAMATCH = 1;
const KVM_IOEVENTFD_FLAG_DEASSIGN = 4;

export class LegacyDevices {
  readonly state: LegacyDeviceState;
  private readonly serial: Serial16550;
  private readonly tx: ByteRing;
  private readonly input: Buffer[] = [];
  private closed = false;
  private pumping?: Promise<void>;

  constructor(
    private readonly addon: KvmAddon,
    private readonly vmFd: number,
    private readonly onOutput: (bytes: Buffer) => void,
  ) {
    this.tx = ByteRing.create(SERIAL_TX_RING_BYTES);
    const serialIrqFd = addon.eventfd(0, 0);
    addon.irqfd(vmFd, serialIrqFd, COM1_GSI, 0, -1);
    this.state = {
      serial: Serial16550.createState(),
      serialTx: this.tx.sab,
      serialIrqFd,
      i8042: I8042.createState(),
      post: PostCode.createState(),
      acpiSleep: AcpiSleep.createState(),
    };
    // The main thread only injects input; it never transmits, so its tx is never called.
    this.serial = new Serial16550(this.state.serial, {
      tx: (b) => void this.tx.tryPushByte(b),
      irq: () => addon.eventfdWrite(serialIrqFd, 1n),
    });
    this.pumping = this.pumpOutput();
  }

  private async pumpOutput(): Promise<void> {
    while (!this.closed) {
      this.drain();
      await this.tx.waitAsync(50);
    }
  }

  /** Move everything the guest has written so far to onOutput. */
  drain(): void {
    for (;;) {
      const chunk = this.tx.pop();
      if (chunk.length === 0) return;
      this.onOutput(Buffer.from(chunk));
    }
  }

  /** Console input: into the UART's RX FIFO (and its host-side queue); the rest waits for room. */
  sendToGuest(chunk: Buffer): void {
    if (this.closed) return;
    this.input.push(chunk);
    if (this.input.length === 1) void this.feedInput();
  }

  private async feedInput(): Promise<void> {
    while (!this.closed && this.input.length) {
      const head = this.input[0];
      const n = this.serial.receive(head);
      if (n === head.length) this.input.shift();
      else {
        this.input[0] = head.subarray(n);
        await this.serial.waitRxSpace(100);
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.drain();
    try {
      this.addon.irqfd(this.vmFd, this.state.serialIrqFd, COM1_GSI, KVM_IRQFD_FLAG_DEASSIGN, -1);
    } catch {
      // the VM fd may already be gone; closing the eventfd is what matters
    }
    this.addon.close(this.state.serialIrqFd);
  }
}

// ---- virtio-blk devices -------------------------------------------------------------------------

/** An image opened (and, if writable, locked) for a virtio-blk device. */
export interface OpenedDisk {
  path: string;
  readOnly: boolean;
  fd: number;
  sectors: number;
  serial: Uint8Array;
}

/**
 * Open every disk image: O_RDWR + flock(LOCK_EX|LOCK_NB) for a writable one (refused with one line if
 * another VM holds it), O_RDONLY and no lock for a read-only one. Never creates, truncates or
 * otherwise changes an image. On failure the images opened so far are closed again.
 */
export function openDisks(addon: KvmAddon, disks: ReadonlyArray<{ path: string; readOnly: boolean }>): OpenedDisk[] {
  const c = addon.constants;
  const out: OpenedDisk[] = [];
  try {
    for (const d of disks) {
      let fd: number;
      try {
        fd = addon.openFile(d.path, d.readOnly ? c.O_RDONLY : c.O_RDWR, 0);
      } catch (e) {
        throw new Error(`disk image cannot be opened: ${d.path} (${(e as { code?: string }).code ?? (e as Error).message})`);
      }
      out.push({ path: d.path, readOnly: d.readOnly, fd, sectors: 0, serial: new Uint8Array(VIRTIO_BLK_ID_BYTES) });
      if (!d.readOnly && !addon.tryLockExclusive(fd)) {
        throw new Error(`disk image is in use by another VM (locked): ${d.path}`);
      }
      const size = addon.fileSize(fd);
      if (size % 512n !== 0n) throw new Error(`disk image size ${size} bytes is not a multiple of 512: ${d.path}`);
      if (size / 512n > BigInt(Number.MAX_SAFE_INTEGER) / 512n) throw new Error(`disk image is too large: ${d.path}`);
      const last = out[out.length - 1];
      last.sectors = Number(size / 512n);
      last.serial = blockSerial(d.path, statSync(d.path, { bigint: true }).ino);
    }
  } catch (e) {
    for (const d of out) addon.close(d.fd);
    throw e;
  }
  return out;
}

interface BlkDevice {
  index: number;
  slot: VirtioMmioSlot;
  transport: SharedArrayBuffer;
  controlFd: number;
  queueFds: number[];
  irqFd: number;
  stats: SharedArrayBuffer;
  disk: OpenedDisk;
}

/**
 * The VM's virtio-blk devices, main-thread side: register state in SharedArrayBuffers, eventfds
 * wired to KVM (a KVM_IOEVENTFD per queue on QueueNotify with the queue index as datamatch, a
 * KVM_IRQFD on the device's GSI) and a control eventfd the vCPUs write on status changes. The data
 * path runs in the I/O workers (src/io-worker/worker.ts); this class only sets up and tears down.
 */
export class VirtioBlockDevices {
  readonly devices: BlkDevice[] = [];
  private closed = false;

  constructor(
    private readonly addon: KvmAddon,
    private readonly vmFd: number,
    disks: OpenedDisk[],
  ) {
    try {
      disks.forEach((disk, index) => {
        const slot = virtioMmioSlot(index);
        const transport = VirtioMmioTransport.createState({
          deviceId: VIRTIO_ID_BLOCK,
          deviceFeatures: blockDeviceFeatures(disk.readOnly),
          queueMaxSizes: [BLK_QUEUE_SIZE],
          configSize: BLK_CONFIG_SIZE,
          config: blockConfigSpace(disk),
        });
        const dev: BlkDevice = { index, slot, transport, controlFd: -1, queueFds: [], irqFd: -1, stats: createBlockStats(), disk };
        this.devices.push(dev);
        dev.controlFd = addon.eventfd(0, 0);
        dev.irqFd = addon.eventfd(0, 0);
        addon.irqfd(vmFd, dev.irqFd, slot.gsi, 0, -1);
        const q = addon.eventfd(0, 0);
        dev.queueFds.push(q);
        addon.ioeventfd(vmFd, BigInt(slot.base + VIRTIO_MMIO_QUEUE_NOTIFY), 4, q, KVM_IOEVENTFD_FLAG_DATAMATCH, 0n);
      });
    } catch (e) {
      this.release(false);
      throw e;
    }
  }

  /** What every vCPU worker needs to serve the register windows. */
  vcpuState(): VirtioMmioDeviceState[] {
    return this.devices.map((d) => ({ name: `virtio-blk${d.index}`, base: d.slot.base, size: d.slot.size, state: d.transport, controlFd: d.controlFd, queueFds: d.queueFds }));
  }

  /** What the device's I/O worker needs. */
  workerData(index: number, memory: SlotDescriptor[]): IoWorkerData {
    const d = this.devices[index];
    return {
      kind: 'blk',
      index,
      memory,
      transport: d.transport,
      controlFd: d.controlFd,
      queueFds: d.queueFds,
      irqFd: d.irqFd,
      stats: d.stats,
      disk: { fd: d.disk.fd, readOnly: d.disk.readOnly, sectors: d.disk.sectors, serial: d.disk.serial },
    };
  }

  /** Deassign ioeventfds/irqfds, close eventfds and images (releasing their locks). Call after the I/O workers ended. */
  close(): void {
    this.release(true);
  }

  private release(images: boolean): void {
    if (this.closed) return;
    this.closed = true;
    const a = this.addon;
    const quiet = (f: () => void): void => {
      try {
        f();
      } catch {
        // the VM fd may already be gone; closing the fds is what matters
      }
    };
    for (const d of this.devices) {
      d.queueFds.forEach((fd, q) => {
        quiet(() => a.ioeventfd(this.vmFd, BigInt(d.slot.base + VIRTIO_MMIO_QUEUE_NOTIFY), 4, fd, KVM_IOEVENTFD_FLAG_DATAMATCH | KVM_IOEVENTFD_FLAG_DEASSIGN, BigInt(q)));
        quiet(() => a.close(fd));
      });
      if (d.irqFd >= 0) {
        quiet(() => a.irqfd(this.vmFd, d.irqFd, d.slot.gsi, KVM_IRQFD_FLAG_DEASSIGN, -1));
        quiet(() => a.close(d.irqFd));
      }
      if (d.controlFd >= 0) quiet(() => a.close(d.controlFd));
      if (images) quiet(() => a.close(d.disk.fd));
    }
  }
}
