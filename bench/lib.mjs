// Shared benchmark helpers: run a command with timestamps on its output lines and its peak RSS.
import { spawn, spawnSync } from 'node:child_process';
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
 * A benchmark's flags, each a positive integer with a default (`defaults`: name → value), plus
 * --help (prints `usage`, exit 0). An unknown flag or a bad value is one line `bench:NAME: …` and
 * exit 2. Returns name → number.
 */
export function benchArgs(name, usage, defaults) {
  let values;
  try {
    ({ values } = parseArgs({ options: { ...Object.fromEntries(Object.keys(defaults).map((k) => [k, { type: 'string' }])), help: { type: 'boolean' } } }));
  } catch (e) {
    console.error(`bench:${name}: ${e.message}; ${usage}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  const out = {};
  for (const [k, d] of Object.entries(defaults)) {
    const v = Number(values[k] ?? d);
    if (!Number.isInteger(v) || v < 1) {
      console.error(`bench:${name}: --${k} must be a positive integer`);
      process.exit(2);
    }
    out[k] = v;
  }
  return out;
}

/** One summary line: `name` padded, then min / median / max of `xs` with `digits` decimals. */
export function printStat(name, xs, digits = 1) {
  console.log(`${name.padEnd(24)} min ${fmt(Math.min(...xs), digits)}  median ${fmt(median(xs), digits)}  max ${fmt(Math.max(...xs), digits)}`);
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
