// Intel MultiProcessor Specification 1.4 tables: what a guest without ACPI (acpi=off, or a kernel
// built without it) uses to find the vCPUs, the IOAPIC and the ISA interrupt wiring.
//
// At MPTABLE_START (the EBDA) kindling writes the 16-byte MP floating pointer structure, followed
// directly by the MP configuration table:
//
//   header "PCMP" (44 bytes)
//   one processor entry per vCPU (20 bytes each; LAPIC id = vCPU index, vCPU 0 is the BSP)
//   one bus entry: bus 0, "ISA   "
//   one I/O APIC entry: id = vcpus (the first id after the LAPICs), version 0x11, IOAPIC_START
//   I/O interrupt entries: ISA bus IRQ i -> IOAPIC pin i (type INT, conforming polarity/trigger) for
//     every pin 0..IOAPIC_PINS-1, i.e. exactly KVM's default GSI routing (kvm_setup_default_irq_routing),
//     which kindling does not change: the in-kernel PIT raises GSI 0 = pin 0, COM1 GSI 4 = pin 4, the
//     virtio-mmio devices VIRTIO_GSI_FIRST.. = the same pins. This is what Firecracker writes too; an
//     "IRQ0 -> pin 2" override (QEMU's habit) would be wrong here.
//   local interrupt entries: ExtINT -> LINT0 of the BSP (LAPIC 0), NMI -> LINT1 of every LAPIC (0xff).
//
// All multi-byte fields are little-endian; every structure's bytes sum to 0 mod 256.

import type { GuestMemory } from '../../memory/guest-memory.js';
import { IOAPIC_PINS, IOAPIC_START, LAPIC_START, MPTABLE_START, RSDP_START } from './layout.js';

/** xAPIC ids are 8 bits, 0xff is the broadcast id and the IOAPIC takes the id after the last vCPU. */
export const MPTABLE_MAX_VCPUS = 254;

export const MP_FLOATING_POINTER_SIZE = 16;
export const MP_CONFIG_HEADER_SIZE = 44;
export const MP_PROCESSOR_ENTRY_SIZE = 20;
/** Bus, I/O APIC, I/O interrupt and local interrupt entries are 8 bytes each. */
export const MP_SMALL_ENTRY_SIZE = 8;

// Entry types.
export const MP_ENTRY_PROCESSOR = 0;
export const MP_ENTRY_BUS = 1;
export const MP_ENTRY_IOAPIC = 2;
export const MP_ENTRY_IO_INTERRUPT = 3;
export const MP_ENTRY_LOCAL_INTERRUPT = 4;

// Interrupt types of I/O and local interrupt entries.
export const MP_INT_INT = 0;
export const MP_INT_NMI = 1;
export const MP_INT_SMI = 2;
export const MP_INT_EXTINT = 3;

export const MP_SPEC_REV = 4; // 1.4
export const MP_OEM_ID = 'KINDLING';
export const MP_PRODUCT_ID = 'KINDLING VM ';
export const MP_BUS_TYPE_ISA = 'ISA   ';
export const MP_LAPIC_VERSION = 0x14;
export const MP_IOAPIC_VERSION = 0x11;
/** Processor entry CPU signature: family 6, model 0, stepping 0 (as Firecracker). */
export const MP_CPU_SIGNATURE = 0x600;
/** Processor entry feature flags (CPUID.1:EDX): FPU (bit 0) and APIC (bit 9). */
export const MP_CPU_FEATURES = 0x201;

const CPU_FLAG_ENABLED = 0x01;
const CPU_FLAG_BSP = 0x02;
const IOAPIC_FLAG_ENABLED = 0x01;
const ISA_BUS_ID = 0;
/** Destination LAPIC id meaning "all local APICs". */
const ALL_LAPICS = 0xff;

export interface MpTableOptions {
  vcpus: number;
  /** I/O APIC id; default `vcpus`. Must not be a LAPIC id (0..vcpus-1) nor 0xff. */
  ioapicId?: number;
}

export interface MpTableResult {
  /** Guest-physical address of the "_MP_" floating pointer structure (= MPTABLE_START). */
  floatingPointerAddr: number;
  /** First byte after the configuration table. */
  end: number;
}

/** Bytes written by writeMpTable for `vcpus` vCPUs (floating pointer + configuration table). */
export function mpTableSize(vcpus: number): number {
  return (
    MP_FLOATING_POINTER_SIZE +
    MP_CONFIG_HEADER_SIZE +
    vcpus * MP_PROCESSOR_ENTRY_SIZE +
    MP_SMALL_ENTRY_SIZE /* bus */ +
    MP_SMALL_ENTRY_SIZE /* ioapic */ +
    IOAPIC_PINS * MP_SMALL_ENTRY_SIZE +
    2 * MP_SMALL_ENTRY_SIZE /* LINT0, LINT1 */
  );
}

/** Two's-complement byte that makes bytes[start, end) sum to 0 mod 256 (with that byte counted as 0). */
function checksumByte(bytes: Uint8Array, start: number, end: number): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum += bytes[i];
  return (0x100 - (sum & 0xff)) & 0xff;
}

function putAscii(bytes: Uint8Array, offset: number, text: string, width: number): void {
  for (let i = 0; i < width; i++) bytes[offset + i] = i < text.length ? text.charCodeAt(i) & 0x7f : 0x20;
}

/** Build the MP floating pointer + configuration table as they will appear at MPTABLE_START. */
export function buildMpTable(opts: MpTableOptions): Uint8Array {
  const { vcpus } = opts;
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MPTABLE_MAX_VCPUS) {
    throw new RangeError(`MP table: vCPU count must be 1..${MPTABLE_MAX_VCPUS} (got ${String(vcpus)})`);
  }
  const ioapicId = opts.ioapicId ?? vcpus;
  if (!Number.isInteger(ioapicId) || ioapicId < vcpus || ioapicId >= ALL_LAPICS) {
    throw new RangeError(`MP table: IOAPIC id ${String(ioapicId)} collides with a LAPIC id or is out of range (${vcpus}..254)`);
  }
  const size = mpTableSize(vcpus);
  if (MPTABLE_START + size > RSDP_START) throw new RangeError(`MP table for ${vcpus} vCPUs does not fit below the RSDP`);

  const bytes = new Uint8Array(size);
  const v = new DataView(bytes.buffer);
  const tableAddr = MPTABLE_START + MP_FLOATING_POINTER_SIZE;

  // Floating pointer structure.
  putAscii(bytes, 0, '_MP_', 4);
  v.setUint32(4, tableAddr, true);
  bytes[8] = MP_FLOATING_POINTER_SIZE / 16; // length in paragraphs
  bytes[9] = MP_SPEC_REV;
  // [10] checksum, [11] feature 1 = 0 (a configuration table is present), [12] feature 2 = 0 (no
  // IMCR: virtual wire mode), [13..15] reserved.
  bytes[10] = checksumByte(bytes, 0, MP_FLOATING_POINTER_SIZE);

  // Configuration table entries, after the header.
  const t = MP_FLOATING_POINTER_SIZE;
  let p = t + MP_CONFIG_HEADER_SIZE;
  let entries = 0;
  for (let cpu = 0; cpu < vcpus; cpu++) {
    bytes[p] = MP_ENTRY_PROCESSOR;
    bytes[p + 1] = cpu; // LAPIC id
    bytes[p + 2] = MP_LAPIC_VERSION;
    bytes[p + 3] = CPU_FLAG_ENABLED | (cpu === 0 ? CPU_FLAG_BSP : 0);
    v.setUint32(p + 4, MP_CPU_SIGNATURE, true);
    v.setUint32(p + 8, MP_CPU_FEATURES, true);
    // [12..19] reserved
    p += MP_PROCESSOR_ENTRY_SIZE;
    entries++;
  }
  bytes[p] = MP_ENTRY_BUS;
  bytes[p + 1] = ISA_BUS_ID;
  putAscii(bytes, p + 2, MP_BUS_TYPE_ISA, 6);
  p += MP_SMALL_ENTRY_SIZE;
  entries++;

  bytes[p] = MP_ENTRY_IOAPIC;
  bytes[p + 1] = ioapicId;
  bytes[p + 2] = MP_IOAPIC_VERSION;
  bytes[p + 3] = IOAPIC_FLAG_ENABLED;
  v.setUint32(p + 4, IOAPIC_START, true);
  p += MP_SMALL_ENTRY_SIZE;
  entries++;

  for (let irq = 0; irq < IOAPIC_PINS; irq++) {
    bytes[p] = MP_ENTRY_IO_INTERRUPT;
    bytes[p + 1] = MP_INT_INT;
    v.setUint16(p + 2, 0, true); // polarity and trigger conform to the bus
    bytes[p + 4] = ISA_BUS_ID;
    bytes[p + 5] = irq; // source bus IRQ
    bytes[p + 6] = ioapicId;
    bytes[p + 7] = irq; // IOAPIC INTIN#
    p += MP_SMALL_ENTRY_SIZE;
    entries++;
  }
  for (const [type, dstApic, lint] of [
    [MP_INT_EXTINT, 0, 0],
    [MP_INT_NMI, ALL_LAPICS, 1],
  ] as const) {
    bytes[p] = MP_ENTRY_LOCAL_INTERRUPT;
    bytes[p + 1] = type;
    v.setUint16(p + 2, 0, true);
    bytes[p + 4] = ISA_BUS_ID;
    bytes[p + 5] = 0;
    bytes[p + 6] = dstApic;
    bytes[p + 7] = lint;
    p += MP_SMALL_ENTRY_SIZE;
    entries++;
  }

  // Header.
  putAscii(bytes, t, 'PCMP', 4);
  v.setUint16(t + 4, p - t, true); // base table length
  bytes[t + 6] = MP_SPEC_REV;
  putAscii(bytes, t + 8, MP_OEM_ID, 8);
  putAscii(bytes, t + 16, MP_PRODUCT_ID, 12);
  // [28] OEM table pointer = 0, [32] OEM table size = 0
  v.setUint16(t + 34, entries, true);
  v.setUint32(t + 36, LAPIC_START, true);
  // [40] extended table length = 0, [42] extended checksum = 0, [43] reserved
  bytes[t + 7] = checksumByte(bytes, t, p);
  return bytes;
}

/**
 * Write the MP floating pointer and configuration table at MPTABLE_START. Only
 * [MPTABLE_START, end) is written, and end <= RSDP_START. Throws RangeError for a bad vCPU count or
 * IOAPIC id, GuestMemoryError if guest RAM does not cover the range.
 */
export function writeMpTable(mem: GuestMemory, opts: MpTableOptions): MpTableResult {
  const bytes = buildMpTable(opts);
  mem.writeBytes(MPTABLE_START, bytes);
  return { floatingPointerAddr: MPTABLE_START, end: MPTABLE_START + bytes.length };
}

// ---- parser (tests, diagnostics) ---------------------------------------------------------------

export interface MpProcessor {
  apicId: number;
  version: number;
  enabled: boolean;
  bsp: boolean;
  signature: number;
  features: number;
}

export interface MpIoApic {
  id: number;
  version: number;
  enabled: boolean;
  address: number;
}

export interface MpInterrupt {
  /** MP_INT_INT / NMI / SMI / EXTINT */
  type: number;
  flags: number;
  srcBus: number;
  srcIrq: number;
  /** IOAPIC id (I/O interrupt entries) or LAPIC id, 0xff = all (local interrupt entries) */
  dstId: number;
  /** IOAPIC INTIN# or LAPIC LINTIN# */
  dstPin: number;
}

export interface ParsedMpTable {
  floatingPointerAddr: number;
  configTableAddr: number;
  specRev: number;
  feature1: number;
  feature2: number;
  oemId: string;
  productId: string;
  lapicAddress: number;
  /** base table length */
  length: number;
  entryCount: number;
  processors: MpProcessor[];
  buses: Array<{ id: number; type: string }>;
  ioapics: MpIoApic[];
  ioInterrupts: MpInterrupt[];
  localInterrupts: MpInterrupt[];
  /** first byte after the configuration table */
  end: number;
}

function sum8(bytes: Uint8Array): number {
  let s = 0;
  for (const b of bytes) s += b;
  return s & 0xff;
}

function ascii(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('latin1');
}

/**
 * Read back an MP table whose floating pointer is at `addr` (default MPTABLE_START). Validates
 * signatures, checksums, lengths and entry types; throws Error describing the first problem.
 */
export function parseMpTable(mem: GuestMemory, addr: number = MPTABLE_START): ParsedMpTable {
  const fp = mem.readBytes(addr, MP_FLOATING_POINTER_SIZE);
  const fv = new DataView(fp.buffer);
  if (ascii(fp.subarray(0, 4)) !== '_MP_') throw new Error(`no MP floating pointer at 0x${addr.toString(16)}`);
  if (fp[8] !== 1) throw new Error(`MP floating pointer length ${fp[8]} paragraphs, expected 1`);
  if (sum8(fp) !== 0) throw new Error('MP floating pointer checksum mismatch');
  const tableAddr = fv.getUint32(4, true);
  if (tableAddr === 0) throw new Error('MP floating pointer has no configuration table');

  const hdr = mem.readBytes(tableAddr, MP_CONFIG_HEADER_SIZE);
  const hv = new DataView(hdr.buffer);
  if (ascii(hdr.subarray(0, 4)) !== 'PCMP') throw new Error(`no "PCMP" configuration table at 0x${tableAddr.toString(16)}`);
  const length = hv.getUint16(4, true);
  if (length < MP_CONFIG_HEADER_SIZE) throw new Error(`MP configuration table length ${length} is too small`);
  const table = mem.readBytes(tableAddr, length);
  const tv = new DataView(table.buffer);
  if (sum8(table) !== 0) throw new Error('MP configuration table checksum mismatch');
  if (hv.getUint16(40, true) !== 0) throw new Error('unexpected MP extended table');

  const out: ParsedMpTable = {
    floatingPointerAddr: addr,
    configTableAddr: tableAddr,
    specRev: fp[9],
    feature1: fp[11],
    feature2: fp[12],
    oemId: ascii(hdr.subarray(8, 16)),
    productId: ascii(hdr.subarray(16, 28)),
    lapicAddress: hv.getUint32(36, true),
    length,
    entryCount: hv.getUint16(34, true),
    processors: [],
    buses: [],
    ioapics: [],
    ioInterrupts: [],
    localInterrupts: [],
    end: tableAddr + length,
  };
  if (hdr[6] !== fp[9]) throw new Error(`MP spec revision mismatch (${fp[9]} vs ${hdr[6]})`);

  let p = MP_CONFIG_HEADER_SIZE;
  let count = 0;
  let lastType = -1;
  while (p < length) {
    const type = table[p];
    if (type < lastType) throw new Error(`MP entries out of order at offset ${p}`);
    lastType = type;
    const size = type === MP_ENTRY_PROCESSOR ? MP_PROCESSOR_ENTRY_SIZE : MP_SMALL_ENTRY_SIZE;
    if (type > MP_ENTRY_LOCAL_INTERRUPT) throw new Error(`unknown MP entry type ${type} at offset ${p}`);
    if (p + size > length) throw new Error(`MP entry at offset ${p} runs past the table`);
    switch (type) {
      case MP_ENTRY_PROCESSOR:
        out.processors.push({
          apicId: table[p + 1],
          version: table[p + 2],
          enabled: (table[p + 3] & CPU_FLAG_ENABLED) !== 0,
          bsp: (table[p + 3] & CPU_FLAG_BSP) !== 0,
          signature: tv.getUint32(p + 4, true),
          features: tv.getUint32(p + 8, true),
        });
        break;
      case MP_ENTRY_BUS:
        out.buses.push({ id: table[p + 1], type: ascii(table.subarray(p + 2, p + 8)) });
        break;
      case MP_ENTRY_IOAPIC:
        out.ioapics.push({
          id: table[p + 1],
          version: table[p + 2],
          enabled: (table[p + 3] & IOAPIC_FLAG_ENABLED) !== 0,
          address: tv.getUint32(p + 4, true),
        });
        break;
      default: {
        const e: MpInterrupt = {
          type: table[p + 1],
          flags: tv.getUint16(p + 2, true),
          srcBus: table[p + 4],
          srcIrq: table[p + 5],
          dstId: table[p + 6],
          dstPin: table[p + 7],
        };
        (type === MP_ENTRY_IO_INTERRUPT ? out.ioInterrupts : out.localInterrupts).push(e);
      }
    }
    p += size;
    count++;
  }
  if (count !== out.entryCount) throw new Error(`MP entry count ${out.entryCount} in the header, ${count} in the table`);
  return out;
}
