// Port 0x80: the POST-code / I/O-delay port. Writes are accepted and the last value is remembered in a
// SharedArrayBuffer (so every vCPU worker sees the same value); reads return it. Linux writes here for
// I/O delays (outb_p), firmware and test guests for progress codes.

import type { AccessSize, PioDevice } from '../bus.js';

import { POST_PORT } from '../../arch/x86_64/layout.js';

export { POST_PORT };

export interface PostCodeEnv {
  /** Called on every write with the value written (optional; mind the rate: outb_p writes here). */
  onCode?: (value: number, size: AccessSize) => void;
}

const W_LAST = 0;
const STATE_BYTES = 4;

export class PostCode implements PioDevice {
  static readonly PORT: number = POST_PORT;
  static readonly LENGTH: number = 1;
  static readonly STATE_BYTES: number = STATE_BYTES;

  static createState(): SharedArrayBuffer {
    return new SharedArrayBuffer(STATE_BYTES);
  }

  private readonly w: Int32Array;
  private readonly env: PostCodeEnv;

  constructor(state: SharedArrayBuffer, env: PostCodeEnv = {}) {
    if (!(state instanceof SharedArrayBuffer) || state.byteLength < STATE_BYTES) {
      throw new RangeError(`PostCode state must be a SharedArrayBuffer of ${STATE_BYTES} bytes`);
    }
    this.w = new Int32Array(state, 0, 1);
    this.env = env;
  }

  /** Last value written (as written: up to 32 bits). */
  last(): number {
    return Atomics.load(this.w, W_LAST) >>> 0;
  }

  read(_offset: number, size: AccessSize): number {
    const v = Atomics.load(this.w, W_LAST) >>> 0;
    return size === 4 ? v : v & (size === 2 ? 0xffff : 0xff);
  }

  write(_offset: number, size: AccessSize, value: number): void {
    const v = size === 4 ? value >>> 0 : value & (size === 2 ? 0xffff : 0xff);
    Atomics.store(this.w, W_LAST, v | 0);
    this.env.onCode?.(v, size);
  }
}
