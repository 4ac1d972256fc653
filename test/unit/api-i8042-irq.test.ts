// The i8042's keyboard interrupt wiring (what SendCtrlAltDel / vm.sendCtrlAltDel() rely on), without
// KVM: LegacyDevices registers an eventfd as KVM_IRQFD on GSI 1 next to COM1's on GSI 4, the main
// thread's Ctrl-Alt-Del injection and the vCPU workers' instances (buildLegacyBus) pulse that same
// eventfd exactly when the controller raises IRQ 1 (output buffer newly full, or refilled after a
// read, with CTR's keyboard-interrupt bit set), and close() deregisters and closes it.
// test/kvm/api.test.ts checks the guest side (kbd.elf counts the interrupt).
import { describe, expect, it } from 'vitest';
import { COM1_GSI, I8042_DATA_PORT, I8042_GSI } from '../../src/arch/x86_64/layout.js';
import { loadAddon } from '../../src/kvm/addon.js';
import type { VmFd } from '../../src/kvm/vm-fd.js';
import { LegacyDevices } from '../../src/main/legacy-devices.js';
import { buildLegacyBus } from '../../src/vcpu-worker/buses.js';

const STATUS = I8042_DATA_PORT + 4;

describe('i8042 IRQ 1 wiring', () => {
  it('Ctrl-Alt-Del from the host and the guest reading port 0x60 pulse the GSI 1 irqfd; close() deregisters it', () => {
    const addon = loadAddon();
    const registered: Array<[string, number, number]> = [];
    const vm = {
      addon,
      registerIrqfd: (fd: number, gsi: number) => registered.push(['add', fd, gsi]),
      unregisterIrqfd: (fd: number, gsi: number) => registered.push(['del', fd, gsi]),
    } as unknown as VmFd;
    const dev = new LegacyDevices(vm, () => true);
    const { kbdIrqFd, serialIrqFd } = dev.state;
    expect(registered).toEqual([
      ['add', serialIrqFd, COM1_GSI],
      ['add', kbdIrqFd, I8042_GSI],
    ]);
    expect(I8042_GSI).toBe(1);
    const { pio } = buildLegacyBus(dev.state, { stopping: () => false, end: () => {}, unknown: () => {} });
    /** Pulses since the last call: one marker write, then the counter (a blocking read is safe: it is ≥ 1). */
    const pulses = (): number => {
      addon.eventfdWrite(kbdIrqFd, 1n);
      return Number(addon.eventfdRead(kbdIrqFd)) - 1;
    };
    expect(pulses()).toBe(0);
    expect(pio.read(STATUS, 1) & 1).toBe(0); // OBF clear
    expect(dev.sendCtrlAltDel()).toBe(true);
    expect(pulses()).toBe(1);
    const codes: number[] = [];
    const after: number[] = [];
    for (let i = 0; i < 4; i++) {
      expect(pio.read(STATUS, 1) & 1).toBe(1);
      codes.push(pio.read(I8042_DATA_PORT, 1));
      after.push(pulses());
    }
    expect(codes).toEqual([0x1d, 0x38, 0xe0, 0x53]);
    expect(after).toEqual([1, 1, 1, 0]); // the buffer refills three times, then is empty
    expect(pio.read(STATUS, 1) & 1).toBe(0);
    // The guest clears CTR's keyboard-interrupt bit (command 0x60, data 0x44): keys queue, no IRQ.
    pio.write(STATUS, 1, 0x60);
    pio.write(I8042_DATA_PORT, 1, 0x44);
    expect(dev.sendCtrlAltDel()).toBe(true);
    expect(pulses()).toBe(0);
    expect(pio.read(I8042_DATA_PORT, 1)).toBe(0x1d);
    // 16-byte buffer: 3 bytes left + 4 more fit, then no room for another four at some point.
    let sent = 0;
    while (dev.sendCtrlAltDel()) sent++;
    expect(sent).toBe(3);
    dev.close();
    expect(registered.slice(2)).toEqual([
      ['del', serialIrqFd, COM1_GSI],
      ['del', kbdIrqFd, I8042_GSI],
    ]);
    expect(dev.sendCtrlAltDel()).toBe(false);
  });
});
