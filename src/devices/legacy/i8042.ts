// Minimal i8042 keyboard controller at ports 0x60 (data) and 0x64 (status / command).
//
// Enough for Linux's i8042 + atkbd drivers to probe quickly without timeouts, for reboot through the
// controller (command 0xFE, any pulse command with bit 0 clear, or output-port bit 0 cleared through
// 0xD1), and for injecting Ctrl-Alt-Del from the host. There is no AUX (mouse) port: the AUX loop
// command echoes without the AUX flag and the AUX interface test reports "clock stuck", which makes
// Linux give up on the AUX port immediately.
//
// State lives in a SharedArrayBuffer guarded by a SabMutex (same pattern as the UART): every vCPU
// worker and the main thread may construct an I8042 over the same state. Register the device on the
// PIO bus with base 0x60, length 5 and offsets 0 (data) / 4 (status, command).

import { I8042_DATA_PORT } from '../../arch/x86_64/layout.js';
import { SabMutex } from '../../shared/lock.js';

export interface I8042Env {
  /** The guest asked for a CPU reset: end the VM with reason 'reboot'. Called with no lock held. */
  reset: () => void;
  /** Pulse the keyboard IRQ line (IRQ 1, edge). Optional. Called with no lock held. */
  irq?: () => void;
}

const OFS_DATA = 0;
const OFS_STATUS = 4;

// Status register.
const SR_OBF = 0x01;
const SR_SYS = 0x04;
const SR_CMD = 0x08; // last write was to the command port
const SR_UNLOCKED = 0x10; // keyboard not inhibited

// Controller configuration byte ("command byte", CTR).
const CTR_KBDINT = 0x01;
const CTR_SYS = 0x04;
const CTR_KBDDIS = 0x10;
const CTR_AUXDIS = 0x20;
const CTR_XLATE = 0x40;
const CTR_DEFAULT = CTR_KBDINT | CTR_SYS | CTR_AUXDIS | CTR_XLATE;

// Controller commands.
const CMD_READ_CTR = 0x20;
const CMD_WRITE_CTR = 0x60;
const CMD_AUX_DISABLE = 0xa7;
const CMD_AUX_ENABLE = 0xa8;
const CMD_AUX_TEST = 0xa9;
const CMD_SELF_TEST = 0xaa;
const CMD_KBD_TEST = 0xab;
const CMD_KBD_DISABLE = 0xad;
const CMD_KBD_ENABLE = 0xae;
const CMD_READ_OUTP = 0xd0;
const CMD_WRITE_OUTP = 0xd1;
const CMD_WRITE_KBD_OBUF = 0xd2;
const CMD_WRITE_AUX_OBUF = 0xd3;
const CMD_WRITE_AUX = 0xd4;
const CMD_RESET_CPU = 0xfe;

const OUTP_RESET = 0x01; // 0 = CPU reset asserted
const OUTP_DEFAULT = 0x03; // reset deasserted, A20 enabled

// Keyboard (device) commands and replies.
const KBD_ACK = 0xfa;
const KBD_ECHO = 0xee;
const KBD_GET_ID = 0xf2;
const KBD_RESET = 0xff;
const KBD_SET_LEDS = 0xed;
const KBD_SCANSET = 0xf0;
const KBD_SET_RATE = 0xf3;
const KBD_BAT_OK = 0xaa;

// State words.
const W_LOCK = 0;
const W_STATUS = 1; // SR_SYS | SR_CMD bits (OBF is derived from the buffer)
const W_CTR = 2;
const W_OUTP = 3;
const W_PENDING_CMD = 4; // controller command awaiting its data byte, 0 = none
const W_KBD_PENDING = 5; // keyboard command awaiting its parameter byte, 0 = none
const W_BUF_HEAD = 6;
const W_BUF_COUNT = 7;
const W_SCANSET = 8;
const W_INIT = 9;
const WORDS = 12;
const BUF_SIZE = 16;
const BUF_OFF = WORDS * 4;
const STATE_BYTES = BUF_OFF + BUF_SIZE;

export class I8042 {
  static readonly STATE_BYTES: number = STATE_BYTES;
  /** Register on the PIO bus at BASE with LENGTH ports (0x60..0x64). */
  static readonly BASE: number = I8042_DATA_PORT;
  static readonly LENGTH: number = 5;
  static readonly IRQ: number = 1;

  static createState(): SharedArrayBuffer {
    const sab = new SharedArrayBuffer(STATE_BYTES);
    const w = new Int32Array(sab, 0, WORDS);
    w[W_STATUS] = SR_SYS;
    w[W_CTR] = CTR_DEFAULT;
    w[W_OUTP] = OUTP_DEFAULT;
    w[W_SCANSET] = 2;
    w[W_INIT] = 1;
    return sab;
  }

  private readonly w: Int32Array;
  private readonly buf: Uint8Array;
  private readonly mutex: SabMutex;
  private readonly env: I8042Env;

  constructor(state: SharedArrayBuffer, env: I8042Env) {
    if (!(state instanceof SharedArrayBuffer) || state.byteLength < STATE_BYTES) {
      throw new RangeError(`I8042 state must be a SharedArrayBuffer of ${STATE_BYTES} bytes`);
    }
    this.w = new Int32Array(state, 0, WORDS);
    if (Atomics.load(this.w, W_INIT) !== 1) throw new Error('I8042 state was not made by I8042.createState()');
    this.buf = new Uint8Array(state, BUF_OFF, BUF_SIZE);
    this.mutex = new SabMutex(this.w, W_LOCK);
    this.env = env;
  }

  /** Guest `in` (offset 0 = data port 0x60, 4 = status port 0x64; others read 0xff). */
  read(offset: number): number {
    const w = this.w;
    let v = 0xff;
    let pulse = false;
    this.mutex.lock();
    try {
      if (offset === OFS_STATUS) {
        v = SR_UNLOCKED | (w[W_STATUS] & (SR_SYS | SR_CMD)) | (w[W_BUF_COUNT] > 0 ? SR_OBF : 0);
      } else if (offset === OFS_DATA) {
        v = this.popByte();
        // More bytes queued: the output buffer refills at once, which is a new interrupt.
        pulse = w[W_BUF_COUNT] > 0 && this.kbdIrqEnabled();
      }
    } finally {
      this.mutex.unlock();
    }
    if (pulse) this.env.irq?.();
    return v;
  }

  /** Guest `out` (offset 0 = data port 0x60, 4 = command port 0x64; others ignored). */
  write(offset: number, value: number): void {
    const val = value & 0xff;
    let reset = false;
    let pulse = false;
    const w = this.w;
    this.mutex.lock();
    try {
      if (offset === OFS_STATUS) {
        w[W_STATUS] |= SR_CMD;
        reset = this.command(val);
      } else if (offset === OFS_DATA) {
        w[W_STATUS] &= ~SR_CMD;
        const cmd = w[W_PENDING_CMD];
        w[W_PENDING_CMD] = 0;
        switch (cmd) {
          case CMD_WRITE_CTR:
            w[W_CTR] = val;
            break;
          case CMD_WRITE_OUTP:
            w[W_OUTP] = val;
            reset = (val & OUTP_RESET) === 0;
            break;
          case CMD_WRITE_KBD_OBUF:
            pulse = this.pushKbd([val]);
            break;
          case CMD_WRITE_AUX_OBUF:
            // No AUX device: echo without the AUX flag (Linux then declares the AUX port absent).
            this.flush();
            this.pushByte(val);
            break;
          case CMD_WRITE_AUX:
            break; // to the (absent) mouse: dropped
          default:
            pulse = this.keyboardCommand(val);
            break;
        }
      }
    } finally {
      this.mutex.unlock();
    }
    if (pulse) this.env.irq?.();
    if (reset) this.env.reset();
  }

  /**
   * Host-side injection of keyboard scancodes (in the scancode set the guest sees: set 1 while the
   * controller translates, CTR bit 6, else set 2). Returns false if the buffer had no room for all.
   */
  injectKeys(codes: readonly number[]): boolean {
    let ok = false;
    let pulse = false;
    this.mutex.lock();
    try {
      if (BUF_SIZE - this.w[W_BUF_COUNT] >= codes.length) {
        ok = true;
        pulse = this.pushKbd(codes);
      }
    } finally {
      this.mutex.unlock();
    }
    if (pulse) this.env.irq?.();
    return ok;
  }

  /** Press Ctrl, Alt, Del (make codes only, like Firecracker's SendCtrlAltDel). */
  sendCtrlAltDel(): boolean {
    const xlate = (Atomics.load(this.w, W_CTR) & CTR_XLATE) !== 0;
    return this.injectKeys(xlate ? [0x1d, 0x38, 0xe0, 0x53] : [0x14, 0x11, 0xe0, 0x71]);
  }

  // ---- internals (lock held) -------------------------------------------------------------------

  /** Controller command; returns true if it asserts the CPU reset line. */
  private command(cmd: number): boolean {
    const w = this.w;
    w[W_PENDING_CMD] = 0;
    switch (cmd) {
      case CMD_READ_CTR:
        this.respond(w[W_CTR]);
        return false;
      case CMD_WRITE_CTR:
      case CMD_WRITE_OUTP:
      case CMD_WRITE_KBD_OBUF:
      case CMD_WRITE_AUX_OBUF:
      case CMD_WRITE_AUX:
        w[W_PENDING_CMD] = cmd;
        return false;
      case CMD_AUX_DISABLE:
        w[W_CTR] |= CTR_AUXDIS;
        return false;
      case CMD_AUX_ENABLE:
        w[W_CTR] &= ~CTR_AUXDIS;
        return false;
      case CMD_AUX_TEST:
        this.respond(0x01); // clock line stuck low: no AUX port
        return false;
      case CMD_SELF_TEST:
        w[W_STATUS] |= SR_SYS;
        w[W_CTR] |= CTR_SYS;
        this.respond(0x55);
        return false;
      case CMD_KBD_TEST:
        this.respond(0x00);
        return false;
      case CMD_KBD_DISABLE:
        w[W_CTR] |= CTR_KBDDIS;
        return false;
      case CMD_KBD_ENABLE:
        w[W_CTR] &= ~CTR_KBDDIS;
        return false;
      case CMD_READ_OUTP:
        this.respond(w[W_OUTP]);
        return false;
      case CMD_RESET_CPU:
        return true;
      default:
        // 0xF0..0xFF pulse output-port lines low; bit 0 low pulses the CPU reset line.
        return (cmd & 0xf0) === 0xf0 && (cmd & OUTP_RESET) === 0;
    }
  }

  /** A byte for the keyboard itself; the emulated keyboard answers at once. Returns pulse. */
  private keyboardCommand(val: number): boolean {
    const w = this.w;
    const pending = w[W_KBD_PENDING];
    w[W_KBD_PENDING] = 0;
    this.flush();
    if (pending === KBD_SCANSET) {
      if (val === 0) return this.pushKbd([KBD_ACK, w[W_SCANSET]]);
      if (val >= 1 && val <= 3) w[W_SCANSET] = val;
      return this.pushKbd([KBD_ACK]);
    }
    if (pending !== 0) return this.pushKbd([KBD_ACK]); // parameter of LEDs / typematic rate
    switch (val) {
      case KBD_ECHO:
        return this.pushKbd([KBD_ECHO]);
      case KBD_RESET:
        w[W_SCANSET] = 2;
        return this.pushKbd([KBD_ACK, KBD_BAT_OK]);
      case KBD_GET_ID:
        return this.pushKbd([KBD_ACK, 0xab, 0x83]); // MF2 keyboard
      case KBD_SET_LEDS:
      case KBD_SCANSET:
      case KBD_SET_RATE:
        w[W_KBD_PENDING] = val;
        return this.pushKbd([KBD_ACK]);
      default:
        return this.pushKbd([KBD_ACK]);
    }
  }

  private kbdIrqEnabled(): boolean {
    return (this.w[W_CTR] & (CTR_KBDINT | CTR_KBDDIS)) === CTR_KBDINT;
  }

  /** Controller response: replaces whatever is in the output buffer, no interrupt. */
  private respond(b: number): void {
    this.flush();
    this.pushByte(b);
  }

  /** Queue keyboard bytes; returns whether this makes the output buffer newly full with IRQs on. */
  private pushKbd(bytes: readonly number[]): boolean {
    const wasEmpty = this.w[W_BUF_COUNT] === 0;
    for (const b of bytes) this.pushByte(b);
    return wasEmpty && this.w[W_BUF_COUNT] > 0 && this.kbdIrqEnabled();
  }

  private pushByte(b: number): void {
    const w = this.w;
    const count = w[W_BUF_COUNT];
    if (count >= BUF_SIZE) return;
    this.buf[(w[W_BUF_HEAD] + count) % BUF_SIZE] = b & 0xff;
    w[W_BUF_COUNT] = count + 1;
  }

  private popByte(): number {
    const w = this.w;
    const count = w[W_BUF_COUNT];
    if (count === 0) return 0;
    const head = w[W_BUF_HEAD];
    const b = this.buf[head];
    w[W_BUF_HEAD] = (head + 1) % BUF_SIZE;
    w[W_BUF_COUNT] = count - 1;
    return b;
  }

  private flush(): void {
    this.w[W_BUF_HEAD] = 0;
    this.w[W_BUF_COUNT] = 0;
  }
}
