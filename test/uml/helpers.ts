// The user-mode-Linux harness: Linux's own virtio drivers, in Debian's user-mode-linux (Linux as an
// ordinary host process, no KVM), attached over vhost-user to a device backend on a Unix socket —
// kindling's (`kindling vhost-user --socket PATH --device …`) or a peer's (qemu-storage-daemon).
//
// One run (runUml):
//   linux.uml mem=<M>M root=/dev/root rootfstype=hostfs rootflags=/ rw init=<RUN>/init quiet
//             con=null con0=fd:0,fd:1 uml_dir=<RUN>/uml virtio_uml.device=<SOCKET>:<VIRTIO_ID> …
// started in a new session (detached: setsid, its own process group), TMPDIR=<RUN>/tmp (UML backs guest
// RAM with a file in $TMPDIR), stdin /dev/null, stdout+stderr collected as the console. The root is
// the host's own / through hostfs, so the guest runs the host's binaries (sh, mount, mkfs.ext4, dd)
// and shares files with the test through <RUN>.
//
// The generated init script (/bin/sh): mounts proc and sysfs (devtmpfs is mounted by the kernel,
// CONFIG_DEVTMPFS_MOUNT), prints "KINDLING-UML-INIT <uptime>" on the console, loads the requested
// driver modules with uml-tool insmod in dependency order (found in /usr/lib/uml/modules/<version>/,
// order from each module's .modinfo `depends=` with src/guest-image/modinfo.ts; built-in modules from
// modules.builtin need no loading), then runs the test's commands in a subshell with stdout and stderr
// into <RUN>/output and their status into <RUN>/status, and powers off (uml-tool poweroff). `mark NAME`
// inside the commands prints "KINDLING-MARK NAME" on the console, reported to onMark with the host
// time, so a caller can take readings (e.g. a backend's CPU time) at points inside the guest.
//
// Always: a timeout (SIGKILL to the whole process group), then SIGKILL to the group even after a
// clean exit (UML forks helper processes), and <RUN> removed. The boot-to-init time is host wall
// time from spawn to the KINDLING-UML-INIT line.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { moduleName, parseModinfo, resolveModuleOrder } from '../../src/guest-image/modinfo.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const KINDLING = join(ROOT, 'bin', 'kindling.js');
export const UML = '/usr/bin/linux.uml';
export const UML_MODULES_ROOT = '/usr/lib/uml/modules';
const TOOL_SRC = join(ROOT, 'test', 'uml', 'uml-tool.c');
const TOOL = join(ROOT, 'build', 'tools', 'uml-tool');

/** Device IDs (virtio 1.2 §5). */
export const VIRTIO_ID = { net: 1, blk: 2, console: 3, rng: 4 } as const;

function onPath(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}
export const which = onPath;

/** The UML kernel's release (`linux.uml --version`), or undefined when linux.uml cannot run. */
export function umlVersion(): string | undefined {
  if (!existsSync(UML)) return undefined;
  const r = spawnSync(UML, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  const v = r.stdout?.trim();
  return r.status === 0 && v && /^[0-9][\w.+-]*$/.test(v) ? v : undefined;
}

/** Why UML runs cannot happen here, or undefined when they can. */
export function umlMissing(): string | undefined {
  const v = umlVersion();
  if (!v) return `${UML} is absent (Debian package user-mode-linux; npm test installs it as root)`;
  if (!existsSync(join(UML_MODULES_ROOT, v))) return `${join(UML_MODULES_ROOT, v)} is absent`;
  if (!existsSync(TOOL) && !onPath('gcc')) return 'gcc is absent (builds test/uml/uml-tool.c)';
  return undefined;
}

const warned = new Set<string>();
/** Call at the top of every UML test file: one loud line when its tests are skipped. */
export function umlOrSkipNotice(file: string, extra?: () => string | undefined): boolean {
  const why = umlMissing() ?? extra?.();
  if (why && !warned.has(file)) {
    warned.add(file);
    console.warn(`\n!!! UML TESTS SKIPPED (${file}): ${why} !!!\n`);
  }
  return !why;
}

/** build/tools/uml-tool, rebuilt with gcc when missing or older than its source. */
export function umlTool(): string {
  if (existsSync(TOOL) && statSync(TOOL).mtimeMs >= statSync(TOOL_SRC).mtimeMs) return TOOL;
  mkdirSync(dirname(TOOL), { recursive: true });
  const tmp = `${TOOL}.${process.pid}.tmp`;
  const r = spawnSync('gcc', ['-O2', '-Wall', '-Werror', '-o', tmp, TOOL_SRC], { encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(tmp, { force: true });
    throw new Error(`gcc ${TOOL_SRC} failed: ${r.error?.message ?? r.stderr}`);
  }
  spawnSync('mv', ['-f', tmp, TOOL]);
  return TOOL;
}

/** Absolute paths of the named modules' .ko files and their dependencies, dependencies first. */
export function modulePaths(names: readonly string[], version = umlVersion()): string[] {
  if (!version) throw new Error('linux.uml is not installed');
  const dir = join(UML_MODULES_ROOT, version);
  const paths = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ko')) paths.set(moduleName(e.name), p);
    }
  };
  walk(join(dir, 'kernel'));
  const builtin = new Set(
    readFileSync(join(dir, 'modules.builtin'), 'utf8').split('\n').filter(Boolean).map((l) => moduleName(l)),
  );
  const depsOf = (n: string): string[] | undefined => {
    if (builtin.has(n)) return [];
    const p = paths.get(n);
    return p ? parseModinfo(readFileSync(p)).depends : undefined;
  };
  return resolveModuleOrder(names, depsOf).filter((n) => !builtin.has(n)).map((n) => paths.get(n)!);
}

/** Whether the UML build has a driver, as a loadable module or built in. */
export function umlHasModule(name: string): boolean {
  try {
    modulePaths([name]);
    return true;
  } catch {
    return false;
  }
}

export interface UmlDevice {
  socket: string;
  virtioId: number;
}

export interface UmlOptions {
  devices: UmlDevice[];
  /** Driver modules to load (names as modinfo spells them, e.g. virtio_blk). */
  modules?: string[];
  /** Shell commands run as root inside UML (after the modules are loaded); `mark NAME` is defined. */
  script: string;
  memMiB?: number;
  timeoutMs?: number;
  /** Called with each `mark NAME` and the host time (performance.now()) its line arrived. */
  onMark?: (name: string, atMs: number) => void;
}

export interface UmlResult {
  /** Exit status of the test's commands (from <RUN>/status), or undefined if they did not finish. */
  status: number | undefined;
  /** What the commands wrote (stdout and stderr, in order). */
  output: string;
  /** UML's console: kernel messages, the init markers. */
  console: string;
  /** UML's own exit. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** linux.uml's pid (also its process group id). */
  pid: number | undefined;
  /** Host ms from spawn to the init script's first line. */
  bootToInitMs: number | undefined;
  /** The guest's /proc/uptime (s) when init started. */
  guestUptimeAtInit: number | undefined;
  wallMs: number;
}

const shQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** The init script for one run (exported for inspection; runUml writes it). */
export function initScript(run: string, modules: readonly string[], script: string): string {
  const tool = umlTool();
  return [
    '#!/bin/sh',
    '# kindling test/uml/helpers.ts: init for one user-mode-Linux run',
    'PATH=/usr/sbin:/usr/bin:/sbin:/bin; export PATH',
    'mount -t proc proc /proc',
    'mount -t sysfs sysfs /sys',
    'echo "KINDLING-UML-INIT $(cut -d" " -f1 /proc/uptime)"',
    `RUN=${shQuote(run)}; export RUN`,
    ...(modules.length ? [`${shQuote(tool)} insmod ${modules.map(shQuote).join(' ')} || echo "KINDLING-UML-INSMOD-FAILED"`] : []),
    'exec 3>&1',
    'mark() { echo "KINDLING-MARK $1" >&3; }',
    `UMLTOOL=${shQuote(tool)}; export UMLTOOL`,
    '(',
    script,
    `) > "$RUN/output" 2>&1 < /dev/null`,
    'echo $? > "$RUN/status"',
    'sync',
    'echo KINDLING-UML-DONE',
    `exec ${shQuote(tool)} poweroff`,
    '',
  ].join('\n');
}

/** Pids of the live processes in process group `pgid` (from /proc/PID/stat, field 5). */
export function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${e}/stat`, 'utf8');
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(f[2]) === pgid && f[0] !== 'Z') out.push(Number(e));
  }
  return out;
}

/** Kill a detached child's whole process group (no error if it is gone). */
export function killGroup(p: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (p.pid === undefined) return;
  try {
    process.kill(-p.pid, signal);
  } catch {
    /* ESRCH: the group is gone */
  }
}

/** Boot UML with the given devices and commands; see the header. Never leaves a process or a file. */
export async function runUml(opts: UmlOptions): Promise<UmlResult> {
  const version = umlVersion();
  if (!version) throw new Error(`${UML} is not installed`);
  const mods = modulePaths(opts.modules ?? [], version);
  const run = mkdtempSync(join(tmpdir(), 'kindling-uml-'));
  try {
    mkdirSync(join(run, 'tmp'));
    mkdirSync(join(run, 'mnt'));
    const init = join(run, 'init');
    writeFileSync(init, initScript(run, mods, opts.script), { mode: 0o755 });
    const args = [
      `mem=${opts.memMiB ?? 128}M`, 'root=/dev/root', 'rootfstype=hostfs', 'rootflags=/', 'rw', `init=${init}`, 'quiet',
      'con=null', 'con0=fd:0,fd:1', `uml_dir=${join(run, 'uml')}`, 'umid=kindling-test',
      ...opts.devices.map((d) => `virtio_uml.device=${d.socket}:${d.virtioId}`),
    ];
    const t0 = performance.now();
    const p = spawn(UML, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: join(run, 'tmp') } });
    let console = '';
    let bootToInitMs: number | undefined;
    let pending = '';
    const onData = (b: Buffer): void => {
      const now = performance.now();
      const s = b.toString('latin1');
      console += s;
      pending += s;
      let i;
      while ((i = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, i).replace(/\r$/, '');
        pending = pending.slice(i + 1);
        if (bootToInitMs === undefined && line.startsWith('KINDLING-UML-INIT')) bootToInitMs = now - t0;
        const m = /^KINDLING-MARK (\S+)/.exec(line);
        if (m) opts.onMark?.(m[1], now);
      }
    };
    p.stdout!.on('data', onData);
    p.stderr!.on('data', (b: Buffer) => (console += b.toString('latin1')));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(p);
    }, opts.timeoutMs ?? 90_000);
    const [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) => {
      p.on('error', (e) => {
        console += `\nspawn ${UML}: ${e.message}\n`;
        res([null, null]);
      });
      p.on('close', (code, sig) => res([code, sig]));
    });
    clearTimeout(timer);
    const wallMs = performance.now() - t0;
    // UML's helper processes share its group: kill them too and wait until they are gone.
    killGroup(p);
    for (let i = 0; p.pid !== undefined && groupMembers(p.pid).length > 0 && i < 250; i++) {
      await new Promise((r) => setTimeout(r, 20));
      killGroup(p);
    }
    const read = (f: string): string | undefined => (existsSync(join(run, f)) ? readFileSync(join(run, f), 'utf8') : undefined);
    const st = read('status')?.trim();
    const up = /KINDLING-UML-INIT ([0-9.]+)/.exec(console);
    return {
      status: st === undefined || st === '' ? undefined : Number(st),
      output: read('output') ?? '',
      console,
      exitCode,
      signal,
      timedOut,
      pid: p.pid,
      bootToInitMs,
      guestUptimeAtInit: up ? Number(up[1]) : undefined,
      wallMs,
    };
  } finally {
    rmSync(run, { recursive: true, force: true });
  }
}

/** A one-line summary of a failed run for assertion messages. */
export function describeRun(r: UmlResult): string {
  return `status ${r.status}, uml exit ${r.exitCode}${r.signal ? ` (${r.signal})` : ''}${r.timedOut ? ', TIMED OUT' : ''}\n--- output ---\n${r.output.slice(-3000)}\n--- console ---\n${r.console.slice(-3000)}`;
}

export interface Backend {
  proc: ChildProcess;
  socket: string;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code/signal when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** utime+stime of the whole process (all threads) in seconds, from /proc/PID/stat, while it runs. */
  cpuSeconds: () => number | undefined;
  /** Kill its process group (SIGKILL) and wait for it. */
  kill: () => Promise<void>;
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;

export function procCpuSeconds(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Fields after the command name (which may hold spaces) in parentheses: state is field 3; utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/**
 * Spawn a vhost-user backend (its own process group) that listens on `socket`, and resolve once the
 * socket exists (without connecting: a backend serving one frontend would take a probe for it).
 */
export async function startBackend(argv: string[], socket: string, timeoutMs = 20_000): Promise<Backend> {
  const proc = spawn(argv[0], argv.slice(1), { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (b: Buffer) => (out += b.toString('latin1')));
  proc.stderr!.on('data', (b: Buffer) => (err += b.toString('latin1')));
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    proc.on('error', (e) => {
      err += `spawn ${argv[0]}: ${e.message}\n`;
      done = true;
      res({ code: null, signal: null });
    });
    proc.on('exit', (code, signal) => {
      done = true;
      res({ code, signal });
    });
  });
  const backend: Backend = {
    proc,
    socket,
    stdout: () => out,
    stderr: () => err,
    exited,
    cpuSeconds: () => (proc.pid === undefined || done ? undefined : procCpuSeconds(proc.pid)),
    kill: async () => {
      killGroup(proc);
      await exited;
    },
  };
  const t0 = Date.now();
  while (!existsSync(socket)) {
    if (done || Date.now() - t0 > timeoutMs) {
      await backend.kill();
      throw new Error(`${argv.join(' ')}: no socket ${socket} after ${Date.now() - t0} ms (exit ${proc.exitCode}); stderr: ${err.slice(-1000)}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return backend;
}

/** `kindling vhost-user --socket SOCKET --device DEVICE` (through bin/kindling.js: needs dist/). */
export function kindlingArgv(socket: string, device: string, extra: string[] = []): string[] {
  return [process.execPath, KINDLING, 'vhost-user', '--socket', socket, '--device', device, ...extra];
}

/** qemu-storage-daemon exporting IMAGE as vhost-user-blk on SOCKET (the peer backend). */
export function qsdArgv(socket: string, image: string, writable = true): string[] {
  return [
    'qemu-storage-daemon',
    '--blockdev', `driver=file,node-name=f,filename=${image},cache.direct=off`,
    '--export', `type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=${socket},writable=${writable ? 'on' : 'off'}`,
  ];
}

/**
 * Whether `kindling vhost-user` exists in this build (dist/ compiled from a tree that has it): the
 * CLI without its --socket answers with a usage error about its options, not `unknown command`.
 */
export function kindlingHasVhostUser(): boolean {
  if (!existsSync(join(ROOT, 'dist', 'cli', 'cli.js'))) return false;
  const r = spawnSync(process.execPath, [KINDLING, 'vhost-user'], { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', 'pipe', 'pipe'] });
  return !/unknown command/i.test(`${r.stdout}${r.stderr}`);
}

/** A fresh temp dir for a test's image and sockets; remove it with rmSync(dir, {recursive, force}). */
export function testDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `kindling-${prefix}-`));
}

/**
 * Call at the top of a UML test file whose tests need `kindling vhost-user` in this build: one loud
 * line when they are skipped (UML missing, dist/ without it, or what `extra` reports).
 */
export function umlKindlingOrSkipNotice(file: string, extra?: () => string | undefined): boolean {
  return umlOrSkipNotice(file, () => (kindlingHasVhostUser() ? extra?.() : '`kindling vhost-user` is not in this build (dist/)'));
}

/** The temp dirs and backends of one test file, removed and killed after each test (see umlScratch). */
export interface UmlScratch {
  /** A fresh temp dir (testDir), removed after the test. */
  dir(prefix: string): string;
  /** startBackend(argv, socket), killed after the test. */
  backend(argv: string[], socket: string, timeoutMs?: number): Promise<Backend>;
}

/**
 * Per-file cleanup for UML tests: pass vitest's afterEach (this file is also bundled for the
 * benchmarks, which have no test runner). After each test every backend is killed, then every dir removed.
 */
export function umlScratch(afterEach: (fn: () => Promise<void>) => void): UmlScratch {
  let dirs: string[] = [];
  let backends: Backend[] = [];
  afterEach(async () => {
    const bs = backends;
    const ds = dirs;
    backends = [];
    dirs = [];
    for (const b of bs) await b.kill();
    for (const d of ds) rmSync(d, { recursive: true, force: true });
  });
  return {
    dir(prefix) {
      const d = testDir(prefix);
      dirs.push(d);
      return d;
    },
    async backend(argv, socket, timeoutMs) {
      const b = await startBackend(argv, socket, timeoutMs);
      backends.push(b);
      return b;
    },
  };
}

/** A backend's exit status, or 'still running' when it has not exited within `ms` (one that should end by itself). */
export function exitWithin(b: Backend, ms = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null } | 'still running'> {
  return Promise.race([b.exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), ms).unref())]);
}
