// Initial vCPU state for the two boot protocols kindling loads kernels with:
//
//  linux64 — the Linux x86-64 64-bit boot protocol (Documentation/arch/x86/boot.rst, "64-bit BOOT
//            PROTOCOL"): long mode with paging on, an identity map covering the loaded kernel, boot
//            params and command line; a GDT with __BOOT_CS (0x10 in Linux, any flat 64-bit code
//            segment works) and flat data segments; interrupts off; %rsi = &boot_params.
//  pvh     — the Xen PVH entry ABI (xen/include/public/arch-x86/hvm/start_info.h, "x86/HVM direct
//            boot ABI"): 32-bit protected mode, paging off; CR0 = PE|ET, CR4 = 0, EFER = 0;
//            CS a 32-bit execute/read segment with base 0 and limit 0xFFFFFFFF; DS/ES/SS 32-bit
//            read/write segments with base 0 and limit 0xFFFFFFFF; TR a 32-bit TSS, base 0, limit
//            0x67; %ebx = &hvm_start_info; EFLAGS with IF, TF and VM clear. Everything else is
//            unspecified (the guest sets up its own GDT, IDT and stack).
//
// The GDT values and the page-table layout match Firecracker's arch/x86_64/{regs,gdt}.rs.
import type { GuestMemory } from '../../memory/guest-memory.js';
import {
  APIC_DM_EXTINT,
  APIC_DM_NMI,
  APIC_LVT0,
  APIC_LVT1,
  KVM_LAPIC_STATE_SIZE,
  getLapicReg,
  setLapicReg,
  zeroRegs,
  type KvmFpu,
  type KvmRegs,
  type KvmSegment,
  type KvmSregs,
} from '../../kvm/structs.js';
import {
  BOOT_GDT_MAX_ENTRIES,
  BOOT_GDT_START,
  BOOT_IDT_START,
  BOOT_STACK_POINTER,
  IDENTITY_MAP_GIB,
  PDE_START,
  PDPTE_START,
  PML4_START,
} from './layout.js';

export type BootProtocol = 'linux64' | 'pvh';

// ---- control-register bits --------------------------------------------------------------------

export const X86_CR0_PE = 1n << 0n;
export const X86_CR0_MP = 1n << 1n;
export const X86_CR0_ET = 1n << 4n;
export const X86_CR0_NE = 1n << 5n;
export const X86_CR0_WP = 1n << 16n;
export const X86_CR0_AM = 1n << 18n;
export const X86_CR0_NW = 1n << 29n;
export const X86_CR0_CD = 1n << 30n;
export const X86_CR0_PG = 1n << 31n;
export const X86_CR4_PAE = 1n << 5n;
export const EFER_SCE = 1n << 0n;
export const EFER_LME = 1n << 8n;
export const EFER_LMA = 1n << 10n;
export const EFER_NX = 1n << 11n;
/** RFLAGS bit 1 is reserved and always 1. */
export const RFLAGS_RESERVED = 0x2n;

// ---- GDT --------------------------------------------------------------------------------------

/** Descriptor flags (access byte + the G/DB/L/AVL nibble at bits 15:12), as in Linux's GDT_ENTRY(). */
export const GDT_FLAGS_CODE64 = 0xa09b; // G=1 L=1, present, DPL0, code exec/read accessed
export const GDT_FLAGS_CODE32 = 0xc09b; // G=1 D=1, present, DPL0, code exec/read accessed
export const GDT_FLAGS_DATA = 0xc093; //   G=1 B=1, present, DPL0, data read/write accessed
export const GDT_FLAGS_TSS64 = 0x808b; //  G=1, present, busy 64-bit TSS (type 0xb, S=0)
export const GDT_FLAGS_TSS32 = 0x008b; //  G=0, present, busy 32-bit TSS

/** GDT slots of the boot GDT; selector = index * 8 (TI=0, RPL=0). */
export const BOOT_GDT_CODE = 1;
export const BOOT_GDT_DATA = 2;
export const BOOT_GDT_TSS = 3;
export const BOOT_CS_SELECTOR = BOOT_GDT_CODE * 8;
export const BOOT_DS_SELECTOR = BOOT_GDT_DATA * 8;
export const BOOT_TSS_SELECTOR = BOOT_GDT_TSS * 8;
/** The PVH ABI's TSS limit (a 104-byte 32-bit TSS). */
export const PVH_TSS_LIMIT = 0x67;

/**
 * An 8-byte segment descriptor: base[31:24]→63:56, flags[15:12]→55:52, limit[19:16]→51:48,
 * flags[7:0]→47:40, base[23:0]→39:16, limit[15:0]→15:0. Limit is the raw 20-bit field.
 */
export function gdtEntry(flags: number, base: number, limit: number): bigint {
  const b = BigInt(base >>> 0);
  const l = BigInt(limit >>> 0);
  const f = BigInt(flags & 0xf0ff);
  return ((b & 0xff00_0000n) << 32n) | (f << 40n) | ((l & 0xf_0000n) << 32n) | ((b & 0x00ff_ffffn) << 16n) | (l & 0xffffn);
}

/**
 * The kvm_segment KVM_SET_SREGS needs for a descriptor. KVM takes the byte-granular 32-bit limit
 * (the VMCS/VMCB form), so a G=1 limit is scaled: (limit << 12) | 0xfff. A non-present descriptor
 * gives an unusable segment.
 */
export function segmentFromGdtEntry(entry: bigint, selector: number): KvmSegment {
  const bit = (n: bigint): number => Number((entry >> n) & 1n);
  const base = ((entry >> 32n) & 0xff00_0000n) | ((entry >> 16n) & 0x00ff_ffffn);
  const rawLimit = Number(((entry >> 32n) & 0xf_0000n) | (entry & 0xffffn));
  const g = bit(55n);
  const present = bit(47n);
  return {
    base,
    limit: g ? ((rawLimit << 12) | 0xfff) >>> 0 : rawLimit,
    selector: selector & 0xffff,
    type: Number((entry >> 40n) & 0xfn),
    present,
    dpl: Number((entry >> 45n) & 3n),
    db: bit(54n),
    s: bit(44n),
    l: bit(53n),
    g,
    avl: bit(52n),
    unusable: present ? 0 : 1,
  };
}

/** The boot GDT for a protocol: [null, code, data, TSS] (BOOT_GDT_MAX_ENTRIES entries). */
export function bootGdt(protocol: BootProtocol): bigint[] {
  if (protocol === 'pvh') {
    return [gdtEntry(0, 0, 0), gdtEntry(GDT_FLAGS_CODE32, 0, 0xfffff), gdtEntry(GDT_FLAGS_DATA, 0, 0xfffff), gdtEntry(GDT_FLAGS_TSS32, 0, PVH_TSS_LIMIT)];
  }
  return [gdtEntry(0, 0, 0), gdtEntry(GDT_FLAGS_CODE64, 0, 0xfffff), gdtEntry(GDT_FLAGS_DATA, 0, 0xfffff), gdtEntry(GDT_FLAGS_TSS64, 0, 0xfffff)];
}

/** GDTR/IDTR limits of the boot tables. */
export const BOOT_GDT_LIMIT = BOOT_GDT_MAX_ENTRIES * 8 - 1;
export const BOOT_IDT_LIMIT = 8 - 1;

/** Write the boot GDT at BOOT_GDT_START and an empty (zero) IDT entry at BOOT_IDT_START. Returns the GDT. */
export function writeBootGdt(mem: GuestMemory, protocol: BootProtocol): bigint[] {
  const gdt = bootGdt(protocol);
  if (gdt.length !== BOOT_GDT_MAX_ENTRIES) throw new Error('boot GDT size mismatch');
  const bytes = new Uint8Array(gdt.length * 8);
  const v = new DataView(bytes.buffer);
  gdt.forEach((e, i) => v.setBigUint64(i * 8, e, true));
  mem.writeBytes(BOOT_GDT_START, bytes);
  mem.write64(BOOT_IDT_START, 0n);
  return gdt;
}

// ---- identity-map page tables -----------------------------------------------------------------

export const PTE_PRESENT = 1n << 0n;
export const PTE_RW = 1n << 1n;
export const PTE_PS = 1n << 7n;
export const PAGE_SIZE_2M = 0x20_0000;

/**
 * Identity-map guest-virtual [0, IDENTITY_MAP_GIB GiB) with 2 MiB pages: PML4[0] → PDPT at PDPTE_START,
 * PDPT[i] → the i-th page directory at PDE_START + i*4 KiB, PD_i[j] maps (i*512 + j) * 2 MiB, all
 * present|writable (PDEs also PS). Returns the CR3 value (PML4_START).
 */
export function writeIdentityPageTables(mem: GuestMemory): bigint {
  const pml4 = new Uint8Array(4096);
  new DataView(pml4.buffer).setBigUint64(0, BigInt(PDPTE_START) | PTE_PRESENT | PTE_RW, true);
  mem.writeBytes(PML4_START, pml4);

  const pdpt = new Uint8Array(4096);
  const pdptView = new DataView(pdpt.buffer);
  for (let i = 0; i < IDENTITY_MAP_GIB; i++) {
    pdptView.setBigUint64(i * 8, BigInt(PDE_START + i * 4096) | PTE_PRESENT | PTE_RW, true);
  }
  mem.writeBytes(PDPTE_START, pdpt);

  const pds = new Uint8Array(IDENTITY_MAP_GIB * 4096);
  const pdView = new DataView(pds.buffer);
  for (let n = 0; n < IDENTITY_MAP_GIB * 512; n++) {
    pdView.setBigUint64(n * 8, (BigInt(n) * BigInt(PAGE_SIZE_2M)) | PTE_PRESENT | PTE_RW | PTE_PS, true);
  }
  mem.writeBytes(PDE_START, pds);
  return BigInt(PML4_START);
}

// ---- special registers ------------------------------------------------------------------------

function cloneSegment(s: KvmSegment): KvmSegment {
  return { ...s };
}

/**
 * The boot special registers, starting from `base` (what KVM_GET_SREGS returned: keeps apicBase,
 * interruptBitmap, cr2, cr8 and the LDT). Does not mutate `base`.
 *
 * linux64: CR0 = PE|ET|NE|PG (CD/NW cleared), CR3 = cr3 (default PML4_START), CR4 = PAE,
 *          EFER = LME|LMA, CS = 64-bit code (sel 0x08), DS/ES/FS/GS/SS = flat data (0x10), TR = 0x18.
 * pvh:     CR0 = PE|ET, CR3 = cr3 ?? 0, CR4 = 0, EFER = 0, CS = flat 32-bit code (D=1 G=1),
 *          DS/ES/FS/GS/SS = flat data, TR = 32-bit busy TSS limit 0x67.
 * GDTR = {BOOT_GDT_START, 31}, IDTR = {BOOT_IDT_START, 7} for both.
 */
export function bootSregs(base: KvmSregs, protocol: BootProtocol, cr3?: bigint): KvmSregs {
  const gdt = bootGdt(protocol);
  const code = segmentFromGdtEntry(gdt[BOOT_GDT_CODE], BOOT_CS_SELECTOR);
  const data = segmentFromGdtEntry(gdt[BOOT_GDT_DATA], BOOT_DS_SELECTOR);
  const tss = segmentFromGdtEntry(gdt[BOOT_GDT_TSS], BOOT_TSS_SELECTOR);
  const s: KvmSregs = {
    ...base,
    cs: code,
    ds: cloneSegment(data),
    es: cloneSegment(data),
    fs: cloneSegment(data),
    gs: cloneSegment(data),
    ss: cloneSegment(data),
    tr: tss,
    ldt: cloneSegment(base.ldt),
    gdt: { base: BigInt(BOOT_GDT_START), limit: BOOT_GDT_LIMIT },
    idt: { base: BigInt(BOOT_IDT_START), limit: BOOT_IDT_LIMIT },
    interruptBitmap: [...base.interruptBitmap],
  };
  if (protocol === 'linux64') {
    s.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG;
    s.cr3 = cr3 ?? BigInt(PML4_START);
    s.cr4 = X86_CR4_PAE;
    s.efer = EFER_LME | EFER_LMA;
  } else {
    s.cr0 = X86_CR0_PE | X86_CR0_ET;
    s.cr3 = cr3 ?? 0n;
    s.cr4 = 0n;
    s.efer = 0n;
  }
  return s;
}

// ---- general registers / FPU / LAPIC ----------------------------------------------------------

/**
 * linux64: rip = entry, rsp = rbp = BOOT_STACK_POINTER, rsi = bootInfoAddr (boot_params), rflags = 2.
 * pvh:     rip = entry, rbx = bootInfoAddr (hvm_start_info), rflags = 2. Everything else 0.
 */
export function bootRegs(protocol: BootProtocol, entry: number | bigint, bootInfoAddr: number | bigint): KvmRegs {
  const r = zeroRegs();
  r.rip = BigInt(entry);
  r.rflags = RFLAGS_RESERVED;
  if (protocol === 'linux64') {
    r.rsp = BigInt(BOOT_STACK_POINTER);
    r.rbp = BigInt(BOOT_STACK_POINTER);
    r.rsi = BigInt(bootInfoAddr);
  } else {
    r.rbx = BigInt(bootInfoAddr);
  }
  return r;
}

/** FNINIT's control word (all exceptions masked, 64-bit precision, round-to-nearest) and the reset MXCSR. */
export const BOOT_FCW = 0x37f;
export const BOOT_MXCSR = 0x1f80;

/** The boot FPU state: FCW 0x37F, MXCSR 0x1F80, everything else zero. Encode with encodeFpu(). */
export function bootFpu(): KvmFpu {
  return {
    fpr: new Uint8Array(128),
    fcw: BOOT_FCW,
    fsw: 0,
    ftwx: 0,
    lastOpcode: 0,
    lastIp: 0n,
    lastDp: 0n,
    xmm: new Uint8Array(256),
    mxcsr: BOOT_MXCSR,
  };
}

/** Replace the delivery-mode field (bits 10:8) of an LVT entry. */
export function setApicDeliveryMode(reg: number, mode: number): number {
  return ((reg & ~0x700) | ((mode & 7) << 8)) >>> 0;
}

/**
 * LVT LINT0 → ExtINT (the legacy PIC's INTR line), LVT LINT1 → NMI, as Firecracker's set_lint does;
 * the other bits (mask, trigger mode, …) keep what KVM reported. Returns a modified copy of `raw`
 * (a kvm_lapic_state from KVM_GET_LAPIC).
 */
export function configureLapic(raw: Uint8Array): Uint8Array {
  if (raw.byteLength < KVM_LAPIC_STATE_SIZE) throw new RangeError(`kvm_lapic_state: need ${KVM_LAPIC_STATE_SIZE} bytes, got ${raw.byteLength}`);
  const out = raw.slice(0, KVM_LAPIC_STATE_SIZE);
  setLapicReg(out, APIC_LVT0, setApicDeliveryMode(getLapicReg(out, APIC_LVT0), APIC_DM_EXTINT));
  setLapicReg(out, APIC_LVT1, setApicDeliveryMode(getLapicReg(out, APIC_LVT1), APIC_DM_NMI));
  return out;
}
