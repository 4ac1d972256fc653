// Every fixed guest-physical address, port and interrupt number kindling uses on x86-64 lives here.
// Other modules import these names; no other file may hard-code a guest address.
//
// Guest-physical map (low memory follows the Linux x86 boot protocol and Firecracker's layout):
//
//   0x0000_0500  boot GDT (64-bit boot protocol)             BOOT_GDT_START
//   0x0000_0520  boot IDT (empty, limit 0)                    BOOT_IDT_START
//   0x0000_6000  PVH struct hvm_start_info                    PVH_INFO_START
//   0x0000_6040  PVH module list (initrd)                     PVH_MODLIST_START
//   0x0000_7000  PVH memory map  | Linux boot_params ("zero page")
//   0x0000_8ff0  initial stack pointer (64-bit boot protocol) BOOT_STACK_POINTER
//   0x0000_9000  PML4, 0xa000 PDPT, 0xb000-0xefff 4 PDs: identity map of the first 4 GiB (2 MiB pages)
//   0x0002_0000  kernel command line (max CMDLINE_MAX_SIZE)   CMDLINE_START
//   0x0009_fc00  EBDA start: reserved up to 1 MiB (MP table, ACPI tables, legacy BIOS area)
//   0x000e_0000  ACPI RSDP                                    RSDP_START
//   0x0010_0000  kernel load address (1 MiB)                  HIMEM_START
//   ...          RAM up to min(mem, 3 GiB)
//   0xc000_0000  32-bit MMIO gap (1 GiB), reserved in e820
//   0xd000_0000  virtio-mmio device windows, 4 KiB each       VIRTIO_MMIO_BASE
//                (with a boot timer, it has the first window:   BOOT_TIMER_BASE)
//   0xfec0_0000  IOAPIC                                       IOAPIC_START
//   0xfee0_0000  LAPIC                                        LAPIC_START
//   0xfffb_c000  KVM identity-map page (VMX real mode)        KVM_IDENTITY_MAP_START
//   0xfffb_d000  KVM TSS (3 pages)                            KVM_TSS_START
//   0x1_0000_0000 RAM above 3 GiB continues here (mem - 3 GiB)

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

// ---- boot structures ------------------------------------------------------------------------
export const BOOT_GDT_START = 0x500;
export const BOOT_GDT_MAX_ENTRIES = 4;
export const BOOT_IDT_START = 0x520;
export const PVH_INFO_START = 0x6000;
export const PVH_MODLIST_START = 0x6040;
export const PVH_MEMMAP_START = 0x7000;
/** Linux boot protocol struct boot_params ("zero page"). */
export const ZERO_PAGE_START = 0x7000;
export const BOOT_STACK_POINTER = 0x8ff0;
export const PML4_START = 0x9000;
export const PDPTE_START = 0xa000;
/** Four page directories follow PDPTE_START, one per GiB of the identity map. */
export const PDE_START = 0xb000;
export const IDENTITY_MAP_GIB = 4;
export const CMDLINE_START = 0x20000;
/** The x86 kernel's COMMAND_LINE_SIZE; bzImage headers may state a larger cmdline_size. */
export const CMDLINE_MAX_SIZE = 2048;
/** Anything a loader places must end below this (the real-mode area in use by boot structures ends here). */
export const EBDA_START = 0x9fc00;
/** MP floating pointer + table live at the start of the EBDA. */
export const MPTABLE_START = EBDA_START;
/** ACPI tables: RSDP at the classic BIOS search area start, the rest after it, below 1 MiB. */
export const RSDP_START = 0xe0000;
export const ACPI_TABLES_END = 0x100000;
/** Kernel (bzImage protected-mode part, ELF segments) load address. */
export const HIMEM_START = 0x100000;

// ---- memory map -----------------------------------------------------------------------------
export const MIN_MEM_BYTES = 16 * MiB;
/** Start and size of the 32-bit MMIO gap; RAM above it continues at 4 GiB. */
export const MMIO32_START = 0xc000_0000;
export const MMIO32_SIZE = 0x4000_0000;
export const HIGH_RAM_START = 0x1_0000_0000;
/**
 * Largest KVM memory slot (and so the largest SharedArrayBuffer kindling creates). V8 typed arrays
 * cannot exceed 2^32 elements; 2 GiB keeps every Uint8Array/DataView view well inside that.
 */
export const MAX_SLOT_BYTES = 2 * GiB;

// ---- platform devices -----------------------------------------------------------------------
export const VIRTIO_MMIO_BASE = 0xd000_0000;
export const VIRTIO_MMIO_SIZE = 0x1000;
export const VIRTIO_MMIO_MAX_DEVICES = 16;
/** Firecracker's boot timer (src/devices/legacy/boot-timer.ts), when on: the first virtio-mmio window. */
export const BOOT_TIMER_BASE = VIRTIO_MMIO_BASE;
export const BOOT_TIMER_SIZE = VIRTIO_MMIO_SIZE;
export const IOAPIC_START = 0xfec0_0000;
export const LAPIC_START = 0xfee0_0000;
export const KVM_IDENTITY_MAP_START = 0xfffb_c000;
export const KVM_TSS_START = 0xfffb_d000;

// ---- port I/O -------------------------------------------------------------------------------
export const COM1_PORT = 0x3f8;
export const COM1_PORT_COUNT = 8;
export const I8042_DATA_PORT = 0x60;
export const I8042_COMMAND_PORT = 0x64;
/** POST diagnostic port; writes are accepted and ignored (Linux uses it for I/O delays). */
export const POST_PORT = 0x80;
/**
 * kindling's debug-exit port: a 1-4 byte write ends the VM with reason 'exit' and exit code = value & 0xff.
 * Same port as QEMU's conventional `isa-debug-exit,iobase=0xf4` (QEMU exits with (v << 1) | 1 instead).
 */
export const DEBUG_EXIT_PORT = 0xf4;
export const DEBUG_EXIT_PORT_COUNT = 4;
/**
 * ACPI hardware-reduced register block (src/devices/legacy/acpi-sleep.ts), one byte each, named by the
 * FADT: SLEEP_CONTROL_REG at +0, SLEEP_STATUS_REG at +1, RESET_REG at +2. Port 0x600 is the block
 * Cloud Hypervisor uses for its ACPI shutdown device; nothing else of kindling's lives near it.
 */
export const ACPI_SLEEP_CONTROL_PORT = 0x600;
export const ACPI_SLEEP_STATUS_PORT = 0x601;
export const ACPI_RESET_PORT = 0x602;
/** Ports to register for the block above (base ACPI_SLEEP_CONTROL_PORT). */
export const ACPI_SLEEP_PORT_COUNT = 3;
/**
 * SLP_TYP value of S5 (soft off): the DSDT's \_S5_ package hands it to the OS, the OS writes it to
 * SLEEP_CONTROL_REG bits 2-4 together with SLP_EN, and the sleep device powers the VM off on it.
 */
export const ACPI_S5_SLP_TYP = 5;
/** FADT RESET_VALUE: a write of this byte to ACPI_RESET_PORT resets (reboots) the VM. */
export const ACPI_RESET_VALUE = 0x42;

// ---- interrupts -----------------------------------------------------------------------------
export const COM1_GSI = 4;
/** i8042 keyboard IRQ (declared in the DSDT's PS/2 device; ISA IRQ 1). */
export const I8042_GSI = 1;
/** GSIs handed to virtio-mmio devices, in order. */
export const VIRTIO_GSI_FIRST = 5;
export const VIRTIO_GSI_LAST = 23;
/** IOAPIC pins (KVM's in-kernel IOAPIC has 24). */
export const IOAPIC_PINS = 24;

// ---- e820 types -----------------------------------------------------------------------------
export const E820_RAM = 1;
export const E820_RESERVED = 2;
export const E820_ACPI = 3;
