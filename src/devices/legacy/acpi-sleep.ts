// The ACPI hardware-reduced sleep and reset registers (ACPI 6.x §4.8.3.7, §4.8.3.6), the FADT's
// SLEEP_CONTROL_REG, SLEEP_STATUS_REG and RESET_REG, as three byte-wide I/O ports. Register the
// device with base ACPI_SLEEP_CONTROL_PORT and length AcpiSleep.LENGTH (3):
//
//   +0  Sleep Control: bits 2-4 SLP_TYPx (read/write, reset value 0), bit 5 SLP_EN (write-only,
//       reads 0), bits 0-1 and 6-7 reserved (ignored, read 0). Writing SLP_EN = 1 starts the
//       transition to the state SLP_TYPx names. SLP_TYPx = ACPI_S5_SLP_TYP (the value the DSDT's
//       \_S5_ package gives the OS) is soft-off: env.poweroff(). kindling implements no other
//       sleeping state (the DSDT declares none), so any other SLP_TYPx "wakes" at once: WAK_STS is
//       set, which is what an OS polls for after entering a sleep state.
//   +1  Sleep Status: bit 7 WAK_STS (set by hardware, cleared by writing 1; reset value 0), other
//       bits reserved (read 0).
//   +2  Reset: writing ACPI_RESET_VALUE calls env.reset() (Linux's default reboot path tries the
//       FADT reset register first); other values are ignored; reads 0.
//
// Wider accesses are handled one byte lane at a time. Register state lives in an optional
// SharedArrayBuffer (as PostCode's), so every vCPU worker's instance sees the same registers; without
// one the instance keeps private state. env.poweroff / env.reset may be called from several vCPUs and
// must be idempotent.

import { ACPI_RESET_VALUE, ACPI_S5_SLP_TYP, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_PORT_COUNT } from '../../arch/x86_64/layout.js';
import type { AccessSize, PioDevice } from '../bus.js';

export interface AcpiSleepEnv {
  /** The guest entered S5: end the VM with reason 'poweroff' (or whatever the VM calls a clean halt). */
  poweroff: () => void;
  /** The guest wrote ACPI_RESET_VALUE to the reset register: end the VM with reason 'reboot'. Optional. */
  reset?: () => void;
  /** The guest asked for a sleeping state other than S5 (it wakes at once). Optional, for logging. */
  unsupportedSleep?: (slpTyp: number) => void;
}

export const SLEEP_CONTROL_OFFSET = 0;
export const SLEEP_STATUS_OFFSET = 1;
export const RESET_OFFSET = 2;

export const SLP_TYP_SHIFT = 2;
export const SLP_TYP_MASK = 0x1c;
export const SLP_EN = 0x20;
export const WAK_STS = 0x80;

/** The byte the OS writes to the sleep control register to power off: SLP_TYP = S5 and SLP_EN. */
export const S5_SLEEP_CONTROL_VALUE = (ACPI_S5_SLP_TYP << SLP_TYP_SHIFT) | SLP_EN;

const W_CONTROL = 0;
const W_STATUS = 1;
const STATE_BYTES = 8;

export class AcpiSleep implements PioDevice {
  static readonly PORT: number = ACPI_SLEEP_CONTROL_PORT;
  static readonly LENGTH: number = ACPI_SLEEP_PORT_COUNT;
  static readonly STATE_BYTES: number = STATE_BYTES;

  /** Shared register state for instances in several workers (all registers at their reset values). */
  static createState(): SharedArrayBuffer {
    return new SharedArrayBuffer(STATE_BYTES);
  }

  private readonly env: AcpiSleepEnv;
  private readonly w: Int32Array;

  constructor(env: AcpiSleepEnv, state?: SharedArrayBuffer) {
    if (state !== undefined && (!(state instanceof SharedArrayBuffer) || state.byteLength < STATE_BYTES)) {
      throw new TypeError(`AcpiSleep state must be a SharedArrayBuffer of at least ${STATE_BYTES} bytes`);
    }
    this.env = env;
    this.w = new Int32Array(state ?? AcpiSleep.createState(), 0, STATE_BYTES / 4);
  }

  read(offset: number, size: AccessSize): number {
    let v = 0;
    for (let i = 0; i < size; i++) v += this.readByte(offset + i) * 2 ** (8 * i);
    return v;
  }

  write(offset: number, size: AccessSize, value: number): void {
    for (let i = 0; i < size; i++) this.writeByte(offset + i, Math.floor(value / 2 ** (8 * i)) & 0xff);
  }

  private readByte(offset: number): number {
    switch (offset) {
      case SLEEP_CONTROL_OFFSET:
        return Atomics.load(this.w, W_CONTROL) & SLP_TYP_MASK;
      case SLEEP_STATUS_OFFSET:
        return Atomics.load(this.w, W_STATUS) & WAK_STS;
      case RESET_OFFSET:
        return 0;
      default:
        return 0xff; // not a register of this block
    }
  }

  private writeByte(offset: number, value: number): void {
    switch (offset) {
      case SLEEP_CONTROL_OFFSET: {
        Atomics.store(this.w, W_CONTROL, value & SLP_TYP_MASK);
        if ((value & SLP_EN) === 0) return;
        const slpTyp = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
        if (slpTyp === ACPI_S5_SLP_TYP) {
          this.env.poweroff();
        } else {
          Atomics.or(this.w, W_STATUS, WAK_STS);
          this.env.unsupportedSleep?.(slpTyp);
        }
        return;
      }
      case SLEEP_STATUS_OFFSET:
        if (value & WAK_STS) Atomics.and(this.w, W_STATUS, ~WAK_STS);
        return;
      case RESET_OFFSET:
        if (value === ACPI_RESET_VALUE) this.env.reset?.();
        return;
      default:
        return;
    }
  }
}
