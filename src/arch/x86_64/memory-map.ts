// Guest RAM regions, KVM memory slots and the e820 map for a given RAM size.
import {
  E820_RAM,
  E820_RESERVED,
  EBDA_START,
  HIGH_RAM_START,
  HIMEM_START,
  MAX_SLOT_BYTES,
  MMIO32_SIZE,
  MMIO32_START,
  MIN_MEM_BYTES,
} from './layout.js';

export interface RamRegion {
  /** guest-physical start */
  gpa: number;
  size: number;
}

export interface SlotLayout extends RamRegion {
  slot: number;
}

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

/** RAM as the guest sees it: below the 32-bit MMIO gap, and the rest from 4 GiB. */
export function ramRegions(memBytes: number): RamRegion[] {
  if (!Number.isSafeInteger(memBytes) || memBytes < MIN_MEM_BYTES) {
    throw new RangeError(`guest RAM must be at least ${MIN_MEM_BYTES / (1 << 20)} MiB`);
  }
  if (memBytes % 4096 !== 0) throw new RangeError('guest RAM must be a multiple of 4 KiB');
  const low = Math.min(memBytes, MMIO32_START);
  const regions: RamRegion[] = [{ gpa: 0, size: low }];
  if (memBytes > low) regions.push({ gpa: HIGH_RAM_START, size: memBytes - low });
  return regions;
}

/** KVM memory slots: each RAM region cut into pieces of at most MAX_SLOT_BYTES. */
export function memorySlots(memBytes: number): SlotLayout[] {
  const slots: SlotLayout[] = [];
  for (const r of ramRegions(memBytes)) {
    for (let off = 0; off < r.size; off += MAX_SLOT_BYTES) {
      slots.push({ slot: slots.length, gpa: r.gpa + off, size: Math.min(MAX_SLOT_BYTES, r.size - off) });
    }
  }
  return slots;
}

/**
 * The e820 map handed to the guest (boot_params.e820_table or the PVH memmap):
 * RAM below the EBDA, the EBDA/BIOS area reserved up to 1 MiB (MP table, ACPI tables), RAM from
 * 1 MiB, the 32-bit MMIO gap reserved, and RAM above 4 GiB.
 */
export function e820Map(memBytes: number): E820Entry[] {
  const [low, high] = ramRegions(memBytes);
  const map: E820Entry[] = [
    { addr: 0, size: EBDA_START, type: E820_RAM },
    { addr: EBDA_START, size: HIMEM_START - EBDA_START, type: E820_RESERVED },
    { addr: HIMEM_START, size: low.size - HIMEM_START, type: E820_RAM },
    { addr: MMIO32_START, size: MMIO32_SIZE, type: E820_RESERVED },
  ];
  if (high) map.push({ addr: high.gpa, size: high.size, type: E820_RAM });
  return map;
}
