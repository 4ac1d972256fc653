import { describe, expect, it, vi } from 'vitest';
import { ACPI_RESET_VALUE, ACPI_S5_SLP_TYP, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_PORT_COUNT } from '../../src/arch/x86_64/layout.js';
import { PioBus } from '../../src/devices/bus.js';
import { AcpiSleep, S5_SLEEP_CONTROL_VALUE, SLP_EN, WAK_STS } from '../../src/devices/legacy/acpi-sleep.js';

function setup(state?: SharedArrayBuffer) {
  const env = { poweroff: vi.fn(), reset: vi.fn(), unsupportedSleep: vi.fn() };
  const dev = new AcpiSleep(env, state);
  const bus = new PioBus();
  bus.register(AcpiSleep.PORT, AcpiSleep.LENGTH, dev, 'acpi-sleep');
  return { env, dev, bus };
}

const CTL = ACPI_SLEEP_CONTROL_PORT;
const STS = ACPI_SLEEP_CONTROL_PORT + 1;
const RST = ACPI_SLEEP_CONTROL_PORT + 2;

describe('AcpiSleep', () => {
  it('sits at the layout ports', () => {
    expect(AcpiSleep.PORT).toBe(ACPI_SLEEP_CONTROL_PORT);
    expect(AcpiSleep.LENGTH).toBe(ACPI_SLEEP_PORT_COUNT);
    expect(S5_SLEEP_CONTROL_VALUE).toBe((ACPI_S5_SLP_TYP << 2) | 0x20);
  });

  it('powers off on SLP_EN with SLP_TYP = S5 (what Linux acpi_hw_extended_sleep writes)', () => {
    const { env, bus } = setup();
    bus.write(STS, 1, WAK_STS); // Linux clears WAK_STS first
    expect(env.poweroff).not.toHaveBeenCalled();
    bus.write(CTL, 1, S5_SLEEP_CONTROL_VALUE);
    expect(env.poweroff).toHaveBeenCalledTimes(1);
    expect(env.reset).not.toHaveBeenCalled();
  });

  it('does nothing without SLP_EN; SLP_TYP reads back, SLP_EN and reserved bits read 0', () => {
    const { env, bus } = setup();
    expect(bus.read(CTL, 1)).toBe(0); // reset value
    bus.write(CTL, 1, (ACPI_S5_SLP_TYP << 2) | 0xc3);
    expect(env.poweroff).not.toHaveBeenCalled();
    expect(bus.read(CTL, 1)).toBe(ACPI_S5_SLP_TYP << 2);
    bus.write(CTL, 1, (ACPI_S5_SLP_TYP << 2) | SLP_EN | 0xc3); // reserved bits don't matter
    expect(env.poweroff).toHaveBeenCalledTimes(1);
    expect(bus.read(CTL, 1) & SLP_EN).toBe(0);
  });

  it('wakes at once from unsupported sleep states: WAK_STS set, write-1-to-clear', () => {
    const { env, bus } = setup();
    expect(bus.read(STS, 1)).toBe(0);
    bus.write(CTL, 1, (3 << 2) | SLP_EN); // S3
    expect(env.poweroff).not.toHaveBeenCalled();
    expect(env.unsupportedSleep).toHaveBeenCalledWith(3);
    expect(bus.read(STS, 1)).toBe(WAK_STS);
    bus.write(STS, 1, 0x7f); // writing 0 to bit 7 leaves it
    expect(bus.read(STS, 1)).toBe(WAK_STS);
    bus.write(STS, 1, WAK_STS);
    expect(bus.read(STS, 1)).toBe(0);
  });

  it('resets on RESET_VALUE only', () => {
    const { env, bus } = setup();
    bus.write(RST, 1, 0x01);
    bus.write(RST, 1, 0xfe);
    expect(env.reset).not.toHaveBeenCalled();
    bus.write(RST, 1, ACPI_RESET_VALUE);
    expect(env.reset).toHaveBeenCalledTimes(1);
    expect(bus.read(RST, 1)).toBe(0);
  });

  it('handles wide accesses byte lane by byte lane', () => {
    const { env, bus } = setup();
    bus.write(CTL, 4, S5_SLEEP_CONTROL_VALUE | (WAK_STS << 8)); // control + status (+ reset lane 0)
    expect(env.poweroff).toHaveBeenCalledTimes(1);
    expect(env.reset).not.toHaveBeenCalled();
    bus.write(STS, 2, ACPI_RESET_VALUE << 8);
    expect(env.reset).toHaveBeenCalledTimes(1);
    expect(bus.read(CTL, 2)).toBe(ACPI_S5_SLP_TYP << 2);
  });

  it('shares register state between instances over one SharedArrayBuffer', () => {
    const state = AcpiSleep.createState();
    const a = setup(state);
    const b = setup(state);
    a.bus.write(CTL, 1, (1 << 2) | SLP_EN); // S1 on one vCPU...
    expect(b.bus.read(STS, 1)).toBe(WAK_STS); // ...is seen by another
    b.bus.write(STS, 1, WAK_STS);
    expect(a.bus.read(STS, 1)).toBe(0);
    expect(() => new AcpiSleep({ poweroff: () => {} }, new SharedArrayBuffer(2))).toThrow(TypeError);
  });
});
