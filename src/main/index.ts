// kindling's public API.
export { VM, type VMExit, type VMState, type VMTimings, type VirtioDeviceStats } from './vm.js';
export { ConfigError, DEFAULT_CMDLINE, type ConsoleKind, type DiskConfig, type VMConfig, type ResolvedConfig } from './config.js';
export type { BlockStats } from '../devices/virtio/block/device.js';
export type { NetStats } from '../devices/virtio/net/backend.js';
export type { TransportStats } from '../devices/virtio/queue-service.js';
export type { ExitReason } from '../shared/control.js';
export { KvmUnavailableError, detectPvm } from '../kvm/system.js';
export { KernelFormatError } from '../loader/index.js';
export { ensureDefaultGuest, findBuiltGuest, guestHome, type GuestImage } from '../guest-image/index.js';
