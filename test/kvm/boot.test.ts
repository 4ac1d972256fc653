// Boot-path integration tests: the project's freestanding test guests booted under KVM through the
// same loaders users' kernels go through, asserting on what the guests print.
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../fuzz/tmp.js';
import { VM, detectPvm } from '../../dist/main/index.js';
import { ROOT, guest, kvmOrSkipNotice, runGuest, waitFor } from './helpers.js';

const kvm = kvmOrSkipNotice('boot.test.ts');

function lines(s: string): string[] {
  return s.replace(/\r/g, '').split('\n');
}

describe.skipIf(!kvm)('boot path under KVM', () => {
  it('hello.elf prints its greeting and exits with the status from its command line', async () => {
    const r = await runGuest({ kernel: guest('hello.elf'), memMiB: 64, cmdline: 'exit=3' });
    expect(lines(r.output)).toContain('hello from guest');
    expect(r.exit).toEqual({ reason: 'exit', exitCode: 3 });
    expect(r.vm.boot?.kind).toBe('pvh-elf');
    expect(r.vm.timings.firstRun).toBeGreaterThan(r.vm.timings.start);
  });

  it('bootinfo.elf sees exactly the memory map, command line and initrd kindling set up (64 MiB)', async () => {
    const dir = tempDir('kindling-bootinfo-');
    const initrd = Buffer.alloc(300_000 + 123);
    for (let i = 0; i < initrd.length; i++) initrd[i] = (i * 7919 + (i >> 11)) & 0xff;
    writeFileSync(join(dir, 'initrd.img'), initrd);
    const crc = (crc32(initrd) >>> 0).toString(16).padStart(8, '0');
    // Written out by hand from the layout in docs/architecture.md, not computed by kindling's code.
    const e820 = '0:9fc00:1,9fc00:60400:2,100000:3f00000:1,c0000000:40000000:2';
    const cmdline = `expect.magic expect.e820=${e820} expect.initrd=${initrd.length}:${crc} some="quoted words"`;
    const r = await runGuest({ kernel: guest('bootinfo.elf'), memMiB: 64, cmdline, initrd: join(dir, 'initrd.img'), rng: false });
    const out = lines(r.output);
    expect(out).toContain(`cmdline: ${cmdline}`);
    expect(out).toContain(`initrd: ${initrd.length} crc32=${crc}`);
    expect(out.filter((l) => l.startsWith('mismatch'))).toEqual([]);
    expect(out).toContain('bootinfo ok');
    expect(r.exit).toEqual({ reason: 'exit', exitCode: 0 });
  });

  for (const [image, kind, first] of [
    ['bootinfo.bzimage', 'bzimage', 'bootinfo: protocol bzimage entry64'],
    ['bootinfo64.elf', 'elf64', 'bootinfo: protocol elf64'],
  ] as const) {
    it(`${image}: the 64-bit Linux boot protocol delivers the same e820, command line and initrd through boot_params`, async () => {
      const dir = tempDir('kindling-bootinfo-');
      const initrd = Buffer.alloc(200_001);
      for (let i = 0; i < initrd.length; i++) initrd[i] = (i * 31 + 7) & 0xff;
      writeFileSync(join(dir, 'initrd.img'), initrd);
      const crc = (crc32(initrd) >>> 0).toString(16).padStart(8, '0');
      const e820 = '0:9fc00:1,9fc00:60400:2,100000:3f00000:1,c0000000:40000000:2';
      const cmdline = `expect.magic expect.e820=${e820} expect.initrd=${initrd.length}:${crc}`;
      const r = await runGuest({ kernel: guest(image), memMiB: 64, cmdline, initrd: join(dir, 'initrd.img'), rng: false });
      const out = lines(r.output);
      expect(r.vm.boot?.kind).toBe(kind);
      expect(r.vm.boot?.protocol).toBe('linux64');
      expect(out[0]).toBe(first);
      expect(out).toContain('loader: 0xff');
      expect(out).toContain(`cmdline: ${cmdline}`);
      expect(out).toContain(`initrd: ${initrd.length} crc32=${crc}`);
      expect(out).toContain('bootinfo ok');
      expect(r.exit).toEqual({ reason: 'exit', exitCode: 0 });
    });
  }

  it('an instruction KVM cannot emulate, or an unexpected exception, is reported with RIP and the instruction bytes', async () => {
    const r = await runGuest({ kernel: guest('hello.elf'), memMiB: 32, cmdline: 'fault=int3' });
    if (detectPvm()) {
      // KVM-PVM's instruction emulator has no int3: KVM_EXIT_INTERNAL_ERROR (emulation failure).
      expect(r.exit.reason).toBe('error');
      expect(r.exit.exitCode).toBe(1);
      expect(r.exit.detail).toMatch(/KVM internal error \(emulation failure\) on vCPU 0 at RIP 0x[0-9a-f]+ \(cs=0x8, bytes: cc/);
    } else {
      // With VT-x/AMD-V int3 is a #BP the guest's IDT reports before exiting 0xEE.
      expect(r.output).toMatch(/unexpected exception: vector=3/);
      expect(r.exit).toEqual({ reason: 'exit', exitCode: 0xee });
    }
  });

  it('bootinfo.elf: RAM above 3 GiB continues at 4 GiB around the MMIO gap (5 GiB guest)', async () => {
    const e820 = '0:9fc00:1,9fc00:60400:2,100000:bff00000:1,c0000000:40000000:2,100000000:80000000:1';
    const r = await runGuest({ kernel: guest('bootinfo.elf'), memMiB: 5 * 1024, cmdline: `expect.e820=${e820} expect.initrd=none` });
    expect(lines(r.output)).toContain('bootinfo ok');
    expect(r.exit.exitCode).toBe(0);
  });

  it('bootinfo.elf notices a wrong expectation (the check can fail)', async () => {
    const r = await runGuest({ kernel: guest('bootinfo.elf'), memMiB: 64, cmdline: 'expect.e820=0:9fc00:1 expect.initrd=none' });
    expect(r.output).toMatch(/mismatch/);
    expect(r.exit).toEqual({ reason: 'exit', exitCode: 1 });
  });

  it('echo.elf echoes console input through the UART receive interrupt', async () => {
    const r = await runGuest(
      { kernel: guest('echo.elf'), memMiB: 32 },
      {
        input: async (vm, out) => {
          await waitFor(out, 'echo ready');
          vm.serial.write('kindling\x04');
        },
      },
    );
    expect(r.output).toContain('kindling');
    const m = /echo bye irqs=(\d+)/.exec(r.output);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(1);
    expect(r.exit).toEqual({ reason: 'exit', exitCode: 0 });
  });

  it('triple.elf ends the VM with a triple-fault error that names RIP', async () => {
    const r = await runGuest({ kernel: guest('triple.elf'), memMiB: 32 });
    expect(r.output).toContain('triple: faulting');
    expect(r.exit.reason).toBe('triple-fault');
    expect(r.exit.exitCode).not.toBe(0);
    expect(r.exit.detail).toMatch(/triple fault .* RIP 0x[0-9a-f]+/);
  });

  it('an i8042 reset (port 0x64, command 0xfe) ends the VM with reason reboot', async () => {
    const r = await runGuest({ kernel: guest('hello.elf'), memMiB: 32, cmdline: 'reboot exit=9' });
    expect(r.output).toContain('hello from guest');
    expect(r.output).not.toContain('still running');
    expect(r.exit).toEqual({ reason: 'reboot', exitCode: 0 });
  });

  it('unhandled ports read as all-ones and are reported once per address', async () => {
    const vm = new VM({ kernel: guest('hello.elf'), memMiB: 32, cmdline: 'probe=2f8', logLevel: 'silent' });
    const seen: Array<{ kind: string; addr: number }> = [];
    vm.on('unhandled-access', (a: { kind: string; addr: number }) => seen.push(a));
    let out = '';
    vm.serial.on('data', (b: Buffer) => (out += b.toString()));
    await vm.start();
    expect(await vm.wait()).toEqual({ reason: 'exit', exitCode: 0 });
    expect(out).toContain('probe 2f8 ff ff');
    expect(seen.filter((a) => a.kind === 'pio' && a.addr === 0x2f8)).toHaveLength(1);
  });

  it('stop() ends a VM whose vCPU is halted inside KVM_RUN, promptly', async () => {
    const vm = new VM({ kernel: guest('echo.elf'), memMiB: 32, logLevel: 'silent' });
    let out = '';
    vm.serial.on('data', (b: Buffer) => (out += b.toString()));
    await vm.start();
    await waitFor(() => out, 'echo ready');
    const t0 = performance.now();
    const exit = await vm.stop();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(exit.reason).toBe('stopped');
    expect(vm.state).toBe('stopped');
  });

  it('the main event loop stays responsive while a vCPU runs a PIO-exit storm', async () => {
    const h = monitorEventLoopDelay({ resolution: 5 });
    h.enable();
    let ticks = 0;
    const iv = setInterval(() => ticks++, 10);
    const t0 = performance.now();
    const r = await runGuest({ kernel: guest('pioloop.elf'), memMiB: 32, cmdline: 'pio.count=60000' });
    const elapsed = performance.now() - t0;
    clearInterval(iv);
    h.disable();
    expect(r.output).toContain('pioloop done 60000');
    expect(r.exit.exitCode).toBe(0);
    // The timer kept firing (roughly every 10 ms) and no callback waited long for the loop.
    expect(ticks).toBeGreaterThan((elapsed / 10) * 0.5);
    expect(h.max / 1e6).toBeLessThan(200);
  });
});

function runCli(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [join(ROOT, 'bin', 'kindling.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b) => (stdout += b));
    p.stderr.on('data', (b) => (stderr += b));
    const t = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

describe.skipIf(!kvm)('kindling run (CLI) under KVM', () => {
  it('boots hello.elf and exits with the guest status', async () => {
    // The build's start-up bundles (dist/**/*.bundle.js) must exist and be what runs by default.
    for (const b of ['cli/cli.bundle.js', 'vcpu-worker/worker.bundle.js', 'io-worker/worker.bundle.js']) expect(existsSync(join(ROOT, 'dist', b)), b).toBe(true);
    const r = await runCli(['run', '--kernel', guest('hello.elf'), '--mem', '64', '--cmdline', 'exit=3']);
    expect(r.stdout).toContain('hello from guest');
    expect(r.code).toBe(3);
  });

  it('runs the same from the separate modules (KINDLING_NO_BUNDLE=1) as from the bundles', async () => {
    const r = await runCli(['run', '--kernel', guest('smp.elf'), '--vcpus', '2', '--mem', '64'], { env: { ...process.env, KINDLING_NO_BUNDLE: '1' } });
    expect(r.stdout).toContain('cpus: 2');
    expect(r.code).toBe(0);
  });

  it('prints the KVM-PVM warning exactly once when /dev/kvm is PVM-backed, and not otherwise', async () => {
    const r = await runCli(['run', '--kernel', guest('hello.elf'), '--mem', '32']);
    const warnings = r.stderr.split('\n').filter((l) => l.includes('KVM-PVM'));
    expect(warnings).toHaveLength(detectPvm() ? 1 : 0);
    expect(r.code).toBe(0);
  });

  it('a process that exits while a vCPU sits in KVM_RUN does not hang', async () => {
    const script = `
      import { VM } from ${JSON.stringify(join(ROOT, 'dist', 'main', 'index.js'))};
      const vm = new VM({ kernel: ${JSON.stringify(guest('echo.elf'))}, memMiB: 32, logLevel: 'silent' });
      let out = '';
      vm.serial.on('data', (b) => { out += b; if (out.includes('echo ready')) process.exit(7); });
      await vm.start();
    `;
    const t0 = Date.now();
    const code = await new Promise<number | null>((resolve) => {
      const p = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'ignore' });
      const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
      p.on('exit', (c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
    expect(code).toBe(7);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});

describe('kindling CLI input errors (one clear line, non-zero exit, no stack trace)', () => {
  const dir = tempDir('kindling-cli-');
  const notKernel = join(dir, 'not-a-kernel');
  writeFileSync(notKernel, 'just some text, not a kernel\n'.repeat(100));
  const cases: Array<[string, string[], RegExp]> = [
    ['missing kernel file', ['run', '--kernel', join(dir, 'nope')], /kernel not found/],
    ['a file that is not a kernel', ['run', '--kernel', notKernel, '--mem', '64'], /not a (Linux )?kernel/i],
    ['--mem 0', ['run', '--kernel', notKernel, '--mem', '0'], /--mem/],
    ['--mem over host RAM', ['run', '--kernel', notKernel, '--mem', '99999999'], /--mem .*host/],
    ['--vcpus 0', ['run', '--kernel', notKernel, '--vcpus', '0'], /--vcpus/],
    ['--vcpus over the maximum', ['run', '--kernel', notKernel, '--vcpus', '100000'], /--vcpus 100000 is more than/],
    ['--vcpus not a number', ['run', '--kernel', notKernel, '--vcpus', 'two'], /--vcpus/],
    ['an unknown option', ['run', '--frobnicate'], /frobnicate/],
    ['an unknown command', ['launch'], /unknown command/],
    ['a missing initrd', ['run', '--kernel', notKernel, '--initrd', join(dir, 'none.img')], /initrd not found/],
    ['a kernel path with a newline and ESC', ['run', '--kernel', join(dir, 'bad\nname\x1b[2J')], /kernel not found: ".*bad\\nname\\u001b\[2J"$/],
    ['--vcpus with a newline', ['run', '--kernel', notKernel, '--vcpus', '1\n2'], /--vcpus needs a whole number \(got "1\\n2"\)/],
    ['an unknown option with a newline', ['run', '--fro\nb'], /Unknown option '--fro\\nb'/],
  ];
  for (const [name, args, re] of cases) {
    it(name, async () => {
      if (name === 'a file that is not a kernel' && !kvm) return; // needs /dev/kvm to get past open
      const r = await runCli(args);
      expect(r.code).not.toBe(0);
      expect(r.code).not.toBeNull();
      const errLines = r.stderr.trim().split('\n').filter((l) => !l.includes('KVM-PVM'));
      expect(errLines).toHaveLength(1);
      expect(errLines[0]).toMatch(/^kindling: /);
      expect(errLines[0]).toMatch(re);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    });
  }

  it('--help and --version', async () => {
    const h = await runCli(['--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toMatch(/kindling run/);
    const v = await runCli(['--version']);
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(/^kindling \d+\.\d+\.\d+/);
  });
});
