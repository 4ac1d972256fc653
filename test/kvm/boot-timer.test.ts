// Firecracker's boot timer under KVM (needs /dev/kvm; skipped loudly without it): hello.elf's
// hello.boot-timer writes to 0xd0000000 three accesses the device must ignore and then the
// boot-complete byte 123, as Firecracker's guests do from init. With the boot timer on, that is one
// 'boot-time' event and one Guest-boot-time line (the VM API, `kindling run --boot-timer` on stderr,
// Firecracker's `--boot-timer` in the Info log); without it, those addresses are unhandled accesses.
// The virtio devices move one window up (blk.elf finds its disk at 0xd0001000, still on GSI 5).
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lazyTempDir } from '../fuzz/tmp.js';
import { VM } from '../../dist/main/index.js';
import { guest, kvmOrSkipNotice, ROOT } from './helpers.js';

const kvm = kvmOrSkipNotice('boot-timer.test.ts');
const KINDLING = join(ROOT, 'bin', 'kindling.js');
const dir = lazyTempDir('kindling-boot-timer-');
const FIRECRACKER_LINE = /Guest-boot-time\s+=\s+(\d+)\s+us (\d+) ms,\s+(\d+) CPU us (\d+) CPU ms/;

interface Booted {
  out: string;
  times: Array<{ wallUs: number; cpuUs: number }>;
  unhandled: Array<{ kind: string; addr: number; write: boolean }>;
  vm: VM;
}

async function boot(config: ConstructorParameters<typeof VM>[0]): Promise<Booted> {
  const vm = new VM({ logLevel: 'silent', rng: false, memMiB: 32, ...config });
  const b: Booted = { out: '', times: [], unhandled: [], vm };
  vm.serial.on('data', (d: Buffer) => (b.out += d.toString('latin1')));
  vm.on('boot-time', (t: { wallUs: number; cpuUs: number }) => b.times.push(t));
  vm.on('unhandled-access', (u: { kind: string; addr: number; write: boolean }) => b.unhandled.push(u));
  await vm.start();
  const timer = setTimeout(() => void vm.stop(), 30_000);
  const exit = await vm.wait();
  clearTimeout(timer);
  expect(exit, b.out).toEqual({ reason: 'exit', exitCode: 0 });
  return b;
}

function run(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [KINDLING, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('latin1')));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

describe.skipIf(!kvm)('boot timer', () => {
  it('VM API: exactly one boot-time for the one magic write, in timings; the window is claimed', async () => {
    const b = await boot({ kernel: guest('hello.elf'), cmdline: 'hello.boot-timer', bootTimer: true });
    expect(b.out).toContain('boot-timer: signalled');
    expect(b.times).toHaveLength(1);
    const [t] = b.times;
    expect(t.wallUs).toBeGreaterThan(0);
    expect(t.wallUs).toBeLessThan(30_000_000);
    expect(t.cpuUs).toBeGreaterThan(0);
    expect(b.vm.timings.bootComplete).toEqual(t);
    // The 32-bit write and the byte at offset 1 reached the device, not the unhandled-address path.
    expect(b.unhandled.filter((u) => u.kind === 'mmio')).toEqual([]);
    expect(b.vm.cmdline).toBe('hello.boot-timer');
  });

  it('without it: no boot-time, and 0xd0000000 / 0xd0000001 are unhandled addresses', async () => {
    const b = await boot({ kernel: guest('hello.elf'), cmdline: 'hello.boot-timer' });
    expect(b.out).toContain('boot-timer: signalled');
    expect(b.times).toEqual([]);
    expect(b.unhandled.filter((u) => u.kind === 'mmio').map((u) => u.addr)).toEqual([0xd0000000, 0xd0000001]);
    expect(b.vm.timings.bootComplete).toBeUndefined();
  });

  it('blk.elf finds its disk one window up (0xd0001000, GSI 5) and reads it as usual', async () => {
    const img = join(dir(), 'disk.img');
    writeFileSync(img, randomBytes(1 << 20));
    const b = await boot({ kernel: guest('blk.elf'), memMiB: 64, cmdline: 'blk.read=64 blk.capacity', disks: [{ path: img, readOnly: true }], bootTimer: true });
    expect(b.vm.cmdline).toBe('blk.read=64 blk.capacity virtio_mmio.device=4K@0xd0001000:5');
    expect(b.out).toContain('blk: device at 0xd0001000 irq 5 (cmdline)');
    expect(b.out).toContain('blk capacity 2048 ro=1');
    expect(b.out).toContain('blk done');
    expect(b.vm.blockStats()[0]).toMatchObject({ reads: 1, errors: 0, needsReset: 0 });
  });

  it('kindling run --boot-timer prints the line on stderr once; Firecracker --boot-timer logs it at Info', async () => {
    const r = await run(['run', '--kernel', guest('hello.elf'), '--cmdline', 'hello.boot-timer', '--no-rng', '--mem', '32', '--boot-timer']);
    expect(r.code, r.err).toBe(0);
    const lines = r.err.split('\n').filter((l) => l.includes('Guest-boot-time'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^kindling: Guest-boot-time = /);
    const m = FIRECRACKER_LINE.exec(lines[0])!;
    expect(Math.floor(Number(m[1]) / 1000)).toBe(Number(m[2]));
    expect(Math.floor(Number(m[3]) / 1000)).toBe(Number(m[4]));

    const config = join(dir(), 'vm.json');
    const log = join(dir(), 'vm.log');
    writeFileSync(config, JSON.stringify({ 'boot-source': { kernel_image_path: guest('hello.elf'), boot_args: 'hello.boot-timer' }, 'machine-config': { vcpu_count: 1, mem_size_mib: 32 } }));
    const f = await run(['--no-api', '--config-file', config, '--boot-timer', '--level', 'Info', '--log-path', log, '--show-level', '--show-log-origin']);
    expect(f.code, f.err).toBe(0);
    expect(f.out).toContain('boot-timer: signalled');
    const logged = readFileSync(log, 'utf8').split('\n').filter((l) => FIRECRACKER_LINE.test(l));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatch(/\[anonymous-instance:main:INFO:boot_timer\] Guest-boot-time = /);
  });
});
