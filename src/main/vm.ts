// The VM object: builds a KVM virtual machine in phases (create the VM, guest memory, devices, vCPUs,
// then boot from a kernel; a restore path will replace only the last), runs each vCPU in its own
// worker_thread and each virtio device in its own I/O worker, exposes the consoles as Duplex streams
// and reports how the VM ended. The main thread only sets things up, moves console bytes, and tears
// down; it is never on a vCPU's exit path nor on a device's I/O path.
import { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';
import type { Worker } from 'node:worker_threads';
import { KVM_IDENTITY_MAP_START, KVM_TSS_START } from '../arch/x86_64/layout.js';
import { memorySlots } from '../arch/x86_64/memory-map.js';
import { vcpuCpuid } from '../arch/x86_64/cpuid.js';
import { writeAcpiTables } from '../arch/x86_64/acpi/index.js';
import { writeMpTable } from '../arch/x86_64/mptable.js';
import { bootMsrs, toMsrArrays } from '../arch/x86_64/msr.js';
import { bootFpu, bootRegs, bootSregs, configureLapic, writeBootGdt, writeIdentityPageTables } from '../arch/x86_64/regs.js';
import { loadAddon, type KvmAddon } from '../kvm/addon.js';
import { Kvm, PVM_WARNING, detectPvm } from '../kvm/system.js';
import type { VcpuFd } from '../kvm/vcpu-fd.js';
import { VmFd } from '../kvm/vm-fd.js';
import { loadKernel, type BootSetup } from '../loader/index.js';
import { GuestMemory, type SlotDescriptor } from '../memory/guest-memory.js';
import {
  CTRL_EXIT_CODE,
  CTRL_EXIT_REASON,
  CTRL_PARKED,
  CTRL_RUN_STATE,
  CTRL_STARTED,
  RUN_STATE_PAUSED,
  RUN_STATE_RUNNING,
  createControlBlock,
  ctrlKickSlot,
  exitReasonName,
  recordExit,
  setRunState,
  type ExitReason,
} from '../shared/control.js';
import type { VcpuMessage, VcpuWorkerData } from '../vcpu-worker/protocol.js';
import { takeIoWorker, takeVcpuWorker, workerLoaded } from './workers.js';
import { blockConfigSpace, readBlockStats, type BlockStats } from '../devices/virtio/block/device.js';
import type { BlockParams } from '../devices/virtio/block/index.js';
import { openDisk } from '../devices/virtio/block/image.js';
import { VirtioMmioTransport } from '../devices/virtio/mmio.js';
import { VIRTIO_MMIO_INT_CONFIG, VIRTIO_STATUS_DRIVER_OK } from '../devices/virtio/constants.js';
import type { RateLimiterConfig } from '../devices/rate-limiter.js';
import { ConsoleHost } from '../devices/virtio/console/host.js';
import type { ConsoleParams } from '../devices/virtio/console/index.js';
import { readNetStats, type NetParams, type NetStats } from '../devices/virtio/net/index.js';
import { DeferredVsock, VsockBridge, type VsockApi } from '../devices/virtio/vsock/bridge.js';
import { readVsockStats, type VsockParams } from '../devices/virtio/vsock/index.js';
import type { VsockCounters } from '../devices/virtio/vsock/muxer.js';
import { readTransportStats, type TransportStats } from '../devices/virtio/queue-service.js';
import type { IoWorkerMessage } from '../io-worker/protocol.js';
import { KVM_CLOCK_DATA_CLOCK, KVM_CLOCK_DATA_FLAGS, KVM_PIT_SPEAKER_DUMMY } from '../kvm/structs.js';
import { RateLimiter } from '../shared/rate-limit.js';
import { checkRateLimiter, resolveConfig, takeConfigFiles, virtioDevicePlan, withDeviceWords, type ResolvedConfig, type VMConfig } from './config.js';
import { LegacyDevices } from './legacy-devices.js';
import { socketDirFds } from './socket-files.js';
import { installSeccomp } from '../seccomp/install.js';
import { bootTimeLine, type BootTime } from '../devices/legacy/boot-timer.js';
import { VirtioMmioDevices, type VirtioPlacement } from './virtio-devices.js';
import { createLogger, type Logger } from './log.js';
import { type AgentWaitOptions, VmAgent, type VmExecOptions, type VmExecProcess } from './exec.js';
import type { AgentClient, FileInfo } from '../agent/client.js';
import type { Readable } from 'node:stream';

export type VMState = 'created' | 'starting' | 'running' | 'paused' | 'stopping' | 'stopped';

export interface VMExit {
  reason: ExitReason;
  exitCode: number;
  /** one-line description of an abnormal end (triple fault, KVM error, …) */
  detail?: string;
}

export interface VMTimings {
  /** epoch ms when start() was called */
  start: number;
  /** epoch ms when the boot vCPU entered KVM_RUN for the first time */
  firstRun?: number;
  /** epoch ms when the VM ended */
  end?: number;
  /** With a boot timer: wall and process CPU µs from start() to the guest's first boot-complete write. */
  bootComplete?: BootTime;
}

/** One virtio device's counters: the transport's and, by kind, the device's own. */
export interface VirtioDeviceStats {
  name: string;
  kind: string;
  transport: TransportStats;
}

/** @internal Benchmark and test hooks that are not part of VMConfig. */
export interface VMInternalOptions {
  /** Exits to this port are consumed by the addon's C loop (benchRunPioLoop) instead of the JS loop. */
  benchCPioPort?: number;
}

/** Most distinct unhandled addresses remembered (each is logged once; beyond this, rate-limited). */
const UNKNOWN_SEEN_MAX = 4096;
const STOP_GRACE_MS = 2000;
/** How long an I/O worker may take to finish its current batch and leave after 'stop'. */
const IO_STOP_GRACE_MS = 5000;

/** Every VM that has vCPU threads, so process exit can kick them out of KVM_RUN. */
const liveVms = new Set<VM>();
let exitHookInstalled = false;
let pvmWarned = false;
/** Whether a VM with seccompThreads 'all' filtered this process (a second one cannot be filtered again). */
let processFiltered = false;
const FILTERED_PROCESS = "this process is filtered for another VM (seccompThreads 'all'): one VM per such process";

function installExitHook(addon: KvmAddon): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // process.exit() waits for worker threads; a worker inside KVM_RUN never returns on its own.
  process.on('exit', () => {
    for (const vm of liveVms) vm.kickAllForExit();
    addon.kickAll();
  });
}

export class VM extends EventEmitter {
  readonly config: ResolvedConfig;
  /** The guest's COM1 (16550 UART). */
  readonly serial: Duplex;
  /** The guest's virtio-console (hvc0), when config.console is 'virtio'. */
  readonly console?: Duplex;
  /** The guest's virtio-vsock, when config.vsock is set: connect(port) / listen(port, onSocket), in-process. */
  readonly vsock?: VsockApi;
  readonly timings: VMTimings = { start: 0 };
  /** The kernel command line the guest was given (after start()). */
  cmdline = '';
  /** How the kernel was booted (after start()). */
  boot?: BootSetup;

  private _state: VMState = 'created';
  private bootTimerStart?: { startNs: bigint; startCpuUs: number };
  private readonly log: Logger;
  private kvm?: Kvm;
  private vmFd?: VmFd;
  private vcpuFds: VcpuFd[] = [];
  private workers: Worker[] = [];
  private exitedWorkers = new Set<Worker>();
  private memory?: GuestMemory;
  private devices?: LegacyDevices;
  private ioWorkers: Worker[] = [];
  private ioExited = new Set<Worker>();
  /** Pending 'reconfigure' commands by id. */
  private readonly reconfigs = new Map<number, { worker: Worker; resolve: () => void; reject: (e: Error) => void }>();
  private reconfigSeq = 0;
  private virtio?: VirtioMmioDevices;
  private consoleHost?: ConsoleHost;
  private vsockHandle?: DeferredVsock;
  /** The guest's exec agent over vm.vsock (./exec.ts), made on the first exec/writeFile/readFile. */
  private agentHandle?: VmAgent;
  /** vm.console writes before the device exists (before start()). */
  private consoleInput: Array<{ chunk: Buffer; cb: (e?: Error | null) => void }> = [];
  private readonly internal: VMInternalOptions;
  private readonly ctrl: Int32Array;
  private details: string[] = [];
  private exitPromise: Promise<VMExit>;
  private resolveExit!: (e: VMExit) => void;
  private unknownSeen = new Set<string>();
  private readonly unknownLimiter = new RateLimiter({ burst: 20, perSecond: 1 });
  private ended = false;
  private pausedClock?: Uint8Array;

  constructor(config: VMConfig, internal: VMInternalOptions = {}) {
    super();
    // A filtered process can neither read a kernel nor load a new worker's code, nor take another filter.
    if (processFiltered) throw new Error(FILTERED_PROCESS);
    this.config = resolveConfig(config);
    this.internal = internal;
    this.log = createLogger(this.config.logLevel);
    this.ctrl = createControlBlock(this.config.vcpus);
    this.exitPromise = new Promise((r) => (this.resolveExit = r));
    const vm = this;
    this.serial = new Duplex({
      read() {
        vm.devices?.resume();
      },
      write(chunk: Buffer, _enc, cb) {
        vm.devices?.sendToGuest(chunk);
        cb();
      },
    });
    if (this.config.vsock) this.vsock = this.vsockHandle = new DeferredVsock();
    if (this.config.console === 'virtio') {
      this.console = new Duplex({
        read() {
          vm.consoleHost?.resume();
        },
        write(chunk: Buffer, _enc, cb) {
          if (vm.consoleHost) vm.consoleHost.send(chunk).then(() => cb(), cb);
          else if (vm.ended) cb();
          else vm.consoleInput.push({ chunk, cb });
        },
      });
    }
  }

  get state(): VMState {
    return this._state;
  }

  private setState(s: VMState): void {
    if (this._state === s) return;
    this._state = s;
    this.emit('state', s);
    this.emit(s);
  }

  /** Build the VM and start its vCPUs. Resolves once every vCPU worker is running. */
  async start(): Promise<void> {
    if (this._state !== 'created') throw new Error(`VM.start(): VM is ${this._state}`);
    this.setState('starting');
    this.timings.start = performance.timeOrigin + performance.now();
    if (this.config.bootTimer) {
      const cpu = process.cpuUsage();
      this.bootTimerStart = { startNs: process.hrtime.bigint(), startCpuUs: cpu.user + cpu.system };
    }
    // The workers boot their isolates and load their modules while this thread builds the VM.
    const running = this.spawnVcpus();
    this.spawnIoWorkers();
    try {
      if (processFiltered) throw new Error(FILTERED_PROCESS);
      this.build();
      // Every thread of the process from here (kindling's own process): once the workers have loaded
      // their code, before they add their own filters.
      if (this.config.seccompThreads === 'all' && this.config.seccomp !== 'off') {
        // pino is loaded while the workers finish loading theirs (measured: the workers are the later
        // ones in most runs, so this costs no wall time).
        this.log.ready();
        await Promise.all([...this.workers, ...this.ioWorkers].map((w) => workerLoaded(w)));
        this.filterProcess();
      }
    } catch (e) {
      this.ended = true;
      for (const w of this.workers) void w.terminate();
      for (const w of this.ioWorkers) void w.terminate();
      liveVms.delete(this);
      this.teardown();
      this.setState('stopped');
      this.resolveExit({ reason: 'error', exitCode: 1, detail: (e as Error).message });
      throw e;
    }
    this.configureIoWorkers();
    this.configureVcpus();
    await running;
    if ((this._state as VMState) === 'starting') this.setState('running');
    else if (this.ended && this.details.length && Atomics.load(this.ctrl, CTRL_STARTED) < this.config.vcpus) {
      // The vCPUs never ran (a worker failed to start): that is a start() failure, not a guest exit.
      throw new Error(this.details.join('; '));
    }
  }

  /**
   * Build the VM in phases. A restore from a snapshot will reuse every phase but bootFromKernel().
   * Throws one clear line (the caller tears down what was built).
   */
  private build(): void {
    const cfg = this.config;
    // The kernel and initrd as resolveConfig() read them from the fds it checked (regular files,
    // sizes against RAM, the image checked as loadKernel() will load it): nothing is reopened.
    const { kernel: kernelImage, initrd } = takeConfigFiles(cfg);
    this.createVm();
    this.createMemory();
    this.attachDevices();
    this.createVcpus();
    this.bootFromKernel(kernelImage, initrd);
  }

  /**
   * The process-wide filter (role vmm, TSYNC) for a process kindling owns: the VM's device kinds, the
   * directories of the sockets kindling removes on exit, passt's pid. The workers have not installed
   * theirs yet, so every thread takes this one; theirs then stack on it.
   */
  private filterProcess(): void {
    const placements = this.virtio?.placements ?? [];
    const childPids = placements.flatMap((p) => (p.kind === 'net' && (p.params as NetParams).passtPid !== undefined ? [(p.params as NetParams).passtPid!] : []));
    installSeccomp(loadAddon(), { kind: 'vmm', devices: [...new Set(placements.map((p) => p.kind))], unlinkDirFd: socketDirFds(), childPids }, this.config.seccomp);
    processFiltered = true;
  }

  /** /dev/kvm, the VM fd, TSS and identity map, in-kernel irqchip and PIT. */
  private createVm(): void {
    const kvm = (this.kvm = Kvm.open());
    // Only once /dev/kvm opened: a host with the kvm-pvm module but no /dev/kvm gets just that error.
    if (detectPvm() && !pvmWarned) {
      pvmWarned = true;
      if (this.listenerCount('warning') > 0) this.emit('warning', PVM_WARNING);
      else this.log.warn(PVM_WARNING);
    }
    if (this.config.vcpus > kvm.maxVcpus) throw new Error(`--vcpus ${this.config.vcpus} is more than this host's KVM allows (${kvm.maxVcpus})`);
    const vm = (this.vmFd = VmFd.create(kvm.addon, kvm.fd));
    vm.setTssAddr(KVM_TSS_START);
    vm.setIdentityMapAddr(KVM_IDENTITY_MAP_START);
    vm.createIrqchip();
    vm.createPit2(KVM_PIT_SPEAKER_DUMMY);
  }

  /** Guest RAM: one external SharedArrayBuffer per KVM memory slot. */
  private createMemory(): void {
    const vm = this.vmFd!;
    const slots: SlotDescriptor[] = memorySlots(this.config.memBytes).map((s) => {
      const buffer = vm.addon.allocGuestMemory(s.size);
      vm.setUserMemoryRegion(s.slot, 0, s.gpa, buffer, 0, s.size);
      return { ...s, buffer };
    });
    this.memory = new GuestMemory(slots);
  }

  /**
   * Legacy devices and the virtio devices in placement order (virtioDevicePlan: disks first, the
   * first is /dev/vda, then virtio-console, then virtio-rng). A locked or unusable image is refused
   * here with one line.
   */
  private attachDevices(): void {
    const vm = this.vmFd!;
    const virtio = (this.virtio = new VirtioMmioDevices(vm, { bootTimer: this.config.bootTimer }));
    for (const d of virtioDevicePlan(this.config)) {
      const p = virtio.add(d.kind, d.options, d.name);
      if (d.kind === 'console') {
        this.consoleHost = new ConsoleHost(vm.addon, p.params as ConsoleParams, (b) => this.console!.push(b));
        for (const { chunk, cb } of this.consoleInput.splice(0)) this.consoleHost.send(chunk).then(() => cb(), cb);
      }
      if (d.kind === 'vsock') this.vsockHandle!.attach(new VsockBridge(vm.addon, p.params as VsockParams));
    }
    this.devices = new LegacyDevices(vm, (bytes) => this.serial.push(bytes));
  }

  /** One vCPU fd per vCPU with CPUID (its APIC id), the boot MSRs and LAPIC LINT0/LINT1 set up. */
  private createVcpus(): void {
    const cfg = this.config;
    void this.kvm!.vcpuMmapSize; // asked now, before any process-wide filter (configureVcpus uses it)
    const supported = this.kvm!.supportedCpuid();
    const msrs = toMsrArrays(bootMsrs());
    for (let id = 0; id < cfg.vcpus; id++) {
      const vcpu = this.vmFd!.createVcpu(id);
      this.vcpuFds.push(vcpu);
      vcpu.setCpuid2(vcpuCpuid(supported, { vcpuId: id, vcpuCount: cfg.vcpus }));
      const n = vcpu.setMsrs(msrs.indices, msrs.values);
      if (n !== msrs.indices.length) {
        throw new Error(`KVM_SET_MSRS set ${n} of ${msrs.indices.length} MSRs (first rejected: 0x${msrs.indices[n].toString(16)})`);
      }
      vcpu.setLapic(configureLapic(vcpu.getLapic()));
    }
  }

  /** Firmware tables, the kernel and its boot structures, and the boot vCPU's entry registers. */
  private bootFromKernel(kernelImage: Buffer, initrd: Buffer | undefined): void {
    const cfg = this.config;
    const mem = this.memory!;
    const virtio = this.virtio!;
    // Firmware tables so an unmodified Linux finds every CPU (MP table for acpi=off, ACPI otherwise).
    writeMpTable(mem, { vcpus: cfg.vcpus });
    const { rsdpAddr } = writeAcpiTables(mem, { vcpus: cfg.vcpus, virtioDevices: virtio.acpiDevices() });
    const cmdline = withDeviceWords(cfg.cmdline, virtio.cmdlineWords());
    const boot = (this.boot = loadKernel(mem, kernelImage, { cmdline, initrd, memBytes: cfg.memBytes, rsdpAddr }));
    this.cmdline = boot.cmdline;
    writeBootGdt(mem, boot.protocol);
    const cr3 = boot.protocol === 'linux64' ? writeIdentityPageTables(mem) : undefined;
    const vcpu = this.vcpuFds[0];
    vcpu.setSregs(bootSregs(vcpu.getSregs(), boot.protocol, cr3));
    vcpu.setRegs(bootRegs(boot.protocol, boot.entry, boot.bootInfoAddr));
    vcpu.setFpu(bootFpu());
    this.log.info({ kernel: cfg.kernel, kind: boot.kind, entry: boot.entry, vcpus: cfg.vcpus, memBytes: cfg.memBytes }, 'vm built');
  }

  /** Send each vCPU worker what it needs to run (after build()). */
  private configureVcpus(): void {
    const kvm = this.kvm!;
    const runSize = kvm.vcpuMmapSize;
    const memory = this.memory!.descriptors();
    this.workers.forEach((w, id) => {
      const data: VcpuWorkerData = {
        vcpuId: id,
        vcpuCount: this.config.vcpus,
        vcpuFd: this.vcpuFds[id].fd,
        runSize,
        control: this.ctrl,
        memory,
        devices: this.devices!.state,
        virtio: this.virtio?.vcpuState() ?? [],
        seccomp: this.config.seccomp,
        ...(this.bootTimerStart ? { bootTimer: this.bootTimerStart } : {}),
        benchCPioPort: this.internal.benchCPioPort,
      };
      w.postMessage(data);
    });
  }

  /**
   * Start one I/O worker per virtio device (virtioDevicePlan: the devices attachDevices places, in
   * its order); each waits for its configuration (configureIoWorkers).
   */
  private spawnIoWorkers(): void {
    for (const { name } of virtioDevicePlan(this.config)) {
      // Prespawned by the CLI (./workers.ts) if it could, else started now.
      const w = takeIoWorker(name);
      this.ioWorkers.push(w);
      w.on('message', (m: IoWorkerMessage) => {
        if (m.type === 'log') this.log[m.level]({ device: m.name }, m.msg);
        else if (m.type === 'reconfigured') {
          const p = this.reconfigs.get(m.id);
          this.reconfigs.delete(m.id);
          if (m.error === undefined) p?.resolve();
          else p?.reject(new Error(m.error));
        }
      });
      w.on('error', (e) => {
        // The device is dead; the guest sees its requests time out. The VM itself keeps running.
        this.log.error({ device: name, err: e.message }, 'I/O worker failed');
        this.emit('device-error', { device: name, error: e });
      });
      w.on('exit', () => {
        this.ioExited.add(w);
        for (const [id, p] of this.reconfigs) {
          if (p.worker !== w) continue;
          this.reconfigs.delete(id);
          p.reject(new Error(`${name}: its I/O worker exited`));
        }
      });
    }
  }

  private configureIoWorkers(): void {
    const memory = this.memory!.descriptors();
    const virtio = this.virtio!;
    if (virtio.placements.length !== this.ioWorkers.length) throw new Error('internal: I/O workers and virtio devices differ in number');
    this.ioWorkers.forEach((w, i) => w.postMessage(virtio.workerData(i, memory, this.config.seccomp)));
  }

  /** Ask every I/O worker to stop (it finishes its current batch), terminate the ones that do not. */
  private async stopIoWorkers(): Promise<void> {
    await Promise.all(
      this.ioWorkers.map(async (w) => {
        if (this.ioExited.has(w)) return;
        const exited = new Promise<void>((r) => w.once('exit', () => r()));
        w.postMessage({ type: 'stop' });
        const timer = setTimeout(() => void w.terminate(), IO_STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }),
    );
  }

  /**
   * Replace disk `index`'s rate limiter on the running VM (Firecracker's PATCH /drives rate_limiter):
   * its I/O worker takes the new buckets (full ones: budgets start full) and serves the queue again.
   * `null` removes the limiter. Resolves when the worker has applied it.
   */
  setDiskRateLimiter(index: number, rate: RateLimiterConfig | null): Promise<void> {
    return this.reconfigureDevice('blk', index, { rate }, { rate });
  }

  /**
   * Swap disk `index`'s backing file on the running VM (Firecracker's PATCH /drives path_on_host; how
   * Kata hot-plugs container disks): `path` is opened and locked as the disk was (same read-only
   * mode; a refusal is one ConfigError line and the old image stays), the device's I/O worker moves
   * to it between two requests, the old image is closed (its lock released), and the guest sees the
   * new capacity in config space with a config-change interrupt (Linux's virtio_blk re-reads it and
   * resizes the disk).
   */
  async swapDisk(index: number, path: string): Promise<void> {
    const { p } = this.placementOf('blk', index);
    const addon = this.kvm?.addon;
    if (!addon) throw new RangeError(`no disk ${index} (the VM has ${this.blockStats().length})`); // stopped: its devices are gone
    const params = p.params as BlockParams;
    const d = openDisk(addon, { path, readOnly: params.readOnly });
    try {
      await this.reconfigureDevice('blk', index, { medium: { fd: d.fd, sectors: d.sectors } }, {});
    } catch (e) {
      addon.close(d.fd);
      throw e;
    }
    const oldFd = params.fd;
    params.fd = d.fd;
    params.path = d.path;
    params.sectors = d.sectors;
    p.release = () => addon.close(d.fd);
    addon.close(oldFd);
    const t = new VirtioMmioTransport(p.transport);
    t.setConfig(blockConfigSpace(params).subarray(0, 8), 0); // capacity, le64 at offset 0
    if (t.status() & VIRTIO_STATUS_DRIVER_OK && t.raiseInterrupt(VIRTIO_MMIO_INT_CONFIG)) addon.eventfdWrite(p.irqFd, 1n);
  }

  /**
   * Replace NIC `index`'s rate limiters on the running VM (PATCH /network-interfaces): `rx` / `tx`
   * undefined keeps that direction's limiter, null removes it, a config replaces it (full buckets).
   */
  setNetRateLimiters(index: number, rates: { rx?: RateLimiterConfig | null; tx?: RateLimiterConfig | null }): Promise<void> {
    return this.reconfigureDevice('net', index, { rxRate: rates.rx, txRate: rates.tx }, { rx: rates.rx, tx: rates.tx });
  }

  /** Device `index` of `kind` (disks, NICs: in placement order) and its placement index; a RangeError line when there is none. */
  private placementOf(kind: string, index: number): { p: VirtioPlacement; i: number } {
    const of = (this.virtio?.placements ?? []).map((p, i) => ({ p, i })).filter(({ p }) => p.kind === kind);
    const what = kind === 'blk' ? 'disk' : 'network interface';
    if (!Number.isInteger(index) || index < 0 || index >= of.length) throw new RangeError(`no ${what} ${index} (the VM has ${of.length})`);
    return of[index];
  }

  /** Send device `index` of `kind` (in placement order) a backend reconfiguration; resolves when applied. */
  private reconfigureDevice(kind: string, index: number, msg: object, limiters: Record<string, RateLimiterConfig | null | undefined>): Promise<void> {
    let i: number;
    try {
      i = this.placementOf(kind, index).i;
      // The same check as a VMConfig's limiters (resolveConfig): one ConfigError line naming the bucket.
      for (const [name, rate] of Object.entries(limiters)) if (rate) checkRateLimiter(rate, name);
    } catch (e) {
      return Promise.reject(e);
    }
    const what = kind === 'blk' ? 'disk' : 'network interface';
    const w = this.ioWorkers[i];
    if (!w || this.ioExited.has(w)) return Promise.reject(new Error(`${what} ${index}: its I/O worker is not running`));
    const id = ++this.reconfigSeq;
    return new Promise<void>((resolve, reject) => {
      this.reconfigs.set(id, { worker: w, resolve, reject });
      w.postMessage({ type: 'reconfigure', id, msg });
    });
  }

  /** Per-disk virtio-blk counters (requests, bytes, wake-ups, interrupts, …), readable at any time. */
  blockStats(): BlockStats[] {
    return (this.virtio?.placements ?? []).filter((p) => p.kind === 'blk').map((p) => readBlockStats((p.params as BlockParams).stats, p.stats));
  }

  /** Per-NIC virtio-net counters (frames, bytes, drops, busy-polled passes, throttles, wake-ups, …), in --net order. */
  netStats(): NetStats[] {
    return (this.virtio?.placements ?? []).filter((p) => p.kind === 'net').map((p) => readNetStats((p.params as NetParams).counters, p.stats));
  }

  /** virtio-vsock's counters (connections, packets, bytes, each kind of hostile packet), when config.vsock is set. */
  vsockStats(): VsockCounters | undefined {
    const p = this.virtio?.placements.find((x) => x.kind === 'vsock');
    return p ? readVsockStats(p.params as VsockParams) : undefined;
  }

  /** Every virtio device's transport counters (wake-ups, interrupts, NEEDS_RESET, …), in placement order. */
  virtioStats(): VirtioDeviceStats[] {
    return (this.virtio?.placements ?? []).map((p) => ({ name: p.name, kind: p.kind, transport: readTransportStats(p.stats) }));
  }

  /** Start one worker per vCPU; they wait for configureVcpus(). Resolves when every vCPU entered its run loop. */
  private spawnVcpus(): Promise<void> {
    installExitHook(loadAddon());
    liveVms.add(this);
    let started = 0;
    return new Promise<void>((resolve) => {
      for (let id = 0; id < this.config.vcpus; id++) {
        // Prespawned by the CLI (./workers.ts) if it could, else started now.
        const w = takeVcpuWorker(id);
        this.workers.push(w);
        w.on('message', (m: VcpuMessage) => {
          if (m.type === 'started') {
            if (m.vcpuId === 0) {
              this.timings.firstRun = m.firstRunEpochMs;
              this.emit('firstRun', m.firstRunEpochMs);
            }
            if (++started === this.config.vcpus) resolve();
          } else if (m.type === 'ended') {
            if (m.detail) this.details.push(m.detail);
          } else if (m.type === 'boot-complete') {
            const t: BootTime = { wallUs: m.wallUs, cpuUs: m.cpuUs };
            this.timings.bootComplete ??= t;
            this.log.debug({ vcpu: m.vcpuId, ...t }, bootTimeLine(t));
            this.emit('boot-time', t);
          } else if (m.type === 'unknown-access') {
            // Once per address, and rate-limited: a guest can touch any number of addresses.
            const key = `${m.kind}:${m.addr}`;
            if (!this.unknownSeen.has(key)) {
              if (this.unknownSeen.size < UNKNOWN_SEEN_MAX) this.unknownSeen.add(key);
              const r = this.unknownLimiter.take();
              if (r.ok) {
                const more = r.suppressed ? { suppressed: r.suppressed } : {};
                this.log.info({ vcpu: m.vcpuId, kind: m.kind, addr: '0x' + m.addr.toString(16), write: m.write, ...more }, 'guest accessed an unhandled address (reads return all-ones)');
                this.emit('unhandled-access', { kind: m.kind, addr: m.addr, write: m.write });
              }
            }
          }
        });
        w.on('error', (e) => {
          this.details.push(`vCPU ${id} worker failed: ${e.message}`);
          recordExit(this.ctrl, 'error', 1, id);
          this.kickAll();
        });
        w.on('exit', () => {
          this.exitedWorkers.add(w);
          if (started < this.config.vcpus) resolve();
          if (this.exitedWorkers.size === this.workers.length) void this.finish();
        });
      }
    });
  }

  /** Kick every vCPU out of KVM_RUN (coalesced: at most one pending signal per vCPU). */
  private kickAll(): void {
    const addon = this.kvm?.addon;
    if (!addon) return;
    for (let i = 0; i < this.config.vcpus; i++) {
      const h = Atomics.load(this.ctrl, ctrlKickSlot(i)) - 1;
      if (h >= 0) addon.kick(h);
    }
  }

  /** @internal process-exit path: stop and kick without waiting. */
  kickAllForExit(): void {
    recordExit(this.ctrl, 'stopped', 0, -1);
    this.kickAll();
  }

  private async finish(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    liveVms.delete(this);
    this.devices?.drain();
    const reason = exitReasonName(Atomics.load(this.ctrl, CTRL_EXIT_REASON)) ?? 'stopped';
    const exitCode = Atomics.load(this.ctrl, CTRL_EXIT_CODE);
    // vm.vsock makes no new connections from here (its control fds are handed over in order: bridge.ts).
    this.agentHandle?.close();
    this.vsockHandle?.close();
    await this.stopIoWorkers();
    this.teardown();
    this.timings.end = performance.timeOrigin + performance.now();
    this.serial.push(null);
    this.console?.push(null);
    for (const { cb } of this.consoleInput.splice(0)) cb();
    this.setState('stopped');
    const exit: VMExit = { reason, exitCode, ...(this.details.length ? { detail: this.details.join('; ') } : {}) };
    this.log.info(exit, 'vm ended');
    this.emit('exit', exit);
    this.resolveExit(exit);
  }

  private teardown(): void {
    if (!this.kvm) return;
    this.devices?.close();
    this.consoleHost?.close();
    this.vsockHandle?.dispose();
    this.virtio?.close();
    for (const vcpu of this.vcpuFds) vcpu.close();
    this.vmFd?.close();
    this.kvm.close();
    this.kvm = undefined;
  }

  private agent(): VmAgent {
    this.agentHandle ??= new VmAgent(this.vsock, () => (this.ended ? 'the VM has stopped' : undefined));
    return this.agentHandle;
  }

  /**
   * Run `cmd` (a program name or an argv array; `opts.args` are appended) in the guest through its
   * exec agent on vsock port 10789 (the default guest runs one; the VM needs config.vsock). Returns
   * at once: stdout/stderr Readables, a stdin Writable (end() is the command's EOF), `pid`, `exited`
   * (`{ code, signal }`), kill(signal). Waits up to `opts.agentTimeoutMs` (default 30 s) for the agent
   * to answer (retrying while the guest's driver or agent is not up yet). See src/main/exec.ts.
   */
  exec(cmd: string | string[], opts: VmExecOptions = {}): VmExecProcess {
    return this.agent().exec(cmd, opts);
  }

  /** Create or truncate `path` in the guest (mode default 0644) with `data`, through the exec agent. */
  writeFile(path: string, data: string | Uint8Array | AsyncIterable<Uint8Array>, opts: { mode?: number } & AgentWaitOptions = {}): Promise<void> {
    return this.agent().writeFile(path, data, opts);
  }

  /** A guest file's bytes, through the exec agent. */
  readFile(path: string, opts: AgentWaitOptions = {}): Promise<Buffer> {
    return this.agent().readFile(path, opts);
  }

  /** A guest file as a stream (with its mode and size), through the exec agent. */
  readFileStream(path: string, opts: AgentWaitOptions = {}): Promise<{ stream: Readable; info: Promise<FileInfo> }> {
    return this.agent().readFileStream(path, opts);
  }

  /** The exec agent's client itself (one shared connection), once the agent answers. */
  agentClient(opts: AgentWaitOptions = {}): Promise<AgentClient> {
    return this.agent().client(opts);
  }

  /** Resolves when the VM has ended: the guest exited, powered off, rebooted, failed, or stop() was called. */
  wait(): Promise<VMExit> {
    return this.exitPromise;
  }

  /** Stop the VM (if running) and release everything it holds. Resolves with how it ended. */
  async stop(): Promise<VMExit> {
    if (this._state === 'created') {
      this.agentHandle?.close();
      this.vsockHandle?.close();
      this.ended = true;
      this.setState('stopped');
      this.resolveExit({ reason: 'stopped', exitCode: 0 });
      return this.exitPromise;
    }
    if (this._state === 'stopped') return this.exitPromise;
    this.setState('stopping');
    recordExit(this.ctrl, 'stopped', 0, -1);
    this.kickAll();
    const timer = setTimeout(() => {
      // A vCPU that did not leave KVM_RUN in time (it cannot, short of a kernel bug): kick again and terminate.
      this.kickAll();
      for (const w of this.workers) void w.terminate();
    }, STOP_GRACE_MS);
    try {
      return await this.exitPromise;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Pause every vCPU: each is kicked out of KVM_RUN (coalesced SIGRTMIN + immediate_exit) and parks on
   * Atomics.wait without spinning. The guest's kvmclock is saved, so it does not jump on resume.
   * Resolves when every vCPU is parked.
   */
  async pause(): Promise<void> {
    if (this._state !== 'running') throw new Error(`VM.pause(): VM is ${this._state}`);
    setRunState(this.ctrl, RUN_STATE_PAUSED);
    this.kickAll();
    while (Atomics.load(this.ctrl, CTRL_RUN_STATE) === RUN_STATE_PAUSED && Atomics.load(this.ctrl, CTRL_PARKED) < this.liveVcpus()) {
      const r = Atomics.waitAsync(this.ctrl, CTRL_PARKED, Atomics.load(this.ctrl, CTRL_PARKED), 100);
      if (r.async) await r.value;
    }
    if (this._state !== 'running') return; // the VM ended while pausing
    this.pausedClock = this.vmFd!.getClock();
    this.setState('paused');
  }

  /** Resume a paused VM; kvmclock continues from where pause() left it. */
  resume(): void {
    if (this._state !== 'paused') throw new Error(`VM.resume(): VM is ${this._state}`);
    if (this.pausedClock) {
      const data = new Uint8Array(this.pausedClock);
      // Only the clock value is restored; KVM_GET_CLOCK's output flags (TSC_STABLE, REALTIME, HOST_TSC)
      // would ask KVM_SET_CLOCK to adjust for the time spent paused.
      new DataView(data.buffer, data.byteOffset).setUint32(KVM_CLOCK_DATA_FLAGS, 0, true);
      this.vmFd!.setClock(data);
      this.pausedClock = undefined;
    }
    setRunState(this.ctrl, RUN_STATE_RUNNING);
    this.setState('running');
  }

  /**
   * Press Ctrl-Alt-Del on the guest's PS/2 keyboard (Firecracker's SendCtrlAltDel): the i8042 gets
   * the make codes and raises IRQ 1. Linux's atkbd turns it into ctrl_alt_del() (a reboot, or what
   * init does on SIGINT). Returns false if the keyboard buffer had no room. Running or paused only
   * (a paused guest sees the keys when it resumes).
   */
  sendCtrlAltDel(): boolean {
    if ((this._state !== 'running' && this._state !== 'paused') || !this.devices) throw new Error(`VM.sendCtrlAltDel(): VM is ${this._state}`);
    return this.devices.sendCtrlAltDel();
  }

  /** The guest's kvmclock (KVM_GET_CLOCK), in nanoseconds. */
  clockNs(): bigint {
    if (!this.vmFd || this.vmFd.closed) throw new Error(`VM.clockNs(): VM is ${this._state}`);
    const d = this.vmFd.getClock();
    return new DataView(d.buffer, d.byteOffset).getBigUint64(KVM_CLOCK_DATA_CLOCK, true);
  }

  private liveVcpus(): number {
    return this.workers.length - this.exitedWorkers.size;
  }
}
