// Messages between the main thread and an I/O worker (one worker_thread per virtio device). The
// worker is spawned before the VM is built; its configuration arrives as the first message. After
// that the data path (kicks, interrupts, register state, guest RAM) never involves the main thread:
// only 'stop' goes to the worker, and log lines come back.
import type { SlotDescriptor } from '../memory/guest-memory.js';

export interface BlkWorkerDisk {
  /** Image fd, opened (and locked) by the main thread; the worker only does I/O on it. */
  fd: number;
  readOnly: boolean;
  /** Capacity in 512-byte sectors. */
  sectors: number;
  /** GET_ID answer (20 bytes). */
  serial: Uint8Array;
}

export interface IoWorkerData {
  kind: 'blk';
  /** Device index (0 = /dev/vda). */
  index: number;
  memory: SlotDescriptor[];
  /** virtio-mmio register state (VirtioMmioTransport.createState), shared with every vCPU worker. */
  transport: SharedArrayBuffer;
  /** Written by a vCPU on a Status change that needs the device (DRIVER_OK, FAILED, reset). */
  controlFd: number;
  /** One per queue: the KVM ioeventfd on QueueNotify (datamatch = queue index). */
  queueFds: number[];
  /** Registered as KVM_IRQFD on the device's GSI. */
  irqFd: number;
  /** Counters (src/devices/virtio/block/device.ts readBlockStats). */
  stats: SharedArrayBuffer;
  disk: BlkWorkerDisk;
}

export type IoWorkerCommand = { type: 'stop' };

export type IoWorkerMessage =
  | { type: 'ready'; index: number }
  | { type: 'log'; index: number; level: 'info' | 'warn' | 'error'; msg: string }
  | { type: 'stopped'; index: number };
