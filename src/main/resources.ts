// Platform resources for virtio-mmio devices: a 4 KiB register window at VIRTIO_MMIO_BASE + w·0x1000
// and a GSI VIRTIO_GSI_FIRST + i for the i-th device placed, announced to the guest as
// `virtio_mmio.device=4K@0x…:<gsi>` on the kernel command line (Linux's virtio_mmio.device=) and as
// an LNRO0005 node in the ACPI DSDT. The allocator hands them out in order; nothing else computes a
// device's window or GSI.
//
// The window index w is i, or i + 1 when the VM has a boot timer (VMConfig.bootTimer, Firecracker's
// --boot-timer): as in Firecracker, the boot timer takes the first MMIO window (BOOT_TIMER_BASE =
// 0xd000_0000, the address Firecracker's guests write their boot-complete byte to) and no GSI, and
// the virtio devices follow it.
import { VIRTIO_GSI_FIRST, VIRTIO_GSI_LAST, VIRTIO_MMIO_BASE, VIRTIO_MMIO_MAX_DEVICES, VIRTIO_MMIO_SIZE } from '../arch/x86_64/layout.js';

/** What shifts the virtio-mmio layout. */
export interface MmioLayout {
  /** The boot timer holds the first window. */
  bootTimer?: boolean;
}

/** Most virtio-mmio devices a VM can have (windows and GSIs): one fewer with a boot timer. */
export function maxVirtioDevices(layout: MmioLayout = {}): number {
  return Math.min(VIRTIO_MMIO_MAX_DEVICES - (layout.bootTimer ? 1 : 0), VIRTIO_GSI_LAST - VIRTIO_GSI_FIRST + 1);
}

/** Most virtio-mmio devices a VM without a boot timer can have. */
export const MAX_VIRTIO_DEVICES = maxVirtioDevices();

export interface VirtioMmioSlot {
  base: number;
  size: number;
  gsi: number;
}

export function virtioMmioSlot(index: number, layout: MmioLayout = {}): VirtioMmioSlot {
  const max = maxVirtioDevices(layout);
  if (!Number.isInteger(index) || index < 0 || index >= max) throw new RangeError(`virtio-mmio device index ${index} not in 0..${max - 1}`);
  const window = index + (layout.bootTimer ? 1 : 0);
  return { base: VIRTIO_MMIO_BASE + window * VIRTIO_MMIO_SIZE, size: VIRTIO_MMIO_SIZE, gsi: VIRTIO_GSI_FIRST + index };
}

/** The kernel command line word announcing a device placed at `slot` (or at the index-th slot of `layout`). */
export function virtioMmioCmdlineWord(slot: VirtioMmioSlot | number, layout: MmioLayout = {}): string {
  const s = typeof slot === 'number' ? virtioMmioSlot(slot, layout) : slot;
  return `virtio_mmio.device=${s.size / 1024}K@0x${s.base.toString(16)}:${s.gsi}`;
}

/** Hands out virtio-mmio windows and GSIs in order. */
export class MmioResourceAllocator {
  private next = 0;

  constructor(private readonly layout: MmioLayout = {}) {}

  /** The next free window and GSI; throws once all maxVirtioDevices(layout) are taken. */
  allocate(): VirtioMmioSlot {
    const max = maxVirtioDevices(this.layout);
    if (this.next >= max) throw new Error(`too many virtio devices (at most ${max})`);
    return virtioMmioSlot(this.next++, this.layout);
  }

  /** How many have been handed out. */
  get used(): number {
    return this.next;
  }
}
