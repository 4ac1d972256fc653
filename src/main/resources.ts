// Platform resources for virtio-mmio devices: a 4 KiB register window at VIRTIO_MMIO_BASE + i·0x1000
// and a GSI VIRTIO_GSI_FIRST + i for the i-th device placed, announced to the guest as
// `virtio_mmio.device=4K@0x…:<gsi>` on the kernel command line (Linux's virtio_mmio.device=) and as
// an LNRO0005 node in the ACPI DSDT. The allocator hands them out in order; nothing else computes a
// device's window or GSI.
import { VIRTIO_GSI_FIRST, VIRTIO_GSI_LAST, VIRTIO_MMIO_BASE, VIRTIO_MMIO_MAX_DEVICES, VIRTIO_MMIO_SIZE } from '../arch/x86_64/layout.js';

/** Most virtio-mmio devices a VM can have (windows and GSIs). */
export const MAX_VIRTIO_DEVICES = Math.min(VIRTIO_MMIO_MAX_DEVICES, VIRTIO_GSI_LAST - VIRTIO_GSI_FIRST + 1);

export interface VirtioMmioSlot {
  base: number;
  size: number;
  gsi: number;
}

export function virtioMmioSlot(index: number): VirtioMmioSlot {
  if (!Number.isInteger(index) || index < 0 || index >= MAX_VIRTIO_DEVICES) throw new RangeError(`virtio-mmio device index ${index} not in 0..${MAX_VIRTIO_DEVICES - 1}`);
  return { base: VIRTIO_MMIO_BASE + index * VIRTIO_MMIO_SIZE, size: VIRTIO_MMIO_SIZE, gsi: VIRTIO_GSI_FIRST + index };
}

/** The kernel command line word announcing a device placed at `slot` (or at the index-th slot). */
export function virtioMmioCmdlineWord(slot: VirtioMmioSlot | number): string {
  const s = typeof slot === 'number' ? virtioMmioSlot(slot) : slot;
  return `virtio_mmio.device=${s.size / 1024}K@0x${s.base.toString(16)}:${s.gsi}`;
}

/** Hands out virtio-mmio windows and GSIs in order. */
export class MmioResourceAllocator {
  private next = 0;

  /** The next free window and GSI; throws once all MAX_VIRTIO_DEVICES are taken. */
  allocate(): VirtioMmioSlot {
    if (this.next >= MAX_VIRTIO_DEVICES) throw new Error(`too many virtio devices (at most ${MAX_VIRTIO_DEVICES})`);
    return virtioMmioSlot(this.next++);
  }

  /** How many have been handed out. */
  get used(): number {
    return this.next;
  }
}
