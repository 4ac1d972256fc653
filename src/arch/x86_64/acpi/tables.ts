// ACPI 6.x table encoders: RSDP (revision 2), XSDT, FADT (revision 6, hardware-reduced), MADT and
// DSDT. Each builder returns the table's bytes with its checksum(s) filled in; placing them in guest
// memory is index.ts's job.

import {
  ACPI_RESET_PORT,
  ACPI_RESET_VALUE,
  ACPI_S5_SLP_TYP,
  ACPI_SLEEP_CONTROL_PORT,
  ACPI_SLEEP_STATUS_PORT,
  COM1_GSI,
  COM1_PORT,
  COM1_PORT_COUNT,
  I8042_COMMAND_PORT,
  I8042_DATA_PORT,
  I8042_GSI,
  IOAPIC_START,
  LAPIC_START,
} from '../layout.js';
import * as aml from './aml.js';

/** OEMID (6 bytes) in the RSDP and every table header. */
export const ACPI_OEM_ID = 'KNDLNG';
/** OEM Table ID (8 bytes) of every table. */
export const ACPI_OEM_TABLE_ID = 'KINDLING';
export const ACPI_OEM_REVISION = 1;
export const ACPI_CREATOR_ID = 'KNDL';
export const ACPI_CREATOR_REVISION = 1;
/** FADT Hypervisor Vendor Identity. */
export const ACPI_HYPERVISOR_VENDOR_ID = 'KINDLING';

export const SDT_HEADER_SIZE = 36;
export const RSDP_SIZE = 36;
export const FADT_SIZE = 276;
export const FADT_REVISION = 6;
export const FADT_MINOR_REVISION = 5;
export const MADT_REVISION = 5;
export const XSDT_REVISION = 1;
/** DSDT revision >= 2: AML integers are 64-bit. */
export const DSDT_REVISION = 2;

// FADT fixed feature flags (ACPI 6.x Table 5.10).
export const FADT_F_WBINVD = 1 << 0;
export const FADT_F_PWR_BUTTON = 1 << 4; // set: no fixed-feature power button
export const FADT_F_SLP_BUTTON = 1 << 5; // set: no fixed-feature sleep button
export const FADT_F_RESET_REG_SUP = 1 << 10;
export const FADT_F_HW_REDUCED_ACPI = 1 << 20;
export const FADT_FLAGS = FADT_F_WBINVD | FADT_F_PWR_BUTTON | FADT_F_SLP_BUTTON | FADT_F_RESET_REG_SUP | FADT_F_HW_REDUCED_ACPI;

// IA-PC boot architecture flags (ACPI 6.x Table 5.11).
export const IAPC_BOOT_ARCH_8042 = 1 << 1; // i8042 at ports 0x60/0x64 (Linux: else "i8042 firmware absent")
export const IAPC_BOOT_ARCH_VGA_NOT_PRESENT = 1 << 2;
export const IAPC_BOOT_ARCH_MSI_NOT_SUPPORTED = 1 << 3;
export const IAPC_BOOT_ARCH_PCIE_ASPM_CONTROLS = 1 << 4;
export const IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT = 1 << 5;
export const FADT_IAPC_BOOT_ARCH =
  IAPC_BOOT_ARCH_8042 |
  IAPC_BOOT_ARCH_VGA_NOT_PRESENT |
  IAPC_BOOT_ARCH_MSI_NOT_SUPPORTED |
  IAPC_BOOT_ARCH_PCIE_ASPM_CONTROLS |
  IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT;

// FADT field offsets used here and by the parser.
export const FADT_OFF_DSDT = 40;
export const FADT_OFF_IAPC_BOOT_ARCH = 109;
export const FADT_OFF_FLAGS = 112;
export const FADT_OFF_RESET_REG = 116;
export const FADT_OFF_RESET_VALUE = 128;
export const FADT_OFF_MINOR_VERSION = 131;
export const FADT_OFF_X_DSDT = 140;
export const FADT_OFF_SLEEP_CONTROL_REG = 244;
export const FADT_OFF_SLEEP_STATUS_REG = 256;
export const FADT_OFF_HYPERVISOR_VENDOR_ID = 268;

// MADT structure types (ACPI 6.x Table 5.21).
export const MADT_LOCAL_APIC = 0;
export const MADT_IO_APIC = 1;
export const MADT_INTERRUPT_SOURCE_OVERRIDE = 2;
export const MADT_LOCAL_APIC_NMI = 4;
/** MADT flags: PCAT_COMPAT = 0 (no dual 8259 setup to describe; Firecracker writes 0 too). */
export const MADT_FLAGS = 0;
const MADT_LAPIC_ENABLED = 1;
/** Local APIC NMI: all processors, flags 0 (conforming), LINT1. */
export const MADT_NMI_ALL_PROCESSORS = 0xff;
export const MADT_NMI_LINT = 1;

/** Generic Address Structure address space ids. */
export const GAS_SYSTEM_MEMORY = 0;
export const GAS_SYSTEM_IO = 1;
/** GAS access size 1 = byte access. */
export const GAS_ACCESS_BYTE = 1;

export const VIRTIO_MMIO_HID = 'LNRO0005';

export interface GenericAddress {
  spaceId: number;
  bitWidth: number;
  bitOffset: number;
  accessSize: number;
  address: bigint;
}

export interface AcpiVirtioDevice {
  /** MMIO window base (guest-physical, below 4 GiB) */
  base: number;
  size: number;
  gsi: number;
}

function putAscii(bytes: Uint8Array, offset: number, text: string, width: number): void {
  if (text.length > width) throw new RangeError(`"${text}" is longer than ${width} bytes`);
  for (let i = 0; i < width; i++) bytes[offset + i] = i < text.length ? text.charCodeAt(i) : 0x20;
}

/** Sum of bytes mod 256. */
export function sum8(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let s = 0;
  for (let i = start; i < end; i++) s += bytes[i];
  return s & 0xff;
}

/** Set bytes[at] so that bytes[start, end) sums to zero. */
function fixChecksum(bytes: Uint8Array, at: number, start = 0, end = bytes.length): void {
  bytes[at] = 0;
  bytes[at] = (0x100 - sum8(bytes, start, end)) & 0xff;
}

/** A System Description Table: 36-byte header (checksum filled by finishSdt) and a zeroed body. */
function newSdt(signature: string, length: number, revision: number): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(length);
  const view = new DataView(bytes.buffer);
  putAscii(bytes, 0, signature, 4);
  view.setUint32(4, length, true);
  bytes[8] = revision;
  putAscii(bytes, 10, ACPI_OEM_ID, 6);
  putAscii(bytes, 16, ACPI_OEM_TABLE_ID, 8);
  view.setUint32(24, ACPI_OEM_REVISION, true);
  putAscii(bytes, 28, ACPI_CREATOR_ID, 4);
  view.setUint32(32, ACPI_CREATOR_REVISION, true);
  return { bytes, view };
}

function finishSdt(bytes: Uint8Array): Uint8Array {
  fixChecksum(bytes, 9);
  return bytes;
}

function putGas(view: DataView, offset: number, g: GenericAddress): void {
  view.setUint8(offset, g.spaceId);
  view.setUint8(offset + 1, g.bitWidth);
  view.setUint8(offset + 2, g.bitOffset);
  view.setUint8(offset + 3, g.accessSize);
  view.setBigUint64(offset + 4, g.address, true);
}

/** An 8-bit register in I/O space, accessed bytewise. */
export function ioByteRegister(port: number): GenericAddress {
  return { spaceId: GAS_SYSTEM_IO, bitWidth: 8, bitOffset: 0, accessSize: GAS_ACCESS_BYTE, address: BigInt(port) };
}

/** RSDP, revision 2 (ACPI 2.0+): RSDT address 0, XSDT address, both checksums. */
export function buildRsdp(xsdtAddr: number): Uint8Array {
  const bytes = new Uint8Array(RSDP_SIZE);
  const v = new DataView(bytes.buffer);
  putAscii(bytes, 0, 'RSD PTR ', 8);
  putAscii(bytes, 9, ACPI_OEM_ID, 6);
  bytes[15] = 2; // revision
  v.setUint32(16, 0, true); // RsdtAddress: none, the XSDT is used
  v.setUint32(20, RSDP_SIZE, true);
  v.setBigUint64(24, BigInt(xsdtAddr), true);
  fixChecksum(bytes, 8, 0, 20); // ACPI 1.0 checksum: first 20 bytes
  fixChecksum(bytes, 32, 0, RSDP_SIZE); // extended checksum: whole structure
  return bytes;
}

/** XSDT listing 64-bit table addresses. */
export function buildXsdt(entries: readonly number[]): Uint8Array {
  const { bytes, view } = newSdt('XSDT', SDT_HEADER_SIZE + 8 * entries.length, XSDT_REVISION);
  entries.forEach((a, i) => view.setBigUint64(SDT_HEADER_SIZE + 8 * i, BigInt(a), true));
  return finishSdt(bytes);
}

/**
 * FADT revision 6 for a hardware-reduced platform: no FACS, no PM1/GPE blocks, no SCI; X_DSDT set;
 * sleep control/status registers and the reset register in I/O space (src/devices/legacy/acpi-sleep.ts).
 */
export function buildFadt(dsdtAddr: number): Uint8Array {
  const { bytes, view } = newSdt('FACP', FADT_SIZE, FADT_REVISION);
  // FIRMWARE_CTRL / X_FIRMWARE_CTRL = 0: no FACS (allowed with HW_REDUCED_ACPI).
  // DSDT (32-bit) left 0: X_DSDT is authoritative.
  view.setUint16(FADT_OFF_IAPC_BOOT_ARCH, FADT_IAPC_BOOT_ARCH, true);
  view.setUint32(FADT_OFF_FLAGS, FADT_FLAGS, true);
  putGas(view, FADT_OFF_RESET_REG, ioByteRegister(ACPI_RESET_PORT));
  bytes[FADT_OFF_RESET_VALUE] = ACPI_RESET_VALUE;
  bytes[FADT_OFF_MINOR_VERSION] = FADT_MINOR_REVISION;
  view.setBigUint64(FADT_OFF_X_DSDT, BigInt(dsdtAddr), true);
  putGas(view, FADT_OFF_SLEEP_CONTROL_REG, ioByteRegister(ACPI_SLEEP_CONTROL_PORT));
  putGas(view, FADT_OFF_SLEEP_STATUS_REG, ioByteRegister(ACPI_SLEEP_STATUS_PORT));
  putAscii(bytes, FADT_OFF_HYPERVISOR_VENDOR_ID, ACPI_HYPERVISOR_VENDOR_ID, 8);
  return finishSdt(bytes);
}

/**
 * MADT: LAPIC address, one enabled Processor Local APIC per vCPU (ACPI processor UID = APIC id =
 * vCPU index), the I/O APIC (id `ioapicId`, GSI base 0), and a Local APIC NMI on LINT1 of every
 * processor.
 *
 * No Interrupt Source Overrides: kindling keeps KVM's default GSI routing, where ISA IRQ n is GSI n is
 * IOAPIC pin n (the in-kernel PIT raises GSI 0), so identity — the default without overrides — is the
 * truth. Firecracker writes none either; QEMU's "IRQ0 -> GSI2" matches QEMU's own routing, not KVM's.
 */
export function buildMadt(vcpus: number, ioapicId: number): Uint8Array {
  const length = SDT_HEADER_SIZE + 8 + 8 * vcpus + 12 + 6;
  const { bytes, view } = newSdt('APIC', length, MADT_REVISION);
  view.setUint32(36, LAPIC_START, true);
  view.setUint32(40, MADT_FLAGS, true);
  let p = 44;
  for (let cpu = 0; cpu < vcpus; cpu++) {
    bytes[p] = MADT_LOCAL_APIC;
    bytes[p + 1] = 8;
    bytes[p + 2] = cpu; // ACPI processor UID
    bytes[p + 3] = cpu; // APIC id
    view.setUint32(p + 4, MADT_LAPIC_ENABLED, true);
    p += 8;
  }
  bytes[p] = MADT_IO_APIC;
  bytes[p + 1] = 12;
  bytes[p + 2] = ioapicId;
  view.setUint32(p + 4, IOAPIC_START, true);
  view.setUint32(p + 8, 0, true); // GSI base
  p += 12;
  bytes[p] = MADT_LOCAL_APIC_NMI;
  bytes[p + 1] = 6;
  bytes[p + 2] = MADT_NMI_ALL_PROCESSORS;
  view.setUint16(p + 3, 0, true);
  bytes[p + 5] = MADT_NMI_LINT;
  return finishSdt(bytes);
}

/** The AML name of the i-th virtio-mmio device: VR00..VRFF. */
export function virtioDeviceName(index: number): string {
  return 'VR' + index.toString(16).toUpperCase().padStart(2, '0');
}

/**
 * DSDT body (AML):
 *
 *   Scope (\_SB_) {
 *     Device (COM1) { _HID EisaId("PNP0501"), _UID 1, _CRS { IO 0x3f8/8, Interrupt(Edge, High) {4} } }
 *     Device (PS2_) { _HID EisaId("PNP0303"), _STA 0x0F, _CRS { IO 0x60/1, IO 0x64/1, Interrupt {1} } }
 *     Device (VRnn) { _HID "LNRO0005", _UID nn, _CCA One,
 *                     _CRS { Memory32Fixed(ReadWrite, base, size), Interrupt(Edge, ActiveHigh, Exclusive) {gsi} } }
 *   }
 *   Name (\_S5_, Package (4) { ACPI_S5_SLP_TYP, 0, 0, 0 })
 *
 * The COM1 and PS/2 devices matter: in hardware-reduced mode Linux sets up no legacy PIC IRQs, so
 * ISA devices get their interrupts only through ACPI (PNP) resources — as Firecracker's DSDT does.
 * The virtio-mmio entries match Firecracker's add_virtio_aml: edge-triggered, active-high,
 * exclusive (kindling's irqfds have no resample fd).
 */
export function buildDsdtAml(devices: readonly AcpiVirtioDevice[]): Uint8Array {
  if (devices.length > 256) throw new RangeError(`too many virtio-mmio devices for the DSDT (${devices.length} > 256)`);
  const edgeHigh = { consumer: true, edge: true, activeLow: false, shared: false };
  const com1 = aml.device('COM1', [
    aml.name('_HID', aml.eisaId('PNP0501')),
    aml.name('_UID', aml.integer(1)),
    aml.name('_CRS', aml.resourceTemplate([aml.ioPort(COM1_PORT, COM1_PORT, 1, COM1_PORT_COUNT), aml.extendedInterrupt([COM1_GSI], edgeHigh)])),
  ]);
  const ps2 = aml.device('PS2_', [
    aml.name('_HID', aml.eisaId('PNP0303')),
    aml.name('_STA', aml.integer(0x0f)),
    aml.name(
      '_CRS',
      aml.resourceTemplate([
        aml.ioPort(I8042_DATA_PORT, I8042_DATA_PORT, 1, 1),
        aml.ioPort(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1),
        aml.extendedInterrupt([I8042_GSI], edgeHigh),
      ]),
    ),
  ]);
  const virtio = devices.map((d, i) =>
    aml.device(virtioDeviceName(i), [
      aml.name('_HID', aml.string(VIRTIO_MMIO_HID)),
      aml.name('_UID', aml.integer(i)),
      aml.name('_CCA', aml.integer(1)),
      aml.name('_CRS', aml.resourceTemplate([aml.memory32Fixed(d.base, d.size, true), aml.extendedInterrupt([d.gsi], edgeHigh)])),
    ]),
  );
  const sb = aml.scope('\\_SB_', [com1, ps2, ...virtio]);
  const s5 = aml.name('\\_S5_', aml.pkg([aml.integer(ACPI_S5_SLP_TYP), aml.integer(0), aml.integer(0), aml.integer(0)]));
  const out = new Uint8Array(sb.length + s5.length);
  out.set(sb, 0);
  out.set(s5, sb.length);
  return out;
}

/** DSDT: header + AML body. */
export function buildDsdt(devices: readonly AcpiVirtioDevice[]): Uint8Array {
  const body = buildDsdtAml(devices);
  const { bytes } = newSdt('DSDT', SDT_HEADER_SIZE + body.length, DSDT_REVISION);
  bytes.set(body, SDT_HEADER_SIZE);
  return finishSdt(bytes);
}
