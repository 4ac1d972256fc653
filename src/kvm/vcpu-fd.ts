// A vCPU fd with its ioctls (in the role of rust-vmm kvm-ioctls' VcpuFd): it owns the fd, encodes and
// decodes the structs (src/kvm/structs.ts), and closes the fd once. Made by VmFd.createVcpu().
//
// The vCPU worker runs KVM_RUN on the raw number (`fd`), which it receives in its workerData: the
// worker does not own the fd, the main thread's VcpuFd does and closes it after the worker ended.
import type { KvmAddon } from './addon.js';
import { decodeFpu, decodeRegs, decodeSregs, encodeCpuid, encodeFpu, encodeRegs, encodeSregs, type CpuidEntry, type KvmFpu, type KvmRegs, type KvmSregs } from './structs.js';

export class VcpuFd {
  readonly addon: KvmAddon;
  /** The vCPU index given to KVM_CREATE_VCPU (its APIC id). */
  readonly id: number;
  private _fd: number;

  /** Take ownership of `fd`, a vCPU fd from KVM_CREATE_VCPU. */
  constructor(addon: KvmAddon, fd: number, id: number) {
    this.addon = addon;
    this._fd = fd;
    this.id = id;
  }

  /** The raw fd (for a vCPU worker's workerData and KVM_RUN); -1 once closed. */
  get fd(): number {
    return this._fd;
  }

  private live(op: string): number {
    if (this._fd < 0) throw Object.assign(new Error(`${op} on a closed vCPU fd (vCPU ${this.id})`), { code: 'EBADF', syscall: op });
    return this._fd;
  }

  /** KVM_SET_CPUID2 */
  setCpuid2(entries: readonly CpuidEntry[]): void {
    this.addon.setCpuid2(this.live('KVM_SET_CPUID2'), encodeCpuid(entries));
  }

  /** KVM_SET_MSRS: returns how many were set (the first `n` of `indices`; the next one was rejected). */
  setMsrs(indices: Uint32Array, values: BigUint64Array): number {
    return this.addon.setMsrs(this.live('KVM_SET_MSRS'), indices, values);
  }

  /** KVM_GET_LAPIC: raw struct kvm_lapic_state (1024 bytes; see getLapicReg/setLapicReg). */
  getLapic(): Uint8Array {
    return this.addon.getLapic(this.live('KVM_GET_LAPIC'));
  }

  /** KVM_SET_LAPIC */
  setLapic(state: Uint8Array): void {
    this.addon.setLapic(this.live('KVM_SET_LAPIC'), state);
  }

  /** KVM_GET_REGS */
  getRegs(): KvmRegs {
    return decodeRegs(this.addon.getRegs(this.live('KVM_GET_REGS')));
  }

  /** KVM_SET_REGS */
  setRegs(regs: KvmRegs): void {
    this.addon.setRegs(this.live('KVM_SET_REGS'), encodeRegs(regs));
  }

  /** KVM_GET_SREGS */
  getSregs(): KvmSregs {
    return decodeSregs(this.addon.getSregs(this.live('KVM_GET_SREGS')));
  }

  /** KVM_SET_SREGS */
  setSregs(sregs: KvmSregs): void {
    this.addon.setSregs(this.live('KVM_SET_SREGS'), encodeSregs(sregs));
  }

  /** KVM_GET_FPU */
  getFpu(): KvmFpu {
    return decodeFpu(this.addon.getFpu(this.live('KVM_GET_FPU')));
  }

  /** KVM_SET_FPU (fields left out are zero) */
  setFpu(fpu: Partial<KvmFpu>): void {
    this.addon.setFpu(this.live('KVM_SET_FPU'), encodeFpu(fpu));
  }

  /** Close the fd. Idempotent. The VM's guest memory is unmapped once its VM fd and every vCPU fd are closed. */
  close(): void {
    if (this._fd < 0) return;
    const fd = this._fd;
    this._fd = -1;
    this.addon.close(fd);
  }
}
