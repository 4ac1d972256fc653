// VM lifecycle under KVM: pause/resume/stop, kvmclock across a pause, many VMs in one process, and
// that create/run/stop cycles give back every fd, thread and byte of RSS.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VM } from '../../dist/main/index.js';
import { discardPrespawnedWorkers, prespawnVcpuWorkers, prespawnedVcpuWorkers } from '../../dist/main/workers.js';
import { ROOT, guest, kvmOrSkipNotice, runGuest, waitFor } from './helpers.js';

const kvm = kvmOrSkipNotice('lifecycle.test.ts');

describe.skipIf(!kvm)('VM lifecycle', () => {
  it("prespawned vCPU workers (the CLI's start-up path) are taken by the next VM; leftovers are discarded", async () => {
    prespawnVcpuWorkers(2);
    expect(prespawnedVcpuWorkers()).toBe(2);
    const r = await runGuest({ kernel: guest('smp.elf'), vcpus: 2, memMiB: 64 });
    expect(r.exit).toEqual({ reason: 'exit', exitCode: 0 });
    expect(r.output).toContain('cpus: 2');
    expect(prespawnedVcpuWorkers()).toBe(0);
    prespawnVcpuWorkers(3);
    discardPrespawnedWorkers();
    expect(prespawnedVcpuWorkers()).toBe(0);
    // A VM with more vCPUs than were prespawned starts the rest itself.
    prespawnVcpuWorkers(1);
    const r4 = await runGuest({ kernel: guest('smp.elf'), vcpus: 4, memMiB: 64 });
    expect(r4.output).toContain('cpus: 4');
    expect(prespawnedVcpuWorkers()).toBe(0);
  });

  it('created → running → paused → running → stopped, with events, and kvmclock does not jump over a pause', async () => {
    const vm = new VM({ kernel: guest('echo.elf'), memMiB: 32, logLevel: 'silent' });
    const states: string[] = [];
    vm.on('state', (s: string) => states.push(s));
    let out = '';
    vm.serial.on('data', (b: Buffer) => (out += b.toString()));
    expect(vm.state).toBe('created');
    await vm.start();
    expect(vm.state).toBe('running');
    await waitFor(() => out, 'echo ready');

    await vm.pause();
    expect(vm.state).toBe('paused');
    const c0 = vm.clockNs();
    await new Promise((r) => setTimeout(r, 400));
    // Input typed while paused is queued, not lost.
    vm.serial.write('ab');
    await new Promise((r) => setTimeout(r, 100));
    expect(out).not.toContain('ab');
    vm.resume();
    const c1 = vm.clockNs();
    expect(vm.state).toBe('running');
    // 500 ms passed on the host; the guest clock moved by (far) less than that.
    expect(Number(c1 - c0) / 1e6).toBeLessThan(100);
    await waitFor(() => out, 'ab');
    vm.serial.write('\x04');
    const exit = await vm.wait();
    expect(exit).toEqual({ reason: 'exit', exitCode: 0 });
    expect(states).toEqual(['starting', 'running', 'paused', 'running', 'stopped']);
  });

  it('pause/resume a vCPU that is busy in a PIO loop, then stop it', async () => {
    const vm = new VM({ kernel: guest('pioloop.elf'), memMiB: 32, cmdline: 'pio.count=100000000', logLevel: 'silent' });
    let out = '';
    vm.serial.on('data', (b: Buffer) => (out += b.toString()));
    await vm.start();
    await waitFor(() => out, 'pioloop start');
    for (let i = 0; i < 3; i++) {
      await vm.pause();
      expect(vm.state).toBe('paused');
      vm.resume();
    }
    const t0 = performance.now();
    const exit = await vm.stop();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(exit.reason).toBe('stopped');
  });

  it('pause() on a VM that is not running is refused', async () => {
    const vm = new VM({ kernel: guest('hello.elf'), memMiB: 32, logLevel: 'silent' });
    await expect(vm.pause()).rejects.toThrow(/created/);
    await vm.stop();
    expect(vm.state).toBe('stopped');
  });

  it('8 VMs started concurrently in one process each run to completion with their own output', async () => {
    const runs = await Promise.all(
      Array.from({ length: 8 }, (_, i) => runGuest({ kernel: guest('hello.elf'), memMiB: 32, cmdline: `exit=${10 + i}` })),
    );
    runs.forEach((r, i) => {
      expect(r.output.replace(/\r/g, '')).toBe('hello from guest\n');
      expect(r.exit).toEqual({ reason: 'exit', exitCode: 10 + i });
    });
  });

  it('20 create/run/stop cycles return fds, threads and RSS to their baseline', () => {
    const r = spawnSync(process.execPath, ['--expose-gc', join(ROOT, 'test', 'kvm', 'fixtures', 'leak.mjs'), guest('hello.elf'), '20'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const { before, after } = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
      before: { fds: number; threads: number; rssMiB: number };
      after: { fds: number; threads: number; rssMiB: number };
    };
    expect(after.fds).toBe(before.fds);
    expect(after.threads).toBe(before.threads);
    // 20 guests × 64 MiB would show up as hundreds of MiB if guest RAM or workers leaked.
    expect(after.rssMiB - before.rssMiB).toBeLessThan(24);
  });
});
