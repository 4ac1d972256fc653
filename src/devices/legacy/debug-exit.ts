// The debug-exit port (0xF4, as QEMU's isa-debug-exit is usually placed): a guest write of 1–4 bytes
// ends the VM with reason 'exit' and exitCode = value & 0xff. Reads return all-ones. Stateless: each
// vCPU worker may construct its own instance; env.exit may thus be called more than once (from
// several vCPUs) and must be idempotent.

import { allOnes, type AccessSize, type PioDevice } from '../bus.js';

import { DEBUG_EXIT_PORT } from '../../arch/x86_64/layout.js';

export { DEBUG_EXIT_PORT };

export interface DebugExitEnv {
  /** The guest wrote its exit status: end the VM with reason 'exit' and this exit code (0..255). */
  exit: (code: number) => void;
}

export class DebugExit implements PioDevice {
  static readonly PORT: number = DEBUG_EXIT_PORT;
  /** Ports to register (one 32-bit-wide port). */
  static readonly LENGTH: number = 4;

  private readonly env: DebugExitEnv;

  constructor(env: DebugExitEnv) {
    this.env = env;
  }

  read(_offset: number, size: AccessSize): number {
    return allOnes(size);
  }

  write(offset: number, _size: AccessSize, value: number): void {
    // Only accesses that start at the port itself count; a byte written to 0xF5..0xF7 alone is noise.
    if (offset !== 0) return;
    this.env.exit(value & 0xff);
  }
}
