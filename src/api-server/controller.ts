// The VMM behind Firecracker's management API, independent of HTTP: the pre-boot configuration
// (machine-config, boot-source, drives, vsock, entropy, logger, metrics, serial), the state rules
// (pre-boot only / runtime only), the actions (InstanceStart, SendCtrlAltDel, FlushMetrics) and
// PATCH /vm, mapped onto kindling's VMConfig and VM (src/main/config.ts, src/main/vm.ts).
//
// Every request is answered with an ApiResponse: 200 with a JSON body, 204, or 400 with
// `{ "fault_message": "…" }` naming what was wrong; nothing a client sends makes a method throw
// anything else. Mutating requests run one at a time in arrival order (Firecracker's API thread is
// one thread too): a PUT that arrives while InstanceStart is building the VM waits for it and is
// then judged against the new state.
//
// Mapping (see docs/api.md): vcpu_count → vcpus, mem_size_mib → memMiB (Firecracker's default 128
// MiB), boot_args → cmdline (kindling's DEFAULT_CMDLINE when absent), the root drive → /dev/vda with
// `root=/dev/vda` (or `root=PARTUUID=…`) and `ro`/`rw` appended, other drives in PUT order; a vsock
// → vsock { cid, udsPath }; PUT /entropy → a virtio-rng device (without it the VM has none, as in
// Firecracker). The VM's output on COM1 goes to stdout unless PUT /serial names a file, limited by its rate_limiter.
import { statSync } from 'node:fs';
import { Transform, type Writable } from 'node:stream';
import { parseMac, validTapName } from '../devices/virtio/net/names.js';
import { validTokenBucket, type RateLimiterConfig, type TokenBucketConfig } from '../devices/rate-limiter.js';
import { SerialOutLimiter } from './serial-out.js';
import { ApiError, parseBody, type DriveBody, type EntropyBody, type LoggerBody, type MachineConfigurationBody, type RateLimiterBody, type TokenBucketBody, type VsockBody, type NetworkInterfaceBody } from './schemas.js';
import { ApiLog, LineSink, parseLogLevel, PINO_LEVEL, type ApiLogLevel } from './sinks.js';
import { MetricsRecorder, type MetricsSource } from './metrics.js';
import { ConfigError, DEFAULT_CMDLINE, MAX_VCPUS, MIN_MEM_MIB, oneLine, shown, type VMConfig, checkRateLimiter } from '../main/config.js';
import type { VMExit, VMState } from '../main/vm.js';
import type { BlockStats } from '../devices/virtio/block/device.js';
import type { NetStats } from '../devices/virtio/net/backend.js';
import { bootTimeLine, type BootTime } from '../devices/legacy/boot-timer.js';

/** Firecracker's default guest RAM when machine-config is not given. */
export const FC_DEFAULT_MEM_MIB = 128;
/** Firecracker's default instance id. */
export const DEFAULT_INSTANCE_ID = 'anonymous-instance';

export interface ApiResponse {
  status: number;
  body?: unknown;
}

/** What the controller needs of a VM (src/main/vm.ts's VM; tests may give a stand-in). */
export interface ControlledVm {
  readonly state: VMState;
  readonly serial: NodeJS.ReadableStream & NodeJS.WritableStream;
  start(): Promise<void>;
  wait(): Promise<VMExit>;
  stop(): Promise<VMExit>;
  pause(): Promise<void>;
  resume(): void;
  sendCtrlAltDel(): boolean;
  blockStats(): BlockStats[];
  netStats(): NetStats[];
  setDiskRateLimiter(index: number, rate: RateLimiterConfig | null): Promise<void>;
  swapDisk(index: number, path: string): Promise<void>;
  setNetRateLimiters(index: number, rates: { rx?: RateLimiterConfig | null; tx?: RateLimiterConfig | null }): Promise<void>;
  on(event: 'warning', listener: (line: string) => void): unknown;
  on(event: 'device-error', listener: (e: { device: string; error: unknown }) => void): unknown;
  on(event: 'boot-time', listener: (t: BootTime) => void): unknown;
}

export type VmFactory = (config: VMConfig) => Promise<ControlledVm>;

/** The real VM, loaded only when a VM is started (the API answers before the VMM is loaded). */
export const realVmFactory: VmFactory = async (config) => {
  const { VM } = await import('../main/vm.js');
  return new VM(config);
};

export interface ControllerOptions {
  id?: string;
  vmmVersion: string;
  createVm?: VmFactory;
  /** Where COM1's output goes unless PUT /serial names a file (default: process.stdout). */
  serialOut?: Writable;
  /** Guest input for COM1 (Firecracker reads its stdin); none by default. */
  serialIn?: NodeJS.ReadableStream;
  /**
   * Called when a VM is about to start, before serialIn is piped (serve puts the terminal in raw
   * mode); what it returns is called if the start fails.
   */
  onVmStarting?: () => (() => void) | void;
  /** Called once the started VM has ended (serve exits with the VM's status). */
  onExit?: (exit: VMExit) => void;
  /** The metrics' api_server.process_startup_time_us / _cpu_us until serve sets them (metrics.setStartup). */
  startTimeUs?: number;
  startCpuUs?: number;
  /** Metrics flush period (Firecracker: 60 s). */
  metricsPeriodMs?: number;
  /** VMConfig.seccomp for the VM's threads (--no-seccomp: 'off'; default kindling's 'strict'). */
  seccomp?: VMConfig['seccomp'];
  /** VMConfig.seccompThreads for the VM (serve: 'all', kindling owns the process). */
  seccompThreads?: VMConfig['seccompThreads'];
  /** --boot-timer: VMConfig.bootTimer, and its Guest-boot-time line at Info in the log. */
  bootTimer?: boolean;
  /** Log lines before PUT /logger (default: stderr). */
  logFallback?: (line: string) => void;
}

interface DriveEntry {
  body: DriveBody;
}

/** A token bucket that limits something (Firecracker disables buckets of size 0 or refill_time 0). */
function bucketLimits(b: TokenBucketBody | undefined | null): b is TokenBucketBody {
  return !!b && b.size > 0 && b.refill_time > 0;
}

/** Firecracker's TokenBucket body → the device's bucket; undefined for one that limits nothing. */
function bucketConfig(b: TokenBucketBody | undefined | null): TokenBucketConfig | undefined {
  return bucketLimits(b) ? { size: b.size, refillTimeMs: b.refill_time, ...(b.one_time_burst ? { oneTimeBurst: b.one_time_burst } : {}) } : undefined;
}

/** Firecracker's rate_limiter body → the device's limiter (buckets that limit nothing left out). */
function limiterConfig(rl: RateLimiterBody): RateLimiterConfig {
  const bw = bucketConfig(rl.bandwidth);
  const ops = bucketConfig(rl.ops);
  return { ...(bw ? { bandwidth: bw } : {}), ...(ops ? { ops } : {}) };
}

/**
 * Firecracker's RateLimiterUpdate applied to the current limiter: a bucket given replaces the current
 * one, one with size 0 or refill_time 0 removes it, one left out stays.
 */
function mergeLimiter(current: RateLimiterBody | undefined, update: RateLimiterBody): RateLimiterBody {
  const merged: RateLimiterBody = { ...(current ?? {}) };
  for (const k of ['bandwidth', 'ops'] as const) {
    const upd = update[k];
    if (upd === undefined || upd === null) continue;
    if (bucketLimits(upd)) merged[k] = upd;
    else delete merged[k];
  }
  return merged;
}

/** Whether a rate limiter (or one bucket) limits anything: absent, or only disabled buckets, does not. */
function limits(rl: RateLimiterBody | TokenBucketBody | undefined): boolean {
  if (!rl) return false;
  if ('size' in rl) return bucketLimits(rl);
  return bucketLimits(rl.bandwidth) || bucketLimits(rl.ops);
}

const NOT_AFTER_START = 'The requested operation is not supported after starting the microVM.';
const NOT_BEFORE_START = 'The requested operation is not supported before starting the microVM.';

/** Firecracker's API state names. */
type InstanceState = 'Not started' | 'Running' | 'Paused';

export class ApiController {
  readonly id: string;
  readonly log: ApiLog;
  readonly metrics: MetricsRecorder;
  private readonly opts: ControllerOptions;
  private readonly createVm: VmFactory;
  private machine: Required<Pick<MachineConfigurationBody, 'vcpu_count' | 'mem_size_mib'>> & { smt: boolean; track_dirty_pages: boolean; huge_pages: string };
  private bootSource?: { kernel_image_path: string; initrd_path?: string; boot_args?: string };
  private readonly drives = new Map<string, DriveEntry>();
  private vsock?: VsockBody;
  private readonly nics = new Map<string, NetworkInterfaceBody>();
  private entropy?: EntropyBody;
  private loggerBody?: LoggerBody;
  private metricsPath?: string;
  private serialPath?: string;
  private serialSink?: LineSink;
  /** PUT /serial's rate_limiter (bytes of COM1 output). */
  private serialRate?: TokenBucketConfig;
  /** COM1's output limiter once a VM started (its counts are the uart metrics). */
  private serialLimiter?: SerialOutLimiter;
  private vm?: ControlledVm;
  private starting = false;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** Whether the last 400 was about what the client gave (false: the host or VMM failed). */
  lastFaultIsUser = true;

  constructor(opts: ControllerOptions) {
    this.opts = opts;
    this.id = opts.id ?? DEFAULT_INSTANCE_ID;
    this.createVm = opts.createVm ?? realVmFactory;
    this.machine = { vcpu_count: 1, mem_size_mib: FC_DEFAULT_MEM_MIB, smt: false, track_dirty_pages: false, huge_pages: 'None' };
    this.log = new ApiLog(() => this.id, opts.logFallback);
    const source: MetricsSource = { blockStats: () => this.blockStatsById(), netStats: () => this.netStatsById(), serialCounts: () => this.serialLimiter?.counts };
    this.metrics = new MetricsRecorder(source, { startTimeUs: opts.startTimeUs, startCpuUs: opts.startCpuUs, periodMs: opts.metricsPeriodMs, missedLogs: () => this.log.missed });
  }

  /** Firecracker's state name for GET /. */
  get instanceState(): InstanceState {
    if (!this.vm) return 'Not started';
    return this.vm.state === 'paused' ? 'Paused' : 'Running';
  }

  private get started(): boolean {
    return this.vm !== undefined || this.starting;
  }

  /** Serve one request. `path` is the URL path without the query; `body` the parsed JSON (or undefined). */
  handle(method: string, path: string, body: unknown): Promise<ApiResponse> {
    if (method === 'GET') return Promise.resolve(this.wrap(() => this.get(path)));
    // Mutations one at a time, in arrival order.
    const run = this.queue.then(() => this.mutate(method, path, body));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private wrap(f: () => ApiResponse): ApiResponse {
    try {
      return f();
    } catch (e) {
      return this.fault(e);
    }
  }

  private fault(e: unknown): ApiResponse {
    const msg = e instanceof ApiError ? e.message : `internal error: ${shown((e as Error)?.message ?? e)}`;
    const status = e instanceof ApiError ? e.status : 400;
    this.lastFaultIsUser = e instanceof ApiError ? e.user : false;
    this.log.log('Error', 'api_server', `Received Error. Status code: ${status}. Message: ${msg}`);
    return { status, body: { fault_message: msg } };
  }

  private get(path: string): ApiResponse {
    switch (path) {
      case '/':
        this.metrics.count('get_api_requests', 'instance_info_count');
        return { status: 200, body: { id: this.id, state: this.instanceState, vmm_version: this.opts.vmmVersion, app_name: 'kindling' } };
      case '/version':
        this.metrics.count('get_api_requests', 'vmm_version_count');
        return { status: 200, body: { firecracker_version: this.opts.vmmVersion } };
      case '/machine-config':
        this.metrics.count('get_api_requests', 'machine_cfg_count');
        return { status: 200, body: this.machineConfig() };
      case '/vm/config':
        return { status: 200, body: this.fullConfig() };
      default:
        if (/^\/(snapshot|balloon|mmds|cpu-config|memory-hotplug|hotplug)(\/|$)/.test(path)) throw new ApiError(`GET ${shown(path)}: not supported yet`);
        throw new ApiError(`Invalid request method and/or path: GET ${shown(path)}.`);
    }
  }

  private async mutate(method: string, path: string, body: unknown): Promise<ApiResponse> {
    const [, resource, id, extra] = /^\/([^/]*)(?:\/([^/]*))?(\/.*)?$/.exec(path) ?? [];
    const key = `${method} /${resource ?? ''}${id !== undefined ? '/{id}' : ''}`;
    const group = method === 'PUT' ? 'put_api_requests' : 'patch_api_requests';
    const counter = METRIC_OF[resource ?? ''];
    if (counter && (method === 'PUT' || method === 'PATCH')) this.metrics.count(group, `${counter}_count`);
    try {
      if (extra !== undefined) throw new ApiError(`Invalid request method and/or path: ${method} ${shown(path)}.`);
      const r = await this.route(key, id === undefined ? undefined : decodeId(id), body, path);
      this.log.log('Info', 'api_server', `The API server received a ${method} request on ${shown(path)}.`);
      return r;
    } catch (e) {
      if (counter && (method === 'PUT' || method === 'PATCH')) this.metrics.count(group, `${counter}_fails`);
      return this.fault(e);
    }
  }

  private async route(key: string, id: string | undefined, body: unknown, path: string): Promise<ApiResponse> {
    switch (key) {
      case 'PUT /machine-config':
        return this.putMachine(parseBody('machine-config', body), false);
      case 'PATCH /machine-config':
        return this.putMachine(parseBody('machine-config (PATCH)', body), true);
      case 'PUT /boot-source':
        return this.putBootSource(body);
      case 'PUT /drives/{id}':
        return this.putDrive(id!, body);
      case 'PATCH /drives/{id}':
        return this.patchDrive(id!, body);
      case 'PUT /network-interfaces/{id}':
        return this.putNic(id!, body);
      case 'PATCH /network-interfaces/{id}':
        return this.patchNic(id!, body);
      case 'PUT /vsock':
        return this.putVsock(body);
      case 'PUT /entropy':
        return this.putEntropy(body);
      case 'PUT /logger':
        return this.putLogger(parseBody('logger', body));
      case 'PUT /metrics':
        return this.putMetrics(body);
      case 'PUT /serial':
        return this.putSerial(body);
      case 'PUT /actions':
        return this.action(parseBody('actions', body).action_type);
      case 'PATCH /vm':
        return this.patchVm(parseBody('vm', body).state);
      default: {
        const m = /^(\w+) \/(snapshot|balloon|mmds|cpu-config|memory-hotplug|hotplug|pmem)/.exec(key);
        if (m) throw new ApiError(`${m[1]} ${shown(path)}: ${m[2] === 'snapshot' ? 'snapshots are' : `/${m[2]} is`} not supported yet`);
        throw new ApiError(`Invalid request method and/or path: ${key.split(' ')[0]} ${shown(path)}.`);
      }
    }
  }

  private preBoot(what: string): void {
    if (this.started) throw new ApiError(`${what}: ${NOT_AFTER_START}`);
  }

  private runtime(what: string): ControlledVm {
    if (!this.vm) throw new ApiError(`${what}: ${NOT_BEFORE_START}`);
    return this.vm;
  }

  private putMachine(b: Partial<MachineConfigurationBody>, patch: boolean): ApiResponse {
    this.preBoot('machine-config');
    const base = patch ? this.machine : { vcpu_count: 1, mem_size_mib: FC_DEFAULT_MEM_MIB, smt: false, track_dirty_pages: false, huge_pages: 'None' };
    const next = {
      vcpu_count: b.vcpu_count ?? base.vcpu_count,
      mem_size_mib: b.mem_size_mib ?? base.mem_size_mib,
      smt: b.smt ?? base.smt,
      track_dirty_pages: b.track_dirty_pages ?? base.track_dirty_pages,
      huge_pages: b.huge_pages ?? base.huge_pages,
    };
    if (next.vcpu_count > MAX_VCPUS) throw new ApiError(`machine-config: vcpu_count: must be at most ${MAX_VCPUS}, got ${next.vcpu_count}`);
    if (next.mem_size_mib < MIN_MEM_MIB) throw new ApiError(`machine-config: mem_size_mib: kindling needs at least ${MIN_MEM_MIB} MiB, got ${next.mem_size_mib}`);
    if (next.smt) throw new ApiError('machine-config: smt: true is not supported (kindling presents no SMT siblings); only false is accepted');
    if (b.cpu_template !== undefined && b.cpu_template !== 'None') throw new ApiError(`machine-config: cpu_template: CPU templates are not supported yet (got ${b.cpu_template}); only "None" is accepted`);
    if (next.huge_pages !== 'None') throw new ApiError(`machine-config: huge_pages: ${next.huge_pages} is not supported yet; only "None" is accepted`);
    this.machine = next;
    return { status: 204 };
  }

  private putBootSource(body: unknown): ApiResponse {
    const b = parseBody('boot-source', body);
    this.preBoot('boot-source');
    checkHostFile(b.kernel_image_path, 'boot-source: kernel_image_path', 'file');
    if (b.initrd_path !== undefined) checkHostFile(b.initrd_path, 'boot-source: initrd_path', 'file');
    if (b.boot_args !== undefined && /[\0\n\r]/.test(b.boot_args)) throw new ApiError('boot-source: boot_args: must not contain NUL or newline characters');
    this.bootSource = { kernel_image_path: b.kernel_image_path, initrd_path: b.initrd_path, boot_args: b.boot_args };
    return { status: 204 };
  }

  private putDrive(id: string, body: unknown): ApiResponse {
    const where = `drives/${shown(id)}`;
    const b = parseBody('drive', body, where);
    this.preBoot(where);
    if (b.drive_id !== id) throw new ApiError(`${where}: drive_id ${shown(b.drive_id)} in the body does not match the id in the path`);
    checkId(id, where);
    if (b.socket !== undefined) throw new ApiError(`${where}: socket: vhost-user-blk drives are not supported yet (kindling serves vhost-user, it does not attach to one)`);
    if (b.path_on_host === undefined) throw new ApiError(`${where}: missing field path_on_host`);
    if (b.partuuid !== undefined && !/^[0-9A-Za-z-]{1,36}$/.test(b.partuuid)) throw new ApiError(`${where}: partuuid: must be a partition UUID (hex digits and dashes), got ${shown(b.partuuid)}`);
    checkHostFile(b.path_on_host, `${where}: path_on_host`, 'disk');
    if (b.is_root_device) {
      for (const [other, d] of this.drives) {
        if (other !== id && d.body.is_root_device) throw new ApiError(`${where}: is_root_device: a root block device already exists (${shown(other)})`);
      }
    }
    this.drives.set(id, { body: b });
    return { status: 204 };
  }

  /**
   * PATCH /drives/{id} on the running VM. path_on_host swaps the backing file (vm.swapDisk: same
   * read-only mode, a config-change interrupt tells the guest the new capacity). rate_limiter is
   * Firecracker's RateLimiterUpdate: a bucket that is given replaces the current one (size 0 or
   * refill_time 0 removes it), one left out stays.
   */
  private async patchDrive(id: string, body: unknown): Promise<ApiResponse> {
    const where = `drives/${shown(id)}`;
    const b = parseBody('drive (PATCH)', body, where);
    if (b.drive_id !== id) throw new ApiError(`${where}: drive_id ${shown(b.drive_id)} in the body does not match the id in the path`);
    const vm = this.runtime(where);
    const entry = this.drives.get(id);
    if (!entry) throw new ApiError(`${where}: no drive with this id`);
    const index = this.orderedDrives().findIndex((d) => d.body.drive_id === id);
    if (b.path_on_host !== undefined && b.path_on_host !== null) {
      // Firecracker's hot swap: the new image under the drive's mode, then a config-change interrupt.
      try {
        await vm.swapDisk(index, b.path_on_host);
      } catch (e) {
        throw new ApiError(`${where}: path_on_host: ${oneLine((e as Error).message)}`);
      }
      entry.body = { ...entry.body, path_on_host: b.path_on_host };
    }
    if (b.rate_limiter === undefined || b.rate_limiter === null) return { status: 204 };
    const merged = mergeLimiter(entry.body.rate_limiter ?? undefined, b.rate_limiter);
    try {
      await vm.setDiskRateLimiter(index, limits(merged) ? limiterConfig(merged) : null);
    } catch (e) {
      throw new ApiError(`${where}: rate_limiter: ${oneLine((e as Error).message)}`);
    }
    entry.body = { ...entry.body, rate_limiter: merged };
    return { status: 204 };
  }

  /** PATCH /network-interfaces/{id} on the running VM: rx_rate_limiter / tx_rate_limiter updated as PATCH /drives updates rate_limiter. */
  private async patchNic(id: string, body: unknown): Promise<ApiResponse> {
    const where = `network-interfaces/${shown(id)}`;
    const b = parseBody('network-interface (PATCH)', body, where);
    if (b.iface_id !== id) throw new ApiError(`${where}: iface_id ${shown(b.iface_id)} in the body does not match the id in the path`);
    const vm = this.runtime(where);
    const nic = this.nics.get(id);
    if (!nic) throw new ApiError(`${where}: no such network interface`);
    const rx = b.rx_rate_limiter ? mergeLimiter(nic.rx_rate_limiter ?? undefined, b.rx_rate_limiter) : undefined;
    const tx = b.tx_rate_limiter ? mergeLimiter(nic.tx_rate_limiter ?? undefined, b.tx_rate_limiter) : undefined;
    if (!rx && !tx) return { status: 204 };
    const cfg = (m: RateLimiterBody | undefined) => (m === undefined ? undefined : limits(m) ? limiterConfig(m) : null);
    try {
      await vm.setNetRateLimiters([...this.nics.keys()].indexOf(id), { rx: cfg(rx), tx: cfg(tx) });
    } catch (e) {
      throw new ApiError(`${where}: ${oneLine((e as Error).message)}`);
    }
    this.nics.set(id, { ...nic, ...(rx ? { rx_rate_limiter: rx } : {}), ...(tx ? { tx_rate_limiter: tx } : {}) });
    return { status: 204 };
  }

  /** The drives in the order the VM gets them (the root device first, then PUT order): disk i is /dev/vd(a+i). */
  private orderedDrives(): DriveEntry[] {
    return [...this.drives.values()].sort((a, b) => Number(b.body.is_root_device) - Number(a.body.is_root_device));
  }

  /** PUT /network-interfaces/{id}: a tap NIC (host_dev_name), pre-boot; NICs are placed in PUT order (eth0 first). */
  private putNic(id: string, body: unknown): ApiResponse {
    const where = `network-interfaces/${shown(id)}`;
    const b = parseBody('network-interface', body, where);
    this.preBoot(where);
    if (b.iface_id !== id) throw new ApiError(`${where}: iface_id ${shown(b.iface_id)} in the body does not match the id in the path`);
    if (!validTapName(b.host_dev_name)) throw new ApiError(`${where}: host_dev_name: must be an interface name of 1 to 15 letters, digits or _.:+- (got ${shown(b.host_dev_name)})`);
    if (b.guest_mac !== undefined && !parseMac(b.guest_mac)) throw new ApiError(`${where}: guest_mac: must be a unicast MAC address like 06:00:AC:10:00:02 (got ${shown(b.guest_mac)})`);
    if (b.mtu !== undefined && b.mtu !== 1500) throw new ApiError(`${where}: mtu: only 1500 is supported yet`);
    for (const [other, n] of this.nics) {
      if (other !== id && n.host_dev_name === b.host_dev_name) throw new ApiError(`${where}: host_dev_name ${shown(b.host_dev_name)} is already used by network interface ${shown(other)}`);
    }
    this.nics.set(id, b);
    return { status: 204 };
  }

  private putVsock(body: unknown): ApiResponse {
    const b = parseBody('vsock', body);
    this.preBoot('vsock');
    if (b.guest_cid > 0xfffffffe) throw new ApiError(`vsock: guest_cid: must be at most 4294967294, got ${b.guest_cid}`);
    if (b.uds_path.length === 0 || b.uds_path.includes('\0')) throw new ApiError('vsock: uds_path: must be a non-empty path');
    this.vsock = b;
    return { status: 204 };
  }

  private putEntropy(body: unknown): ApiResponse {
    const b = parseBody('entropy', body);
    this.preBoot('entropy');
    if (limits(b.rate_limiter)) {
      try {
        checkRateLimiter(limiterConfig(b.rate_limiter!), 'entropy.rate_limiter');
      } catch (e) {
        throw new ApiError(`entropy: rate_limiter: ${oneLine((e as Error).message)}`);
      }
    }
    this.entropy = b;
    return { status: 204 };
  }

  /** PUT /logger, also for --log-path/--level at start-up. Allowed once, pre-boot (as Firecracker). */
  putLogger(b: LoggerBody): ApiResponse {
    this.preBoot('logger');
    if (this.log.configured) throw new ApiError('logger: the logger is already configured');
    let level: ApiLogLevel = 'Info';
    if (b.level !== undefined) {
      const l = parseLogLevel(b.level);
      if (!l) throw new ApiError(`logger: level: expected one of Error, Warning, Info, Debug, Trace, Off, got ${shown(b.level)}`);
      level = l;
    }
    const sink = b.log_path !== undefined ? LineSink.open(b.log_path, 'logger: log_path') : undefined;
    this.log.configure(sink, { level, showLevel: b.show_level ?? false, showOrigin: b.show_log_origin ?? false, module: b.module });
    this.loggerBody = b;
    this.log.log('Info', 'api_server', `kindling ${this.opts.vmmVersion}: logger configured`);
    return { status: 204 };
  }

  /** PUT /metrics, also for --metrics-path. Allowed once (as Firecracker). */
  private putMetrics(body: unknown): ApiResponse {
    const b = parseBody('metrics', body);
    this.preBoot('metrics');
    return this.setMetricsPath(b.metrics_path);
  }

  setMetricsPath(path: string): ApiResponse {
    if (this.metrics.configured) throw new ApiError('metrics: the metrics system is already configured');
    this.metrics.configure(LineSink.open(path, 'metrics: metrics_path'));
    this.metricsPath = path;
    return { status: 204 };
  }

  private putSerial(body: unknown): ApiResponse {
    const b = parseBody('serial', body);
    this.preBoot('serial');
    const rate = bucketConfig(b.rate_limiter);
    const bad = rate && validTokenBucket(rate);
    if (bad) throw new ApiError(`serial: rate_limiter: ${bad}`);
    const sink = b.serial_out_path !== undefined ? LineSink.open(b.serial_out_path, 'serial: serial_out_path') : undefined;
    this.serialSink?.close();
    this.serialSink = sink;
    this.serialPath = b.serial_out_path;
    this.serialRate = rate;
    return { status: 204 };
  }

  private async action(type: 'FlushMetrics' | 'InstanceStart' | 'SendCtrlAltDel'): Promise<ApiResponse> {
    switch (type) {
      case 'InstanceStart':
        await this.instanceStart();
        return { status: 204 };
      case 'SendCtrlAltDel': {
        const vm = this.runtime('SendCtrlAltDel');
        if (!vm.sendCtrlAltDel()) throw new ApiError('SendCtrlAltDel: the guest keyboard buffer is full (the guest has not read the previous keys)');
        return { status: 204 };
      }
      case 'FlushMetrics':
        if (!this.metrics.configured) throw new ApiError('FlushMetrics: the metrics system is not configured (PUT /metrics first)');
        this.metrics.flush();
        return { status: 204 };
    }
  }

  /** The VMConfig this configuration boots (throws ApiError naming the missing piece). */
  vmConfig(): VMConfig {
    const bs = this.bootSource;
    if (!bs) throw new ApiError('InstanceStart: cannot start the microVM without a kernel: PUT /boot-source first');
    const ordered = this.orderedDrives();
    const extra: string[] = [];
    const root = ordered[0]?.body.is_root_device ? ordered[0].body : undefined;
    if (root) extra.push(root.partuuid !== undefined ? `root=PARTUUID=${root.partuuid}` : 'root=/dev/vda', root.is_read_only ? 'ro' : 'rw');
    return {
      kernel: bs.kernel_image_path,
      ...(bs.initrd_path !== undefined ? { initrd: bs.initrd_path } : {}),
      cmdline: bs.boot_args ?? DEFAULT_CMDLINE,
      ...(extra.length ? { cmdlineExtra: extra } : {}),
      vcpus: this.machine.vcpu_count,
      memMiB: this.machine.mem_size_mib,
      // The VMM's own pino lines (stderr) follow the logger's level once PUT /logger set one.
      logLevel: this.log.configured ? PINO_LEVEL[this.log.opts.level] : 'warn',
      disks: ordered.map((d) => ({
        path: d.body.path_on_host!,
        readOnly: d.body.is_read_only ?? false,
        ...(limits(d.body.rate_limiter ?? undefined) ? { rate: limiterConfig(d.body.rate_limiter!) } : {}),
      })),
      rng: this.entropy === undefined ? false : limits(this.entropy.rate_limiter ?? undefined) ? { rate: limiterConfig(this.entropy.rate_limiter!) } : true,
      console: 'serial',
      ...(this.opts.seccomp !== undefined ? { seccomp: this.opts.seccomp } : {}),
      ...(this.opts.bootTimer ? { bootTimer: true } : {}),
      ...(this.opts.seccompThreads ? { seccompThreads: this.opts.seccompThreads } : {}),
      ...(this.vsock ? { vsock: { cid: this.vsock.guest_cid, udsPath: this.vsock.uds_path } } : {}),
      ...(this.nics.size
        ? {
            net: [...this.nics.values()].map((n) => ({
              tap: n.host_dev_name,
              ...(n.guest_mac !== undefined ? { mac: n.guest_mac.toLowerCase() } : {}),
              ...(limits(n.rx_rate_limiter) ? { rxRate: limiterConfig(n.rx_rate_limiter!) } : {}),
              ...(limits(n.tx_rate_limiter) ? { txRate: limiterConfig(n.tx_rate_limiter!) } : {}),
            })),
          }
        : {}),
    };
  }

  /** ConfigError option (VMConfig key path) → the API field it came from. */
  private apiField(option: string | undefined): string {
    if (!option) return 'InstanceStart';
    const nic = /^net\[(\d+)\]/.exec(option);
    if (nic) return `network-interfaces/${shown([...this.nics.keys()][Number(nic[1])] ?? nic[1])}`;
    const disk = /^disks\[(\d+)\](?:\.(\w+))?/.exec(option);
    if (disk) {
      const id = this.orderedDrives()[Number(disk[1])]?.body.drive_id;
      return `drives/${shown(id ?? disk[1])}${disk[2] === 'path' || !disk[2] ? ': path_on_host' : disk[2] === 'readOnly' ? ': is_read_only' : ''}`;
    }
    const map: Record<string, string> = {
      kernel: 'boot-source: kernel_image_path',
      initrd: 'boot-source: initrd_path',
      cmdline: 'boot-source: boot_args',
      cmdlineExtra: 'boot-source: boot_args',
      vcpus: 'machine-config: vcpu_count',
      memMiB: 'machine-config: mem_size_mib',
      vsock: 'vsock',
      'vsock.cid': 'vsock: guest_cid',
      'vsock.udsPath': 'vsock: uds_path',
      disks: 'drives',
      logLevel: 'logger: level',
    };
    return map[option] ?? option;
  }

  private async instanceStart(): Promise<void> {
    if (this.started) throw new ApiError(`InstanceStart: ${NOT_AFTER_START}`);
    if (this.closed) throw new ApiError('InstanceStart: the API server is shutting down');
    const config = this.vmConfig();
    this.starting = true;
    let vm: ControlledVm;
    try {
      vm = await this.createVm(config);
    } catch (e) {
      this.starting = false;
      if (e instanceof ConfigError) throw new ApiError(`InstanceStart: ${this.apiField(e.option)}: ${e.message}`);
      throw new ApiError(`InstanceStart: ${shown((e as Error).message)}`, 400, false);
    }
    // COM1 → the serial file (written whole or dropped, never blocking) or stdout through a pipe,
    // whose back-pressure reaches the guest (vm.serial stops draining, the guest's writes block).
    const out = this.serialSink;
    const stdout = this.opts.serialOut ?? process.stdout;
    const limiter = (this.serialLimiter = new SerialOutLimiter(this.serialRate));
    const onData = (b: Buffer): void => {
      const a = limiter.admit(b);
      if (a.length === 0) return;
      if (out!.write(a)) limiter.wrote(a.length);
      else limiter.lost(a.length);
    };
    // To stdout through a Transform that drops what the limit does not admit, keeping the pipe's back-pressure.
    const toStdout = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        const a = limiter.admit(chunk);
        limiter.wrote(a.length);
        cb(null, a.length ? a : undefined);
      },
    });
    if (out) vm.serial.on('data', onData);
    else vm.serial.pipe(toStdout).pipe(stdout, { end: false });
    const undoStarting = this.opts.onVmStarting?.();
    if (this.opts.serialIn) this.opts.serialIn.pipe(vm.serial, { end: false });
    // The VM's host warnings (KVM-PVM) and device failures become log lines (else stderr, as before PUT /logger).
    vm.on('warning', (line) => this.log.log('Warning', 'vmm', line));
    vm.on('device-error', ({ device, error }) => this.log.log('Error', 'vmm', `device ${device} failed: ${(error as Error)?.message ?? String(error)}`));
    vm.on('boot-time', (t) => this.log.log('Info', 'boot_timer', bootTimeLine(t)));
    try {
      await vm.start();
    } catch (e) {
      this.starting = false;
      if (out) vm.serial.off('data', onData);
      else {
        vm.serial.unpipe(toStdout);
        toStdout.unpipe(stdout);
      }
      if (this.opts.serialIn) this.opts.serialIn.unpipe(vm.serial);
      undoStarting?.();
      const msg = (e as Error).message ?? String(e);
      this.log.log('Error', 'vmm', `InstanceStart failed: ${msg}`);
      if (e instanceof ConfigError) throw new ApiError(`InstanceStart: ${this.apiField(e.option)}: ${msg}`);
      // Not the client's mistake (no /dev/kvm, a VMM failure): still a 400 for the API, exit 1 for --config-file.
      throw new ApiError(`InstanceStart: cannot start the microVM: ${shown(msg)}`, 400, false);
    }
    this.vm = vm;
    this.starting = false;
    this.metrics.startPeriodic();
    this.log.log('Info', 'vmm', 'Successfully started microvm that was configured from one single json');
    void vm.wait().then((exit) => {
      this.log.log(exit.reason === 'error' || exit.reason === 'triple-fault' ? 'Error' : 'Info', 'vmm', `Vmm is stopping: ${exit.reason} (exit code ${exit.exitCode})${exit.detail ? `: ${exit.detail}` : ''}`);
      this.metrics.flush();
      this.opts.onExit?.(exit);
    });
  }

  private async patchVm(state: 'Paused' | 'Resumed'): Promise<ApiResponse> {
    const vm = this.runtime('vm');
    if (state === 'Paused') {
      if (vm.state === 'paused') return { status: 204 };
      if (vm.state !== 'running') throw new ApiError(`vm: cannot pause a microVM that is ${vm.state}`);
      await vm.pause();
      this.log.log('Info', 'vmm', 'Paused the microVM');
    } else {
      if (vm.state === 'running') return { status: 204 };
      if (vm.state !== 'paused') throw new ApiError(`vm: cannot resume a microVM that is ${vm.state}`);
      vm.resume();
      this.log.log('Info', 'vmm', 'Resumed the microVM');
    }
    return { status: 204 };
  }

  private machineConfig(): object {
    return { vcpu_count: this.machine.vcpu_count, mem_size_mib: this.machine.mem_size_mib, smt: this.machine.smt, track_dirty_pages: this.machine.track_dirty_pages, huge_pages: this.machine.huge_pages };
  }

  /** GET /vm/config: Firecracker's FullVmConfiguration. */
  fullConfig(): object {
    const drives = [...this.drives.values()].map((d) => ({
      drive_id: d.body.drive_id,
      partuuid: d.body.partuuid ?? null,
      is_root_device: d.body.is_root_device,
      cache_type: d.body.cache_type ?? 'Unsafe',
      is_read_only: d.body.is_read_only ?? false,
      path_on_host: d.body.path_on_host ?? null,
      rate_limiter: d.body.rate_limiter ?? null,
      io_engine: d.body.io_engine ?? 'Sync',
      socket: null,
    }));
    return {
      balloon: null,
      drives,
      'boot-source': this.bootSource ? { kernel_image_path: this.bootSource.kernel_image_path, initrd_path: this.bootSource.initrd_path ?? null, boot_args: this.bootSource.boot_args ?? null } : null,
      'cpu-config': null,
      logger: this.loggerBody ?? null,
      'machine-config': this.machineConfig(),
      metrics: this.metricsPath !== undefined ? { metrics_path: this.metricsPath } : null,
      'mmds-config': null,
      'network-interfaces': [...this.nics.values()].map((n) => ({
        iface_id: n.iface_id,
        host_dev_name: n.host_dev_name,
        guest_mac: n.guest_mac ?? null,
        rx_rate_limiter: n.rx_rate_limiter ?? null,
        tx_rate_limiter: n.tx_rate_limiter ?? null,
      })),
      vsock: this.vsock ? { guest_cid: this.vsock.guest_cid, uds_path: this.vsock.uds_path } : null,
      entropy: this.entropy ? { rate_limiter: this.entropy.rate_limiter ?? null } : null,
      serial:
        this.serialPath !== undefined || this.serialRate
          ? {
              ...(this.serialPath !== undefined ? { serial_out_path: this.serialPath } : {}),
              ...(this.serialRate ? { rate_limiter: { size: this.serialRate.size, refill_time: this.serialRate.refillTimeMs, ...(this.serialRate.oneTimeBurst ? { one_time_burst: this.serialRate.oneTimeBurst } : {}) } } : {}),
            }
          : null,
    };
  }

  private blockStatsById(): Array<{ id: string; stats: BlockStats }> {
    if (!this.vm) return [];
    const ordered = [...this.drives.keys()].sort((a, b) => Number(this.drives.get(b)!.body.is_root_device) - Number(this.drives.get(a)!.body.is_root_device));
    const stats = this.vm.blockStats();
    return stats.map((s, i) => ({ id: ordered[i] ?? String(i), stats: s }));
  }

  /** NICs are placed in PUT order, so the VM's i-th NIC is the i-th iface_id. */
  private netStatsById(): Array<{ id: string; stats: NetStats }> {
    if (!this.vm) return [];
    const ids = [...this.nics.keys()];
    return this.vm.netStats().map((s, i) => ({ id: ids[i] ?? String(i), stats: s }));
  }

  /**
   * Apply a Firecracker --config-file document (the same parser as the API bodies), section by
   * section; throws ApiError naming the section and field. Does not start the VM.
   */
  async applyConfigFile(doc: unknown): Promise<void> {
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new ApiError('config file: expected a JSON object');
    const known = ['boot-source', 'machine-config', 'drives', 'network-interfaces', 'vsock', 'logger', 'metrics', 'entropy', 'serial', 'balloon', 'mmds-config', 'cpu-config'];
    const d = doc as Record<string, unknown>;
    for (const k of Object.keys(d)) {
      if (!known.includes(k)) throw new ApiError(`config file: unknown section ${shown(k)}`);
      if (d[k] !== null && ['balloon', 'mmds-config', 'cpu-config'].includes(k)) throw new ApiError(`config file: ${k}: not supported yet`);
    }
    const ok = (r: ApiResponse): void => {
      if (r.status >= 300) throw new ApiError(`config file: ${(r.body as { fault_message: string }).fault_message}`, 400, this.lastFaultIsUser);
    };
    const put = async (path: string, body: unknown): Promise<void> => ok(await this.handle('PUT', path, body));
    if (d.logger != null) await put('/logger', d.logger);
    if (d.metrics != null) await put('/metrics', d.metrics);
    if (d['machine-config'] != null) await put('/machine-config', d['machine-config']);
    if (d['boot-source'] != null) await put('/boot-source', d['boot-source']);
    for (const [section, route, idField] of [
      ['drives', '/drives/', 'drive_id'],
      ['network-interfaces', '/network-interfaces/', 'iface_id'],
    ] as const) {
      const list = d[section];
      if (list == null) continue;
      if (!Array.isArray(list)) throw new ApiError(`config file: ${section}: expected an array`);
      for (const [i, item] of list.entries()) {
        const idv = item !== null && typeof item === 'object' ? (item as Record<string, unknown>)[idField] : undefined;
        if (typeof idv !== 'string') throw new ApiError(`config file: ${section}[${i}]: missing field ${idField}`);
        await put(route + encodeURIComponent(idv), item);
      }
    }
    if (d.vsock != null) await put('/vsock', d.vsock);
    if (d.entropy != null) await put('/entropy', d.entropy);
    if (d.serial != null) await put('/serial', d.serial);
  }

  /** PUT /actions InstanceStart as --config-file does it: throws the ApiError (user or not). */
  async startFromConfig(): Promise<void> {
    const r = await this.handle('PUT', '/actions', { action_type: 'InstanceStart' });
    if (r.status >= 300) throw new ApiError((r.body as { fault_message: string }).fault_message, 400, this.lastFaultIsUser);
  }

  /** Stop the VM (if any), flush metrics, close the files. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.catch(() => undefined);
    const vm = this.vm;
    if (vm && vm.state !== 'stopped') await vm.stop().catch(() => undefined);
    this.metrics.close();
    this.serialSink?.close();
    this.log.close();
  }
}

const METRIC_OF: Record<string, string> = {
  actions: 'actions',
  'boot-source': 'boot_source',
  drives: 'drive',
  logger: 'logger',
  'machine-config': 'machine_cfg',
  metrics: 'metrics',
  'network-interfaces': 'network',
  vsock: 'vsock',
  entropy: 'entropy',
  serial: 'serial',
  vm: 'vm',
};

function decodeId(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new ApiError(`Invalid request path: ${shown(raw)} is not valid percent-encoding`);
  }
}

/** Firecracker's id rule: 1..64 characters, alphanumeric or underscore (drive ids). */
function checkId(id: string, where: string): void {
  if (!/^[A-Za-z0-9_]{1,64}$/.test(id)) throw new ApiError(`${where}: drive_id: must be 1 to 64 letters, digits or underscores`);
}

/** The path names an existing file of the right kind (regular file; a disk may be a block device too). */
function checkHostFile(path: string, field: string, kind: 'file' | 'disk'): void {
  if (path.length === 0) throw new ApiError(`${field}: must not be empty`);
  if (path.includes('\0')) throw new ApiError(`${field}: must not contain NUL`);
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new ApiError(`${field}: cannot open ${shown(path)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!(st.isFile() || (kind === 'disk' && st.isBlockDevice()))) throw new ApiError(`${field}: ${shown(path)} is not a ${kind === 'disk' ? 'regular file or block device' : 'regular file'}`);
}
