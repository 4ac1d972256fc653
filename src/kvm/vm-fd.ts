// A VM fd with its ioctls (in the role of rust-vmm kvm-ioctls' VmFd): it owns the fd, knows the ioctl
// flags (src/kvm/structs.ts), makes the vCPU fds, and closes the fd once through addon.closeVm, which
// also releases the VM's references on guest memory.
//
// The VmFd does not close its vCPUs (each VcpuFd owns its own fd, as in kvm-ioctls): close them first
// or after, guest memory is unmapped once all of them and the VM fd are closed.
import type { KvmAddon } from './addon.js';
import {
  KVM_IOEVENTFD_FLAG_DATAMATCH,
  KVM_IOEVENTFD_FLAG_DEASSIGN,
  KVM_IOEVENTFD_FLAG_PIO,
  KVM_IRQFD_FLAG_DEASSIGN,
} from './structs.js';
import { VcpuFd } from './vcpu-fd.js';

/** Where an ioeventfd listens: a guest-physical MMIO address or an I/O port, `len` bytes wide (0 = any width). */
export interface IoEventAddress {
  space: 'mmio' | 'pio';
  addr: number;
  len: number;
}

export class VmFd {
  readonly addon: KvmAddon;
  private _fd: number;

  /** Take ownership of `fd`, a VM fd from KVM_CREATE_VM. */
  constructor(addon: KvmAddon, fd: number) {
    this.addon = addon;
    this._fd = fd;
  }

  /** KVM_CREATE_VM(type) on an open /dev/kvm fd. */
  static create(addon: KvmAddon, kvmFd: number, type = 0): VmFd {
    return new VmFd(addon, addon.createVm(kvmFd, type));
  }

  /** The raw fd; -1 once closed. */
  get fd(): number {
    return this._fd;
  }

  get closed(): boolean {
    return this._fd < 0;
  }

  private live(op: string): number {
    if (this._fd < 0) throw Object.assign(new Error(`${op} on a closed VM fd`), { code: 'EBADF', syscall: op });
    return this._fd;
  }

  /** KVM_SET_TSS_ADDR: three pages of guest-physical space KVM uses on Intel (below 4 GiB, outside RAM). */
  setTssAddr(addr: number): void {
    this.addon.setTssAddr(this.live('KVM_SET_TSS_ADDR'), addr);
  }

  /** KVM_SET_IDENTITY_MAP_ADDR: one page for the EPT identity map on Intel. */
  setIdentityMapAddr(addr: number | bigint): void {
    this.addon.setIdentityMapAddr(this.live('KVM_SET_IDENTITY_MAP_ADDR'), BigInt(addr));
  }

  /** KVM_CREATE_IRQCHIP: in-kernel PIC, IOAPIC and LAPICs. */
  createIrqchip(): void {
    this.addon.createIrqchip(this.live('KVM_CREATE_IRQCHIP'));
  }

  /** KVM_CREATE_PIT2 with kvm_pit_config.flags (KVM_PIT_SPEAKER_DUMMY). */
  createPit2(flags: number): void {
    this.addon.createPit2(this.live('KVM_CREATE_PIT2'), flags);
  }

  /** KVM_SET_USER_MEMORY_REGION: `slot` maps guest-physical [gpa, gpa+size) to buffer[offset, offset+size); size 0 deletes it. */
  setUserMemoryRegion(slot: number, flags: number, gpa: number | bigint, buffer: SharedArrayBuffer, offset: number, size: number): void {
    this.addon.setUserMemoryRegion(this.live('KVM_SET_USER_MEMORY_REGION'), slot, flags, BigInt(gpa), buffer, offset, size);
  }

  /** KVM_IRQFD: writing the eventfd `fd` raises `gsi`. */
  registerIrqfd(fd: number, gsi: number): void {
    this.addon.irqfd(this.live('KVM_IRQFD'), fd, gsi, 0, -1);
  }

  /** KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN: undo registerIrqfd. */
  unregisterIrqfd(fd: number, gsi: number): void {
    this.addon.irqfd(this.live('KVM_IRQFD'), fd, gsi, KVM_IRQFD_FLAG_DEASSIGN, -1);
  }

  /**
   * KVM_IOEVENTFD: a guest write to `at` signals the eventfd `fd` in the kernel instead of exiting to
   * userspace; with `datamatch`, only a write of that value does.
   */
  registerIoeventfd(fd: number, at: IoEventAddress, datamatch?: bigint): void {
    this.ioeventfd(fd, at, datamatch, 0);
  }

  /** KVM_IOEVENTFD with KVM_IOEVENTFD_FLAG_DEASSIGN: undo registerIoeventfd (same arguments). */
  unregisterIoeventfd(fd: number, at: IoEventAddress, datamatch?: bigint): void {
    this.ioeventfd(fd, at, datamatch, KVM_IOEVENTFD_FLAG_DEASSIGN);
  }

  private ioeventfd(fd: number, at: IoEventAddress, datamatch: bigint | undefined, extra: number): void {
    const flags = extra | (at.space === 'pio' ? KVM_IOEVENTFD_FLAG_PIO : 0) | (datamatch !== undefined ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0);
    this.addon.ioeventfd(this.live('KVM_IOEVENTFD'), BigInt(at.addr), at.len, fd, flags, datamatch ?? 0n);
  }

  /** KVM_GET_CLOCK: raw struct kvm_clock_data (48 bytes; KVM_CLOCK_DATA_* offsets). */
  getClock(): Uint8Array {
    return this.addon.getClock(this.live('KVM_GET_CLOCK'));
  }

  /** KVM_SET_CLOCK: raw struct kvm_clock_data. */
  setClock(data: Uint8Array): void {
    this.addon.setClock(this.live('KVM_SET_CLOCK'), data);
  }

  /** KVM_CREATE_VCPU: vCPU `id` (its APIC id), owned by the returned VcpuFd. */
  createVcpu(id: number): VcpuFd {
    return new VcpuFd(this.addon, this.addon.createVcpu(this.live('KVM_CREATE_VCPU'), id), id);
  }

  /** Close the fd (addon.closeVm). Idempotent. */
  close(): void {
    if (this._fd < 0) return;
    const fd = this._fd;
    this._fd = -1;
    this.addon.closeVm(fd);
  }
}
