// The Firecracker-compatible API booting real guests (needs /dev/kvm; skipped loudly without it):
// `kindling --api-sock` driven with Node's HTTP client as Firecracker's getting-started guide drives
// Firecracker with curl (PUT boot-source, machine-config, drives/rootfs, actions InstanceStart),
// booting hello.elf and blk.elf; Ctrl-Alt-Del through the API and vm.sendCtrlAltDel() reaching
// kbd.elf's IRQ 1 handler; PATCH /vm pausing and resuming; the metrics and logger files line by line.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it, onTestFailed } from 'vitest';
import { lazyTempDir } from '../fuzz/tmp.js';
import { api, fault } from '../unit/api-http.js';
import { guest, kvmOrSkipNotice, ROOT, runGuest, waitFor } from './helpers.js';

const kvm = kvmOrSkipNotice('api.test.ts');
const KINDLING = join(ROOT, 'bin', 'kindling.js');
const dir = lazyTempDir('kindling-kvm-api-');
let n = 0;

interface Served {
  child: ChildProcess;
  sock: string;
  out: () => string;
  exit: Promise<number | null>;
}

async function serve(extra: string[] = []): Promise<Served> {
  const sock = join(dir(), `fc-${++n}.sock`);
  const child = spawn(process.execPath, [KINDLING, '--api-sock', sock, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString('latin1')));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  // A failed request says little on its own (ECONNREFUSED: not listening yet, or kindling died): show its stderr.
  onTestFailed(() => console.error(`kindling --api-sock ${sock} stderr:\n${err}`));
  for (let i = 0; i < 500 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 10));
  if (!existsSync(sock)) throw new Error(`no API socket; stderr: ${err}`);
  return { child, sock, out: () => out, exit };
}

describe.skipIf(!kvm)('Firecracker API booting guests', () => {
  it('hello.elf: the curl sequence boots it, its output is on stdout, kindling exits with its status and removes the socket', async () => {
    const s = await serve();
    expect((await api(s.sock, 'PUT', '/boot-source', { kernel_image_path: guest('hello.elf'), boot_args: 'exit=3' })).status).toBe(204);
    expect((await api(s.sock, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 32 })).status).toBe(204);
    expect((await api(s.sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(204);
    expect(await s.exit).toBe(3);
    expect(s.out()).toContain('hello from guest');
    expect(existsSync(s.sock)).toBe(false);
  });

  it('PUT /serial rate_limiter: a 64 KiB console flood reaches stdout only as fast as the bucket allows; uart metrics count it', async () => {
    const metrics = join(dir(), 'serial.metrics');
    const s = await serve();
    // 2000 bytes at once, then 20 bytes/ms: under KVM-PVM the flood runs at ~125 bytes/ms.
    expect((await api(s.sock, 'PUT', '/serial', { rate_limiter: { size: 2000, refill_time: 100 } })).status).toBe(204);
    expect((await api(s.sock, 'PUT', '/metrics', { metrics_path: metrics })).status).toBe(204);
    expect((await api(s.sock, 'PUT', '/boot-source', { kernel_image_path: guest('hello.elf'), boot_args: 'hello.flood=65536' })).status).toBe(204);
    expect((await api(s.sock, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 32 })).status).toBe(204);
    const t0 = performance.now();
    expect((await api(s.sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(204);
    expect(await s.exit).toBe(0);
    const elapsedMs = performance.now() - t0;
    const out = Buffer.byteLength(s.out(), 'latin1');
    const total = 'hello from guest\n'.length + 65536;
    expect(out).toBeGreaterThanOrEqual(2000);
    expect(out).toBeLessThanOrEqual(2000 + 20 * elapsedMs);
    expect(out).toBeLessThan(total);
    const uart = readFileSync(metrics, 'utf8').trimEnd().split('\n').map((l) => (JSON.parse(l) as { uart: { write_count: number; missed_write_count: number } }).uart);
    expect(uart.reduce((a, u) => a + u.write_count, 0)).toBe(out);
    expect(uart.reduce((a, u) => a + u.missed_write_count, 0)).toBe(total - out);
  });

  it('blk.elf with drives/rootfs: reads the image, root=/dev/vda rw on its command line; metrics count the reads, the log has the start', async () => {
    const img = join(dir(), 'rootfs.img');
    writeFileSync(img, randomBytes(4 << 20));
    const metrics = join(dir(), 'blk.metrics');
    const log = join(dir(), 'blk.log');
    const s = await serve();
    expect((await api(s.sock, 'PUT', '/logger', { log_path: log, level: 'Info', show_level: true })).status).toBe(204);
    expect((await api(s.sock, 'PUT', '/metrics', { metrics_path: metrics })).status).toBe(204);
    expect((await api(s.sock, 'PUT', '/boot-source', { kernel_image_path: guest('blk.elf'), boot_args: 'blk.read=64 blk.capacity' })).status).toBe(204);
    expect((await api(s.sock, 'PUT', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: img, is_root_device: true, is_read_only: false })).status).toBe(204);
    expect((await api(s.sock, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 64 })).status).toBe(204);
    expect((await api(s.sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(204);
    expect(await s.exit).toBe(0);
    expect(s.out()).toContain('blk capacity 8192 ro=0');
    expect(s.out()).toContain('blk done');
    const lines = readFileSync(metrics, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, Record<string, number>>);
    const reads = lines.reduce((sum, l) => sum + (l.block_rootfs?.read_count ?? 0), 0);
    expect(reads).toBeGreaterThan(0);
    const logLines = readFileSync(log, 'utf8').trimEnd().split('\n');
    for (const l of logLines) expect(l).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9} \[anonymous-instance:main:(INFO|WARN|ERROR)\] /);
    expect(logLines.some((l) => l.includes('Successfully started microvm'))).toBe(true);
    expect(logLines.some((l) => l.includes('Vmm is stopping'))).toBe(true);
  });

  it('kbd.elf: PATCH /vm pauses (keys wait), resumes, and SendCtrlAltDel reaches its IRQ 1 handler as 1d 38 e0 53', async () => {
    const s = await serve();
    expect((await api(s.sock, 'PUT', '/boot-source', { kernel_image_path: guest('kbd.elf') })).status).toBe(204);
    expect((await api(s.sock, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 32 })).status).toBe(204);
    expect(fault(await api(s.sock, 'PUT', '/actions', { action_type: 'SendCtrlAltDel' }))).toMatch(/not supported before starting/);
    expect((await api(s.sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status).toBe(204);
    await waitFor(s.out, 'kbd ready');
    expect((await api(s.sock, 'PATCH', '/vm', { state: 'Paused' })).status).toBe(204);
    expect((await api(s.sock, 'GET', '/')).json).toMatchObject({ state: 'Paused' });
    expect((await api(s.sock, 'PUT', '/actions', { action_type: 'SendCtrlAltDel' })).status).toBe(204);
    await new Promise((r) => setTimeout(r, 300));
    expect(s.out()).not.toContain('kbd irqs=');
    expect((await api(s.sock, 'PATCH', '/vm', { state: 'Resumed' })).status).toBe(204);
    expect(await s.exit).toBe(0);
    const m = /kbd irqs=(\d+) scancodes=([0-9a-f ]+)/.exec(s.out());
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(1);
    expect(m![2].trim()).toBe('1d 38 e0 53');
  });

  it('vm.sendCtrlAltDel() from the library reaches kbd.elf the same way', async () => {
    const r = await runGuest(
      { kernel: guest('kbd.elf'), memMiB: 32, rng: false },
      {
        timeoutMs: 20_000,
        input: async (vm, out) => {
          await waitFor(out, 'kbd ready');
          expect(vm.sendCtrlAltDel()).toBe(true);
        },
      },
    );
    expect(r.exit).toEqual({ reason: 'exit', exitCode: 0 });
    expect(r.output).toMatch(/kbd irqs=[1-9]\d* scancodes=1d 38 e0 53/);
  });
});
