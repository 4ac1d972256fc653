// Firecracker-shaped metrics (PUT /metrics): one JSON object per line, written every 60 s while the
// VM runs and on each FlushMetrics action (and once when the VM ends).
//
// As in Firecracker, counters are deltas since the previous line (Firecracker's SharedIncMetric) and
// the start-up times are absolute (SharedStoreMetric). Groups and names follow Firecracker's
// metrics.rs where kindling has the quantity: api_server, get/put/patch_api_requests, block (all
// drives) and block_<drive_id>, net (all NICs) and net_<iface_id>, logger, uart (COM1 output bytes
// written and dropped). One net field is kindling's own: tx_busy_poll_count, the transmit passes the
// device started by busy-polling the ring instead of waiting for a kick. Every line carries utc_timestamp_ms.
import type { LineSink } from './sinks.js';
import type { BlockStats } from '../devices/virtio/block/device.js';
import type { NetStats } from '../devices/virtio/net/backend.js';
import type { SerialOutCounts } from './serial-out.js';

export interface MetricsSource {
  blockStats(): Array<{ id: string; stats: BlockStats }>;
  /** Per NIC (by iface_id), once a VM started. */
  netStats?(): Array<{ id: string; stats: NetStats }>;
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
const BLOCK_FIELDS: Array<[string, (s: BlockStats) => number]> = [
  ['read_count', (s) => s.reads],
  ['write_count', (s) => s.writes],
  ['flush_count', (s) => s.flushes],
  ['read_bytes', (s) => s.bytesRead],
  ['write_bytes', (s) => s.bytesWritten],
  ['queue_event_count', (s) => s.wakeups],
  ['execute_fails', (s) => s.errors],
  ['invalid_reqs_count', (s) => s.unsupported],
  ['event_fails', (s) => s.needsReset],
];

/** Firecracker's net metric names for kindling's NetStats fields (and tx_busy_poll_count, kindling's). */
const NET_FIELDS: Array<[string, (s: NetStats) => number]> = [
  ['rx_bytes_count', (s) => s.rxBytes],
  ['rx_packets_count', (s) => s.rxFrames],
  // Frames longer than the driver takes, and receive buffers too short to use.
  ['rx_fails', (s) => s.rxDropped + s.rxBadBuffers],
  ['no_rx_avail_buffer', (s) => s.rxNoBuffers],
  ['rx_rate_limiter_throttled', (s) => s.rxThrottled],
  ['tx_bytes_count', (s) => s.txBytes],
  ['tx_packets_count', (s) => s.txFrames],
  ['tx_malformed_frames', (s) => s.txDropped],
  ['tap_write_fails', (s) => s.txErrors],
  ['tx_rate_limiter_throttled', (s) => s.txThrottled],
  ['tx_busy_poll_count', (s) => s.txPolled],
  ['rx_queue_event_count', (s) => s.rxQueueEvents],
  ['tx_queue_event_count', (s) => s.txQueueEvents],
  ['rx_tap_event_count', (s) => s.portRxEvents],
  ['event_fails', (s) => s.needsReset],
];

/**
 * One device kind's per-device groups (`<prefix>_<id>`, deltas since the previous line) and their
 * sum (`<prefix>`), written into `out`. `last` holds each device's counters at the previous line.
 */
function deviceGroups<S>(
  out: Record<string, unknown>,
  prefix: string,
  fields: Array<[string, (s: S) => number]>,
  devices: Array<{ id: string; stats: S }>,
  last: Map<string, Counters>,
): void {
  const total: Counters = Object.fromEntries(fields.map(([n]) => [n, 0]));
  for (const { id, stats } of devices) {
    const prev = last.get(id) ?? {};
    const now: Counters = {};
    const delta: Counters = {};
    for (const [name, read] of fields) {
      now[name] = read(stats);
      delta[name] = now[name] - (prev[name] ?? 0);
      total[name] += delta[name];
    }
    last.set(id, now);
    out[`${prefix}_${id}`] = delta;
  }
  out[prefix] = total;
}

export class MetricsRecorder {
  private sink?: LineSink;
  private readonly groups: Record<string, Counters> = {
    get_api_requests: { instance_info_count: 0, machine_cfg_count: 0, vmm_version_count: 0 },
    put_api_requests: {},
    patch_api_requests: {},
  };
  /** The block and net counters at the previous flush (per drive / iface id), so each line has deltas. */
  private lastBlock = new Map<string, Counters>();
  private lastNet = new Map<string, Counters>();
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
    deviceGroups(out, 'block', BLOCK_FIELDS, this.source.blockStats(), this.lastBlock);
    deviceGroups(out, 'net', NET_FIELDS, this.source.netStats?.() ?? [], this.lastNet);
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
