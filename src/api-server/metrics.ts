// Firecracker-shaped metrics (PUT /metrics): one JSON object per line, written every 60 s while the
// VM runs and on each FlushMetrics action (and once when the VM ends).
//
// As in Firecracker, counters are deltas since the previous line (Firecracker's SharedIncMetric) and
// the start-up times are absolute (SharedStoreMetric). Groups and names follow Firecracker's
// metrics.rs where kindling has the quantity: api_server, get/put/patch_api_requests, block (all
// drives) and block_<drive_id>, logger, uart (COM1 output bytes written and dropped). Every line carries utc_timestamp_ms.
import type { LineSink } from './sinks.js';
import type { BlockStats } from '../devices/virtio/block/device.js';
import type { SerialOutCounts } from './serial-out.js';

export interface MetricsSource {
  blockStats(): Array<{ id: string; stats: BlockStats }>;
  /** COM1's output bytes written and dropped (PUT /serial's rate limit, a full pipe), once a VM started. */
  serialCounts?(): SerialOutCounts | undefined;
}

export interface MetricsOptions {
  startTimeUs?: number;
  startCpuUs?: number;
  periodMs?: number;
  missedLogs?: () => number;
}

type Counters = Record<string, number>;

/** Firecracker's block metric names for kindling's BlockStats fields. */
const BLOCK_FIELDS: Array<[string, keyof BlockStats]> = [
  ['read_count', 'reads'],
  ['write_count', 'writes'],
  ['flush_count', 'flushes'],
  ['read_bytes', 'bytesRead'],
  ['write_bytes', 'bytesWritten'],
  ['queue_event_count', 'wakeups'],
  ['execute_fails', 'errors'],
  ['invalid_reqs_count', 'unsupported'],
  ['event_fails', 'needsReset'],
];

export class MetricsRecorder {
  private sink?: LineSink;
  private readonly groups: Record<string, Counters> = {
    get_api_requests: { instance_info_count: 0, machine_cfg_count: 0, vmm_version_count: 0 },
    put_api_requests: {},
    patch_api_requests: {},
  };
  /** The block counters at the previous flush (per drive id), so each line has deltas. */
  private lastBlock = new Map<string, Counters>();
  private lastMissedLogs = 0;
  private lastSerial: SerialOutCounts = { written: 0, dropped: 0 };
  private missedMetrics = 0;
  private metricsFails = 0;
  private timer?: NodeJS.Timeout;
  /** Lines written (for tests and the bench). */
  lines = 0;

  constructor(
    private readonly source: MetricsSource,
    private readonly opts: MetricsOptions = {},
  ) {}

  get configured(): boolean {
    return this.sink !== undefined;
  }

  configure(sink: LineSink): void {
    this.sink = sink;
  }

  /** api_server.process_startup_time_us / _cpu_us: process start → API ready (wall, CPU), set once ready. */
  setStartup(wallUs: number, cpuUs: number): void {
    this.opts.startTimeUs = Math.max(0, Math.round(wallUs));
    this.opts.startCpuUs = Math.max(0, Math.round(cpuUs));
  }

  count(group: 'get_api_requests' | 'put_api_requests' | 'patch_api_requests', name: string): void {
    const g = this.groups[group];
    g[name] = (g[name] ?? 0) + 1;
  }

  /** Flush every periodMs (60 s) from now until close(). */
  startPeriodic(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.flush(), this.opts.periodMs ?? 60_000);
    this.timer.unref();
  }

  /** The next line's object (and the deltas are taken: counters restart from zero). */
  snapshot(): Record<string, unknown> {
    const out: Record<string, unknown> = { utc_timestamp_ms: Date.now() };
    out.api_server = {
      process_startup_time_us: this.opts.startTimeUs ?? 0,
      process_startup_time_cpu_us: this.opts.startCpuUs ?? 0,
    };
    for (const [name, g] of Object.entries(this.groups)) {
      out[name] = { ...g };
      for (const k of Object.keys(g)) g[k] = 0;
    }
    const total: Counters = Object.fromEntries(BLOCK_FIELDS.map(([n]) => [n, 0]));
    for (const { id, stats } of this.source.blockStats()) {
      const prev = this.lastBlock.get(id) ?? {};
      const now: Counters = {};
      const delta: Counters = {};
      for (const [name, field] of BLOCK_FIELDS) {
        now[name] = stats[field];
        delta[name] = stats[field] - (prev[name] ?? 0);
        total[name] += delta[name];
      }
      this.lastBlock.set(id, now);
      out[`block_${id}`] = delta;
    }
    out.block = total;
    const serial = this.source.serialCounts?.() ?? this.lastSerial;
    out.uart = { write_count: serial.written - this.lastSerial.written, missed_write_count: serial.dropped - this.lastSerial.dropped };
    this.lastSerial = { ...serial };
    const missedLogs = this.opts.missedLogs?.() ?? 0;
    out.logger = {
      missed_metrics_count: this.missedMetrics,
      metrics_fails: this.metricsFails,
      missed_log_count: missedLogs - this.lastMissedLogs,
      log_fails: 0,
    };
    this.lastMissedLogs = missedLogs;
    this.missedMetrics = 0;
    this.metricsFails = 0;
    return out;
  }

  /** Write one line now (no-op until configured). */
  flush(): boolean {
    if (!this.sink) return false;
    const ok = this.sink.write(JSON.stringify(this.snapshot()) + '\n');
    if (ok) this.lines++;
    else {
      this.missedMetrics++;
      this.metricsFails++;
    }
    return ok;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sink?.close();
    this.sink = undefined;
  }
}
