import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MmioBus, PioBus, allOnes, type AccessSize, type ByteDevice, type PioDevice } from '../../src/devices/bus.js';
import { DebugExit, DEBUG_EXIT_PORT } from '../../src/devices/legacy/debug-exit.js';
import { PostCode, POST_PORT } from '../../src/devices/legacy/post.js';
import { Serial16550 } from '../../src/devices/legacy/serial.js';
import { runs } from '../fuzz/budget.js';

/** A byte-wide register file that records accesses. */
class Regs implements ByteDevice {
  readonly mem: Uint8Array;
  readonly log: string[] = [];
  constructor(n: number, fill = 0) {
    this.mem = new Uint8Array(n).map((_, i) => (fill + i) & 0xff);
  }
  read(offset: number): number {
    this.log.push(`r${offset}`);
    return this.mem[offset];
  }
  write(offset: number, value: number): void {
    this.log.push(`w${offset}=${value}`);
    this.mem[offset] = value;
  }
}

/** A wide device that records (offset, size, value). */
class Wide implements PioDevice {
  readonly log: [string, number, number, number][] = [];
  read(offset: number, size: AccessSize): number {
    this.log.push(['r', offset, size, 0]);
    return size === 4 ? 0xdeadbeef : size === 2 ? 0xbeef : 0xef;
  }
  write(offset: number, size: AccessSize, value: number): void {
    this.log.push(['w', offset, size, value]);
  }
}

describe('PioBus', () => {
  it('routes by range with offsets relative to the base', () => {
    const bus = new PioBus();
    const a = new Wide();
    const b = new Wide();
    bus.register(0x3f8, 8, new Wide(), 'com1');
    bus.register(0x60, 5, a, 'i8042');
    bus.register(0xcf8, 8, b, 'pci');
    expect(bus.ranges().map((r) => r.name)).toEqual(['i8042', 'com1', 'pci']);
    expect(bus.read(0x64, 1)).toBe(0xef);
    expect(a.log).toEqual([['r', 4, 1, 0]]);
    bus.write(0xcfc, 4, 0x80000000);
    expect(b.log).toEqual([['w', 4, 4, 0x80000000]]);
    expect(bus.read(0xcfc, 4)).toBe(0xdeadbeef);
    expect(bus.lookup(0x3ff)).toEqual({ base: 0x3f8, length: 8, name: 'com1' });
    expect(bus.lookup(0x400)).toBeUndefined();
  });

  it('rejects overlapping and out-of-space ranges', () => {
    const bus = new PioBus();
    bus.register(0x60, 5, new Wide(), 'i8042');
    expect(() => bus.register(0x64, 1, new Wide(), 'x')).toThrow(/overlaps i8042/);
    expect(() => bus.register(0x5c, 5, new Wide(), 'y')).toThrow(/overlaps i8042/);
    expect(() => bus.register(0x50, 0x20, new Wide(), 'z')).toThrow(/overlaps/);
    expect(() => bus.register(0xfffe, 4, new Wide(), 'big')).toThrow(RangeError);
    expect(() => bus.register(0x10, 0, new Wide(), 'empty')).toThrow(RangeError);
    bus.register(0x65, 1, new Wide(), 'adjacent');
    bus.register(0x5f, 1, new Wide(), 'adjacent-below');
  });

  it('reads all-ones and drops writes on unknown ports, reporting each port once', () => {
    const seen: [string, number][] = [];
    const bus = new PioBus((kind, port) => seen.push([kind, port]));
    expect(bus.read(0x80, 1)).toBe(0xff);
    expect(bus.read(0x80, 2)).toBe(0xffff);
    expect(bus.read(0x80, 4)).toBe(0xffffffff);
    bus.write(0x80, 1, 0);
    bus.write(0x81, 2, 0);
    expect(bus.read(0x81, 1)).toBe(0xff);
    expect(seen).toEqual([
      ['read', 0x80],
      ['write', 0x81],
    ]);
    expect(allOnes(1)).toBe(0xff);
    expect(allOnes(2)).toBe(0xffff);
    expect(allOnes(4)).toBe(0xffffffff);
  });

  it('splits multi-byte accesses to byte-wide devices (little-endian)', () => {
    const bus = new PioBus();
    const regs = new Regs(8, 0x10);
    bus.registerBytewise(0x3f8, 8, regs, 'com1');
    expect(bus.read(0x3f8, 2)).toBe(0x1110);
    expect(bus.read(0x3fa, 4)).toBe(0x15141312);
    expect(regs.log).toEqual(['r0', 'r1', 'r2', 'r3', 'r4', 'r5']);
    regs.log.length = 0;
    bus.write(0x3fc, 2, 0xabcd);
    expect(regs.log).toEqual(['w4=205', 'w5=171']);
  });

  it('splits accesses that straddle a range end; the outside bytes read all-ones', () => {
    const seen: number[] = [];
    const bus = new PioBus((_k, p) => seen.push(p));
    const regs = new Regs(8, 0x10);
    bus.registerBytewise(0x3f8, 8, regs, 'com1');
    expect(bus.read(0x3fe, 4)).toBe(0xffff1716);
    expect(bus.read(0x3f6, 4)).toBe(0x1110ffff);
    expect(seen).toEqual([0x400, 0x401, 0x3f6, 0x3f7]);
    const wide = new Wide();
    bus.register(0x500, 4, wide, 'wide');
    expect(bus.read(0x502, 4)).toBe(0xffffefef);
    expect(wide.log).toEqual([
      ['r', 2, 1, 0],
      ['r', 3, 1, 0],
    ]);
  });

  it('a 16-bit in on the UART reads RBR then IER as two byte accesses', () => {
    const bus = new PioBus();
    const uart = new Serial16550(Serial16550.createState(), { tx: () => undefined, irq: () => undefined });
    bus.registerBytewise(0x3f8, 8, uart, 'com1');
    uart.receive(Uint8Array.of(0x41));
    bus.write(0x3f9, 1, 0x05);
    expect(bus.read(0x3f8, 2)).toBe(0x0541);
    expect(bus.read(0x3fd, 1) & 1).toBe(0);
  });

  it('routes every byte to the right place (property)', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 0xfff0 }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.constantFrom<AccessSize>(1, 2, 4)), { maxLength: 60 }),
        (bases, accesses) => {
          const bus = new PioBus();
          const owner = new Map<number, Regs>();
          const sorted = [...bases].sort((x, y) => x - y);
          for (let i = 0; i < sorted.length; i++) {
            const len = Math.max(1, Math.min(8, (sorted[i + 1] ?? 0x10000) - sorted[i]));
            const regs = new Regs(len, sorted[i]);
            bus.registerBytewise(sorted[i], len, regs, `d${i}`);
            for (let k = 0; k < len; k++) owner.set(sorted[i] + k, regs);
          }
          for (const [port, size] of accesses) {
            let expected = 0;
            for (let k = 0; k < size; k++) {
              const p = port + k;
              const r = owner.get(p);
              const base = bus.lookup(p)?.base ?? 0;
              expected += (r ? r.mem[p - base] : 0xff) * 2 ** (8 * k);
            }
            expect(bus.read(port, size)).toBe(expected);
          }
        },
      ),
      { numRuns: runs(200) },
    );
  });
});

describe('MmioBus', () => {
  it('handles addresses above 4 GiB, sizes 1/2/4/8 and byte buffers', () => {
    const seen: number[] = [];
    const bus = new MmioBus((_k, a) => seen.push(a));
    const wide = new Wide();
    const base = 0xd000_0000_0;
    bus.register(base, 0x1000, wide, 'virtio0');
    expect(bus.read(base + 0x70, 4)).toBe(0xdeadbeef);
    expect(bus.read(base + 0x70, 8)).toBe(0xdeadbeef * 2 ** 32 + 0xdeadbeef);
    bus.write(base + 0x10, 8, 0x1_0000_0002);
    expect(wide.log.slice(-2)).toEqual([
      ['w', 0x10, 4, 2],
      ['w', 0x14, 4, 1],
    ]);
    const data = new Uint8Array(4);
    bus.readBytes(base, data);
    expect([...data]).toEqual([0xef, 0xbe, 0xad, 0xde]);
    bus.writeBytes(base + 0x20, Uint8Array.of(1, 2));
    expect(wide.log.at(-1)).toEqual(['w', 0x20, 2, 0x0201]);
    const unk = new Uint8Array(8);
    bus.readBytes(0xfee0_0000, unk);
    expect([...unk]).toEqual(new Array(8).fill(0xff));
    expect(bus.read(0xfee0_0000, 4)).toBe(0xffffffff);
    expect(seen).toEqual([0xfee0_0000, 0xfee0_0004]);
    expect(() => bus.register(base + 0xfff, 2, new Wide(), 'overlap')).toThrow(/overlaps virtio0/);
  });
});

describe('debug-exit and POST ports', () => {
  it('debug-exit ends with value & 0xff on 1–4 byte writes and reads all-ones', () => {
    const codes: number[] = [];
    const bus = new PioBus();
    bus.register(DEBUG_EXIT_PORT, DebugExit.LENGTH, new DebugExit({ exit: (c) => codes.push(c) }), 'debug-exit');
    bus.write(0xf4, 1, 3);
    bus.write(0xf4, 2, 0x1234);
    bus.write(0xf4, 4, 0xffffff01);
    expect(codes).toEqual([3, 0x34, 0x01]);
    expect(bus.read(0xf4, 1)).toBe(0xff);
    expect(bus.read(0xf4, 4)).toBe(0xffffffff);
  });

  it('POST port remembers the last value across instances', () => {
    const state = PostCode.createState();
    const seen: number[] = [];
    const bus = new PioBus();
    bus.register(POST_PORT, PostCode.LENGTH, new PostCode(state, { onCode: (v) => seen.push(v) }), 'post');
    bus.write(0x80, 1, 0x1ab);
    expect(bus.read(0x80, 1)).toBe(0xab);
    const other = new PostCode(state);
    expect(other.last()).toBe(0xab);
    other.write(0, 4, 0xcafef00d);
    expect(other.read(0, 4)).toBe(0xcafef00d);
    expect(other.read(0, 2)).toBe(0xf00d);
    expect(seen).toEqual([0xab]);
  });
});
