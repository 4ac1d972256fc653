// Codecs between the raw KVM structs the addon passes around (Uint8Array / Uint32Array, little-endian,
// exactly as laid out by <linux/kvm.h> on x86-64) and typed objects.
//
// Every offset below was checked against the kernel headers with offsetof()/sizeof() (gcc, x86-64):
//   kvm_regs 144, kvm_sregs 312, kvm_segment 24, kvm_dtable 16, kvm_fpu 416, kvm_lapic_state 1024,
//   kvm_cpuid_entry2 40, kvm_msr_entry 16, kvm_run ≥ 2352 (the mapping is KVM_GET_VCPU_MMAP_SIZE).
// `checkStructLayouts(addon.structSizes)` compares them with what the addon was compiled against.

// ---- kvm_regs -------------------------------------------------------------------------------------

export interface KvmRegs {
  rax: bigint;
  rbx: bigint;
  rcx: bigint;
  rdx: bigint;
  rsi: bigint;
  rdi: bigint;
  rsp: bigint;
  rbp: bigint;
  r8: bigint;
  r9: bigint;
  r10: bigint;
  r11: bigint;
  r12: bigint;
  r13: bigint;
  r14: bigint;
  r15: bigint;
  rip: bigint;
  rflags: bigint;
}

/** Field order of struct kvm_regs: field i is the u64 at offset 8*i. */
export const KVM_REGS_FIELDS = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15',
  'rip', 'rflags',
] as const satisfies readonly (keyof KvmRegs)[];

export const KVM_REGS_SIZE = 144;
export const KVM_REGS_OFFSETS: Readonly<Record<keyof KvmRegs, number>> = Object.freeze(
  Object.fromEntries(KVM_REGS_FIELDS.map((f, i) => [f, i * 8])) as Record<keyof KvmRegs, number>,
);

export function zeroRegs(): KvmRegs {
  const r = {} as KvmRegs;
  for (const f of KVM_REGS_FIELDS) r[f] = 0n;
  return r;
}

function viewOf(buf: Uint8Array, size: number, what: string): DataView {
  if (buf.byteLength < size) throw new RangeError(`${what}: need ${size} bytes, got ${buf.byteLength}`);
  return new DataView(buf.buffer, buf.byteOffset, size);
}

export function decodeRegs(buf: Uint8Array): KvmRegs {
  const v = viewOf(buf, KVM_REGS_SIZE, 'kvm_regs');
  const r = {} as KvmRegs;
  for (let i = 0; i < KVM_REGS_FIELDS.length; i++) r[KVM_REGS_FIELDS[i]] = v.getBigUint64(i * 8, true);
  return r;
}

export function encodeRegs(regs: KvmRegs): Uint8Array {
  const out = new Uint8Array(KVM_REGS_SIZE);
  const v = new DataView(out.buffer);
  for (let i = 0; i < KVM_REGS_FIELDS.length; i++) v.setBigUint64(i * 8, BigInt.asUintN(64, regs[KVM_REGS_FIELDS[i]]), true);
  return out;
}

// ---- kvm_segment / kvm_dtable / kvm_sregs ---------------------------------------------------------

export interface KvmSegment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

export interface KvmDtable {
  base: bigint;
  limit: number;
}

export interface KvmSregs {
  cs: KvmSegment;
  ds: KvmSegment;
  es: KvmSegment;
  fs: KvmSegment;
  gs: KvmSegment;
  ss: KvmSegment;
  tr: KvmSegment;
  ldt: KvmSegment;
  gdt: KvmDtable;
  idt: KvmDtable;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apicBase: bigint;
  /** 4 × u64: bitmap of pending external interrupts (at most one bit set) */
  interruptBitmap: bigint[];
}

/** struct kvm_segment: base u64, limit u32, selector u16, then one u8 each, then padding u8. */
export const KVM_SEGMENT_SIZE = 24;
export const KVM_SEGMENT_OFFSETS = Object.freeze({
  base: 0,
  limit: 8,
  selector: 12,
  type: 14,
  present: 15,
  dpl: 16,
  db: 17,
  s: 18,
  l: 19,
  g: 20,
  avl: 21,
  unusable: 22,
  padding: 23,
});

/** struct kvm_dtable: base u64, limit u16, padding u16[3]. */
export const KVM_DTABLE_SIZE = 16;
export const KVM_DTABLE_OFFSETS = Object.freeze({ base: 0, limit: 8 });

export const KVM_SREGS_SIZE = 312;
export const KVM_SREGS_OFFSETS = Object.freeze({
  cs: 0,
  ds: 24,
  es: 48,
  fs: 72,
  gs: 96,
  ss: 120,
  tr: 144,
  ldt: 168,
  gdt: 192,
  idt: 208,
  cr0: 224,
  cr2: 232,
  cr3: 240,
  cr4: 248,
  cr8: 256,
  efer: 264,
  apicBase: 272,
  interruptBitmap: 280,
});
export const KVM_NR_INTERRUPTS = 256;
const SREG_SEGMENTS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
const SREG_U64S = ['cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apicBase'] as const;
const SEG_U8S = ['type', 'present', 'dpl', 'db', 's', 'l', 'g', 'avl', 'unusable'] as const;

function readSegment(v: DataView, o: number): KvmSegment {
  return {
    base: v.getBigUint64(o, true),
    limit: v.getUint32(o + 8, true),
    selector: v.getUint16(o + 12, true),
    type: v.getUint8(o + 14),
    present: v.getUint8(o + 15),
    dpl: v.getUint8(o + 16),
    db: v.getUint8(o + 17),
    s: v.getUint8(o + 18),
    l: v.getUint8(o + 19),
    g: v.getUint8(o + 20),
    avl: v.getUint8(o + 21),
    unusable: v.getUint8(o + 22),
  };
}

function writeSegment(v: DataView, o: number, s: KvmSegment): void {
  v.setBigUint64(o, BigInt.asUintN(64, s.base), true);
  v.setUint32(o + 8, s.limit >>> 0, true);
  v.setUint16(o + 12, s.selector & 0xffff, true);
  for (const f of SEG_U8S) v.setUint8(o + KVM_SEGMENT_OFFSETS[f], s[f] & 0xff);
  v.setUint8(o + 23, 0);
}

export function decodeSegment(buf: Uint8Array): KvmSegment {
  return readSegment(viewOf(buf, KVM_SEGMENT_SIZE, 'kvm_segment'), 0);
}

export function encodeSegment(seg: KvmSegment): Uint8Array {
  const out = new Uint8Array(KVM_SEGMENT_SIZE);
  writeSegment(new DataView(out.buffer), 0, seg);
  return out;
}

export function decodeSregs(buf: Uint8Array): KvmSregs {
  const v = viewOf(buf, KVM_SREGS_SIZE, 'kvm_sregs');
  const o = KVM_SREGS_OFFSETS;
  const seg = (k: (typeof SREG_SEGMENTS)[number]): KvmSegment => readSegment(v, o[k]);
  const dt = (at: number): KvmDtable => ({ base: v.getBigUint64(at, true), limit: v.getUint16(at + 8, true) });
  const u64 = (at: number): bigint => v.getBigUint64(at, true);
  return {
    cs: seg('cs'),
    ds: seg('ds'),
    es: seg('es'),
    fs: seg('fs'),
    gs: seg('gs'),
    ss: seg('ss'),
    tr: seg('tr'),
    ldt: seg('ldt'),
    gdt: dt(o.gdt),
    idt: dt(o.idt),
    cr0: u64(o.cr0),
    cr2: u64(o.cr2),
    cr3: u64(o.cr3),
    cr4: u64(o.cr4),
    cr8: u64(o.cr8),
    efer: u64(o.efer),
    apicBase: u64(o.apicBase),
    interruptBitmap: [0, 1, 2, 3].map((i) => u64(o.interruptBitmap + 8 * i)),
  };
}

export function encodeSregs(s: KvmSregs): Uint8Array {
  const out = new Uint8Array(KVM_SREGS_SIZE);
  const v = new DataView(out.buffer);
  const o = KVM_SREGS_OFFSETS;
  for (const k of SREG_SEGMENTS) writeSegment(v, o[k], s[k]);
  for (const k of ['gdt', 'idt'] as const) {
    v.setBigUint64(o[k], BigInt.asUintN(64, s[k].base), true);
    v.setUint16(o[k] + 8, s[k].limit & 0xffff, true);
  }
  for (const k of SREG_U64S) v.setBigUint64(o[k], BigInt.asUintN(64, s[k]), true);
  for (let i = 0; i < 4; i++) v.setBigUint64(o.interruptBitmap + 8 * i, BigInt.asUintN(64, s.interruptBitmap[i] ?? 0n), true);
  return out;
}

// ---- kvm_fpu ---------------------------------------------------------------------------------------

export interface KvmFpu {
  /** 8 × 16 bytes (x87 ST0-7 in FXSAVE layout) */
  fpr: Uint8Array;
  fcw: number;
  fsw: number;
  /** abridged tag word */
  ftwx: number;
  lastOpcode: number;
  lastIp: bigint;
  lastDp: bigint;
  /** 16 × 16 bytes (XMM0-15) */
  xmm: Uint8Array;
  mxcsr: number;
}

/** struct kvm_fpu: fpr[8][16], fcw u16, fsw u16, ftwx u8, pad1 u8, last_opcode u16, last_ip u64, last_dp u64, xmm[16][16], mxcsr u32, pad2 u32. */
export const KVM_FPU_SIZE = 416;
export const KVM_FPU_OFFSETS = Object.freeze({
  fpr: 0,
  fcw: 128,
  fsw: 130,
  ftwx: 132,
  pad1: 133,
  lastOpcode: 134,
  lastIp: 136,
  lastDp: 144,
  xmm: 152,
  mxcsr: 408,
  pad2: 412,
});
export const KVM_FPU_FPR_BYTES = 128;
export const KVM_FPU_XMM_BYTES = 256;

export function decodeFpu(buf: Uint8Array): KvmFpu {
  const v = viewOf(buf, KVM_FPU_SIZE, 'kvm_fpu');
  const o = KVM_FPU_OFFSETS;
  const bytes = new Uint8Array(buf.buffer, buf.byteOffset, KVM_FPU_SIZE);
  return {
    fpr: bytes.slice(o.fpr, o.fpr + KVM_FPU_FPR_BYTES),
    fcw: v.getUint16(o.fcw, true),
    fsw: v.getUint16(o.fsw, true),
    ftwx: v.getUint8(o.ftwx),
    lastOpcode: v.getUint16(o.lastOpcode, true),
    lastIp: v.getBigUint64(o.lastIp, true),
    lastDp: v.getBigUint64(o.lastDp, true),
    xmm: bytes.slice(o.xmm, o.xmm + KVM_FPU_XMM_BYTES),
    mxcsr: v.getUint32(o.mxcsr, true),
  };
}

/** Encode a kvm_fpu; omitted fields are zero. */
export function encodeFpu(fpu: Partial<KvmFpu>): Uint8Array {
  const out = new Uint8Array(KVM_FPU_SIZE);
  const v = new DataView(out.buffer);
  const o = KVM_FPU_OFFSETS;
  if (fpu.fpr) out.set(fpu.fpr.subarray(0, KVM_FPU_FPR_BYTES), o.fpr);
  v.setUint16(o.fcw, (fpu.fcw ?? 0) & 0xffff, true);
  v.setUint16(o.fsw, (fpu.fsw ?? 0) & 0xffff, true);
  v.setUint8(o.ftwx, (fpu.ftwx ?? 0) & 0xff);
  v.setUint16(o.lastOpcode, (fpu.lastOpcode ?? 0) & 0xffff, true);
  v.setBigUint64(o.lastIp, BigInt.asUintN(64, fpu.lastIp ?? 0n), true);
  v.setBigUint64(o.lastDp, BigInt.asUintN(64, fpu.lastDp ?? 0n), true);
  if (fpu.xmm) out.set(fpu.xmm.subarray(0, KVM_FPU_XMM_BYTES), o.xmm);
  v.setUint32(o.mxcsr, (fpu.mxcsr ?? 0) >>> 0, true);
  return out;
}

// ---- kvm_lapic_state -------------------------------------------------------------------------------

/** struct kvm_lapic_state { char regs[KVM_APIC_REG_SIZE]; } — the xAPIC register page, 32-bit registers at 16-byte strides. */
export const KVM_LAPIC_STATE_SIZE = 1024;
export const APIC_ID = 0x20;
export const APIC_LVR = 0x30;
export const APIC_TPR = 0x80;
export const APIC_SPIV = 0xf0;
export const APIC_LVTT = 0x320;
export const APIC_LVT0 = 0x350;
export const APIC_LVT1 = 0x360;
export const APIC_LVTERR = 0x370;
/** LVT delivery mode field (bits 10:8) values */
export const APIC_DM_FIXED = 0x0;
export const APIC_DM_NMI = 0x4;
export const APIC_DM_EXTINT = 0x7;

function lapicCheck(buf: Uint8Array, off: number): void {
  if (!Number.isInteger(off) || off < 0 || off % 4 !== 0 || off + 4 > Math.min(buf.byteLength, KVM_LAPIC_STATE_SIZE)) {
    throw new RangeError(`LAPIC register offset 0x${off.toString(16)} out of range`);
  }
}

export function getLapicReg(buf: Uint8Array, off: number): number {
  lapicCheck(buf, off);
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(off, true);
}

export function setLapicReg(buf: Uint8Array, off: number, value: number): void {
  lapicCheck(buf, off);
  new DataView(buf.buffer, buf.byteOffset, buf.byteLength).setUint32(off, value >>> 0, true);
}

// ---- kvm_cpuid_entry2 ------------------------------------------------------------------------------

export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** struct kvm_cpuid_entry2: function, index, flags, eax, ebx, ecx, edx, padding[3] — 10 u32. */
export const KVM_CPUID_ENTRY2_SIZE = 40;
export const KVM_CPUID_ENTRY2_WORDS = 10;
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;
export const KVM_CPUID_FLAG_STATEFUL_FUNC = 2;
export const KVM_CPUID_FLAG_STATE_READ_NEXT = 4;

export function decodeCpuid(raw: Uint32Array): CpuidEntry[] {
  if (raw.length % KVM_CPUID_ENTRY2_WORDS !== 0) {
    throw new RangeError(`kvm_cpuid_entry2 array: length ${raw.length} is not a multiple of ${KVM_CPUID_ENTRY2_WORDS}`);
  }
  const out: CpuidEntry[] = [];
  for (let i = 0; i < raw.length; i += KVM_CPUID_ENTRY2_WORDS) {
    out.push({
      function: raw[i],
      index: raw[i + 1],
      flags: raw[i + 2],
      eax: raw[i + 3],
      ebx: raw[i + 4],
      ecx: raw[i + 5],
      edx: raw[i + 6],
    });
  }
  return out;
}

export function encodeCpuid(entries: readonly CpuidEntry[]): Uint32Array {
  const out = new Uint32Array(entries.length * KVM_CPUID_ENTRY2_WORDS);
  entries.forEach((e, n) => {
    const i = n * KVM_CPUID_ENTRY2_WORDS;
    out[i] = e.function;
    out[i + 1] = e.index;
    out[i + 2] = e.flags;
    out[i + 3] = e.eax;
    out[i + 4] = e.ebx;
    out[i + 5] = e.ecx;
    out[i + 6] = e.edx;
  });
  return out;
}

// ---- kvm_msr_entry ---------------------------------------------------------------------------------

/** struct kvm_msr_entry: index u32, reserved u32, data u64 (the addon builds these from index/value arrays). */
export const KVM_MSR_ENTRY_SIZE = 16;

// ---- kvm_run ---------------------------------------------------------------------------------------

/** Byte offsets inside the mmap'ed struct kvm_run (x86-64). Union members start at 32. */
export const KVM_RUN_OFFSETS = Object.freeze({
  requestInterruptWindow: 0,
  immediateExit: 1,
  exitReason: 8,
  readyForInterruptInjection: 12,
  ifFlag: 13,
  flags: 14,
  cr8: 16,
  apicBase: 24,
  /** KVM_EXIT_IO: direction u8 (0 in, 1 out) */
  ioDirection: 32,
  ioSize: 33,
  ioPort: 34,
  ioCount: 36,
  /** u64: offset of the data from the start of kvm_run */
  ioDataOffset: 40,
  /** KVM_EXIT_MMIO */
  mmioPhysAddr: 32,
  mmioData: 40,
  mmioLen: 48,
  mmioIsWrite: 52,
  /** KVM_EXIT_EXCEPTION */
  exException: 32,
  exErrorCode: 36,
  /** KVM_EXIT_HYPERCALL */
  hypercallNr: 32,
  /** KVM_EXIT_FAIL_ENTRY */
  failEntryReason: 32,
  failEntryCpu: 40,
  /** KVM_EXIT_UNKNOWN */
  hwExitReason: 32,
  /** KVM_EXIT_INTERNAL_ERROR */
  internalSuberror: 32,
  internalNdata: 36,
  internalData: 40,
  /** KVM_EXIT_SYSTEM_EVENT */
  systemEventType: 32,
  systemEventNdata: 36,
  systemEventData: 40,
  kvmValidRegs: 288,
  kvmDirtyRegs: 296,
  syncRegs: 304,
});
/** kvm_run.internal.data and kvm_run.system_event.data hold at most 16 u64. */
export const KVM_RUN_DATA_MAX = 16;
export const KVM_RUN_MIN_SIZE = 2352;

export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_EXCEPTION = 1;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HYPERCALL = 3;
export const KVM_EXIT_DEBUG = 4;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_IRQ_WINDOW_OPEN = 7;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_FAIL_ENTRY = 9;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_SET_TPR = 11;
export const KVM_EXIT_TPR_ACCESS = 12;
export const KVM_EXIT_S390_SIEIC = 13;
export const KVM_EXIT_S390_RESET = 14;
export const KVM_EXIT_DCR = 15;
export const KVM_EXIT_NMI = 16;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_OSI = 18;
export const KVM_EXIT_PAPR_HCALL = 19;
export const KVM_EXIT_S390_UCONTROL = 20;
export const KVM_EXIT_WATCHDOG = 21;
export const KVM_EXIT_S390_TSCH = 22;
export const KVM_EXIT_EPR = 23;
export const KVM_EXIT_SYSTEM_EVENT = 24;
export const KVM_EXIT_S390_STSI = 25;
export const KVM_EXIT_IOAPIC_EOI = 26;
export const KVM_EXIT_HYPERV = 27;
export const KVM_EXIT_ARM_NISV = 28;
export const KVM_EXIT_X86_RDMSR = 29;
export const KVM_EXIT_X86_WRMSR = 30;
export const KVM_EXIT_DIRTY_RING_FULL = 31;
export const KVM_EXIT_AP_RESET_HOLD = 32;
export const KVM_EXIT_X86_BUS_LOCK = 33;
export const KVM_EXIT_XEN = 34;
export const KVM_EXIT_RISCV_SBI = 35;
export const KVM_EXIT_RISCV_CSR = 36;
export const KVM_EXIT_NOTIFY = 37;
// Newer than the Debian 12 headers on the build machine (6.8+ uapi):
export const KVM_EXIT_LOONGARCH_IOCSR = 38;
export const KVM_EXIT_MEMORY_FAULT = 39;
export const KVM_EXIT_TDX = 40;

export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

export const KVM_SYSTEM_EVENT_SHUTDOWN = 1;
export const KVM_SYSTEM_EVENT_RESET = 2;
export const KVM_SYSTEM_EVENT_CRASH = 3;
export const KVM_SYSTEM_EVENT_WAKEUP = 4;
export const KVM_SYSTEM_EVENT_SUSPEND = 5;
export const KVM_SYSTEM_EVENT_SEV_TERM = 6;

export const KVM_INTERNAL_ERROR_EMULATION = 1;
export const KVM_INTERNAL_ERROR_SIMUL_EX = 2;
export const KVM_INTERNAL_ERROR_DELIVERY_EV = 3;
export const KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4;
/** struct emulation_failure.flags: insn_size/insn_bytes are valid. */
export const KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1n;

// ioctl flags (linux/kvm.h)
export const KVM_IRQFD_FLAG_DEASSIGN = 1;
export const KVM_IRQFD_FLAG_RESAMPLE = 2;
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1;
export const KVM_IOEVENTFD_FLAG_PIO = 2;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 4;
export const KVM_PIT_SPEAKER_DUMMY = 1;
/** struct kvm_clock_data: u64 clock @0, u32 flags @8. */
export const KVM_CLOCK_DATA_CLOCK = 0;
export const KVM_CLOCK_DATA_FLAGS = 8;

// errno values KVM_RUN returns negated (the addon passes -errno through for these).
export const EINTR = 4;
export const EAGAIN = 11;

const EXIT_NAMES: readonly string[] = [
  'UNKNOWN', 'EXCEPTION', 'IO', 'HYPERCALL', 'DEBUG', 'HLT', 'MMIO', 'IRQ_WINDOW_OPEN', 'SHUTDOWN',
  'FAIL_ENTRY', 'INTR', 'SET_TPR', 'TPR_ACCESS', 'S390_SIEIC', 'S390_RESET', 'DCR', 'NMI',
  'INTERNAL_ERROR', 'OSI', 'PAPR_HCALL', 'S390_UCONTROL', 'WATCHDOG', 'S390_TSCH', 'EPR',
  'SYSTEM_EVENT', 'S390_STSI', 'IOAPIC_EOI', 'HYPERV', 'ARM_NISV', 'X86_RDMSR', 'X86_WRMSR',
  'DIRTY_RING_FULL', 'AP_RESET_HOLD', 'X86_BUS_LOCK', 'XEN', 'RISCV_SBI', 'RISCV_CSR', 'NOTIFY',
  'LOONGARCH_IOCSR', 'MEMORY_FAULT', 'TDX',
];

/** "KVM_EXIT_HLT" etc.; "KVM_EXIT_<n>" for numbers this table does not know. */
export function kvmExitReasonName(reason: number): string {
  return `KVM_EXIT_${EXIT_NAMES[reason] ?? reason}`;
}

// ---- cross-check against the addon ----------------------------------------------------------------

/** What the TypeScript layouts assume, keyed like the addon's `structSizes`. */
export const EXPECTED_STRUCT_LAYOUT: Readonly<Record<string, number>> = Object.freeze({
  'sizeof.kvm_regs': KVM_REGS_SIZE,
  'sizeof.kvm_sregs': KVM_SREGS_SIZE,
  'sizeof.kvm_segment': KVM_SEGMENT_SIZE,
  'sizeof.kvm_dtable': KVM_DTABLE_SIZE,
  'sizeof.kvm_fpu': KVM_FPU_SIZE,
  'sizeof.kvm_lapic_state': KVM_LAPIC_STATE_SIZE,
  'sizeof.kvm_cpuid_entry2': KVM_CPUID_ENTRY2_SIZE,
  'sizeof.kvm_msr_entry': KVM_MSR_ENTRY_SIZE,
  'kvm_run.request_interrupt_window': KVM_RUN_OFFSETS.requestInterruptWindow,
  'kvm_run.immediate_exit': KVM_RUN_OFFSETS.immediateExit,
  'kvm_run.exit_reason': KVM_RUN_OFFSETS.exitReason,
  'kvm_run.ready_for_interrupt_injection': KVM_RUN_OFFSETS.readyForInterruptInjection,
  'kvm_run.if_flag': KVM_RUN_OFFSETS.ifFlag,
  'kvm_run.flags': KVM_RUN_OFFSETS.flags,
  'kvm_run.cr8': KVM_RUN_OFFSETS.cr8,
  'kvm_run.apic_base': KVM_RUN_OFFSETS.apicBase,
  'kvm_run.io.direction': KVM_RUN_OFFSETS.ioDirection,
  'kvm_run.io.size': KVM_RUN_OFFSETS.ioSize,
  'kvm_run.io.port': KVM_RUN_OFFSETS.ioPort,
  'kvm_run.io.count': KVM_RUN_OFFSETS.ioCount,
  'kvm_run.io.data_offset': KVM_RUN_OFFSETS.ioDataOffset,
  'kvm_run.mmio.phys_addr': KVM_RUN_OFFSETS.mmioPhysAddr,
  'kvm_run.mmio.data': KVM_RUN_OFFSETS.mmioData,
  'kvm_run.mmio.len': KVM_RUN_OFFSETS.mmioLen,
  'kvm_run.mmio.is_write': KVM_RUN_OFFSETS.mmioIsWrite,
  'kvm_run.internal.suberror': KVM_RUN_OFFSETS.internalSuberror,
  'kvm_run.internal.ndata': KVM_RUN_OFFSETS.internalNdata,
  'kvm_run.internal.data': KVM_RUN_OFFSETS.internalData,
  'kvm_run.system_event.type': KVM_RUN_OFFSETS.systemEventType,
  'kvm_run.system_event.ndata': KVM_RUN_OFFSETS.systemEventNdata,
  'kvm_run.system_event.data': KVM_RUN_OFFSETS.systemEventData,
  'kvm_run.fail_entry.hardware_entry_failure_reason': KVM_RUN_OFFSETS.failEntryReason,
  'kvm_run.fail_entry.cpu': KVM_RUN_OFFSETS.failEntryCpu,
  'kvm_run.hw.hardware_exit_reason': KVM_RUN_OFFSETS.hwExitReason,
  'kvm_run.ex.exception': KVM_RUN_OFFSETS.exException,
  'kvm_run.ex.error_code': KVM_RUN_OFFSETS.exErrorCode,
  'kvm_regs.rip': KVM_REGS_OFFSETS.rip,
  'kvm_regs.rflags': KVM_REGS_OFFSETS.rflags,
});

/**
 * Compare the addon's compiled sizes/offsets with the layouts above. Returns one message per mismatch
 * (keys the addon does not report are skipped; `sizeof.kvm_run` must be at least KVM_RUN_MIN_SIZE).
 */
export function checkStructLayouts(structSizes: Readonly<Record<string, number>>): string[] {
  const bad: string[] = [];
  for (const [k, want] of Object.entries(EXPECTED_STRUCT_LAYOUT)) {
    const got = structSizes[k];
    if (got !== undefined && got !== want) bad.push(`${k}: addon ${got}, TypeScript ${want}`);
  }
  const run = structSizes['sizeof.kvm_run'];
  if (run !== undefined && run < KVM_RUN_MIN_SIZE) bad.push(`sizeof.kvm_run: addon ${run} < ${KVM_RUN_MIN_SIZE}`);
  return bad;
}
