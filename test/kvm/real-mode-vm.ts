// A minimal real-mode VM straight on the addon, for tests of the addon itself: 1 MiB of RAM at
// GPA 0, `code` at 0x1000, CS base 0, RIP 0x1000.
import type { KvmAddon } from '../../src/kvm/addon.js';

const MiB = 1 << 20;
export const REAL_MODE_CODE = 0x1000;

export interface RealModeVm {
  vm: number;
  vcpu: number;
  mem: SharedArrayBuffer;
  /** Close the vCPU and VM fds (not the /dev/kvm fd). */
  close(): void;
}

export function makeRealModeVm(k: KvmAddon, kvmFd: number, code: number[]): RealModeVm {
  const vm = k.createVm(kvmFd, 0);
  const mem = k.allocGuestMemory(MiB);
  new Uint8Array(mem).set(code, REAL_MODE_CODE);
  k.setUserMemoryRegion(vm, 0, 0, 0n, mem, 0, MiB);
  const vcpu = k.createVcpu(vm, 0);
  const sregs = k.getSregs(vcpu);
  const sd = new DataView(sregs.buffer, sregs.byteOffset, sregs.byteLength);
  sd.setBigUint64(0, 0n, true); // cs.base
  sd.setUint16(12, 0, true); // cs.selector
  k.setSregs(vcpu, sregs);
  const regs = k.getRegs(vcpu);
  const rd = new DataView(regs.buffer, regs.byteOffset, regs.byteLength);
  rd.setBigUint64(128, BigInt(REAL_MODE_CODE), true); // rip
  rd.setBigUint64(136, 2n, true); // rflags: bit 1 is reserved-1
  k.setRegs(vcpu, regs);
  return {
    vm,
    vcpu,
    mem,
    close() {
      k.close(vcpu);
      k.closeVm(vm);
    },
  };
}
