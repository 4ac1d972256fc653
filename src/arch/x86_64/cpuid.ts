// Per-vCPU CPUID, derived from KVM_GET_SUPPORTED_CPUID the way Firecracker's CPUID normalization does
// it (src/vmm/src/cpu_config/x86_64/cpuid/{normalize,intel/normalize,amd/normalize}.rs), minus the
// parts that read the host's own CPUID (cache leaves, brand string): vcpuCpuid is a pure function.
//
// cpuidTopology — the topology every vCPU sees:
//   one package, vcpuCount cores, one thread per core, no SMT; APIC id = x2APIC id = vcpuId.
//   CORE_SHIFT = ceil(log2(vcpuCount)) bits of the APIC id select the core (0 for one vCPU).
//   - leaf 0x1      EBX[31:24] initial APIC id = vcpuId; EBX[23:16] addressable logical processors
//                   = next power of two ≥ vcpuCount (max 255); EBX[15:8] CLFLUSH line = 8 (×8 = 64 B);
//                   EDX[28] HTT = vcpuCount > 1; ECX[31] hypervisor = 1; ECX[15] PDCM = 0;
//                   ECX[24] TSC-deadline kept as KVM reports it.
//   - leaf 0x4      (Intel) per cache: EAX[25:14] threads sharing − 1 = 0 for L1/L2, vcpuCount − 1
//                   for L3; EAX[31:26] cores per package − 1 = vcpuCount − 1 (max 63).
//   - leaf 0xB      subleaf 0: SMT level  — EAX shift 0, EBX 1 processor, ECX = 0 | type 1 << 8
//                   subleaf 1: core level — EAX shift CORE_SHIFT, EBX vcpuCount, ECX = 1 | type 2 << 8
//                   subleaf 2: terminator — EAX = EBX = 0, ECX = 2 (type 0 = invalid)
//                   EDX = x2APIC id = vcpuId in every subleaf.
//   - leaf 0x1F     (if KVM reports it) the same subleaves as 0xB.
//   - 0x80000008    (AMD) ECX[7:0] NC = vcpuCount − 1, ECX[15:12] ApicIdSize = CORE_SHIFT.
//   - 0x8000001D    (AMD) EAX[25:14] NumSharingCache: 0 for L1/L2, vcpuCount − 1 for L3.
//   - 0x8000001E    (AMD) EAX extended APIC id = vcpuId; EBX[7:0] core (compute unit) id = vcpuId,
//                   EBX[15:8] threads per core − 1 = 0; ECX[10:8] nodes per package − 1 = 0,
//                   ECX[7:0] node id = 0.
// Other fix-ups: leaf 6 (Intel) turbo (EAX[1]) and EPB (ECX[3]) cleared; leaf 7.0 Intel: EBX[6]
// FDP_EXCPTN_ONLY and EBX[13] "FPU CS/DS deprecated" set, ECX[5] WAITPKG cleared; leaf 7.0 AMD: EDX[29]
// ARCH_CAPABILITIES cleared (no such MSR on AMD); leaf 0xA (PMU) zeroed, so the guest sees no PMU;
// hypervisor leaves 0x40000000 (EAX = 0x40000001 and the signature) and 0x40000001 (KVM's feature
// bits, as KVM reports them) — other 0x400000xx leaves are dropped.
//
// Output is sorted by (function, index), so the same input always gives the same array; the results
// for two vCPUs of one VM differ only in the APIC-id fields listed above.
import { KVM_CPUID_FLAG_SIGNIFCANT_INDEX, type CpuidEntry } from '../../kvm/structs.js';

export interface VcpuCpuidOptions {
  vcpuId: number;
  vcpuCount: number;
  /** 12 bytes (latin1) for leaf 0x40000000, NUL-padded; default KVM's "KVMKVMKVM\0\0\0". */
  hypervisorSignature?: string;
}

export type CpuVendor = 'intel' | 'amd' | 'other';

/** The largest vCPU count the topology encodes (8-bit APIC ids; 255 is the broadcast id, 254 the MP-table limit). */
export const MAX_VCPUS = 254;
export const KVM_SIGNATURE = 'KVMKVMKVM\0\0\0';
export const HYPERVISOR_LEAF_BASE = 0x4000_0000;
export const KVM_CPUID_FEATURES = 0x4000_0001;

const LEAF_TOPOLOGY = 0xb;
const LEAF_TOPOLOGY_V2 = 0x1f;
const TOPO_TYPE_INVALID = 0;
const TOPO_TYPE_SMT = 1;
const TOPO_TYPE_CORE = 2;

/** Set bits [hi:lo] of x to v (v is masked to the field). */
function setBits(x: number, lo: number, hi: number, v: number): number {
  const width = hi - lo + 1;
  const mask = width >= 32 ? 0xffff_ffff : ((1 << width) - 1) >>> 0;
  return ((x & ~((mask << lo) >>> 0)) | (((v >>> 0) & mask) << lo)) >>> 0;
}

function getBits(x: number, lo: number, hi: number): number {
  const width = hi - lo + 1;
  const mask = width >= 32 ? 0xffff_ffff : ((1 << width) - 1) >>> 0;
  return ((x >>> lo) & mask) >>> 0;
}

function setBit(x: number, bit: number, on: boolean): number {
  return setBits(x, bit, bit, on ? 1 : 0);
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

function ceilLog2(n: number): number {
  let s = 0;
  while (1 << s < n) s++;
  return s;
}

/** ASCII text of 4 little-endian u32 registers' bytes. */
function regsText(...regs: number[]): string {
  let s = '';
  for (const r of regs) for (let i = 0; i < 4; i++) s += String.fromCharCode((r >>> (8 * i)) & 0xff);
  return s;
}

/** Pack a string (latin1, NUL-padded/truncated to 12 bytes) into EBX, ECX, EDX. */
export function signatureRegs(sig: string): [number, number, number] {
  const b = new Uint8Array(12);
  for (let i = 0; i < Math.min(sig.length, 12); i++) b[i] = sig.charCodeAt(i) & 0xff;
  const v = new DataView(b.buffer);
  return [v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true)];
}

/** CPU vendor from leaf 0 (EBX, EDX, ECX spell "GenuineIntel", "AuthenticAMD", "HygonGenuine", …). */
export function cpuidVendor(entries: readonly CpuidEntry[]): CpuVendor {
  const l0 = entries.find((e) => e.function === 0 && e.index === 0) ?? entries.find((e) => e.function === 0);
  if (!l0) return 'other';
  const v = regsText(l0.ebx, l0.edx, l0.ecx);
  if (v === 'GenuineIntel') return 'intel';
  if (v === 'AuthenticAMD' || v === 'HygonGenuine') return 'amd';
  return 'other';
}

export function findCpuid(entries: readonly CpuidEntry[], fn: number, index = 0): CpuidEntry | undefined {
  return entries.find((e) => e.function === fn && e.index === index);
}

/** The per-vCPU CPUID table for KVM_SET_CPUID2. Throws RangeError for an impossible vcpuId/vcpuCount. */
export function vcpuCpuid(supported: readonly CpuidEntry[], opts: VcpuCpuidOptions): CpuidEntry[] {
  const { vcpuId, vcpuCount } = opts;
  if (!Number.isInteger(vcpuCount) || vcpuCount < 1 || vcpuCount > MAX_VCPUS) {
    throw new RangeError(`vcpuCount must be 1..${MAX_VCPUS}, got ${vcpuCount}`);
  }
  if (!Number.isInteger(vcpuId) || vcpuId < 0 || vcpuId >= vcpuCount) {
    throw new RangeError(`vcpuId must be 0..${vcpuCount - 1}, got ${vcpuId}`);
  }
  const vendor = cpuidVendor(supported);
  const coreShift = ceilLog2(vcpuCount);
  const apicId = vcpuId;

  // Work on copies; key by (function, index). Later duplicates of a key replace earlier ones.
  const table = new Map<string, CpuidEntry>();
  const key = (fn: number, index: number): string => `${fn >>> 0}:${index >>> 0}`;
  const get = (fn: number, index = 0): CpuidEntry | undefined => table.get(key(fn, index));
  const put = (e: CpuidEntry): void => void table.set(key(e.function, e.index), e);
  const drop = (pred: (e: CpuidEntry) => boolean): void => {
    for (const [k, e] of table) if (pred(e)) table.delete(k);
  };
  for (const e of supported) {
    put({ function: e.function >>> 0, index: e.index >>> 0, flags: e.flags >>> 0, eax: e.eax >>> 0, ebx: e.ebx >>> 0, ecx: e.ecx >>> 0, edx: e.edx >>> 0 });
  }
  const maxBasic = get(0)?.eax ?? 0;
  const maxExt = get(0x8000_0000)?.eax ?? 0;

  // ---- leaf 1: feature information ----
  const l1 = get(1);
  if (l1) {
    l1.ebx = setBits(l1.ebx, 8, 15, 8);
    l1.ebx = setBits(l1.ebx, 16, 23, Math.min(nextPow2(vcpuCount), 255));
    l1.ebx = setBits(l1.ebx, 24, 31, apicId);
    l1.ecx = setBit(l1.ecx, 15, false); // PDCM: no IA32_PERF_CAPABILITIES
    l1.ecx = setBit(l1.ecx, 31, true); // hypervisor present
    l1.edx = setBit(l1.edx, 28, vcpuCount > 1); // HTT: EBX[23:16] is valid
  }

  // ---- leaf 4: deterministic cache parameters (Intel) ----
  if (vendor === 'intel') {
    for (let i = 0; ; i++) {
      const c = get(4, i);
      if (!c || getBits(c.eax, 0, 4) === 0) break; // cache type 0: no more caches
      const level = getBits(c.eax, 5, 7);
      if (level === 1 || level === 2) c.eax = setBits(c.eax, 14, 25, 0);
      else if (level === 3) c.eax = setBits(c.eax, 14, 25, Math.min(vcpuCount - 1, 0xfff));
      c.eax = setBits(c.eax, 26, 31, Math.min(vcpuCount - 1, 0x3f));
    }
  }

  // ---- leaf 6: thermal and power management (Intel) ----
  const l6 = get(6);
  if (l6 && vendor === 'intel') {
    l6.eax = setBit(l6.eax, 1, false); // Turbo Boost
    l6.ecx = setBit(l6.ecx, 3, false); // energy-performance bias
  }

  // ---- leaf 7.0: structured extended features ----
  const l7 = get(7, 0);
  if (l7 && vendor === 'intel') {
    l7.ebx = setBit(l7.ebx, 6, true); // FDP_EXCPTN_ONLY
    l7.ebx = setBit(l7.ebx, 13, true); // FPU CS and DS deprecated
    l7.ecx = setBit(l7.ecx, 5, false); // WAITPKG (UMWAIT/TPAUSE would idle the physical CPU)
  } else if (l7 && vendor === 'amd') {
    l7.edx = setBit(l7.edx, 29, false); // IA32_ARCH_CAPABILITIES: not an AMD MSR
  }

  // ---- leaf 0xA: architectural performance monitoring — none ----
  const la = get(0xa);
  if (la) la.eax = la.ebx = la.ecx = la.edx = 0;

  // ---- leaves 0xB / 0x1F: x2APIC topology ----
  const topology = (fn: number): CpuidEntry[] => [
    { function: fn, index: 0, flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX, eax: 0, ebx: 1, ecx: (TOPO_TYPE_SMT << 8) | 0, edx: apicId },
    { function: fn, index: 1, flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX, eax: coreShift, ebx: vcpuCount, ecx: (TOPO_TYPE_CORE << 8) | 1, edx: apicId },
    { function: fn, index: 2, flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX, eax: 0, ebx: 0, ecx: (TOPO_TYPE_INVALID << 8) | 2, edx: apicId },
  ];
  const hasTopology = maxBasic >= LEAF_TOPOLOGY || get(LEAF_TOPOLOGY) !== undefined;
  const hasTopologyV2 = get(LEAF_TOPOLOGY_V2) !== undefined;
  drop((e) => e.function === LEAF_TOPOLOGY || e.function === LEAF_TOPOLOGY_V2);
  if (hasTopology) topology(LEAF_TOPOLOGY).forEach(put);
  if (hasTopologyV2) topology(LEAF_TOPOLOGY_V2).forEach(put);

  // ---- AMD extended topology ----
  if (vendor === 'amd') {
    const l88 = get(0x8000_0008);
    if (l88) {
      l88.ecx = setBits(l88.ecx, 0, 7, vcpuCount - 1); // NC: threads in package − 1
      l88.ecx = setBits(l88.ecx, 12, 15, coreShift); // ApicIdSize
    }
    for (let i = 0; ; i++) {
      const c = get(0x8000_001d, i);
      if (!c || getBits(c.eax, 0, 4) === 0) break;
      const level = getBits(c.eax, 5, 7);
      if (level === 1 || level === 2) c.eax = setBits(c.eax, 14, 25, 0);
      else if (level === 3) c.eax = setBits(c.eax, 14, 25, vcpuCount - 1);
    }
    if (maxExt >= 0x8000_001e || get(0x8000_001e)) {
      const e = get(0x8000_001e) ?? { function: 0x8000_001e, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 };
      e.eax = apicId >>> 0; // extended APIC id
      e.ebx = setBits(e.ebx, 0, 7, vcpuId); // compute unit (core) id
      e.ebx = setBits(e.ebx, 8, 15, 0); // threads per compute unit − 1
      e.ecx = setBits(e.ecx, 8, 10, 0); // nodes per processor − 1
      e.ecx = setBits(e.ecx, 0, 7, 0); // node id
      put(e);
      const l80 = get(0x8000_0000);
      if (l80 && l80.eax < 0x8000_001e) l80.eax = 0x8000_001e;
    }
  }

  // ---- hypervisor leaves ----
  const features = get(KVM_CPUID_FEATURES);
  drop((e) => e.function >= HYPERVISOR_LEAF_BASE && e.function <= 0x4fff_ffff);
  const [sb, sc, sd] = signatureRegs(opts.hypervisorSignature ?? KVM_SIGNATURE);
  put({ function: HYPERVISOR_LEAF_BASE, index: 0, flags: 0, eax: KVM_CPUID_FEATURES, ebx: sb, ecx: sc, edx: sd });
  put(features ?? { function: KVM_CPUID_FEATURES, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 });

  return [...table.values()].sort((a, b) => a.function - b.function || a.index - b.index);
}
