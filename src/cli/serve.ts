// `kindling serve` and Firecracker's own command line (`kindling --api-sock PATH`, `--config-file
// FILE`, `--no-api`, `--id ID`, `--level L`, …): the Firecracker-compatible management API on a Unix
// socket (src/api-server/), optionally configured from a Firecracker JSON config file and booted at
// once. As with Firecracker, the process lives as long as its VM: when the guest ends, kindling exits
// with the VM's status (0 after a reboot or poweroff) and removes the socket.
//
// This module is loaded on every CLI start (cli.ts asks isServeArgv), so it imports nothing heavy:
// the API server (src/api-server/, TypeBox) is imported only when serving. Exit status 2 for what the user gave (a
// flag, the config file, the socket path), 1 when the VMM or host fails (no /dev/kvm), 128+N after
// signal N.
import { closeSync, fstatSync, openSync, readSync, constants } from 'node:fs';
import { parseArgs } from 'node:util';
import type { SignalStop } from './signals.js';
import { consoleMode, neverStopOnTerminalAccess, probeTerminal } from './terminal.js';

export const SERVE_USAGE = `usage:
  kindling serve --api-sock PATH [--config-file FILE] [--id ID] [--level L] [--log-path PATH]
                 [--show-level] [--show-log-origin] [--metrics-path PATH] [--boot-timer]
  kindling --api-sock PATH | --config-file FILE [--no-api] ...   (Firecracker's spelling)

  --api-sock PATH     serve Firecracker's management API (HTTP/1.1) on this Unix socket (mode 0600,
                      removed on exit; a live socket is refused, a stale one replaced). Default for
                      Firecracker's spelling: /run/firecracker.socket
  --config-file FILE  Firecracker JSON (boot-source, machine-config, drives, vsock, logger, metrics,
                      entropy, serial): configure and boot at once
  --no-api            no API socket (needs --config-file)
  --id ID             instance id (1-64 letters, digits or '-'; default anonymous-instance)
  --level L           log level: Error, Warning, Info, Debug, Trace, Off
  --log-path PATH     log file or named pipe (as PUT /logger)
  --show-level, --show-log-origin   add the level / origin to each log line
  --metrics-path PATH metrics file or named pipe (as PUT /metrics)
  --no-seccomp        no syscall filter (by default every thread is filtered once the VM is built)
  --boot-timer        Firecracker's boot timer: a guest write of the byte 123 to 0xd0000000 logs
                      "Guest-boot-time = N us …" at Info (with --level Info or a logger); the
                      virtio devices then start at 0xd0001000
  --start-time-us, --start-time-cpu-us, --parent-cpu-time-us N   (from Firecracker's jailer) the
                      process start for the metrics' api_server.process_startup_time_us
the guest's serial console goes to stdout unless PUT /serial names a file; stdin goes to it (a
terminal in raw mode once the VM starts, when kindling is in the foreground).`;

/** Flags only Firecracker's command line has: an argv starting with one of them is `serve`. */
const FIRECRACKER_FLAGS = ['--api-sock', '--config-file', '--no-api', '--id', '--level', '--boot-timer', '--log-path', '--metrics-path', '--show-level', '--show-log-origin', '--module', '--no-seccomp', '--start-time-us', '--start-time-cpu-us', '--parent-cpu-time-us'];

export function isServeArgv(argv: readonly string[]): boolean {
  const first = argv[0];
  if (first === undefined) return false;
  if (first === 'serve') return true;
  return FIRECRACKER_FLAGS.some((f) => first === f || first.startsWith(f + '='));
}

export class ServeUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ServeUsageError';
  }
}

export interface ServeOptions {
  apiSock?: string;
  configFile?: string;
  noApi: boolean;
  id?: string;
  level?: string;
  logPath?: string;
  showLevel: boolean;
  showLogOrigin: boolean;
  module?: string;
  metricsPath?: string;
  /** --no-seccomp: the VM's worker threads run unfiltered (VMConfig.seccomp 'off'). */
  noSeccomp: boolean;
  /** --boot-timer: Firecracker's boot timer device (VMConfig.bootTimer); its line is logged at Info. */
  bootTimer: boolean;
  /** From Firecracker's jailer: when it started this process (µs since the epoch) and its own CPU µs. */
  startTimeUs?: number;
  startCpuUs?: number;
}

export const DEFAULT_FC_SOCKET = '/run/firecracker.socket';

/** argv (after `serve`, or Firecracker's flags) → options, or a ServeUsageError with one line. */
export function parseServeArgs(argv: readonly string[]): ServeOptions | 'help' {
  const sub = argv[0] === 'serve';
  const args = sub ? argv.slice(1) : [...argv];
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        'api-sock': { type: 'string' },
        'config-file': { type: 'string' },
        'no-api': { type: 'boolean' },
        id: { type: 'string' },
        level: { type: 'string' },
        'log-path': { type: 'string' },
        'show-level': { type: 'boolean' },
        'show-log-origin': { type: 'boolean' },
        module: { type: 'string' },
        'metrics-path': { type: 'string' },
        'boot-timer': { type: 'boolean' },
        'no-seccomp': { type: 'boolean' },
        'start-time-us': { type: 'string' },
        'start-time-cpu-us': { type: 'string' },
        'parent-cpu-time-us': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    const m = /'(--?[^' ]+)/.exec((e as Error).message);
    throw new ServeUsageError(m ? `${m[1]}: unknown option or missing value (kindling serve --help lists the options)` : 'bad arguments (kindling serve --help lists the options)');
  }
  const v = parsed.values;
  if (v.help) return 'help';
  if (v['no-api'] && v['api-sock'] !== undefined) throw new ServeUsageError('--no-api and --api-sock exclude each other');
  if (v['no-api'] && v['config-file'] === undefined) throw new ServeUsageError('--no-api needs --config-file (nothing could configure the VM)');
  if (v.id !== undefined && !/^[A-Za-z0-9-]{1,64}$/.test(v.id)) throw new ServeUsageError('--id: must be 1 to 64 letters, digits or dashes');
  for (const k of ['api-sock', 'config-file', 'log-path', 'metrics-path'] as const) {
    const p = v[k];
    if (p !== undefined && (p === '' || p.includes('\0'))) throw new ServeUsageError(`--${k}: must be a non-empty path`);
  }
  const micros = (k: 'start-time-us' | 'start-time-cpu-us' | 'parent-cpu-time-us'): number | undefined => {
    const t = v[k];
    if (t === undefined) return undefined;
    if (!/^\d{1,16}$/.test(t)) throw new ServeUsageError(`--${k}: must be a whole number of microseconds`);
    return Number(t);
  };
  const startTimeUs = micros('start-time-us');
  micros('start-time-cpu-us'); // checked; see startCpuUs below
  const parentCpuUs = micros('parent-cpu-time-us');
  let apiSock = v['api-sock'];
  if (apiSock === undefined && !v['no-api']) {
    if (sub) throw new ServeUsageError('serve: --api-sock PATH is required');
    apiSock = DEFAULT_FC_SOCKET;
  }
  return {
    apiSock,
    configFile: v['config-file'],
    noApi: v['no-api'] ?? false,
    id: v.id,
    level: v.level,
    logPath: v['log-path'],
    showLevel: v['show-level'] ?? false,
    showLogOrigin: v['show-log-origin'] ?? false,
    module: v.module,
    metricsPath: v['metrics-path'],
    noSeccomp: v['no-seccomp'] ?? false,
    bootTimer: v['boot-timer'] ?? false,
    startTimeUs,
    // This process's CPU time already counts what it spent before exec (getrusage is per process,
    // across exec), so --start-time-cpu-us is only checked; the jailer's own time is added.
    startCpuUs: parentCpuUs,
  };
}

const MAX_CONFIG_BYTES = 1 << 20;

/** The config file as JSON: a regular file under 1 MiB, opened non-blocking (a FIFO is refused, not waited on). */
function readConfigFile(path: string): unknown {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    throw new ServeUsageError(`--config-file: cannot open ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new ServeUsageError(`--config-file: ${path} is not a regular file`);
    if (st.size > MAX_CONFIG_BYTES) throw new ServeUsageError(`--config-file: ${path} is larger than 1 MiB`);
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, off);
      if (n <= 0) break;
      off += n;
    }
    try {
      return JSON.parse(buf.subarray(0, off).toString('utf8'));
    } catch (e) {
      throw new ServeUsageError(`--config-file: ${path}: malformed JSON: ${(e as Error).message.replace(/[\r\n]+/g, ' ')}`);
    }
  } finally {
    closeSync(fd);
  }
}

function kindlingVersion(): string {
  const fd = openSync(new URL('../../package.json', import.meta.url), 'r');
  try {
    const buf = Buffer.alloc(fstatSync(fd).size);
    readSync(fd, buf, 0, buf.length, 0);
    return (JSON.parse(buf.toString('utf8')) as { version: string }).version;
  } finally {
    closeSync(fd);
  }
}

/**
 * Console input for COM1, as Firecracker: stdin's bytes go to the guest. A pipe or file as it is; a
 * terminal only when this process is in its foreground group (./terminal.ts), switched to raw mode
 * once the VM starts (so Ctrl-C reaches the guest, as in Firecracker; signals from elsewhere still
 * stop kindling) and restored on exit. In the background the terminal is neither changed nor read.
 */
function guestInput(): { serialIn?: NodeJS.ReadableStream; onVmStarting?: () => (() => void) | void } {
  const stdin = process.stdin;
  if (!stdin.isTTY) return { serialIn: stdin };
  neverStopOnTerminalAccess();
  if (consoleMode(probeTerminal(true)) !== 'raw') return {};
  return {
    serialIn: stdin,
    onVmStarting: () => {
      const cooked = (): void => {
        process.off('exit', cooked);
        stdin.setRawMode(false);
      };
      stdin.setRawMode(true);
      process.on('exit', cooked);
      return cooked;
    },
  };
}

/** Run `kindling serve` / Firecracker's command line; resolves with the exit status. */
export async function serveMain(argv: readonly string[], signals?: SignalStop): Promise<number> {
  const fail = (line: string, code: number): number => {
    process.stderr.write(`kindling: ${line}\n`);
    return code;
  };
  let opts: ServeOptions | 'help';
  try {
    opts = parseServeArgs(argv);
  } catch (e) {
    return fail((e as Error).message, 2);
  }
  if (opts === 'help') {
    process.stdout.write(SERVE_USAGE + '\n');
    return 0;
  }
  // Process start (the jailer's --start-time-us when given, else this process's time origin).
  const startTimeUs = opts.startTimeUs ?? Math.round(performance.timeOrigin * 1000);
  // Loaded through a computed URL so the CLI's start-up bundle does not pull the API server in; its own
  // start-up bundle when the build wrote one (src/main/bundle.ts).
  const { freshBundle } = await import('../main/bundle.js');
  const entry = freshBundle(new URL('../api-server/index.js', import.meta.url)).href;
  const { ApiController, ApiError, ApiSocketError, serveApi } = (await import(entry)) as typeof import('../api-server/index.js');
  let exitWith: (code: number) => void = () => {};
  const done = new Promise<number>((r) => (exitWith = r));
  const controller = new ApiController({
    id: opts.id,
    vmmVersion: kindlingVersion(),
    ...(opts.noSeccomp ? { seccomp: 'off' as const } : {}),
    ...(opts.bootTimer ? { bootTimer: true } : {}),
    // kindling owns this process: every thread is filtered once the VM is built (docs/security.md).
    seccompThreads: 'all',
    ...guestInput(),
    // After a signal the VM's end is the signal's doing: 128+N, as `kindling run`.
    onExit: (exit) => exitWith(signals?.exitCode ?? exit.exitCode & 0xff),
  });
  let api: Awaited<ReturnType<typeof serveApi>> | undefined;
  const shutdown = async (): Promise<void> => {
    await controller.close();
    await api?.close();
  };
  signals?.setStopper(async () => {
    await shutdown();
    exitWith(signals.exitCode ?? 1);
  });
  try {
    if (opts.logPath !== undefined || opts.level !== undefined || opts.showLevel || opts.showLogOrigin) {
      controller.putLogger({ log_path: opts.logPath, level: opts.level, show_level: opts.showLevel, show_log_origin: opts.showLogOrigin, module: opts.module });
    }
    if (opts.metricsPath !== undefined) controller.setMetricsPath(opts.metricsPath);
    if (opts.apiSock !== undefined) api = await serveApi(controller, opts.apiSock);
    // Firecracker's api_server metrics: process start → API ready, wall and CPU (µs).
    const cpu = process.cpuUsage();
    controller.metrics.setStartup(performance.timeOrigin * 1000 + performance.now() * 1000 - startTimeUs, cpu.user + cpu.system + (opts.startCpuUs ?? 0));
    controller.log.log('Info', 'main', `Running kindling v${kindlingVersion()} (Firecracker-compatible API${opts.apiSock ? ` on ${opts.apiSock}` : ''})`);
    if (opts.configFile !== undefined) {
      await controller.applyConfigFile(readConfigFile(opts.configFile));
      await controller.startFromConfig();
    }
  } catch (e) {
    await shutdown().catch(() => undefined);
    if (e instanceof ServeUsageError || e instanceof ApiSocketError) return fail(e.message, 2);
    if (e instanceof ApiError) return fail(opts.configFile !== undefined && !e.message.startsWith('config file') ? `config file: ${e.message}` : e.message, e.user ? 2 : 1);
    return fail((e as Error).message ?? String(e), 1);
  }
  const code = await done;
  await shutdown().catch(() => undefined);
  await new Promise<void>((r) => (process.stdout.writableNeedDrain ? process.stdout.once('drain', r) : r()));
  return code;
}
