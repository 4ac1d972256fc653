// Debian's own kernel (vmlinux extracted from linux-image-cloud-amd64 by the default-guest builder)
// booted through kindling's PVH path with earlyprintk: it must print its banner, exactly kindling's
// command line and kindling's e820 map. On KVM-PVM hosts a stock kernel gets no further than early
// boot, so the VM is stopped once those lines are out.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { VM, ensureDefaultGuest } from '../../dist/main/index.js';
import { checkKernelImage, loadKernel } from '../../src/loader/index.js';
import { parseBzImage } from '../../src/loader/bzimage.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { ROOT, kvmOrSkipNotice, waitFor } from './helpers.js';

const kvm = kvmOrSkipNotice('debian-kernel.test.ts');
/** Time bound for banner + command line + e820 (about 16 s on KVM-PVM, well under 1 s with VT-x/AMD-V). */
const BOUND_MS = 90_000;

describe.skipIf(!kvm)("Debian's kernel under kindling", () => {
  it('prints its banner, exactly our command line and our e820 map (256 MiB, PVH)', async () => {
    const g = await ensureDefaultGuest({ home: join(ROOT, 'build', 'kindling-home', 'guest') });
    const cmdline = 'console=ttyS0 earlyprintk=serial reboot=k panic=-1 kindling.test=e820';
    const vm = new VM({ kernel: g.kernel, memMiB: 256, cmdline, logLevel: 'silent', rng: false });
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

  it("Debian's bzImage (vmlinuz) passes the boot-protocol checks and loads at 1 MiB with its 64-bit entry", async () => {
    const g = await ensureDefaultGuest({ home: join(ROOT, 'build', 'kindling-home', 'guest') });
    const img = new Uint8Array(readFileSync(g.vmlinuz));
    expect(checkKernelImage(img)).toBe('bzimage');
    const info = parseBzImage(img);
    expect(info.version).toBeGreaterThanOrEqual(0x020c);
    expect(info.xloadflags & 1).toBe(1); // XLF_KERNEL_64
    expect(info.relocatable).toBe(true);
    const size = 256 * 1024 * 1024;
    const mem = new GuestMemory([{ slot: 0, gpa: 0, size, buffer: new SharedArrayBuffer(size) }]);
    const initrd = new Uint8Array(4096).fill(7);
    const boot = loadKernel(mem, img, { cmdline: 'console=ttyS0', memBytes: size, initrd });
    expect(boot).toMatchObject({ kind: 'bzimage', protocol: 'linux64', entry: 0x100200, bootInfoAddr: 0x7000 });
    expect(boot.initrd!.addr).toBeGreaterThanOrEqual(boot.kernelEnd);
    expect(mem.read16(0x7000 + 0x1fe)).toBe(0xaa55);
    expect(mem.read8(0x7000 + 0x210)).toBe(0xff); // type_of_loader
    expect(mem.read32(0x7000 + 0x218)).toBe(boot.initrd!.addr); // ramdisk_image
    expect(mem.readCString(mem.read32(0x7000 + 0x228), 64)).toBe('console=ttyS0');
  });

  it('with --vcpus 4 finds 4 CPUs through kindling\'s ACPI MADT', async () => {
    const g = await ensureDefaultGuest({ home: join(ROOT, 'build', 'kindling-home', 'guest') });
    const vm = new VM({ kernel: g.kernel, memMiB: 256, vcpus: 4, cmdline: 'console=ttyS0 earlyprintk=serial reboot=k panic=-1', logLevel: 'silent' });
    let out = '';
    vm.serial.on('data', (b: Buffer) => (out += b.toString('latin1')));
    await vm.start();
    try {
      await waitFor(() => out, 'smpboot: Allowing', BOUND_MS);
      await waitFor(() => out, 'hotplug CPUs', 5_000);
    } finally {
      await vm.stop();
    }
    const text = out.replace(/\r/g, '');
    expect(text).toMatch(/ACPI: RSDP 0x00000000000E0000 .*KNDLNG/);
    expect(text).toMatch(/ACPI: APIC 0x[0-9A-F]+ .*KINDLING/);
    expect(text).toContain('IOAPIC[0]: apic_id 4, version 17, address 0xfec00000, GSI 0-23');
    expect(text).toContain('ACPI: Using ACPI (MADT) for SMP configuration information');
    expect(text).toMatch(/smpboot: Allowing 4 CPUs, 0 hotplug CPUs/);
  }, BOUND_MS + 60_000);

  // Debian's cloud kernel is built without CONFIG_X86_MPPARSE, so with acpi=off it cannot read an MP
  // table at all (it says so); kindling's MP table is checked by smp.elf's `mp` mode instead.
  it('with acpi=off states that it has no MP-table support (Debian config), so smp.elf covers the MP table', async () => {
    const g = await ensureDefaultGuest({ home: join(ROOT, 'build', 'kindling-home', 'guest') });
    const vm = new VM({ kernel: g.kernel, memMiB: 256, vcpus: 4, cmdline: 'console=ttyS0 earlyprintk=serial acpi=off', logLevel: 'silent' });
    let out = '';
    vm.serial.on('data', (b: Buffer) => (out += b.toString('latin1')));
    await vm.start();
    try {
      await waitFor(() => out, 'MPS support code is not built-in', BOUND_MS);
    } finally {
      await vm.stop();
    }
  }, BOUND_MS + 60_000);
});
