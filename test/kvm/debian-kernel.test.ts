// Debian's own kernel (vmlinux extracted from linux-image-cloud-amd64 by the default-guest builder)
// booted through kindling's PVH path with earlyprintk: it must print its banner, exactly kindling's
// command line and kindling's e820 map. On KVM-PVM hosts a stock kernel gets no further than early
// boot, so the VM is stopped once those lines are out.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VM, ensureDefaultGuest } from '../../dist/main/index.js';
import { ROOT, kvmOrSkipNotice, waitFor } from './helpers.js';

const kvm = kvmOrSkipNotice('debian-kernel.test.ts');
/** Time bound for banner + command line + e820 (about 16 s on KVM-PVM, well under 1 s with VT-x/AMD-V). */
const BOUND_MS = 90_000;

describe.skipIf(!kvm)("Debian's kernel under kindling", () => {
  it('prints its banner, exactly our command line and our e820 map (256 MiB, PVH)', async () => {
    const g = await ensureDefaultGuest({ home: join(ROOT, 'build', 'kindling-home', 'guest') });
    const cmdline = 'console=ttyS0 earlyprintk=serial reboot=k panic=-1 kindling.test=e820';
    const vm = new VM({ kernel: g.kernel, memMiB: 256, cmdline, logLevel: 'silent' });
    let out = '';
    vm.serial.on('data', (b: Buffer) => (out += b.toString('latin1')));
    await vm.start();
    expect(vm.boot?.kind).toBe('pvh-elf');
    try {
      await waitFor(() => out, 'BIOS-e820: [mem 0x00000000c0000000-0x00000000ffffffff] reserved', BOUND_MS);
    } finally {
      await vm.stop();
    }
    const text = out.replace(/\r/g, '');
    expect(text).toMatch(/Linux version 6\.\d+\.\d+.*\(debian-kernel@lists\.debian\.org\)/);
    expect(text).toContain(`Command line: ${cmdline}\n`);
    const e820 = [...text.matchAll(/BIOS-e820: (\[mem [0-9a-fx-]+\] \w+)/g)].map((m) => m[1]);
    expect(e820).toEqual([
      '[mem 0x0000000000000000-0x000000000009fbff] usable',
      '[mem 0x000000000009fc00-0x00000000000fffff] reserved',
      '[mem 0x0000000000100000-0x000000000fffffff] usable',
      '[mem 0x00000000c0000000-0x00000000ffffffff] reserved',
    ]);
  }, BOUND_MS + 60_000);
});
