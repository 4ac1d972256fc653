// Messages between the main thread and an I/O worker (one worker_thread per virtio device). The
// worker is spawned before the VM is built; its configuration arrives as the first message. After
// that the data path (kicks, interrupts, register state, guest RAM) never involves the main thread:
// only 'stop' and 'reconfigure' (a new rate limiter) go to the worker, and (rate-limited) log lines
// and 'reconfigured' answers come back.
import type { SlotDescriptor } from '../memory/guest-memory.js';
import type { SeccompMode } from '../seccomp/roles.js';

export interface IoWorkerData {
  /** Registry key (src/devices/virtio/registry.ts). */
  kind: string;
  /** Device name for log lines (virtio-blk0, virtio-rng, …). */
  name: string;
  /** The device's params (its type's prepare()). */
  params: unknown;
  memory: SlotDescriptor[];
  /** virtio-mmio register state (VirtioMmioTransport.createState), shared with every vCPU worker. */
  transport: SharedArrayBuffer;
  /** Written by a vCPU on a Status change that needs the device (DRIVER_OK, FAILED, reset). */
  controlFd: number;
  /** One per queue: the KVM ioeventfd on QueueNotify (datamatch = queue index). */
  queueFds: number[];
  /** Registered as KVM_IRQFD on the device's GSI. */
  irqFd: number;
  /** Transport counters (src/devices/virtio/queue-service.ts readTransportStats). */
  stats: SharedArrayBuffer;
  /** The filter the worker installs once its backend and watchers exist (role io:<kind>, src/seccomp/roles.ts). */
  seccomp: SeccompMode;
}

/**
 * 'stop'; 'reconfigure': the backend's runtime reconfiguration (VirtioDeviceBackend.reconfigure, e.g. a
 * disk's new rate limiter), answered by 'reconfigured' with the same id (error: one line when refused).
 */
export type IoWorkerCommand = { type: 'stop' } | { type: 'reconfigure'; id: number; msg: unknown };

export type IoWorkerMessage =
  /** Posted once the worker's modules are loaded, before it waits for its data (src/main/workers.ts). */
  | { type: 'loaded' }
  | { type: 'log'; name: string; level: 'info' | 'warn' | 'error'; msg: string }
  | { type: 'reconfigured'; id: number; error?: string };
