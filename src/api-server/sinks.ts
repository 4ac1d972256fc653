// Host files the API writes to: the logger's log_path, the metrics' metrics_path and the serial's
// serial_out_path (Firecracker's PUT /logger, /metrics, /serial).
//
// Each is a regular file (created with mode 0600 when missing, appended to) or a named pipe. A pipe
// is opened O_RDWR | O_NONBLOCK, as Firecracker opens it: the open never blocks waiting for a reader,
// and a write the pipe has no room for fails with EAGAIN instead of stalling the VMM; that line is
// dropped and counted (the logger's missed_log_count / missed_metrics_count metrics). Anything else
// (a directory, a device, a socket) is refused with one line: kindling never writes log lines onto a
// disk someone named by mistake. The kind is checked on the opened descriptor (fstat), not the path.
import { closeSync, constants, fstatSync, openSync, statSync, writeSync } from 'node:fs';
import { ApiError } from './schemas.js';
import { shown } from '../main/config.js';

export class LineSink {
  private fd: number | undefined;
  /** Lines that could not be written (pipe full, I/O error). */
  missed = 0;
  /** Lines written. */
  written = 0;

  private constructor(
    readonly path: string,
    fd: number,
    readonly fifo: boolean,
  ) {
    this.fd = fd;
  }

  /** Open `path` for `field` (named in the error): a regular file or a FIFO; ApiError otherwise. */
  static open(path: string, field: string): LineSink {
    if (path.length === 0) throw new ApiError(`${field}: must not be empty`);
    if (path.includes('\0')) throw new ApiError(`${field}: must not contain NUL`);
    // Opening some devices has effects of its own (a watchdog arms, a terminal becomes the controlling
    // one), so an existing path is looked at before it is opened, and the opened fd again after.
    let before: ReturnType<typeof statSync> | undefined;
    try {
      before = statSync(path);
    } catch {
      before = undefined; // missing: created below (or the open gives the reason)
    }
    if (before && !before.isFile() && !before.isFIFO()) throw new ApiError(`${field}: ${shown(path)} is not a regular file or a named pipe`);
    let fd: number;
    try {
      fd = openSync(path, constants.O_RDWR | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK | constants.O_NOCTTY, 0o600);
    } catch (e) {
      throw new ApiError(`${field}: cannot open ${shown(path)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    try {
      const st = fstatSync(fd);
      if (st.isFIFO()) return new LineSink(path, fd, true);
      if (!st.isFile()) throw new ApiError(`${field}: ${shown(path)} is not a regular file or a named pipe`);
      return new LineSink(path, fd, false);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Write `text` whole or not at all (a full pipe drops it); returns whether it was written. */
  write(text: string | Buffer): boolean {
    if (this.fd === undefined) return false;
    const buf = typeof text === 'string' ? Buffer.from(text) : text;
    try {
      let off = 0;
      while (off < buf.length) {
        const n = writeSync(this.fd, buf, off, buf.length - off);
        if (n <= 0) break;
        off += n;
      }
      if (off === buf.length) {
        this.written++;
        return true;
      }
    } catch {
      // EAGAIN (pipe full) or an I/O error: the line is lost, and counted.
    }
    this.missed++;
    return false;
  }

  close(): void {
    if (this.fd === undefined) return;
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    this.fd = undefined;
  }
}

/** Firecracker's logger levels (case-insensitive), lowest number = most severe. */
export const LOG_LEVEL_NAMES = ['Off', 'Error', 'Warning', 'Info', 'Debug', 'Trace'] as const;
export type ApiLogLevel = (typeof LOG_LEVEL_NAMES)[number];
const RANK: Record<ApiLogLevel, number> = { Off: 0, Error: 1, Warning: 2, Info: 3, Debug: 4, Trace: 5 };
/** The VMM's own (pino, stderr) level for each API level. */
export const PINO_LEVEL: Record<ApiLogLevel, string> = { Off: 'silent', Error: 'error', Warning: 'warn', Info: 'info', Debug: 'debug', Trace: 'trace' };

/** A Firecracker level name from any case (and "Warn"), or undefined. */
export function parseLogLevel(text: string): ApiLogLevel | undefined {
  const t = text.toLowerCase();
  if (t === 'warn') return 'Warning';
  return LOG_LEVEL_NAMES.find((l) => l.toLowerCase() === t);
}

const LEVEL_TAG: Record<ApiLogLevel, string> = { Off: 'OFF', Error: 'ERROR', Warning: 'WARN', Info: 'INFO', Debug: 'DEBUG', Trace: 'TRACE' };

/** Nanosecond ISO timestamp as Firecracker prints it: 2026-12-06T19:00:00.123456789. */
function timestamp(now: Date, nanos: number): string {
  const iso = now.toISOString(); // …T19:00:00.123Z
  return `${iso.slice(0, 19)}.${String(nanos).padStart(9, '0')}`;
}

export interface LogOptions {
  level: ApiLogLevel;
  showLevel: boolean;
  showOrigin: boolean;
  module?: string;
}

/**
 * Firecracker-format log lines: `<timestamp> [<instance id>:<thread>(:<LEVEL>)(:<origin>)] <message>`.
 * Lines go to the sink given by PUT /logger (or --log-path); before that, Warning and worse go to
 * stderr as Firecracker's do.
 */
export class ApiLog {
  private sink?: LineSink;
  opts: LogOptions = { level: 'Warning', showLevel: false, showOrigin: false };

  constructor(
    private readonly id: () => string,
    private readonly fallback: (line: string) => void = (l) => process.stderr.write(l),
  ) {}

  configure(sink: LineSink | undefined, opts: LogOptions): void {
    this.sink?.close();
    this.sink = sink;
    this.opts = opts;
  }

  get configured(): boolean {
    return this.sink !== undefined;
  }

  get missed(): number {
    return this.sink?.missed ?? 0;
  }

  enabled(level: ApiLogLevel): boolean {
    return level !== 'Off' && RANK[level] <= RANK[this.opts.level];
  }

  /** One line at `level` from `origin` (a module name, e.g. api_server); the message is kept on one line. */
  log(level: ApiLogLevel, origin: string, message: string): void {
    if (!this.enabled(level)) return;
    if (this.opts.module !== undefined && !origin.startsWith(this.opts.module)) return;
    const now = new Date();
    const nanos = now.getUTCMilliseconds() * 1_000_000 + Number(process.hrtime.bigint() % 1_000_000n);
    let tag = `${this.id()}:main`;
    if (this.opts.showLevel) tag += `:${LEVEL_TAG[level]}`;
    if (this.opts.showOrigin) tag += `:${origin}`;
    const line = `${timestamp(now, nanos)} [${tag}] ${message.replace(/[\r\n]+/g, ' ')}\n`;
    if (this.sink) this.sink.write(line);
    else if (RANK[level] <= RANK.Warning) this.fallback(line);
  }

  close(): void {
    this.sink?.close();
    this.sink = undefined;
  }
}
