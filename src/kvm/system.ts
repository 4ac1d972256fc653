// The /dev/kvm level: opening it with clear errors, capabilities, the supported CPUID (cached per
// process), and detection of KVM-PVM (software KVM without VT-x/AMD-V).
import { existsSync } from 'node:fs';
import { loadAddon, type KvmAddon } from './addon.js';
import { decodeCpuid, type CpuidEntry } from './structs.js';

export const KVM_API_VERSION = 12;
export const KVM_CAP_IRQCHIP = 0;
export const KVM_CAP_HLT = 1;
export const KVM_CAP_USER_MEMORY = 3;
export const KVM_CAP_SET_TSS_ADDR = 4;
export const KVM_CAP_EXT_CPUID = 7;
export const KVM_CAP_NR_VCPUS = 9;
export const KVM_CAP_PIT2 = 33;
export const KVM_CAP_IOEVENTFD = 36;
export const KVM_CAP_IRQFD = 32;
export const KVM_CAP_MAX_VCPUS = 66;
export const KVM_CAP_IMMEDIATE_EXIT = 136;
export const KVM_CAP_SET_IDENTITY_MAP_ADDR = 37;

/** A user-facing failure to use KVM: one clear line, no stack trace needed. */
export class KvmUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KvmUnavailableError';
  }
}

const REQUIRED_CAPS: Array<[number, string]> = [
  [KVM_CAP_IRQCHIP, 'KVM_CAP_IRQCHIP'],
  [KVM_CAP_USER_MEMORY, 'KVM_CAP_USER_MEMORY'],
  [KVM_CAP_SET_TSS_ADDR, 'KVM_CAP_SET_TSS_ADDR'],
  [KVM_CAP_EXT_CPUID, 'KVM_CAP_EXT_CPUID'],
  [KVM_CAP_PIT2, 'KVM_CAP_PIT2'],
  [KVM_CAP_IOEVENTFD, 'KVM_CAP_IOEVENTFD'],
  [KVM_CAP_IRQFD, 'KVM_CAP_IRQFD'],
  [KVM_CAP_IMMEDIATE_EXIT, 'KVM_CAP_IMMEDIATE_EXIT'],
];

export class Kvm {
  readonly fd: number;
  readonly addon: KvmAddon;
  private cpuidCache?: CpuidEntry[];

  private constructor(addon: KvmAddon, fd: number) {
    this.addon = addon;
    this.fd = fd;
  }

  static open(path = '/dev/kvm'): Kvm {
    const addon = loadAddon();
    let fd: number;
    try {
      fd = addon.open(path);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ENOENT' || code === 'ENXIO' || code === 'ENODEV') {
        throw new KvmUnavailableError(`${path} not found: KVM is not available on this machine (load the kvm module, or enable virtualization)`);
      }
      if (code === 'EACCES' || code === 'EPERM') {
        throw new KvmUnavailableError(`permission denied opening ${path}: run as root or add your user to the 'kvm' group`);
      }
      throw new KvmUnavailableError(`cannot open ${path}: ${(e as Error).message}`);
    }
    const kvm = new Kvm(addon, fd);
    try {
      const v = addon.getApiVersion(fd);
      if (v !== KVM_API_VERSION) throw new KvmUnavailableError(`${path} speaks KVM API ${v}, kindling needs ${KVM_API_VERSION}`);
      for (const [cap, name] of REQUIRED_CAPS) {
        if (addon.checkExtension(fd, cap) <= 0) throw new KvmUnavailableError(`${path} lacks ${name}, which kindling needs`);
      }
    } catch (e) {
      addon.close(fd);
      throw e;
    }
    return kvm;
  }

  checkExtension(cap: number): number {
    return this.addon.checkExtension(this.fd, cap);
  }

  private mmapSize?: number;

  /** KVM_GET_VCPU_MMAP_SIZE, asked once (a filtered process may not ask again). */
  get vcpuMmapSize(): number {
    return (this.mmapSize ??= this.addon.getVcpuMmapSize(this.fd));
  }

  /** The most vCPUs one VM may have (KVM_CAP_MAX_VCPUS, falling back to NR_VCPUS, then 4 as the API doc says). */
  get maxVcpus(): number {
    return this.checkExtension(KVM_CAP_MAX_VCPUS) || this.checkExtension(KVM_CAP_NR_VCPUS) || 4;
  }

  supportedCpuid(): CpuidEntry[] {
    this.cpuidCache ??= decodeCpuid(this.addon.getSupportedCpuid(this.fd));
    return this.cpuidCache;
  }

  close(): void {
    this.addon.close(this.fd);
  }
}

/**
 * True when /dev/kvm is served by KVM-PVM (a software backend without VT-x/AMD-V). Guest ring-0 code
 * then runs through KVM's instruction emulator and stock Linux kernels do not finish booting.
 */
export function detectPvm(): boolean {
  return existsSync('/sys/module/kvm_pvm');
}

export const PVM_WARNING =
  'kindling: warning: /dev/kvm is KVM-PVM (no hardware virtualization): guest kernel code is emulated, so stock Linux guests run very slowly and will not finish booting here';
