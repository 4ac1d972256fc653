// Messages between the main thread and a vCPU worker. Everything a worker needs arrives in
// workerData at spawn; afterwards the only traffic is control words in the control block
// (src/shared/control.ts), kicks, and these few messages back to the main thread.
import type { SlotDescriptor } from '../memory/guest-memory.js';
import type { SeccompMode } from '../seccomp/roles.js';

export interface VcpuWorkerData {
  vcpuId: number;
  vcpuCount: number;
  vcpuFd: number;
  /** size of the kvm_run mapping (KVM_GET_VCPU_MMAP_SIZE) */
  runSize: number;
  control: Int32Array;
  memory: SlotDescriptor[];
  devices: LegacyDeviceState;
  /** virtio-mmio register windows this worker serves (shared state; the I/O workers do the rest). */
  virtio: VirtioMmioDeviceState[];
  /** The filter the worker installs right before its first KVM_RUN (role vcpu, src/seccomp/roles.ts). */
  seccomp: SeccompMode;
  /**
   * With a boot timer (VMConfig.bootTimer): when start() began, as process.hrtime.bigint() (CLOCK_MONOTONIC,
   * the same clock in every thread) and as the process's CPU time in µs (process.cpuUsage(), user + system).
   */
  bootTimer?: { startNs: bigint; startCpuUs: number };
  /** benchmark only: port whose exits the addon's C loop consumes (see VMConfig.benchCPioPort) */
  benchCPioPort?: number;
}

/** Shared state of the port-I/O devices every vCPU worker serves. */
export interface LegacyDeviceState {
  serial: SharedArrayBuffer;
  /** guest → host console bytes */
  serialTx: SharedArrayBuffer;
  /** eventfd registered as KVM_IRQFD for COM1's GSI */
  serialIrqFd: number;
  i8042: SharedArrayBuffer;
  /** eventfd registered as KVM_IRQFD for the i8042's keyboard GSI (IRQ 1); a write is one edge */
  kbdIrqFd: number;
  post: SharedArrayBuffer;
  /** hardware-reduced ACPI sleep control/status and reset registers */
  acpiSleep: SharedArrayBuffer;
}

/** One virtio-mmio device as the vCPU workers see it (derived from its placement record). */
export interface VirtioMmioDeviceState {
  name: string;
  /** Registry key (src/devices/virtio/registry.ts): validateFeatures and configWrite come from it. */
  kind: string;
  /** The device's params (its type's prepare()), for those hooks. */
  params: unknown;
  /** Guest-physical base of the register window and its size. */
  base: number;
  size: number;
  /** VirtioMmioTransport.createState */
  state: SharedArrayBuffer;
  /** eventfd written on a Status change the device must act on (DRIVER_OK, FAILED, reset). */
  controlFd: number;
  /** Per-queue eventfds (also the KVM ioeventfds): written when a QueueNotify reaches userspace. */
  queueFds: number[];
}

export type VcpuMessage =
  /** Posted once the worker's modules are loaded, before it waits for its data (src/main/workers.ts). */
  | { type: 'loaded' }
  | { type: 'started'; vcpuId: number; firstRunEpochMs: number }
  | { type: 'ended'; vcpuId: number; exits: number; /** one-line description of a fatal exit */ detail?: string }
  | { type: 'unknown-access'; vcpuId: number; kind: 'pio' | 'mmio'; addr: number; write: boolean }
  /** The guest wrote the boot timer's boot-complete byte: wall and process CPU µs since start() began. */
  | { type: 'boot-complete'; vcpuId: number; wallUs: number; cpuUs: number };
