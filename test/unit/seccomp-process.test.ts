// seccomp on a whole process kindling owns: `kindling vhost-user` installs the `process` role with
// TSYNC once it listens, so every thread (main, libuv's pool, V8's platform threads) shows Seccomp 2
// and NoNewPrivs 1; SIGTERM still ends it cleanly (exit 128+15, one line) and the socket is removed (unlinkat on the
// directory fd opened before the filter). --seccomp off leaves it unfiltered. A thread of a process
// with the process filter that tries execve or fork is killed with SIGSYS. (Linux's drivers against
// the filtered backend: test/uml/*.test.ts run `kindling vhost-user` with its default, strict.)
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { lazyTempDir } from '../fuzz/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const KINDLING = join(ROOT, 'bin', 'kindling.js');
const DIST_INSTALL = join(ROOT, 'dist', 'seccomp', 'install.js');
const ADDON = join(ROOT, 'native', 'build', 'Release', 'kindling.node');
const haveDist = existsSync(DIST_INSTALL) && existsSync(join(ROOT, 'dist', 'cli', 'vhost-user.js'));
if (!haveDist) console.warn('SKIP seccomp process tests: dist/ is not built (npm test builds it first)');

function threads(pid: number): Array<{ comm: string; seccomp: string; noNewPrivs: string }> {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    const field = (k: string): string => new RegExp(`^${k}:\\s+(\\S+)`, 'm').exec(status)?.[1] ?? '?';
    return { comm: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(), seccomp: field('Seccomp'), noNewPrivs: field('NoNewPrivs') };
  });
}

async function serveRng(dir: string, extra: string[]): Promise<{ pid: number; socket: string; stop: () => Promise<{ code: number | null; signal: string | null; stderr: string }> }> {
  const socket = join(dir, `rng-${extra.join('') || 'default'}.sock`);
  const p = spawn(process.execPath, [KINDLING, 'vhost-user', '--socket', socket, '--device', 'rng', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<{ code: number | null; signal: string | null }>((res) => p.on('exit', (code, signal) => res({ code, signal })));
  for (let i = 0; i < 400 && !stderr.includes('listening on'); i++) await new Promise((r) => setTimeout(r, 25));
  expect(stderr).toContain('listening on');
  await new Promise((r) => setTimeout(r, 100));
  return {
    pid: p.pid!,
    socket,
    stop: async () => {
      p.kill('SIGTERM');
      return { ...(await exited), stderr };
    },
  };
}

describe.skipIf(!haveDist)('seccomp on `kindling vhost-user` (every thread, TSYNC)', () => {
  const dir = lazyTempDir('kindling-seccomp-proc-');

  it('strict by default: every thread filtered; SIGTERM ends it (143, one line) and removes the socket', async () => {
    const s = await serveRng(dir(), []);
    const ts = threads(s.pid);
    expect(ts.length).toBeGreaterThan(3); // main, V8 platform threads, libuv's pool…
    for (const t of ts) expect(t, `thread ${t.comm}`).toMatchObject({ seccomp: '2', noNewPrivs: '1' });
    const end = await s.stop();
    // The CLI's rule for signals (exit 128+N with one line), reached through the filtered loop.
    expect(end, end.stderr).toMatchObject({ code: 128 + 15, signal: null });
    expect(end.stderr).toContain('kindling: stopped by SIGTERM');
    expect(existsSync(s.socket)).toBe(false);
  });

  it('--seccomp off leaves it unfiltered; --seccomp bogus is a usage error (exit 2, one line)', async () => {
    const s = await serveRng(dir(), ['--seccomp', 'off']);
    for (const t of threads(s.pid)) expect(t.seccomp).toBe('0');
    expect((await s.stop()).code).toBe(128 + 15);
    const r = spawnSync(process.execPath, [KINDLING, 'vhost-user', '--socket', join(dir(), 'x.sock'), '--device', 'rng', '--seccomp', 'bogus'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^kindling: --seccomp must be strict, log or off \(got "bogus"\)/);
  });

  it.each([
    ['execve', 59],
    ['fork', 57],
    ['socket(AF_INET)', 41],
  ])('a process with the process filter that calls %s is killed with SIGSYS', (_name, nr) => {
    const script = join(dir(), `probe-${nr}.mjs`);
    writeFileSync(
      script,
      `import { createRequire } from 'node:module';
const addon = createRequire(import.meta.url)(${JSON.stringify(ADDON)});
const { installSeccomp } = await import(${JSON.stringify(pathToFileURL(DIST_INSTALL).href)});
installSeccomp(addon, { kind: 'process', devices: ['rng'] }, 'strict');
console.log('installed');
console.log(addon.probeSyscall(${nr}, 2, 1, 0));
`,
    );
    const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 30_000 });
    expect(r.stdout.trim()).toBe('installed');
    expect(r.signal).toBe('SIGSYS');
  });
});
