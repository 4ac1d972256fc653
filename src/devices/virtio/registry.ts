// Every virtio device kind kindling can place, keyed by kind. The vCPU workers look up a device's
// validateFeatures/configWrite here, the I/O worker its backend, the main thread its prepare/describe.
// Adding a device: one folder under src/devices/virtio/<kind>/ exporting a VirtioDeviceType, and one
// line below.
import { blockDeviceType } from './block/index.js';
import { consoleDeviceType } from './console/index.js';
import type { AnyVirtioDeviceType } from './device.js';
import { netDeviceType } from './net/index.js';
import { rngDeviceType } from './rng/index.js';
import { vsockDeviceType } from './vsock/index.js';

export const VIRTIO_DEVICE_TYPES = {
  blk: blockDeviceType,
  rng: rngDeviceType,
  console: consoleDeviceType,
  vsock: vsockDeviceType,
  net: netDeviceType,
} as const satisfies Record<string, AnyVirtioDeviceType>;

export type VirtioDeviceKind = keyof typeof VIRTIO_DEVICE_TYPES;

export function virtioDeviceType(kind: string): AnyVirtioDeviceType {
  const t = (VIRTIO_DEVICE_TYPES as Record<string, AnyVirtioDeviceType>)[kind];
  if (!t) throw new Error(`unknown virtio device kind ${JSON.stringify(kind)}`);
  return t;
}
