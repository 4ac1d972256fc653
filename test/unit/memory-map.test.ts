// Layout and e820 for any --mem: sorted, non-overlapping, the MMIO gap and the firmware-table area
// reserved, RAM total equal to what was asked, KVM slots exactly covering RAM.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  E820_RAM,
  E820_RESERVED,
  EBDA_START,
  HIGH_RAM_START,
  HIMEM_START,
  MAX_SLOT_BYTES,
  MiB,
  MMIO32_SIZE,
  MMIO32_START,
  RSDP_START,
} from '../../src/arch/x86_64/layout.js';
import { e820Map, memorySlots, ramRegions } from '../../src/arch/x86_64/memory-map.js';
import { runs } from '../fuzz/budget.js';

const memArb = fc.integer({ min: 16, max: 1024 * 1024 }).map((mib) => mib * MiB); // 16 MiB .. 1 TiB

describe('e820 and memory slots', () => {
  it('64 MiB and 5 GiB look exactly as documented', () => {
    expect(e820Map(64 * MiB)).toEqual([
      { addr: 0, size: 0x9fc00, type: E820_RAM },
      { addr: 0x9fc00, size: 0x60400, type: E820_RESERVED },
      { addr: 0x100000, size: 0x3f00000, type: E820_RAM },
      { addr: 0xc0000000, size: 0x40000000, type: E820_RESERVED },
    ]);
    expect(e820Map(5120 * MiB).at(-1)).toEqual({ addr: 0x1_0000_0000, size: 0x8000_0000, type: E820_RAM });
  });

  it('rejects less than 16 MiB and sizes that are not page multiples', () => {
    expect(() => ramRegions(15 * MiB)).toThrow(RangeError);
    expect(() => ramRegions(64 * MiB + 1)).toThrow(RangeError);
  });

  it('property: for any RAM size the map is sorted, disjoint, reserves the gap and tables, and RAM adds up', () => {
    fc.assert(
      fc.property(memArb, (mem) => {
        const map = e820Map(mem);
        for (let i = 1; i < map.length; i++) expect(map[i].addr).toBeGreaterThanOrEqual(map[i - 1].addr + map[i - 1].size);
        const ram = map.filter((e) => e.type === E820_RAM).reduce((a, e) => a + e.size, 0);
        // Everything the guest was given is RAM except the EBDA/BIOS hole below 1 MiB.
        expect(ram + (HIMEM_START - EBDA_START)).toBe(mem);
        const covers = (addr: number, type: number) => map.some((e) => e.type === type && addr >= e.addr && addr < e.addr + e.size);
        expect(covers(RSDP_START, E820_RESERVED)).toBe(true);
        expect(covers(EBDA_START, E820_RESERVED)).toBe(true);
        expect(covers(MMIO32_START, E820_RESERVED) && covers(MMIO32_START + MMIO32_SIZE - 1, E820_RESERVED)).toBe(true);
        // No RAM in the MMIO gap.
        expect(map.some((e) => e.type === E820_RAM && e.addr < MMIO32_START + MMIO32_SIZE && e.addr + e.size > MMIO32_START)).toBe(false);
        // Slots cover exactly the RAM regions, none larger than MAX_SLOT_BYTES, numbered 0..n-1.
        const slots = memorySlots(mem);
        expect(slots.map((s) => s.slot)).toEqual(slots.map((_, i) => i));
        expect(slots.every((s) => s.size > 0 && s.size <= MAX_SLOT_BYTES)).toBe(true);
        expect(slots.reduce((a, s) => a + s.size, 0)).toBe(mem);
        for (const r of ramRegions(mem)) {
          const inside = slots.filter((s) => s.gpa >= r.gpa && s.gpa + s.size <= r.gpa + r.size);
          expect(inside.reduce((a, s) => a + s.size, 0)).toBe(r.size);
        }
        expect(ramRegions(mem).every((r) => r.gpa === 0 || r.gpa === HIGH_RAM_START)).toBe(true);
      }),
      { numRuns: runs(300) },
    );
  });
});
