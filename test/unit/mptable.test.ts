import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IOAPIC_PINS, IOAPIC_START, LAPIC_START, MPTABLE_START, RSDP_START } from '../../src/arch/x86_64/layout.js';
import {
  MP_CPU_FEATURES,
  MP_CPU_SIGNATURE,
  MP_INT_EXTINT,
  MP_INT_INT,
  MP_INT_NMI,
  MPTABLE_MAX_VCPUS,
  mpTableSize,
  parseMpTable,
  writeMpTable,
} from '../../src/arch/x86_64/mptable.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { runs } from '../fuzz/budget.js';

const MEM_SIZE = 0x100000 + 0x1000;
const CANARY = 0xa5;

function newMem(): { mem: GuestMemory; bytes: Uint8Array } {
  const buffer = new SharedArrayBuffer(MEM_SIZE);
  const bytes = new Uint8Array(buffer);
  bytes.fill(CANARY);
  return { mem: new GuestMemory([{ slot: 0, gpa: 0, size: MEM_SIZE, buffer }]), bytes };
}

const sum8 = (b: Uint8Array): number => b.reduce((a, x) => a + x, 0) & 0xff;
const ascii = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

/** Every byte outside [start, end) still holds the canary. */
function untouchedOutside(bytes: Uint8Array, start: number, end: number): boolean {
  for (let i = 0; i < start; i++) if (bytes[i] !== CANARY) return false;
  for (let i = end; i < bytes.length; i++) if (bytes[i] !== CANARY) return false;
  return true;
}

function checkTable(vcpus: number): void {
  const { mem, bytes } = newMem();
  const r = writeMpTable(mem, { vcpus });
  expect(r.floatingPointerAddr).toBe(MPTABLE_START);
  expect(r.end).toBe(MPTABLE_START + mpTableSize(vcpus));
  expect(r.end).toBeLessThanOrEqual(RSDP_START);
  expect(untouchedOutside(bytes, MPTABLE_START, r.end)).toBe(true);

  const t = parseMpTable(mem);
  expect(t.end).toBe(r.end);
  expect(t.specRev).toBe(4);
  expect(t.oemId).toBe('KINDLING');
  expect(t.lapicAddress).toBe(LAPIC_START);
  expect(t.entryCount).toBe(vcpus + 2 + IOAPIC_PINS + 2);
  expect(t.processors.map((p) => p.apicId)).toEqual([...Array(vcpus).keys()]);
  expect(t.processors.every((p) => p.enabled && p.version === 0x14)).toBe(true);
  expect(t.processors.map((p) => p.bsp)).toEqual([...Array(vcpus).keys()].map((i) => i === 0));
  expect(t.buses).toEqual([{ id: 0, type: 'ISA   ' }]);
  expect(t.ioapics).toEqual([{ id: vcpus, version: 0x11, enabled: true, address: IOAPIC_START }]);
  expect(t.ioInterrupts).toEqual(
    [...Array(IOAPIC_PINS).keys()].map((i) => ({ type: MP_INT_INT, flags: 0, srcBus: 0, srcIrq: i, dstId: vcpus, dstPin: i })),
  );
  expect(t.localInterrupts).toEqual([
    { type: MP_INT_EXTINT, flags: 0, srcBus: 0, srcIrq: 0, dstId: 0, dstPin: 0 },
    { type: MP_INT_NMI, flags: 0, srcBus: 0, srcIrq: 0, dstId: 0xff, dstPin: 1 },
  ]);
  // Checksums, independently of the parser.
  expect(sum8(mem.readBytes(MPTABLE_START, 16))).toBe(0);
  expect(sum8(mem.readBytes(t.configTableAddr, t.length))).toBe(0);
}

describe('writeMpTable', () => {
  it('writes the floating pointer and header byte for byte', () => {
    const { mem } = newMem();
    writeMpTable(mem, { vcpus: 2 });
    const fp = mem.readBytes(MPTABLE_START, 16);
    expect(ascii(fp.subarray(0, 4))).toBe('_MP_');
    expect(mem.read32(MPTABLE_START + 4)).toBe(MPTABLE_START + 16); // physical address of the table
    expect([fp[8], fp[9], fp[11], fp[12], fp[13], fp[14], fp[15]]).toEqual([1, 4, 0, 0, 0, 0, 0]);

    const t = MPTABLE_START + 16;
    expect(ascii(mem.readBytes(t, 4))).toBe('PCMP');
    expect(mem.read16(t + 4)).toBe(44 + 2 * 20 + 8 + 8 + 24 * 8 + 2 * 8);
    expect(mem.read8(t + 6)).toBe(4);
    expect(ascii(mem.readBytes(t + 8, 8))).toBe('KINDLING');
    expect(mem.read32(t + 28)).toBe(0); // no OEM table
    expect(mem.read16(t + 34)).toBe(2 + 1 + 1 + 24 + 2);
    expect(mem.read32(t + 36)).toBe(0xfee00000);
    expect(mem.read16(t + 40)).toBe(0); // no extended table

    // First processor entry: type 0, LAPIC 0, version 0x14, enabled + BSP, signature, features.
    const cpu0 = mem.readBytes(t + 44, 20);
    expect([...cpu0.subarray(0, 4)]).toEqual([0, 0, 0x14, 3]);
    expect(new DataView(cpu0.buffer).getUint32(4, true)).toBe(MP_CPU_SIGNATURE);
    expect(new DataView(cpu0.buffer).getUint32(8, true)).toBe(MP_CPU_FEATURES);
    expect([...mem.readBytes(t + 64, 4)]).toEqual([0, 1, 0x14, 1]); // vCPU 1: enabled, not BSP
    // Bus, then IOAPIC, then IRQ 0 -> pin 0.
    expect(ascii(mem.readBytes(t + 84, 8))).toBe('\x01\x00ISA   ');
    expect([...mem.readBytes(t + 92, 8)]).toEqual([2, 2, 0x11, 1, 0x00, 0x00, 0xc0, 0xfe]);
    expect([...mem.readBytes(t + 100, 8)]).toEqual([3, 0, 0, 0, 0, 0, 2, 0]);
  });

  it.each([1, 2, 4, 32, MPTABLE_MAX_VCPUS])('parses back with %i vCPUs, checksums hold', (n) => {
    checkTable(n);
  });

  it('honours an explicit IOAPIC id', () => {
    const { mem } = newMem();
    writeMpTable(mem, { vcpus: 2, ioapicId: 9 });
    const t = parseMpTable(mem);
    expect(t.ioapics[0].id).toBe(9);
    expect(t.ioInterrupts.every((e) => e.dstId === 9)).toBe(true);
  });

  it('rejects bad vCPU counts and colliding IOAPIC ids with RangeError, writing nothing', () => {
    const { mem, bytes } = newMem();
    for (const vcpus of [0, -1, 1.5, NaN, MPTABLE_MAX_VCPUS + 1, 1000]) {
      expect(() => writeMpTable(mem, { vcpus })).toThrow(RangeError);
    }
    expect(() => writeMpTable(mem, { vcpus: 4, ioapicId: 3 })).toThrow(RangeError);
    expect(() => writeMpTable(mem, { vcpus: 4, ioapicId: 0xff })).toThrow(RangeError);
    expect(untouchedOutside(bytes, 0, 0)).toBe(true);
  });

  it('parseMpTable detects corruption', () => {
    const { mem } = newMem();
    const r = writeMpTable(mem, { vcpus: 4 });
    mem.write8(r.end - 1, mem.read8(r.end - 1) ^ 1);
    expect(() => parseMpTable(mem)).toThrow(/checksum/);
    mem.write8(MPTABLE_START + 12, 0x80);
    expect(() => parseMpTable(mem)).toThrow(/floating pointer checksum/);
  });

  it('property: any vCPU count writes only inside [MPTABLE_START, RSDP_START) and parses back', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: MPTABLE_MAX_VCPUS }), (vcpus) => {
        const { mem, bytes } = newMem();
        const r = writeMpTable(mem, { vcpus });
        if (r.end > RSDP_START || !untouchedOutside(bytes, MPTABLE_START, r.end)) return false;
        const t = parseMpTable(mem);
        return (
          t.processors.length === vcpus &&
          t.processors.every((p, i) => p.apicId === i && p.bsp === (i === 0)) &&
          t.ioapics.length === 1 &&
          t.ioapics[0].id === vcpus &&
          sum8(mem.readBytes(MPTABLE_START, 16)) === 0 &&
          sum8(mem.readBytes(t.configTableAddr, t.length)) === 0
        );
      }),
      { numRuns: runs(60) },
    );
  });
});
