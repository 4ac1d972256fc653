// Firecracker's boot timer (src/devices/legacy/boot-timer.ts) as a guest reaches it through the MMIO
// bus, and the layout it shifts (src/main/resources.ts): only a one-byte write of 123 at offset 0
// signals boot completion, whatever else a guest writes or reads around it; with a boot timer the
// virtio windows move up by one and their GSIs do not.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BOOT_TIMER_BASE, BOOT_TIMER_SIZE, VIRTIO_MMIO_BASE } from '../../src/arch/x86_64/layout.js';
import { MmioBus, type BusAccessSize } from '../../src/devices/bus.js';
import { BOOT_COMPLETE_MAGIC, BootTimer, bootTimeLine } from '../../src/devices/legacy/boot-timer.js';
import { MAX_VIRTIO_DEVICES, MmioResourceAllocator, maxVirtioDevices, virtioMmioCmdlineWord, virtioMmioSlot } from '../../src/main/resources.js';

/** How many boot-complete signals one bus access gives, by the bus's rules: an access inside the window reaches the device whole; an 8-byte one is two 4-byte ones; one that straddles the window's edge is split into bytes. */
function expectedSignals(addr: number, size: BusAccessSize, value: number): number {
  if (size === 8) return expectedSignals(addr, 4, value % 2 ** 32) + expectedSignals(addr + 4, 4, Math.floor(value / 2 ** 32) % 2 ** 32);
  const end = BOOT_TIMER_BASE + BOOT_TIMER_SIZE;
  if (addr >= BOOT_TIMER_BASE && addr + size <= end) return addr === BOOT_TIMER_BASE && size === 1 && (value & 0xff) === BOOT_COMPLETE_MAGIC ? 1 : 0;
  if (addr + size <= BOOT_TIMER_BASE || addr >= end) return 0;
  // straddling: byte by byte
  const k = BOOT_TIMER_BASE - addr;
  return k >= 0 && k < size && Math.floor((value >>> 0) / 2 ** (8 * k)) % 256 === BOOT_COMPLETE_MAGIC ? 1 : 0;
}

describe('boot timer', () => {
  it('signals only on a one-byte write of 123 at offset 0; every other access is ignored and reads 0', () => {
    const access = fc.record({
      addr: fc.oneof(
        fc.integer({ min: BOOT_TIMER_BASE - 8, max: BOOT_TIMER_BASE + 16 }),
        fc.integer({ min: BOOT_TIMER_BASE + BOOT_TIMER_SIZE - 8, max: BOOT_TIMER_BASE + BOOT_TIMER_SIZE + 8 }),
        fc.integer({ min: BOOT_TIMER_BASE, max: BOOT_TIMER_BASE + BOOT_TIMER_SIZE - 1 }),
      ),
      size: fc.constantFrom<BusAccessSize>(1, 2, 4, 8),
      value: fc.oneof(fc.constantFrom(BOOT_COMPLETE_MAGIC, BOOT_COMPLETE_MAGIC + 256, BOOT_COMPLETE_MAGIC * 256, 122, 0xffffffff), fc.integer({ min: 0, max: 2 ** 32 - 1 })),
      write: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(access, { maxLength: 40 }), (accesses) => {
        let signals = 0;
        const bus = new MmioBus();
        bus.register(BOOT_TIMER_BASE, BOOT_TIMER_SIZE, new BootTimer(() => signals++), 'boot-timer');
        let expected = 0;
        for (const a of accesses) {
          if (a.write) {
            bus.write(a.addr, a.size, a.value);
            expected += expectedSignals(a.addr, a.size, a.value);
          } else if (a.addr >= BOOT_TIMER_BASE && a.addr + a.size <= BOOT_TIMER_BASE + BOOT_TIMER_SIZE) {
            expect(bus.read(a.addr, a.size)).toBe(0);
          }
          expect(signals).toBe(expected);
        }
      }),
    );
  });

  it('logs the line Firecracker logs, which its tooling parses', () => {
    const line = bootTimeLine({ wallUs: 38011, cpuUs: 5463 });
    expect(line).toBe('Guest-boot-time =  38011 us 38 ms,   5463 CPU us 5 CPU ms');
    expect(/Guest-boot-time\s+=\s+(\d+)\s+us/.exec(line)?.[1]).toBe('38011');
    expect(bootTimeLine({ wallUs: 1234567, cpuUs: 1234567 })).toBe('Guest-boot-time = 1234567 us 1234 ms, 1234567 CPU us 1234 CPU ms');
  });
});

describe('virtio-mmio layout with a boot timer', () => {
  it('takes the first window and no GSI: device i is in window i + 1 on GSI 5 + i', () => {
    expect(BOOT_TIMER_BASE).toBe(VIRTIO_MMIO_BASE);
    expect(virtioMmioSlot(0, { bootTimer: true })).toEqual({ base: 0xd0001000, size: 0x1000, gsi: 5 });
    expect(virtioMmioSlot(2, { bootTimer: true })).toEqual({ base: 0xd0003000, size: 0x1000, gsi: 7 });
    expect(virtioMmioCmdlineWord(0, { bootTimer: true })).toBe('virtio_mmio.device=4K@0xd0001000:5');
    expect(virtioMmioSlot(0, { bootTimer: false })).toEqual(virtioMmioSlot(0));
  });

  it('leaves room for one device fewer, and the allocator stops there', () => {
    expect(maxVirtioDevices({ bootTimer: true })).toBe(MAX_VIRTIO_DEVICES - 1);
    expect(() => virtioMmioSlot(MAX_VIRTIO_DEVICES - 1, { bootTimer: true })).toThrow(RangeError);
    const a = new MmioResourceAllocator({ bootTimer: true });
    const slots = Array.from({ length: MAX_VIRTIO_DEVICES - 1 }, () => a.allocate());
    expect(slots.at(-1)!.base).toBe(VIRTIO_MMIO_BASE + (MAX_VIRTIO_DEVICES - 1) * 0x1000);
    expect(slots.every((s) => s.base !== BOOT_TIMER_BASE)).toBe(true);
    expect(() => a.allocate()).toThrow(/at most 15/);
  });
});
