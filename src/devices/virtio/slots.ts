// Where the i-th virtio-mmio device lives: a 4 KiB window at VIRTIO_MMIO_BASE + i·0x1000 and GSI
// VIRTIO_GSI_FIRST + i, announced to the guest as `virtio_mmio.device=4K@0x…:<gsi>` on the kernel
// command line (Linux's virtio_mmio.device= parameter) and in the ACPI DSDT.
import { VIRTIO_GSI_FIRST, VIRTIO_GSI_LAST, VIRTIO_MMIO_BASE, VIRTIO_MMIO_MAX_DEVICES, VIRTIO_MMIO_SIZE } from '../../arch/x86_64/layout.js';

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

/** The kernel command line word announcing device `index`. */
export function virtioMmioCmdlineWord(index: number): string {
  const s = virtioMmioSlot(index);
  return `virtio_mmio.device=${s.size / 1024}K@0x${s.base.toString(16)}:${s.gsi}`;
}
