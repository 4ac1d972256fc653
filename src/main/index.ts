// kindling's public API.
export { VM, type VMExit, type VMState, type VMTimings } from './vm.js';
export { ConfigError, DEFAULT_CMDLINE, type VMConfig, type ResolvedConfig } from './config.js';
export type { ExitReason } from '../shared/control.js';
export { KvmUnavailableError, detectPvm } from '../kvm/system.js';
export { KernelFormatError } from '../loader/index.js';
export { ensureDefaultGuest, findBuiltGuest, guestHome, type GuestImage } from '../guest-image/index.js';
