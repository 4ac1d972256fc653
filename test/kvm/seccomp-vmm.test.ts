// The process-wide filter of a process kindling owns (VMConfig.seccompThreads 'all', role vmm in
// src/seccomp/roles.ts; needs /dev/kvm, skipped loudly without it). `kindling run` and `kindling serve`
// install it with TSYNC once the VM is built: every thread (main, V8's platform threads, libuv's pool,
// every vCPU and I/O worker) shows Seccomp 2 and NoNewPrivs 1; SIGTERM still ends the VM cleanly;
// serve's PATCH /drives still opens the new image (opening an existing file is allowed) and its socket
// is still removed (unlinkat on the directory opened before the filter). In such a process, creating a
// file fails with EACCES, execve kills the process, and no second VM can start.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { lazyTempDir } from '../fuzz/tmp.js';
import { api, fault } from '../unit/api-http.js';
import { guest, kvmOrSkipNotice, ROOT } from './helpers.js';

const kvm = kvmOrSkipNotice('seccomp-vmm.test.ts');
const KINDLING = join(ROOT, 'bin', 'kindling.js');
const ADDON = join(ROOT, 'native', 'build', 'Release', 'kindling.node');
const dir = lazyTempDir('kindling-seccomp-vmm-');

function threads(pid: number): Array<{ comm: string; seccomp: string; noNewPrivs: string }> {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    const field = (k: string): string => new RegExp(`^${k}:\\s+(\\S+)`, 'm').exec(status)?.[1] ?? '?';
    return { comm: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(), seccomp: field('Seccomp'), noNewPrivs: field('NoNewPrivs') };
  });
}

interface Child {
  pid: number;
  out: () => string;
  err: () => string;
  exit: Promise<{ code: number | null; signal: string | null }>;
}

function start(args: string[]): Child {
  const p = spawn(process.execPath, [KINDLING, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout.on('data', (b: Buffer) => (out += b.toString('latin1')));
  p.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exit = new Promise<{ code: number | null; signal: string | null }>((r) => p.on('exit', (code, signal) => r({ code, signal })));
  return { pid: p.pid!, out: () => out, err: () => err, exit };
}

async function until(what: string, f: () => boolean, ms = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe.skipIf(!kvm)('seccomp on every thread of `kindling run` and `kindling serve`', () => {
  it('run: every thread shows Seccomp 2 and NoNewPrivs 1 while the guest runs; SIGTERM ends it (143, one line)', async () => {
    const img = join(dir(), 'run.img');
    writeFileSync(img, Buffer.alloc(1 << 20));
    const c = start(['run', '--kernel', guest('echo.elf'), '--mem', '32', '--disk', img, '--vsock', '7,uds=' + join(dir(), 'run.vsock')]);
    await until('echo ready', () => c.out().includes('echo ready'));
    const ts = threads(c.pid);
    // main, V8's platform threads, the vCPU and the I/O workers (blk, rng, vsock)
    expect(ts.length).toBeGreaterThan(5);
    for (const t of ts) expect(t, `thread ${t.comm}`).toMatchObject({ seccomp: '2', noNewPrivs: '1' });
    expect(ts.map((t) => t.comm)).toEqual(expect.arrayContaining(['vcpu0', 'virtio-blk0', 'virtio-rng', 'virtio-vsock']));
    process.kill(c.pid, 'SIGTERM');
    const end = await c.exit;
    expect(end, c.err()).toEqual({ code: 128 + 15, signal: null });
    expect(c.err()).toContain('kindling: stopped by SIGTERM');
    // The hybrid-vsock socket was removed through its directory fd (unlinkat), under the filter.
    expect(existsSync(join(dir(), 'run.vsock'))).toBe(false);
  });

  it('run --seccomp off: no thread is filtered', async () => {
    const c = start(['run', '--kernel', guest('echo.elf'), '--mem', '32', '--seccomp', 'off']);
    await until('echo ready', () => c.out().includes('echo ready'));
    for (const t of threads(c.pid)) expect(t.seccomp, `thread ${t.comm}`).toBe('0');
    process.kill(c.pid, 'SIGTERM');
    expect((await c.exit).code).toBe(128 + 15);
  });

  it('serve: unfiltered until InstanceStart, then every thread; PATCH /drives still swaps the image; the socket is removed at exit', async () => {
    const a = join(dir(), 'a.img');
    const bBytes = randomBytes(2 << 20);
    const b = join(dir(), 'b.img');
    writeFileSync(a, randomBytes(4 << 20));
    writeFileSync(b, bBytes);
    const sock = join(dir(), 'fc.sock');
    const c = start(['--api-sock', sock]);
    await until('the API socket', () => existsSync(sock));
    expect(threads(c.pid).every((t) => t.seccomp === '0')).toBe(true);
    expect((await api(sock, 'PUT', '/boot-source', { kernel_image_path: guest('blk.elf'), boot_args: 'blk.capacity blk.swap=16 blk.bench=rand blk.ops=100000000' })).status).toBe(204);
    expect((await api(sock, 'PUT', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: a, is_root_device: true, is_read_only: false })).status).toBe(204);
    expect((await api(sock, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 64 })).status).toBe(204);
    expect((await api(sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(204);
    await until('blk waiting for a config change', () => c.out().includes('blk waiting for a config change'));
    for (const t of threads(c.pid)) expect(t, `thread ${t.comm}`).toMatchObject({ seccomp: '2', noNewPrivs: '1' });
    // Refusals are 400s from a filtered process that keeps running.
    expect(fault(await api(sock, 'PATCH', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: join(dir(), 'missing.img') }))).toMatch(/not found/);
    expect((await api(sock, 'PATCH', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: b })).status).toBe(204);
    await until('blk bench start', () => c.out().includes('blk bench start'));
    expect(c.out()).toContain(`blk config change: capacity ${bBytes.length / 512}`);
    expect((await api(sock, 'GET', '/')).status).toBe(200);
    process.kill(c.pid, 'SIGTERM');
    const end = await c.exit;
    expect(end.code, c.err()).toBe(128 + 15);
    expect(existsSync(sock)).toBe(false);
  });

  it('in a filtered process: an existing file opens, a new one is refused (EACCES, nothing created), no second VM starts, execve kills (SIGSYS)', () => {
    const script = join(dir(), 'probe.mjs');
    const existing = join(dir(), 'existing.txt');
    const created = join(dir(), 'created.txt');
    writeFileSync(existing, 'here');
    writeFileSync(
      script,
      `import { createRequire } from 'node:module';
import { openSync, readFileSync, closeSync } from 'node:fs';
const addon = createRequire(import.meta.url)(${JSON.stringify(ADDON)});
const { VM } = await import(${JSON.stringify(pathToFileURL(join(ROOT, 'dist', 'main', 'index.js')).href)});
const vm = new VM({ kernel: ${JSON.stringify(guest('echo.elf'))}, memMiB: 32, rng: false, logLevel: 'silent', seccompThreads: 'all' });
await vm.start();
console.log('existing ' + readFileSync(${JSON.stringify(existing)}, 'utf8'));
try { closeSync(openSync(${JSON.stringify(created)}, 'w')); console.log('created'); } catch (e) { console.log('create ' + e.code); }
try { await new VM({ kernel: ${JSON.stringify(guest('echo.elf'))}, memMiB: 32, rng: false, logLevel: 'silent' }).start(); console.log('second started'); } catch (e) { console.log('second: ' + e.message); }
console.log('execve');
addon.probeSyscall(59, 0, 0, 0);
console.log('survived');
`,
    );
    const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 60_000 });
    const lines = r.stdout.trim().split('\n');
    expect(lines, r.stderr).toEqual(['existing here', 'create EACCES', "second: this process is filtered for another VM (seccompThreads 'all'): one VM per such process", 'execve']);
    expect(r.signal).toBe('SIGSYS');
    expect(existsSync(created)).toBe(false);
  });
});
