// Shared benchmark helpers: run a command with timestamps on its output lines and its peak RSS.
import { spawn, spawnSync } from 'node:child_process';
import { request } from 'node:http';
import { dirname, join, resolve } from 'node:path';
import { rmSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const GUESTS = join(ROOT, 'build', 'guests');
export const KINDLING = join(ROOT, 'bin', 'kindling.js');

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

export function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/**
 * Spawn `argv` under bench/rusage.py. Resolves with wall times (ms since just before spawn) of the
 * first stdout line containing each marker, the exit time, exit code, peak RSS (KiB) and stderr.
 */
export function timedRun(argv, markers, { timeoutMs = 60_000, env = process.env } = {}) {
  return new Promise((resolvePromise) => {
    const t0 = performance.now();
    const p = spawn('python3', [join(ROOT, 'bench', 'rusage.py'), ...argv], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'], env });
    const seen = {};
    let out = '';
    let err = '';
    let rss = NaN;
    p.stdout.on('data', (b) => {
      out += b.toString('latin1');
      const now = performance.now() - t0;
      for (const m of markers) if (seen[m] === undefined && out.includes(m)) seen[m] = now;
    });
    p.stderr.on('data', (b) => (err += b));
    p.stdio[3].on('data', (b) => {
      const m = /maxrss (\d+)/.exec(b.toString());
      if (m) rss = Number(m[1]);
    });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ marks: seen, exitMs: performance.now() - t0, spawnEpoch: performance.timeOrigin + t0, code, rssKiB: rss, stdout: out, stderr: err });
    });
  });
}

export const QEMU_MICROVM = [
  'qemu-system-x86_64', '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=off', '-accel', 'kvm',
  '-cpu', 'host,-arch-capabilities', '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio',
  '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-no-reboot',
];

export function fmt(x, digits = 1) {
  return Number.isFinite(x) ? x.toFixed(digits) : 'n/a';
}

/**
 * A benchmark's flags (`defaults`: name → spec), plus --help (prints `usage`, exit 0). An unknown
 * flag or a bad value is one line `bench:NAME: …` and exit 2. A spec is either a number, the default
 * of a positive-integer flag, or { type, default, min, choices } for any other flag:
 *   'integer': an integer ≥ min (min 1 when not given);
 *   'number':  a finite number ≥ min, or > 0 when min is not given (e.g. seconds: 0.5);
 *   'string':  any string, or one of `choices` when given; default may be left undefined;
 *   'boolean': a bare --flag taking no value, default false.
 * Returns name → value (the default when the flag is absent).
 */
export function benchArgs(name, usage, defaults) {
  const specs = Object.entries(defaults).map(([k, d]) => [k, typeof d === 'number' ? { type: 'integer', default: d } : d]);
  let values;
  try {
    ({ values } = parseArgs({
      options: { ...Object.fromEntries(specs.map(([k, s]) => [k, { type: s.type === 'boolean' ? 'boolean' : 'string' }])), help: { type: 'boolean' } },
    }));
  } catch (e) {
    console.error(`bench:${name}: ${e.message.split('\n')[0]}; ${usage.split('\n')[0]}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  const bad = (msg) => {
    console.error(`bench:${name}: --${msg}`);
    process.exit(2);
  };
  const out = {};
  for (const [k, s] of specs) {
    if (s.type === 'boolean') {
      out[k] = values[k] ?? s.default ?? false;
    } else if (s.type === 'string') {
      const v = values[k] ?? s.default;
      if (v !== undefined && s.choices && !s.choices.includes(v)) bad(`${k} must be one of ${s.choices.join(', ')}`);
      out[k] = v;
    } else if (s.type === 'integer' || s.type === 'number') {
      const v = Number(values[k] ?? s.default);
      const int = s.type === 'integer';
      const ok = (int ? Number.isInteger(v) : Number.isFinite(v)) && (s.min === undefined ? (int ? v >= 1 : v > 0) : v >= s.min);
      if (!ok) {
        const what = int ? 'integer' : 'number';
        bad(`${k} must be ${s.min === undefined ? `a positive ${what}` : `a${int ? 'n' : ''} ${what} >= ${s.min}`}`);
      }
      out[k] = v;
    } else {
      throw new Error(`benchArgs: flag --${k} has unknown type ${s.type}`);
    }
  }
  return out;
}

/** One summary line: `name` padded, then min / median / max of `xs` with `digits` decimals. */
export function printStat(name, xs, digits = 1) {
  console.log(`${name.padEnd(24)} min ${fmt(Math.min(...xs), digits)}  median ${fmt(median(xs), digits)}  max ${fmt(Math.max(...xs), digits)}`);
}

/**
 * The stream rows of a bench against a host socketpair floor (bench:vsock, bench:net-uml): each row
 * { h2g, g2h, h2gCpu, g2hCpu, f } in MB/s and backend CPU seconds, printed as min/median/max lines.
 */
export function printStreamStats(rows) {
  printStat('host→guest MB/s', rows.map((r) => r.h2g));
  printStat('guest→host MB/s', rows.map((r) => r.g2h));
  printStat('backend CPU s (h2g)', rows.map((r) => r.h2gCpu), 2);
  printStat('backend CPU s (g2h)', rows.map((r) => r.g2hCpu), 2);
  printStat('floor MB/s', rows.map((r) => r.f));
  printStat('ratio h2g/floor', rows.map((r) => r.h2g / r.f), 3);
  printStat('ratio g2h/floor', rows.map((r) => r.g2h / r.f), 3);
}

/**
 * The user-mode-Linux harness (test/uml/helpers.ts, TypeScript), bundled with esbuild (a dev
 * dependency) into build/tools/ at the same depth below the root as test/uml/, so its
 * import.meta.url paths resolve; the bundle is removed once imported.
 */
export async function loadUmlHarness() {
  const esbuild = await import('esbuild');
  const out = join(ROOT, 'build', 'tools', `uml-helpers.${process.pid}.mjs`);
  process.on('exit', () => rmSync(out, { force: true }));
  await esbuild.build({ entryPoints: [join(ROOT, 'test', 'uml', 'helpers.ts')], outfile: out, bundle: true, platform: 'node', format: 'esm', target: 'node20', logLevel: 'warning' });
  const m = await import(pathToFileURL(out).href);
  rmSync(out);
  return m;
}

/** One request to a Firecracker-style API on a Unix socket: { status, text }. */
export function apiRequest(sock, method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request({ socketPath: sock, method, path, headers: data ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}
