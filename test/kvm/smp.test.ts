// SMP under KVM: one worker per vCPU, APs woken by the guest's INIT-SIPI-SIPI through the in-kernel
// LAPIC, CPUs found through kindling's ACPI MADT or MP table, and the shared UART under concurrent
// writes from every vCPU.
import { describe, expect, it } from 'vitest';
import { guest, kvmOrSkipNotice, runGuest } from './helpers.js';

const kvm = kvmOrSkipNotice('smp.test.ts');

function lines(s: string): string[] {
  return s.replace(/\r/g, '').split('\n');
}

describe.skipIf(!kvm)('SMP', () => {
  for (const n of [1, 2, 4, 8, 16]) {
    it(`smp.elf finds ${n} CPU(s) in the ACPI MADT and every AP checks in`, async () => {
      const r = await runGuest({ kernel: guest('smp.elf'), vcpus: n, memMiB: 128 });
      const out = lines(r.output);
      expect(out).toContain(`smp: acpi cpus in table: ${n}`);
      const aps = out.filter((l) => /^ap \d+ online$/.test(l)).map((l) => Number(l.split(' ')[1]));
      expect(aps.sort((a, b) => a - b)).toEqual(Array.from({ length: n - 1 }, (_, i) => i + 1));
      expect(out).toContain(`cpus: ${n}`);
      expect(r.exit).toEqual({ reason: 'exit', exitCode: 0 });
    });
  }

  it('smp.elf mp: the MP table alone lists every CPU', async () => {
    const r = await runGuest({ kernel: guest('smp.elf'), vcpus: 6, memMiB: 128, cmdline: 'mp' });
    const out = lines(r.output);
    expect(out).toContain('smp: mp cpus in table: 6');
    expect(out).toContain('cpus: 6');
    expect(r.exit).toEqual({ reason: 'exit', exitCode: 0 });
  });

  it('more vCPUs than host cores (overcommit: 32 vCPUs on this machine)', async () => {
    const r = await runGuest({ kernel: guest('smp.elf'), vcpus: 32, memMiB: 128 });
    expect(lines(r.output)).toContain('cpus: 32');
    expect(r.exit.exitCode).toBe(0);
  });

  it('all vCPUs writing the console at once: no lost or duplicated bytes', async () => {
    const n = 4;
    const per = 3000;
    const r = await runGuest({ kernel: guest('smp.elf'), vcpus: n, memMiB: 128, cmdline: `spam=${per}` });
    expect(r.exit).toEqual({ reason: 'exit', exitCode: 0 });
    const text = r.output.replace(/\r/g, '');
    const start = text.lastIndexOf('online\n') + 'online\n'.length;
    const end = text.indexOf('\nspam done');
    expect(end).toBeGreaterThan(start);
    const spam = text.slice(start, end);
    const counts: Record<string, number> = {};
    for (const c of spam) counts[c] = (counts[c] ?? 0) + 1;
    // vCPU i writes 'a' + i exactly `per` times; nothing else appears in between.
    expect(counts).toEqual(Object.fromEntries(Array.from({ length: n }, (_, i) => [String.fromCharCode(97 + i), per])));
  });
});
