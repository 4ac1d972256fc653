// ACPI tables in guest memory: writeAcpiTables places RSDP, XSDT, FADT, MADT and DSDT in
// [RSDP_START, ACPI_TABLES_END) (reserved in the e820 map); parseAcpiTables reads them back,
// validating signatures, lengths and checksums (tests, diagnostics).
//
// Placement: the RSDP at RSDP_START (also where a legacy BIOS-area scan finds it), then each table
// 16-byte aligned in the order XSDT, FADT, MADT, DSDT.

import type { GuestMemory } from '../../../memory/guest-memory.js';
import { ACPI_TABLES_END, IOAPIC_PINS, RSDP_START } from '../layout.js';
import { MPTABLE_MAX_VCPUS } from '../mptable.js';
import { decodeAml, decodeResources, eisaIdString, type AmlNode, type AmlValue, type ResourceDescriptor } from './aml.js';
import {
  FADT_OFF_DSDT,
  FADT_OFF_FLAGS,
  FADT_OFF_HYPERVISOR_VENDOR_ID,
  FADT_OFF_IAPC_BOOT_ARCH,
  FADT_OFF_MINOR_VERSION,
  FADT_OFF_RESET_REG,
  FADT_OFF_RESET_VALUE,
  FADT_OFF_SLEEP_CONTROL_REG,
  FADT_OFF_SLEEP_STATUS_REG,
  FADT_OFF_X_DSDT,
  FADT_SIZE,
  MADT_INTERRUPT_SOURCE_OVERRIDE,
  MADT_IO_APIC,
  MADT_LOCAL_APIC,
  MADT_LOCAL_APIC_NMI,
  RSDP_SIZE,
  SDT_HEADER_SIZE,
  VIRTIO_MMIO_HID,
  buildDsdt,
  buildFadt,
  buildMadt,
  buildRsdp,
  buildXsdt,
  sum8,
  type AcpiVirtioDevice,
  type GenericAddress,
} from './tables.js';

export * from './tables.js';

export interface AcpiOptions {
  vcpus: number;
  /** virtio-mmio devices, in the order the guest should number them (VR00, VR01, …). */
  virtioDevices: readonly AcpiVirtioDevice[];
}

export interface AcpiResult {
  /** Guest-physical address of the RSDP: pass as boot_params.acpi_rsdp_addr / hvm_start_info.rsdp_paddr. */
  rsdpAddr: number;
  /** First byte after the last table (<= ACPI_TABLES_END). */
  end: number;
}

const TABLE_ALIGN = 16;

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

function checkOptions(opts: AcpiOptions): void {
  const { vcpus, virtioDevices } = opts;
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > MPTABLE_MAX_VCPUS) {
    throw new RangeError(`ACPI: vCPU count must be 1..${MPTABLE_MAX_VCPUS} (got ${String(vcpus)})`);
  }
  virtioDevices.forEach((d, i) => {
    if (!Number.isInteger(d.base) || !Number.isInteger(d.size) || d.base < 0 || d.size <= 0 || d.base + d.size > 2 ** 32) {
      throw new RangeError(`ACPI: virtio device ${i}: MMIO window 0x${d.base.toString(16)}+0x${d.size.toString(16)} is not inside the 32-bit space`);
    }
    if (!Number.isInteger(d.gsi) || d.gsi < 0 || d.gsi >= IOAPIC_PINS) {
      throw new RangeError(`ACPI: virtio device ${i}: GSI ${String(d.gsi)} is not an IOAPIC pin (0..${IOAPIC_PINS - 1})`);
    }
  });
}

/**
 * Write RSDP, XSDT, FADT, MADT (IOAPIC id = vcpus) and DSDT into [RSDP_START, ACPI_TABLES_END).
 * Nothing outside [RSDP_START, end) is written. Throws RangeError for bad options or if the tables do
 * not fit (nothing is written then), GuestMemoryError if guest RAM does not cover the range.
 */
export function writeAcpiTables(mem: GuestMemory, opts: AcpiOptions): AcpiResult {
  checkOptions(opts);
  const rsdpAddr = RSDP_START;
  const xsdtAddr = alignUp(rsdpAddr + RSDP_SIZE, TABLE_ALIGN);
  const xsdtLen = SDT_HEADER_SIZE + 8 * 2;
  const fadtAddr = alignUp(xsdtAddr + xsdtLen, TABLE_ALIGN);
  const madtAddr = alignUp(fadtAddr + FADT_SIZE, TABLE_ALIGN);
  const madt = buildMadt(opts.vcpus, opts.vcpus);
  const dsdtAddr = alignUp(madtAddr + madt.length, TABLE_ALIGN);
  const dsdt = buildDsdt(opts.virtioDevices);
  const end = dsdtAddr + dsdt.length;
  if (end > ACPI_TABLES_END) {
    throw new RangeError(`ACPI tables need ${end - RSDP_START} bytes, only ${ACPI_TABLES_END - RSDP_START} are reserved`);
  }
  const xsdt = buildXsdt([fadtAddr, madtAddr]);
  const fadt = buildFadt(dsdtAddr);
  const rsdp = buildRsdp(xsdtAddr);
  // Check the whole range first so a too-small guest RAM fails before anything is written.
  mem.segments(RSDP_START, end - RSDP_START);
  mem.writeBytes(rsdpAddr, rsdp);
  mem.writeBytes(xsdtAddr, xsdt);
  mem.writeBytes(fadtAddr, fadt);
  mem.writeBytes(madtAddr, madt);
  mem.writeBytes(dsdtAddr, dsdt);
  return { rsdpAddr, end };
}

// ---- parser ------------------------------------------------------------------------------------

export interface SdtInfo {
  signature: string;
  addr: number;
  length: number;
  revision: number;
  oemId: string;
  oemTableId: string;
}

export interface ParsedFadt extends SdtInfo {
  flags: number;
  iapcBootArch: number;
  minorVersion: number;
  dsdt32: number;
  xDsdt: number;
  resetReg: GenericAddress;
  resetValue: number;
  sleepControlReg: GenericAddress;
  sleepStatusReg: GenericAddress;
  hypervisorVendorId: string;
}

export interface ParsedMadt extends SdtInfo {
  lapicAddress: number;
  flags: number;
  /** APIC ids of the enabled Processor Local APIC entries, in table order */
  lapicIds: number[];
  lapics: Array<{ uid: number; apicId: number; flags: number }>;
  ioapics: Array<{ id: number; address: number; gsiBase: number }>;
  overrides: Array<{ bus: number; source: number; gsi: number; flags: number }>;
  nmis: Array<{ uid: number; flags: number; lint: number }>;
}

export interface ParsedDsdtDevice {
  /** full path, e.g. "\_SB_.VR00" */
  path: string;
  hid: string;
  uid?: number;
  cca?: number;
  sta?: number;
  resources: ResourceDescriptor[];
}

export interface ParsedVirtioDevice extends AcpiVirtioDevice {
  path: string;
  uid: number;
  cca: number;
  edge: boolean;
  activeLow: boolean;
  shared: boolean;
}

export interface ParsedDsdt extends SdtInfo {
  aml: AmlNode[];
  devices: ParsedDsdtDevice[];
  /** The LNRO0005 devices, in table order */
  virtioDevices: ParsedVirtioDevice[];
  /** \_S5_ package elements, if present */
  s5?: number[];
}

export interface ParsedAcpi {
  rsdp: { addr: number; revision: number; oemId: string; rsdtAddr: number; xsdtAddr: number };
  xsdt: SdtInfo & { entries: number[] };
  fadt: ParsedFadt;
  madt: ParsedMadt;
  dsdt: ParsedDsdt;
  /** every table found (XSDT entries + DSDT) */
  tables: SdtInfo[];
  /** first byte after the highest table */
  end: number;
}

function ascii(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('latin1');
}

function hex(n: number): string {
  return '0x' + n.toString(16);
}

function toAddr(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${what} address ${v} is out of range`);
  return Number(v);
}

/** Read and validate one SDT (signature, length, checksum). */
function readSdt(mem: GuestMemory, addr: number, expect?: string): { info: SdtInfo; bytes: Uint8Array; view: DataView } {
  const hdr = mem.readBytes(addr, SDT_HEADER_SIZE);
  const length = new DataView(hdr.buffer).getUint32(4, true);
  const signature = ascii(hdr.subarray(0, 4));
  if (expect !== undefined && signature !== expect) throw new Error(`expected ${expect} at ${hex(addr)}, found "${signature}"`);
  if (length < SDT_HEADER_SIZE) throw new Error(`${signature} at ${hex(addr)}: length ${length} is shorter than its header`);
  const bytes = mem.readBytes(addr, length);
  if (sum8(bytes) !== 0) throw new Error(`${signature} at ${hex(addr)}: checksum mismatch`);
  return {
    info: { signature, addr, length, revision: bytes[8], oemId: ascii(bytes.subarray(10, 16)), oemTableId: ascii(bytes.subarray(16, 24)) },
    bytes,
    view: new DataView(bytes.buffer),
  };
}

function readGas(v: DataView, off: number): GenericAddress {
  return { spaceId: v.getUint8(off), bitWidth: v.getUint8(off + 1), bitOffset: v.getUint8(off + 2), accessSize: v.getUint8(off + 3), address: v.getBigUint64(off + 4, true) };
}

function parseFadt(info: SdtInfo, bytes: Uint8Array, v: DataView): ParsedFadt {
  if (info.length < FADT_SIZE) throw new Error(`FADT length ${info.length} < ${FADT_SIZE} (revision 6)`);
  return {
    ...info,
    flags: v.getUint32(FADT_OFF_FLAGS, true),
    iapcBootArch: v.getUint16(FADT_OFF_IAPC_BOOT_ARCH, true),
    minorVersion: bytes[FADT_OFF_MINOR_VERSION],
    dsdt32: v.getUint32(FADT_OFF_DSDT, true),
    xDsdt: toAddr(v.getBigUint64(FADT_OFF_X_DSDT, true), 'X_DSDT'),
    resetReg: readGas(v, FADT_OFF_RESET_REG),
    resetValue: bytes[FADT_OFF_RESET_VALUE],
    sleepControlReg: readGas(v, FADT_OFF_SLEEP_CONTROL_REG),
    sleepStatusReg: readGas(v, FADT_OFF_SLEEP_STATUS_REG),
    hypervisorVendorId: ascii(bytes.subarray(FADT_OFF_HYPERVISOR_VENDOR_ID, FADT_OFF_HYPERVISOR_VENDOR_ID + 8)),
  };
}

function parseMadt(info: SdtInfo, bytes: Uint8Array, v: DataView): ParsedMadt {
  if (info.length < 44) throw new Error(`MADT length ${info.length} < 44`);
  const out: ParsedMadt = { ...info, lapicAddress: v.getUint32(36, true), flags: v.getUint32(40, true), lapicIds: [], lapics: [], ioapics: [], overrides: [], nmis: [] };
  let p = 44;
  while (p < info.length) {
    if (p + 2 > info.length) throw new Error(`MADT: truncated entry at offset ${p}`);
    const type = bytes[p];
    const len = bytes[p + 1];
    if (len < 2 || p + len > info.length) throw new Error(`MADT: entry at offset ${p} has bad length ${len}`);
    const want = { [MADT_LOCAL_APIC]: 8, [MADT_IO_APIC]: 12, [MADT_INTERRUPT_SOURCE_OVERRIDE]: 10, [MADT_LOCAL_APIC_NMI]: 6 }[type];
    if (want !== undefined && len !== want) throw new Error(`MADT: type ${type} entry at offset ${p} has length ${len}, expected ${want}`);
    switch (type) {
      case MADT_LOCAL_APIC: {
        const e = { uid: bytes[p + 2], apicId: bytes[p + 3], flags: v.getUint32(p + 4, true) };
        out.lapics.push(e);
        if (e.flags & 1) out.lapicIds.push(e.apicId);
        break;
      }
      case MADT_IO_APIC:
        out.ioapics.push({ id: bytes[p + 2], address: v.getUint32(p + 4, true), gsiBase: v.getUint32(p + 8, true) });
        break;
      case MADT_INTERRUPT_SOURCE_OVERRIDE:
        out.overrides.push({ bus: bytes[p + 2], source: bytes[p + 3], gsi: v.getUint32(p + 4, true), flags: v.getUint16(p + 8, true) });
        break;
      case MADT_LOCAL_APIC_NMI:
        out.nmis.push({ uid: bytes[p + 2], flags: v.getUint16(p + 3, true), lint: bytes[p + 5] });
        break;
      default:
        throw new Error(`MADT: unexpected entry type ${type} at offset ${p}`);
    }
    p += len;
  }
  return out;
}

function intValue(v: AmlValue | undefined): number | undefined {
  return v?.kind === 'integer' ? Number(v.value) : undefined;
}

function collectDevices(nodes: readonly AmlNode[], prefix: string, out: ParsedDsdtDevice[]): void {
  for (const n of nodes) {
    if (n.kind === 'name') continue;
    const path = n.path.startsWith('\\') ? n.path : prefix === '' ? n.path : `${prefix}.${n.path}`;
    if (n.kind === 'device') {
      const names = new Map<string, AmlValue>();
      for (const c of n.children) if (c.kind === 'name') names.set(c.path, c.value);
      const hidV = names.get('_HID');
      const hid = hidV?.kind === 'string' ? hidV.value : hidV?.kind === 'integer' ? eisaIdString(Number(hidV.value)) : '';
      const crs = names.get('_CRS');
      out.push({
        path,
        hid,
        uid: intValue(names.get('_UID')),
        cca: intValue(names.get('_CCA')),
        sta: intValue(names.get('_STA')),
        resources: crs?.kind === 'buffer' ? decodeResources(crs.value) : [],
      });
    }
    collectDevices(n.children, path, out);
  }
}

function parseDsdt(info: SdtInfo, bytes: Uint8Array): ParsedDsdt {
  const amlNodes = decodeAml(bytes.subarray(SDT_HEADER_SIZE));
  const devices: ParsedDsdtDevice[] = [];
  collectDevices(amlNodes, '', devices);
  const virtioDevices: ParsedVirtioDevice[] = [];
  for (const d of devices) {
    if (d.hid !== VIRTIO_MMIO_HID) continue;
    const mem = d.resources.filter((r) => r.kind === 'memory32fixed');
    const irq = d.resources.filter((r) => r.kind === 'interrupt');
    if (mem.length !== 1 || irq.length !== 1 || irq[0].gsis.length !== 1) throw new Error(`DSDT: ${d.path} needs one Memory32Fixed and one Interrupt`);
    virtioDevices.push({
      path: d.path,
      uid: d.uid ?? -1,
      cca: d.cca ?? -1,
      base: mem[0].base,
      size: mem[0].length,
      gsi: irq[0].gsis[0],
      edge: irq[0].edge,
      activeLow: irq[0].activeLow,
      shared: irq[0].shared,
    });
  }
  let s5: number[] | undefined;
  for (const n of amlNodes) {
    if (n.kind === 'name' && (n.path === '\\_S5_' || n.path === '_S5_') && n.value.kind === 'package') {
      s5 = n.value.value.map((e) => intValue(e) ?? -1);
    }
  }
  return { ...info, aml: amlNodes, devices, virtioDevices, s5 };
}

/**
 * Read back the tables from the RSDP at `rsdpAddr`. Validates every signature, length and checksum
 * (RSDP: both), requires exactly one FADT and one MADT in the XSDT and a DSDT via X_DSDT; throws Error
 * describing the first problem.
 */
export function parseAcpiTables(mem: GuestMemory, rsdpAddr: number): ParsedAcpi {
  const r = mem.readBytes(rsdpAddr, RSDP_SIZE);
  const rv = new DataView(r.buffer);
  if (ascii(r.subarray(0, 8)) !== 'RSD PTR ') throw new Error(`no RSDP at ${hex(rsdpAddr)}`);
  if (sum8(r, 0, 20) !== 0) throw new Error('RSDP checksum mismatch');
  const revision = r[15];
  if (revision < 2) throw new Error(`RSDP revision ${revision}: no XSDT`);
  const rsdpLen = rv.getUint32(20, true);
  if (rsdpLen < RSDP_SIZE) throw new Error(`RSDP length ${rsdpLen} < ${RSDP_SIZE}`);
  if (sum8(mem.readBytes(rsdpAddr, rsdpLen)) !== 0) throw new Error('RSDP extended checksum mismatch');
  const rsdp = { addr: rsdpAddr, revision, oemId: ascii(r.subarray(9, 15)), rsdtAddr: rv.getUint32(16, true), xsdtAddr: toAddr(rv.getBigUint64(24, true), 'XSDT') };

  const x = readSdt(mem, rsdp.xsdtAddr, 'XSDT');
  if ((x.info.length - SDT_HEADER_SIZE) % 8 !== 0) throw new Error(`XSDT length ${x.info.length} is not header + n * 8`);
  const entries: number[] = [];
  for (let p = SDT_HEADER_SIZE; p < x.info.length; p += 8) entries.push(toAddr(x.view.getBigUint64(p, true), 'XSDT entry'));

  const tables: SdtInfo[] = [x.info];
  let fadt: ParsedFadt | undefined;
  let madt: ParsedMadt | undefined;
  for (const a of entries) {
    const t = readSdt(mem, a);
    tables.push(t.info);
    if (t.info.signature === 'FACP') {
      if (fadt) throw new Error('XSDT lists two FADTs');
      fadt = parseFadt(t.info, t.bytes, t.view);
    } else if (t.info.signature === 'APIC') {
      if (madt) throw new Error('XSDT lists two MADTs');
      madt = parseMadt(t.info, t.bytes, t.view);
    }
  }
  if (!fadt) throw new Error('XSDT lists no FADT');
  if (!madt) throw new Error('XSDT lists no MADT');
  const dsdtAddr = fadt.xDsdt || fadt.dsdt32;
  if (!dsdtAddr) throw new Error('FADT has no DSDT address');
  const d = readSdt(mem, dsdtAddr, 'DSDT');
  tables.push(d.info);
  const dsdt = parseDsdt(d.info, d.bytes);

  const end = Math.max(rsdpAddr + rsdpLen, ...tables.map((t) => t.addr + t.length));
  return { rsdp, xsdt: { ...x.info, entries }, fadt, madt, dsdt, tables, end };
}
