// The loader's errors. Each is a ConfigError (what the user gave is unusable: exit status 2 in the
// CLI) and names the VMConfig option it is about: a malformed kernel → 'kernel', a command line
// that the kernel cannot take → 'cmdline', a kernel or initrd that does not fit the guest's RAM →
// 'kernel' / 'initrd'. Messages are one line. resolveConfig() runs the same checks as loadKernel()
// (checkKernelLoad), so these reach the user from `new VM()`, before anything is created.
import { ConfigError } from '../main/config-error.js';

/** The kernel image is unusable (not a kernel, malformed, unsupported). One-line, user-facing. */
export class KernelFormatError extends ConfigError {
  constructor(message: string, option = 'kernel') {
    super(message, option);
    this.name = 'KernelFormatError';
  }
}

/** A well-formed kernel that cannot be loaded into this VM (RAM too small, initrd does not fit). */
export class KernelLoadError extends ConfigError {
  constructor(message: string, option = 'kernel') {
    super(message, option);
    this.name = 'KernelLoadError';
  }
}

/** A kernel command line the kernel cannot take (too long, control characters, open quote). */
export class CmdlineError extends ConfigError {
  constructor(message: string, option = 'cmdline') {
    super(message, option);
    this.name = 'CmdlineError';
  }
}
