import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as aml from '../../src/arch/x86_64/acpi/aml.js';
import {
  FADT_F_HW_REDUCED_ACPI,
  FADT_F_RESET_REG_SUP,
  GAS_SYSTEM_IO,
  IAPC_BOOT_ARCH_8042,
  parseAcpiTables,
  writeAcpiTables,
  type AcpiVirtioDevice,
} from '../../src/arch/x86_64/acpi/index.js';
import {
  ACPI_RESET_PORT,
  ACPI_RESET_VALUE,
  ACPI_S5_SLP_TYP,
  ACPI_SLEEP_CONTROL_PORT,
  ACPI_SLEEP_STATUS_PORT,
  ACPI_TABLES_END,
  IOAPIC_PINS,
  IOAPIC_START,
  LAPIC_START,
  RSDP_START,
  VIRTIO_GSI_FIRST,
  VIRTIO_MMIO_BASE,
  VIRTIO_MMIO_SIZE,
} from '../../src/arch/x86_64/layout.js';
import { MPTABLE_MAX_VCPUS } from '../../src/arch/x86_64/mptable.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { runs } from '../fuzz/budget.js';

const MEM_SIZE = 0x100000 + 0x1000;
const CANARY = 0x5a;

function newMem(): { mem: GuestMemory; bytes: Uint8Array } {
  const buffer = new SharedArrayBuffer(MEM_SIZE);
  const bytes = new Uint8Array(buffer);
  bytes.fill(CANARY);
  return { mem: new GuestMemory([{ slot: 0, gpa: 0, size: MEM_SIZE, buffer }]), bytes };
}

function untouchedOutside(bytes: Uint8Array, start: number, end: number): boolean {
  for (let i = 0; i < start; i++) if (bytes[i] !== CANARY) return false;
  for (let i = end; i < bytes.length; i++) if (bytes[i] !== CANARY) return false;
  return true;
}

const sum8 = (b: Uint8Array): number => b.reduce((a, x) => a + x, 0) & 0xff;
const ascii = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

/** kindling's usual layout: device i at VIRTIO_MMIO_BASE + i * 4 KiB on GSI VIRTIO_GSI_FIRST + i. */
function virtioDevices(n: number): AcpiVirtioDevice[] {
  return [...Array(n).keys()].map((i) => ({ base: VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE, size: VIRTIO_MMIO_SIZE, gsi: VIRTIO_GSI_FIRST + i }));
}

function roundTrip(vcpus: number, devices: AcpiVirtioDevice[]): boolean {
  const { mem, bytes } = newMem();
  const r = writeAcpiTables(mem, { vcpus, virtioDevices: devices });
  expect(r.rsdpAddr).toBe(RSDP_START);
  expect(r.end).toBeLessThanOrEqual(ACPI_TABLES_END);
  expect(untouchedOutside(bytes, RSDP_START, r.end)).toBe(true);
  const p = parseAcpiTables(mem, r.rsdpAddr);
  expect(p.end).toBe(r.end);
  // Every table's bytes sum to 0 (independently of the parser), the RSDP's first 20 bytes and all 36.
  for (const t of p.tables) expect(sum8(mem.readBytes(t.addr, t.length))).toBe(0);
  expect(sum8(mem.readBytes(r.rsdpAddr, 20))).toBe(0);
  expect(sum8(mem.readBytes(r.rsdpAddr, 36))).toBe(0);
  expect(p.tables.map((t) => t.signature)).toEqual(['XSDT', 'FACP', 'APIC', 'DSDT']);
  expect(p.madt.lapicIds).toEqual([...Array(vcpus).keys()]);
  expect(p.madt.ioapics).toEqual([{ id: vcpus, address: IOAPIC_START, gsiBase: 0 }]);
  expect(p.dsdt.virtioDevices.map(({ base, size, gsi }) => ({ base, size, gsi }))).toEqual(devices);
  expect(p.dsdt.virtioDevices.map((d) => d.uid)).toEqual(devices.map((_, i) => i));
  expect(p.dsdt.s5?.[0]).toBe(ACPI_S5_SLP_TYP);
  return true;
}

describe('writeAcpiTables', () => {
  it('writes the RSDP and headers byte for byte', () => {
    const { mem } = newMem();
    const r = writeAcpiTables(mem, { vcpus: 2, virtioDevices: virtioDevices(1) });
    const rsdp = mem.readBytes(r.rsdpAddr, 36);
    expect(ascii(rsdp.subarray(0, 8))).toBe('RSD PTR ');
    expect(ascii(rsdp.subarray(9, 15))).toBe('KNDLNG');
    expect(rsdp[15]).toBe(2);
    expect(mem.read32(r.rsdpAddr + 16)).toBe(0); // no RSDT
    expect(mem.read32(r.rsdpAddr + 20)).toBe(36);
    const xsdt = Number(mem.read64(r.rsdpAddr + 24));
    expect(xsdt % 16).toBe(0);
    expect(ascii(mem.readBytes(xsdt, 4))).toBe('XSDT');
    expect(mem.read32(xsdt + 4)).toBe(36 + 16);

    const p = parseAcpiTables(mem, r.rsdpAddr);
    const f = p.fadt;
    expect(f.length).toBe(276);
    expect(f.revision).toBe(6);
    expect(f.oemTableId).toBe('KINDLING');
    expect(f.flags & FADT_F_HW_REDUCED_ACPI).toBe(1 << 20);
    expect(f.flags & FADT_F_RESET_REG_SUP).toBe(1 << 10);
    expect(f.iapcBootArch & IAPC_BOOT_ARCH_8042).toBe(IAPC_BOOT_ARCH_8042);
    expect(f.xDsdt).toBe(p.dsdt.addr);
    expect(f.sleepControlReg).toEqual({ spaceId: GAS_SYSTEM_IO, bitWidth: 8, bitOffset: 0, accessSize: 1, address: BigInt(ACPI_SLEEP_CONTROL_PORT) });
    expect(f.sleepStatusReg).toEqual({ spaceId: GAS_SYSTEM_IO, bitWidth: 8, bitOffset: 0, accessSize: 1, address: BigInt(ACPI_SLEEP_STATUS_PORT) });
    expect(f.resetReg.address).toBe(BigInt(ACPI_RESET_PORT));
    expect(f.resetValue).toBe(ACPI_RESET_VALUE);
    expect(f.hypervisorVendorId).toBe('KINDLING');
    // FADT raw: sleep control GAS at offset 244 = [1, 8, 0, 1, port LE64].
    expect([...mem.readBytes(f.addr + 244, 6)]).toEqual([1, 8, 0, 1, ACPI_SLEEP_CONTROL_PORT & 0xff, ACPI_SLEEP_CONTROL_PORT >> 8]);

    const m = p.madt;
    expect(m.lapicAddress).toBe(LAPIC_START);
    expect(m.flags).toBe(0);
    expect(m.lapics).toEqual([
      { uid: 0, apicId: 0, flags: 1 },
      { uid: 1, apicId: 1, flags: 1 },
    ]);
    expect(m.overrides).toEqual([]);
    expect(m.nmis).toEqual([{ uid: 0xff, flags: 0, lint: 1 }]);
    // MADT raw: first LAPIC entry right after the 44-byte header.
    expect([...mem.readBytes(m.addr + 44, 8)]).toEqual([0, 8, 0, 0, 1, 0, 0, 0]);

    const d = p.dsdt;
    expect(d.revision).toBe(2);
    expect(d.devices.map((x) => [x.path, x.hid])).toEqual([
      ['\\_SB_.COM1', 'PNP0501'],
      ['\\_SB_.PS2_', 'PNP0303'],
      ['\\_SB_.VR00', 'LNRO0005'],
    ]);
    expect(d.virtioDevices[0]).toEqual({
      path: '\\_SB_.VR00',
      uid: 0,
      cca: 1,
      base: VIRTIO_MMIO_BASE,
      size: VIRTIO_MMIO_SIZE,
      gsi: VIRTIO_GSI_FIRST,
      edge: true,
      activeLow: false,
      shared: false,
    });
    expect(d.s5).toEqual([ACPI_S5_SLP_TYP, 0, 0, 0]);
  });

  it.each([1, 2, 4, 32, MPTABLE_MAX_VCPUS])('parses back with %i vCPUs', (n) => {
    expect(roundTrip(n, virtioDevices(3))).toBe(true);
  });

  it.each([0, 1, 2, 3, 4, 5, 6, 7, 8])('parses back with %i virtio devices', (n) => {
    expect(roundTrip(4, virtioDevices(n))).toBe(true);
  });

  it('rejects bad options with RangeError and writes nothing', () => {
    const { mem, bytes } = newMem();
    for (const vcpus of [0, 1.5, MPTABLE_MAX_VCPUS + 1]) {
      expect(() => writeAcpiTables(mem, { vcpus, virtioDevices: [] })).toThrow(RangeError);
    }
    expect(() => writeAcpiTables(mem, { vcpus: 1, virtioDevices: [{ base: 0xffff_f000, size: 0x2000, gsi: 5 }] })).toThrow(RangeError);
    expect(() => writeAcpiTables(mem, { vcpus: 1, virtioDevices: [{ base: 0xd000_0000, size: 0x1000, gsi: IOAPIC_PINS }] })).toThrow(RangeError);
    expect(() => writeAcpiTables(mem, { vcpus: 1, virtioDevices: [{ base: 0xd000_0000, size: 0, gsi: 5 }] })).toThrow(RangeError);
    // Too many devices to fit below 1 MiB (each DSDT device is ~60 bytes; 128 KiB are reserved).
    const many = Array.from({ length: 256 }, () => ({ base: 0xd000_0000, size: 0x1000, gsi: 5 }));
    expect(() => writeAcpiTables(mem, { vcpus: 1, virtioDevices: [...many, ...many, ...many] })).toThrow(RangeError);
    expect(untouchedOutside(bytes, 0, 0)).toBe(true);
  });

  it('parseAcpiTables detects a corrupted table', () => {
    const { mem } = newMem();
    const r = writeAcpiTables(mem, { vcpus: 2, virtioDevices: virtioDevices(2) });
    const p = parseAcpiTables(mem, r.rsdpAddr);
    mem.write8(p.madt.addr + 50, mem.read8(p.madt.addr + 50) ^ 0x10);
    expect(() => parseAcpiTables(mem, r.rsdpAddr)).toThrow(/APIC.*checksum/);
  });

  it('property: any vCPU count and device list writes only inside [RSDP_START, ACPI_TABLES_END) and parses back', () => {
    const device = fc.record({
      base: fc.integer({ min: 0, max: 0xffff_f000 / 0x1000 }).map((p) => p * 0x1000),
      size: fc.constantFrom(0x200, 0x1000),
      gsi: fc.integer({ min: 0, max: IOAPIC_PINS - 1 }),
    });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: MPTABLE_MAX_VCPUS }), fc.array(device, { maxLength: 24 }), (vcpus, devices) => {
        const { mem, bytes } = newMem();
        const r = writeAcpiTables(mem, { vcpus, virtioDevices: devices });
        if (r.end > ACPI_TABLES_END || !untouchedOutside(bytes, RSDP_START, r.end)) return false;
        const p = parseAcpiTables(mem, r.rsdpAddr);
        const got = p.dsdt.virtioDevices.map(({ base, size, gsi }) => ({ base, size, gsi }));
        return (
          p.tables.every((t) => sum8(mem.readBytes(t.addr, t.length)) === 0) &&
          sum8(mem.readBytes(r.rsdpAddr, 36)) === 0 &&
          JSON.stringify(p.madt.lapicIds) === JSON.stringify([...Array(vcpus).keys()]) &&
          p.madt.ioapics.length === 1 &&
          p.madt.ioapics[0].id === vcpus &&
          JSON.stringify(got) === JSON.stringify(devices)
        );
      }),
      { numRuns: runs(80) },
    );
  });
});

describe('AML encoder', () => {
  it('encodes PkgLength in 1-4 bytes, counting itself', () => {
    expect(aml.pkgLength(0)).toEqual([1]);
    expect(aml.pkgLength(62)).toEqual([63]);
    expect(aml.pkgLength(63)).toEqual([0x40 | (65 & 0xf), 65 >> 4]); // 63 + 2 = 65
    expect(aml.pkgLength(0xfff - 2)).toEqual([0x4f, 0xff]);
    expect(aml.pkgLength(0xfff - 1)).toEqual([0x80 | 0x1, 0x00, 0x01]); // 0xffe + 3 = 0x1001
    expect(aml.pkgLength(0xfffff - 3)[0] >> 6).toBe(2);
    expect(aml.pkgLength(0xfffff - 2)[0] >> 6).toBe(3);
    expect(() => aml.pkgLength(0x1000_0000)).toThrow(RangeError);
  });

  it('property: PkgLength decodes to body + its own size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0x0fff_fff0 }), (body) => {
        const enc = aml.pkgLength(body);
        const follow = enc[0] >> 6;
        if (enc.length !== follow + 1) return false;
        let v = follow === 0 ? enc[0] & 0x3f : enc[0] & 0xf;
        for (let i = 1; i < enc.length; i++) v += enc[i] * 2 ** (4 + 8 * (i - 1));
        return v === body + enc.length && (follow === 0 || (enc[0] & 0x30) === 0);
      }),
    );
  });

  it('encodes integers in their shortest form', () => {
    expect([...aml.integer(0)]).toEqual([0x00]);
    expect([...aml.integer(1)]).toEqual([0x01]);
    expect([...aml.integer(2)]).toEqual([0x0a, 2]);
    expect([...aml.integer(0x1234)]).toEqual([0x0b, 0x34, 0x12]);
    expect([...aml.integer(0xd000_0000)]).toEqual([0x0c, 0, 0, 0, 0xd0]);
    expect([...aml.integer(0x1_0000_0000n)]).toEqual([0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
  });

  it('encodes EISA ids, strings, names and descriptors like iasl', () => {
    expect([...aml.eisaId('PNP0303')]).toEqual([0x0c, 0x41, 0xd0, 0x03, 0x03]);
    expect(aml.eisaIdString(aml.eisaIdValue('PNP0501'))).toBe('PNP0501');
    expect([...aml.string('AB')]).toEqual([0x0d, 0x41, 0x42, 0]);
    expect([...aml.nameString('\\_SB_.VR00')]).toEqual([0x5c, 0x2e, ...Buffer.from('_SB_VR00')]);
    expect([...aml.nameString('_SB')]).toEqual([...Buffer.from('_SB_')]);
    expect([...aml.memory32Fixed(0xd000_0000, 0x1000)]).toEqual([0x86, 9, 0, 1, 0, 0, 0, 0xd0, 0, 0x10, 0, 0]);
    expect([...aml.extendedInterrupt([5])]).toEqual([0x89, 6, 0, 0x03, 1, 5, 0, 0, 0]);
    const rt = aml.resourceTemplate([aml.memory32Fixed(0xd000_0000, 0x1000)]);
    expect([...rt.subarray(0, 4)]).toEqual([0x11, 0x11, 0x0a, 14]); // BufferOp, PkgLength 17, BufferSize 14
    expect(sum8(rt.subarray(4))).toBe(0); // descriptors + end tag + checksum byte sum to 0
    expect(() => aml.nameSeg('abc')).toThrow(RangeError);
  });
});

// ---- iasl (acpica-tools): installed, or fetched into build/tools by `npm test`'s build step ------

const IASL = ((): string => {
  const local = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'tools', 'bin', 'iasl');
  return existsSync(local) ? local : 'iasl';
})();
const iasl = spawnSync(IASL, ['-v'], { encoding: 'utf8' });
const haveIasl = iasl.status === 0 || /Intel ACPI Component Architecture/.test(`${iasl.stdout}${iasl.stderr}`);
if (!haveIasl) console.log('acpi.test: iasl not found (apt-get install acpica-tools) — SKIPPING the disassembly checks');

describe.skipIf(!haveIasl)('iasl', () => {
  it('disassembles every table cleanly and recompiles the DSDT without errors', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kindling-acpi-'));
    try {
      const { mem } = newMem();
      const devices = virtioDevices(3);
      const r = writeAcpiTables(mem, { vcpus: 4, virtioDevices: devices });
      const p = parseAcpiTables(mem, r.rsdpAddr);
      const dsl: Record<string, string> = {};
      for (const t of p.tables) {
        const name = t.signature.toLowerCase();
        writeFileSync(join(dir, `${name}.dat`), mem.readBytes(t.addr, t.length));
        execFileSync(IASL, ['-d', `${name}.dat`], { cwd: dir, stdio: 'pipe' });
        dsl[t.signature] = readFileSync(join(dir, `${name}.dsl`), 'utf8');
        expect(dsl[t.signature]).not.toMatch(/invalid|incorrect|error|warning/i);
      }
      const dsdt = dsl.DSDT;
      expect(dsdt).toContain('Name (_HID, EisaId ("PNP0501")');
      expect(dsdt).toContain('Name (_HID, "LNRO0005")');
      expect(dsdt).toContain('Name (_CCA, One)');
      expect(dsdt).toMatch(/Memory32Fixed \(ReadWrite,\s+0xD0001000,\s+\/\/ Address Base\s+0x00001000,/);
      expect(dsdt).toMatch(/Interrupt \(ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, \)\s+\{\s+0x00000007,/);
      expect(dsdt).toMatch(/Name \(\\_S5, Package \(0x04\)[^{]*\{\s+0x05,/);
      expect(dsl.FACP).toMatch(/Hardware Reduced \(V5\) : 1/);
      expect(dsl.FACP).toMatch(/Sleep Control Register[\s\S]*Space ID : 01 \[SystemIO\][\s\S]*Address : 0000000000000600/);
      expect(dsl.APIC).toMatch(/I\/O Apic ID : 04/);

      // iasl compiles its own disassembly; our decoder reads iasl's AML back to the same devices.
      const out = spawnSync(IASL, ['-p', 'recompiled', 'dsdt.dsl'], { cwd: dir, encoding: 'utf8' });
      expect(out.status, out.stdout + out.stderr).toBe(0);
      expect(out.stdout + out.stderr).toMatch(/0 Errors, 0 Warnings/);
      const recompiled = readFileSync(join(dir, 'recompiled.aml'));
      const nodes = aml.decodeAml(new Uint8Array(recompiled.subarray(36)));
      const sb = nodes.find((n) => n.kind === 'scope');
      expect(sb?.kind === 'scope' && sb.children.map((c) => (c.kind === 'device' ? c.path : '')).filter(Boolean)).toEqual(['COM1', 'PS2_', 'VR00', 'VR01', 'VR02']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
