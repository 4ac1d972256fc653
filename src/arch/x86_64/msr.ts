// MSRs written on every vCPU before its first KVM_RUN (the same set Firecracker's create_boot_msr_entries
// writes, plus MTRRdefType as Firecracker and Cloud Hypervisor used to): syscall/sysenter state zeroed,
// the TSC at 0, fast strings on, and MTRRs enabled with write-back as the default memory type.
//
// IA32_ARCH_CAPABILITIES (0x10a) is never written: KVM-PVM rejects it in KVM_SET_MSRS, and on AMD the
// MSR does not exist (vcpuCpuid clears its CPUID bit there). toMsrArrays() drops it if it sneaks in.

export interface MsrEntry {
  index: number;
  value: bigint;
  name: string;
}

export const MSR_IA32_TSC = 0x10;
export const MSR_IA32_APICBASE = 0x1b;
export const MSR_IA32_ARCH_CAPABILITIES = 0x10a;
export const MSR_IA32_SYSENTER_CS = 0x174;
export const MSR_IA32_SYSENTER_ESP = 0x175;
export const MSR_IA32_SYSENTER_EIP = 0x176;
export const MSR_IA32_MISC_ENABLE = 0x1a0;
export const MSR_MTRR_DEF_TYPE = 0x2ff;
export const MSR_EFER = 0xc000_0080;
export const MSR_STAR = 0xc000_0081;
export const MSR_LSTAR = 0xc000_0082;
export const MSR_CSTAR = 0xc000_0083;
export const MSR_SYSCALL_MASK = 0xc000_0084;
export const MSR_FS_BASE = 0xc000_0100;
export const MSR_GS_BASE = 0xc000_0101;
export const MSR_KERNEL_GS_BASE = 0xc000_0102;

/** IA32_MISC_ENABLE bit 0: fast-string operations enabled. */
export const MSR_IA32_MISC_ENABLE_FAST_STRING = 1n;
/** IA32_MTRR_DEF_TYPE: bit 11 E (MTRRs enabled), bits 7:0 default type (6 = write-back). */
export const MTRR_ENABLE = 1n << 11n;
export const MTRR_MEM_TYPE_WB = 6n;

/** MSRs kindling refuses to write (see the file comment). */
export const MSR_DENYLIST: ReadonlySet<number> = new Set([MSR_IA32_ARCH_CAPABILITIES]);

/** The boot MSR list, in the order it is written. A fresh array each call. */
export function bootMsrs(): MsrEntry[] {
  return [
    { index: MSR_IA32_SYSENTER_CS, value: 0n, name: 'IA32_SYSENTER_CS' },
    { index: MSR_IA32_SYSENTER_ESP, value: 0n, name: 'IA32_SYSENTER_ESP' },
    { index: MSR_IA32_SYSENTER_EIP, value: 0n, name: 'IA32_SYSENTER_EIP' },
    { index: MSR_STAR, value: 0n, name: 'STAR' },
    { index: MSR_CSTAR, value: 0n, name: 'CSTAR' },
    { index: MSR_KERNEL_GS_BASE, value: 0n, name: 'KERNEL_GS_BASE' },
    { index: MSR_SYSCALL_MASK, value: 0n, name: 'SYSCALL_MASK' },
    { index: MSR_LSTAR, value: 0n, name: 'LSTAR' },
    { index: MSR_IA32_TSC, value: 0n, name: 'IA32_TSC' },
    { index: MSR_IA32_MISC_ENABLE, value: MSR_IA32_MISC_ENABLE_FAST_STRING, name: 'IA32_MISC_ENABLE' },
    { index: MSR_MTRR_DEF_TYPE, value: MTRR_ENABLE | MTRR_MEM_TYPE_WB, name: 'MTRRdefType' },
  ];
}

/**
 * The parallel arrays addon.setMsrs() takes. Entries in MSR_DENYLIST are dropped, so compare the
 * ioctl's return value with `indices.length`, not with `list.length`.
 */
export function toMsrArrays(list: readonly MsrEntry[]): { indices: Uint32Array; values: BigUint64Array } {
  const kept = list.filter((m) => !MSR_DENYLIST.has(m.index));
  const indices = new Uint32Array(kept.length);
  const values = new BigUint64Array(kept.length);
  kept.forEach((m, i) => {
    indices[i] = m.index >>> 0;
    values[i] = BigInt.asUintN(64, m.value);
  });
  return { indices, values };
}
