// Firecracker's boot timer: a pseudo-device whose only register is a write-only byte at offset 0 of
// its MMIO window (BOOT_TIMER_BASE, src/main/resources.ts). The guest writes BOOT_COMPLETE_MAGIC
// there once it considers itself booted (Firecracker's test images do it from init through /dev/mem);
// the VMM then logs how long the boot took. Firecracker handles only one-byte writes at offset 0 and
// ignores every other access; reads return 0 here (Firecracker leaves the read buffer untouched).
// Not announced to the guest: no ACPI node, no command-line word, no interrupt.
import type { AccessSize, MmioDevice } from '../bus.js';

/** The byte Firecracker's guests write (MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE). */
export const BOOT_COMPLETE_MAGIC = 123;

export class BootTimer implements MmioDevice {
  /** `bootComplete` runs on every magic write (Firecracker logs each one). */
  constructor(private readonly bootComplete: () => void) {}

  read(_offset: number, _size: AccessSize): number {
    return 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (offset === 0 && size === 1 && value === BOOT_COMPLETE_MAGIC) this.bootComplete();
  }
}

/** What the VMM measured at a boot-complete write: wall and process CPU µs since the VM's start() began. */
export interface BootTime {
  wallUs: number;
  cpuUs: number;
}

/** Firecracker's log line for it, which its tooling greps (`Guest-boot-time\s+=\s+(\d+)\s+us`). */
export function bootTimeLine(t: BootTime): string {
  const us = (n: number): string => String(n).padStart(6);
  return `Guest-boot-time = ${us(t.wallUs)} us ${Math.floor(t.wallUs / 1000)} ms, ${us(t.cpuUs)} CPU us ${Math.floor(t.cpuUs / 1000)} CPU ms`;
}
