// The vCPU run loop without a worker or KVM: a fake KVM_RUN writes synthetic exits into a
// kvm_run-shaped DataView (offsets from src/kvm/structs.ts), and the test checks what the buses saw,
// what landed in kvm_run, and how the control block ends or parks the loop.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MmioBus, PioBus, type AccessSize, type ByteDevice, type PioDevice } from '../../src/devices/bus.js';
import { DebugExit, DEBUG_EXIT_PORT } from '../../src/devices/legacy/debug-exit.js';
import {
  EAGAIN,
  EINTR,
  KVM_EXIT_HLT,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_IN,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_MMIO,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_RUN_OFFSETS as O,
  KVM_SYSTEM_EVENT_SHUTDOWN,
} from '../../src/kvm/structs.js';
import { decodeExit, type VcpuExit } from '../../src/kvm/exits.js';
import {
  CTRL_EXIT_CODE,
  CTRL_EXIT_REASON,
  CTRL_EXIT_VCPU,
  CTRL_PARKED,
  CTRL_RUN_SEQ,
  CTRL_RUN_STATE,
  CTRL_STARTED,
  ExitReasonCode,
  RUN_STATE_PAUSED,
  RUN_STATE_RUNNING,
  createControlBlock,
  ctrlKickSlot,
  recordExit,
  setRunState,
  type ExitReason,
} from '../../src/shared/control.js';
import type { FatalExit } from '../../src/vcpu-worker/diagnose.js';
import type { VcpuMessage } from '../../src/vcpu-worker/protocol.js';
import { VcpuRunner, vmEnder, type VcpuRunnerOptions } from '../../src/vcpu-worker/runner.js';
import { runs } from '../fuzz/budget.js';
import { expectSameBytes } from '../fuzz/bytes.js';

/** kvm_run as mmap'ed: the struct, then the PIO data page at 4096 (KVM_PIO_PAGE_OFFSET). */
const RUN_BYTES = 8192;
const PIO_DATA = 4096;

function ioExit(v: DataView, dir: 'in' | 'out', port: number, size: 1 | 2 | 4, count: number, data: readonly number[] = []): number {
  v.setUint32(O.exitReason, KVM_EXIT_IO, true);
  v.setUint8(O.ioDirection, dir === 'out' ? KVM_EXIT_IO_OUT : KVM_EXIT_IO_IN);
  v.setUint8(O.ioSize, size);
  v.setUint16(O.ioPort, port, true);
  v.setUint32(O.ioCount, count, true);
  v.setBigUint64(O.ioDataOffset, BigInt(PIO_DATA), true);
  data.forEach((b, i) => v.setUint8(PIO_DATA + i, b));
  return 0;
}

function mmioExit(v: DataView, write: boolean, addr: number, len: number, data: readonly number[] = []): number {
  v.setUint32(O.exitReason, KVM_EXIT_MMIO, true);
  v.setBigUint64(O.mmioPhysAddr, BigInt(addr), true);
  v.setUint32(O.mmioLen, len, true);
  v.setUint8(O.mmioIsWrite, write ? 1 : 0);
  for (let i = 0; i < 8; i++) v.setUint8(O.mmioData + i, data[i] ?? 0);
  return 0;
}

function plainExit(v: DataView, reason: number): number {
  v.setUint32(O.exitReason, reason, true);
  return 0;
}

function bytesAt(v: DataView, off: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => v.getUint8(off + i));
}

/** A 1/2/4-byte device that records accesses and reads back a value derived from (offset, size). */
class Wide implements PioDevice {
  readonly log: string[] = [];
  read(offset: number, size: AccessSize): number {
    this.log.push(`r${offset}/${size}`);
    return size === 4 ? (0xa0b0c0d0 + offset) >>> 0 : size === 2 ? 0xb0c0 + offset : 0xc0 + offset;
  }
  write(offset: number, size: AccessSize, value: number): void {
    this.log.push(`w${offset}/${size}=${value.toString(16)}`);
  }
}

/** A byte-wide register file that records accesses. */
class Regs implements ByteDevice {
  readonly mem = new Uint8Array(16).map((_, i) => 0x10 + i);
  readonly log: string[] = [];
  read(offset: number): number {
    this.log.push(`r${offset}`);
    return this.mem[offset];
  }
  write(offset: number, value: number): void {
    this.log.push(`w${offset}=${value.toString(16)}`);
    this.mem[offset] = value;
  }
}

type Step = (v: DataView) => number;

interface Harness {
  view: DataView;
  ctrl: Int32Array;
  pio: PioBus;
  mmio: MmioBus;
  posted: VcpuMessage[];
  ended: Array<[ExitReason, number]>;
  fatals: VcpuExit[];
  /** the runner's endVm: records the end in `ended` and in the control block */
  endVm: (reason: ExitReason, code: number) => void;
  /** run() calls so far */
  calls: () => number;
  runner: VcpuRunner;
}

/**
 * A runner whose KVM_RUN plays `steps` in order; after the last one it stops the VM from the host
 * (as vm.stop() does) and returns -EINTR, as a kicked KVM_RUN would.
 */
function harness(steps: Step[], over: Partial<VcpuRunnerOptions> = {}, view = new DataView(new ArrayBuffer(RUN_BYTES))): Harness {
  const ctrl = createControlBlock(2);
  const pio = new PioBus();
  const mmio = new MmioBus();
  const posted: VcpuMessage[] = [];
  const ended: Array<[ExitReason, number]> = [];
  const fatals: VcpuExit[] = [];
  let i = 0;
  const endVm = (reason: ExitReason, code: number): void => {
    ended.push([reason, code]);
    recordExit(ctrl, reason, code, 0);
  };
  const runner = new VcpuRunner({
    run: () => {
      if (i >= steps.length) {
        recordExit(ctrl, 'stopped', 0, -1);
        return -EINTR;
      }
      return steps[i++](view);
    },
    runView: view,
    buses: { pio, mmio },
    control: ctrl,
    vcpuId: 0,
    post: (m) => posted.push(m),
    endVm,
    fatal: (exit): FatalExit | undefined => {
      fatals.push(exit);
      return exit.kind === 'shutdown' ? { reason: 'triple-fault', exitCode: 1, message: 'triple fault on vCPU 0' } : undefined;
    },
    ...over,
  });
  return { view, ctrl, pio, mmio, posted, ended, fatals, endVm, calls: () => i, runner };
}

describe('VcpuRunner: port I/O', () => {
  it('OUT of 1/2/4 bytes reaches the device with the value from the data page', () => {
    const dev = new Wide();
    const h = harness([
      (v) => ioExit(v, 'out', 0x3f8, 1, 1, [0x41]),
      (v) => ioExit(v, 'out', 0x3fa, 2, 1, [0x34, 0x12]),
      (v) => ioExit(v, 'out', 0x3fc, 4, 1, [0x78, 0x56, 0x34, 0x12]),
    ]);
    h.pio.register(0x3f8, 8, dev, 'dev');
    expect(h.runner.run()).toEqual({ exits: 3 });
    expect(dev.log).toEqual(['w0/1=41', 'w2/2=1234', 'w4/4=12345678']);
  });

  it('IN data lands in the run page at the data offset, little-endian', () => {
    const dev = new Wide();
    const seen: number[][] = [];
    const h = harness([
      (v) => ioExit(v, 'in', 0x3f9, 1, 1),
      (v) => {
        seen.push(bytesAt(v, PIO_DATA, 1));
        return ioExit(v, 'in', 0x3fa, 2, 1);
      },
      (v) => {
        seen.push(bytesAt(v, PIO_DATA, 2));
        return ioExit(v, 'in', 0x3fc, 4, 1);
      },
      (v) => {
        seen.push(bytesAt(v, PIO_DATA, 4));
        return -EINTR;
      },
    ]);
    h.pio.register(0x3f8, 8, dev, 'dev');
    h.runner.run();
    expect(seen).toEqual([[0xc1], [0xc2, 0xb0], [0xd4, 0xc0, 0xb0, 0xa0]]);
    expect(dev.log).toEqual(['r1/1', 'r2/2', 'r4/4']);
  });

  it('rep outs/ins: count items of size bytes, consecutive in the data page', () => {
    const dev = new Wide();
    const h = harness([(v) => ioExit(v, 'out', 0x10, 2, 3, [1, 0, 2, 0, 3, 0]), (v) => ioExit(v, 'in', 0x10, 1, 3)]);
    h.pio.register(0x10, 2, dev, 'dev');
    h.runner.run();
    expect(dev.log).toEqual(['w0/2=1', 'w0/2=2', 'w0/2=3', 'r0/1', 'r0/1', 'r0/1']);
    expect(bytesAt(h.view, PIO_DATA, 3)).toEqual([0xc0, 0xc0, 0xc0]);
  });

  it('an unclaimed port reads all-ones and is reported once', () => {
    const unknown: number[] = [];
    let read: number[] = [];
    const h = harness([
      (v) => ioExit(v, 'in', 0x2f8, 4, 1),
      (v) => {
        read = bytesAt(v, PIO_DATA, 4);
        return ioExit(v, 'out', 0x2f8, 1, 1, [1]);
      },
    ]);
    h.pio.onUnknown = (_k, a) => unknown.push(a);
    h.runner.run();
    expect(read).toEqual([0xff, 0xff, 0xff, 0xff]);
    expect(unknown).toEqual([0x2f8]);
  });

  it('a device that ends the VM (debug-exit) stops the loop after that exit', () => {
    const h = harness([(v) => ioExit(v, 'out', DEBUG_EXIT_PORT, 1, 1, [7]), (v) => ioExit(v, 'out', DEBUG_EXIT_PORT, 1, 1, [9])]);
    h.pio.register(DEBUG_EXIT_PORT, DebugExit.LENGTH, new DebugExit({ exit: (c) => h.endVm('exit', c) }), 'debug-exit');
    expect(h.runner.run()).toEqual({ exits: 1 });
    expect(h.calls()).toBe(1);
    expect(h.ended).toEqual([['exit', 7]]);
    expect(Atomics.load(h.ctrl, CTRL_EXIT_REASON)).toBe(ExitReasonCode.exit);
    expect(Atomics.load(h.ctrl, CTRL_EXIT_CODE)).toBe(7);
  });
});

describe('VcpuRunner: MMIO', () => {
  const BASE = 0xd000_0000;

  it('1/2/4-byte writes are one access; 8 is 4+4 (low half first); odd lengths are bytes', () => {
    const dev = new Wide();
    const h = harness([
      (v) => mmioExit(v, true, BASE + 0x70, 1, [0xaa]),
      (v) => mmioExit(v, true, BASE + 0x70, 2, [0xbb, 0xaa]),
      (v) => mmioExit(v, true, BASE + 0x70, 4, [0xdd, 0xcc, 0xbb, 0xaa]),
      (v) => mmioExit(v, true, BASE + 0x70, 8, [1, 0, 0, 0, 2, 0, 0, 0]),
      (v) => mmioExit(v, true, BASE + 0x70, 3, [5, 6, 7]),
    ]);
    h.mmio.register(BASE, 0x1000, dev, 'virtio0');
    expect(h.runner.run()).toEqual({ exits: 5 });
    expect(dev.log).toEqual(['w112/1=aa', 'w112/2=aabb', 'w112/4=aabbccdd', 'w112/4=1', 'w116/4=2', 'w112/1=5', 'w113/1=6', 'w114/1=7']);
  });

  it('read data lands in kvm_run.mmio.data (8 bytes as two 4-byte reads, odd lengths byte by byte)', () => {
    const dev = new Wide();
    const seen: number[][] = [];
    const read = (len: number): Step => (v) => mmioExit(v, false, BASE + 0x10, len, [0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55]);
    const grab = (len: number, next: Step): Step => (v) => {
      seen.push(bytesAt(v, O.mmioData, 8));
      return next(v);
    };
    const h = harness([read(4), grab(4, read(8)), grab(8, read(3)), grab(3, read(2)), grab(2, () => -EAGAIN)]);
    h.mmio.register(BASE, 0x1000, dev, 'virtio0');
    h.runner.run();
    expect(seen).toEqual([
      [0xe0, 0xc0, 0xb0, 0xa0, 0x55, 0x55, 0x55, 0x55],
      [0xe0, 0xc0, 0xb0, 0xa0, 0xe4, 0xc0, 0xb0, 0xa0],
      [0xd0, 0xd1, 0xd2, 0x55, 0x55, 0x55, 0x55, 0x55],
      [0xd0, 0xb0, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55],
    ]);
    expect(dev.log).toEqual(['r16/4', 'r16/4', 'r20/4', 'r16/1', 'r17/1', 'r18/1', 'r16/2']);
  });

  it('an access straddling the end of a window and one to an unclaimed address', () => {
    const regs = new Regs();
    const unknown: number[] = [];
    let read: number[] = [];
    const h = harness([
      (v) => mmioExit(v, false, BASE + 0xe, 4),
      (v) => {
        read = bytesAt(v, O.mmioData, 4);
        return mmioExit(v, true, 0xfee0_0000, 4, [1, 2, 3, 4]);
      },
    ]);
    h.mmio.registerBytewise(BASE, 0x10, regs, 'regs');
    h.mmio.onUnknown = (_k, a) => unknown.push(a);
    h.runner.run();
    expect(regs.log).toEqual(['r14', 'r15']);
    expect(read).toEqual([0x1e, 0x1f, 0xff, 0xff]);
    expect(unknown).toEqual([BASE + 0x10, BASE + 0x11, 0xfee0_0000]);
  });

  // The hand-written splitter the vCPU worker had before it used the bus's (kept here as the
  // reference the runner must match, byte for byte and access for access).
  function handWrittenMmio(bus: MmioBus, view: DataView): void {
    const addr = Number(view.getBigUint64(O.mmioPhysAddr, true));
    const len = view.getUint32(O.mmioLen, true);
    const off = O.mmioData;
    const write = view.getUint8(O.mmioIsWrite) !== 0;
    const step = len === 1 || len === 2 || len === 4 ? len : len === 8 ? 4 : 1;
    for (let i = 0; i < Math.min(len, 8); i += step) {
      const size = step as 1 | 2 | 4;
      if (write) {
        const v = size === 1 ? view.getUint8(off + i) : size === 2 ? view.getUint16(off + i, true) : view.getUint32(off + i, true);
        bus.write(addr + i, size, v);
      } else {
        const v = bus.read(addr + i, size);
        if (size === 1) view.setUint8(off + i, v);
        else if (size === 2) view.setUint16(off + i, v, true);
        else view.setUint32(off + i, v >>> 0, true);
      }
    }
  }

  function handWrittenIo(bus: PioBus, view: DataView): void {
    const dir = view.getUint8(O.ioDirection);
    const size = view.getUint8(O.ioSize) as 1 | 2 | 4;
    const p = view.getUint16(O.ioPort, true);
    const count = view.getUint32(O.ioCount, true);
    let off = Number(view.getBigUint64(O.ioDataOffset, true));
    for (let i = 0; i < count; i++, off += size) {
      if (dir === 1) {
        const v = size === 1 ? view.getUint8(off) : size === 2 ? view.getUint16(off, true) : view.getUint32(off, true);
        bus.write(p, size, v);
      } else {
        const v = bus.read(p, size);
        if (size === 1) view.setUint8(off, v);
        else if (size === 2) view.setUint16(off, v, true);
        else view.setUint32(off, v >>> 0, true);
      }
    }
  }

  /** Two buses with the same layout: a wide window, a byte-wide window right after it, a gap, a wide one. */
  function layout(bus: PioBus | MmioBus, base: number): { log: string[] } {
    const log: string[] = [];
    const wide = new Wide();
    const regs = new Regs();
    wide.log.push = (...s: string[]) => log.push(...s.map((x) => 'w:' + x));
    regs.log.push = (...s: string[]) => log.push(...s.map((x) => 'b:' + x));
    bus.register(base, 0x10, wide, 'wide');
    bus.registerBytewise(base + 0x10, 0x10, regs, 'regs');
    bus.register(base + 0x28, 0x8, new Wide(), 'far');
    bus.onUnknown = (k, a) => log.push(`unknown ${k} ${a - base}`);
    return { log };
  }

  it('matches the former hand-written MMIO splitter for every length 1..8, reads and writes, across window edges', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0x30 }), fc.integer({ min: 1, max: 8 }), fc.boolean(), fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 8, maxLength: 8 }), (off, len, write, data) => {
        const ref = new MmioBus();
        const refLog = layout(ref, BASE);
        const refView = new DataView(new ArrayBuffer(RUN_BYTES));
        mmioExit(refView, write, BASE + off, len, data);
        handWrittenMmio(ref, refView);

        const h = harness([(v) => mmioExit(v, write, BASE + off, len, data)]);
        const log = layout(h.mmio, BASE);
        h.runner.run();
        expect(log.log).toEqual(refLog.log);
        expect(bytesAt(h.view, O.mmioData, 8)).toEqual(bytesAt(refView, O.mmioData, 8));
      }),
      { numRuns: runs(300) },
    );
  });

  it('matches the former hand-written port-I/O loop for sizes 1/2/4 and rep counts', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0x30 }),
        fc.constantFrom<1 | 2 | 4>(1, 2, 4),
        fc.integer({ min: 1, max: 4 }),
        fc.boolean(),
        fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 16, maxLength: 16 }),
        (off, size, count, out, data) => {
          const ref = new PioBus();
          const refLog = layout(ref, 0x100);
          const refView = new DataView(new ArrayBuffer(RUN_BYTES));
          ioExit(refView, out ? 'out' : 'in', 0x100 + off, size, count, data);
          handWrittenIo(ref, refView);

          const h = harness([(v) => ioExit(v, out ? 'out' : 'in', 0x100 + off, size, count, data)]);
          const log = layout(h.pio, 0x100);
          h.runner.run();
          expect(log.log).toEqual(refLog.log);
          expect(bytesAt(h.view, PIO_DATA, 16)).toEqual(bytesAt(refView, PIO_DATA, 16));
        },
      ),
      { numRuns: runs(300) },
    );
  });
});

// ---- hostile exits: a property against a model ----------------------------------------------------
//
// The kvm_run area is a DataView inside a larger buffer with guard bytes on both sides; a sequence of
// KVM_EXIT_IO and KVM_EXIT_MMIO exits with arbitrary (also impossible) fields runs through the loop.
// The model: an exit with size 1/2/4, count >= 1 and count*size bytes at data_offset inside the
// mapping (MMIO: len 1..8) makes exactly the device accesses of its items, in order, and changes
// only the data bytes of an IN/read; any other exit is refused before a single access — the VM ends
// with reason 'error' and a one-line detail naming the exit — and the bytes of the run area are
// unchanged. The guard bytes never change.

type IoSpec = { kind: 'io'; out: boolean; size: number; port: number; count: number; offset: bigint; data: number[] };
type MmioSpec = { kind: 'mmio'; write: boolean; addr: bigint; len: number; data: number[] };

const GUARD = 64;

function writeIo(v: DataView, e: IoSpec): number {
  v.setUint32(O.exitReason, KVM_EXIT_IO, true);
  v.setUint8(O.ioDirection, e.out ? KVM_EXIT_IO_OUT : KVM_EXIT_IO_IN);
  v.setUint8(O.ioSize, e.size);
  v.setUint16(O.ioPort, e.port, true);
  v.setUint32(O.ioCount, e.count, true);
  v.setBigUint64(O.ioDataOffset, e.offset, true);
  // the items' bytes, where they fit inside the mapping and leave the struct itself alone
  const start = Number(e.offset);
  e.data.forEach((b, i) => {
    if (start + i >= PIO_DATA && start + i < v.byteLength) v.setUint8(start + i, b);
  });
  return 0;
}

function writeMmio(v: DataView, e: MmioSpec): number {
  v.setUint32(O.exitReason, KVM_EXIT_MMIO, true);
  v.setBigUint64(O.mmioPhysAddr, e.addr, true);
  v.setUint32(O.mmioLen, e.len, true);
  v.setUint8(O.mmioIsWrite, e.write ? 1 : 0);
  e.data.forEach((b, i) => v.setUint8(O.mmioData + i, b));
  return 0;
}

/** Wide's read value for (offset, size), as bytes. */
function wideBytes(offset: number, size: 1 | 2 | 4): number[] {
  const v = size === 4 ? (0xa0b0c0d0 + offset) >>> 0 : size === 2 ? 0xb0c0 + offset : 0xc0 + offset;
  return Array.from({ length: size }, (_, i) => Math.floor(v / 2 ** (8 * i)) & 0xff);
}
const le = (bytes: number[]): number => bytes.reduce((a, b, i) => a + b * 2 ** (8 * i), 0);

const MMIO_BASES = [0xd000_0000, 2 ** 32 + 0x1000, 2 ** 45] as const;
const MMIO_WINDOW = 0x1000;

describe('VcpuRunner: hostile KVM_EXIT_IO / KVM_EXIT_MMIO fields (property)', () => {
  const runLen = fc.constantFrom(4096 + 512, 8192, 12288);
  const ioArb = (len: number): fc.Arbitrary<IoSpec> =>
    fc
      .record({
        out: fc.boolean(),
        size: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(1, 2, 4) }, { weight: 1, arbitrary: fc.constantFrom(0, 3, 5, 8, 255) }),
        port: fc.oneof(fc.integer({ min: 0, max: 0xfffc }), fc.constantFrom(0x3f8, 0xfffc)),
        count: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 8 }) }, { weight: 1, arbitrary: fc.constantFrom(0, 1024, 1025, 2048, 0xffffffff) }),
        offset: fc.oneof(
          { weight: 4, arbitrary: fc.constant(4096n) },
          { weight: 3, arbitrary: fc.integer({ min: 0, max: len + 8 }).map(BigInt) },
          { weight: 1, arbitrary: fc.constantFrom(BigInt(len), BigInt(len - 1), 2n ** 53n + 4096n, 2n ** 64n - 1n, 2n ** 32n + 4096n) },
        ),
        data: fc.array(fc.nat(255), { minLength: 32, maxLength: 32 }),
      })
      .map((r) => ({ kind: 'io' as const, ...r }));
  const mmioArb: fc.Arbitrary<MmioSpec> = fc.record({
    kind: fc.constant('mmio' as const),
    write: fc.boolean(),
    addr: fc.oneof(
      { weight: 4, arbitrary: fc.tuple(fc.constantFrom(...MMIO_BASES), fc.integer({ min: 0, max: MMIO_WINDOW - 8 })).map(([b, o]) => BigInt(b + o)) },
      { weight: 1, arbitrary: fc.constantFrom(0xfee0_0000n, 2n ** 40n, 2n ** 52n - 8n, 2n ** 53n - 3n, 2n ** 53n + 1n, 2n ** 64n - 1n) },
    ),
    len: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 8 }) }, { weight: 1, arbitrary: fc.constantFrom(0, 9, 16, 4096, 0xffffffff) }),
    data: fc.array(fc.nat(255), { minLength: 8, maxLength: 8 }),
  });

  it('valid exits make exactly their items’ device accesses; invalid ones are refused, nothing outside kvm_run touched', () => {
    const reached = { ioOk: 0, ioRefused: 0, mmioOk: 0, mmioRefused: 0, rep: 0 };
    fc.assert(
      fc.property(
        runLen.chain((len) => fc.tuple(fc.constant(len), fc.array(fc.oneof(ioArb(len), mmioArb), { minLength: 1, maxLength: 5 }))),
        ([len, exits]) => {
          const buf = new ArrayBuffer(GUARD + len + GUARD);
          new Uint8Array(buf).fill(0xa5);
          const view = new DataView(buf, GUARD, len);
          const h = harness(
            exits.map((e) => (v: DataView) => (e.kind === 'io' ? writeIo(v, e) : writeMmio(v, e))),
            {},
            view,
          );
          const log: string[] = [];
          const pioDev = new Wide();
          pioDev.log.push = (...x: string[]) => log.push(...x.map((y) => 'pio ' + y));
          h.pio.register(0, 0x10000, pioDev, 'all-ports');
          MMIO_BASES.forEach((b, i) => {
            const d = new Wide();
            d.log.push = (...x: string[]) => log.push(...x.map((y) => `mmio${i} ${y}`));
            h.mmio.register(b, MMIO_WINDOW, d, `window${i}`);
          });
          const unknown: number[] = [];
          h.mmio.onUnknown = (_k, a) => unknown.push(a);

          // The model, exit by exit, on a copy of the run area.
          const area = new DataView(new Uint8Array(len).fill(0xa5).buffer);
          const want: string[] = [];
          const wantUnknown: number[] = [];
          let refused: RegExp | undefined;
          let done = 0;
          for (const e of exits) {
            done++;
            if (e.kind === 'io') {
              writeIo(area, e);
              const off = Number(e.offset);
              const ok = (e.size === 1 || e.size === 2 || e.size === 4) && e.count >= 1 && e.offset + BigInt(e.count * e.size) <= BigInt(len);
              if (!ok) {
                reached.ioRefused++;
                refused = /^vCPU 0: refused KVM_EXIT_IO on port 0x[0-9a-f]+: size \d+, count \d+, data offset \d+ \(kvm_run mapping is \d+ bytes\)$/;
                break;
              }
              reached.ioOk++;
              if (e.count > 1) reached.rep++;
              const size = e.size as 1 | 2 | 4;
              for (let i = 0; i < e.count; i++) {
                const at = off + i * size;
                if (e.out) {
                  const bytes = Array.from({ length: size }, (_, k) => area.getUint8(at + k));
                  want.push(`pio w${e.port}/${size}=${le(bytes).toString(16)}`);
                } else {
                  want.push(`pio r${e.port}/${size}`);
                  wideBytes(e.port, size).forEach((b, k) => area.setUint8(at + k, b));
                }
              }
            } else {
              writeMmio(area, e);
              if (e.len === 0 || e.len > 8) {
                reached.mmioRefused++;
                refused = /^vCPU 0: refused KVM_EXIT_MMIO at 0x[0-9a-f]+: length \d+ \(mmio\.data holds 8 bytes\)$/;
                break;
              }
              reached.mmioOk++;
              const addr = Number(e.addr);
              const w = MMIO_BASES.findIndex((b) => addr >= b && addr < b + MMIO_WINDOW);
              const step = e.len === 1 || e.len === 2 || e.len === 4 ? e.len : e.len === 8 ? 4 : 1;
              for (let i = 0; i < e.len; i += step) {
                const size = step as 1 | 2 | 4;
                if (w < 0) {
                  if (!wantUnknown.includes(addr + i)) wantUnknown.push(addr + i); // reported once per address
                  if (!e.write) for (let k = 0; k < size; k++) area.setUint8(O.mmioData + i + k, 0xff);
                } else if (e.write) {
                  const bytes = Array.from({ length: size }, (_, k) => area.getUint8(O.mmioData + i + k));
                  want.push(`mmio${w} w${addr + i - MMIO_BASES[w]}/${size}=${le(bytes).toString(16)}`);
                } else {
                  want.push(`mmio${w} r${addr + i - MMIO_BASES[w]}/${size}`);
                  wideBytes(addr + i - MMIO_BASES[w], size).forEach((b, k) => area.setUint8(O.mmioData + i + k, b));
                }
              }
            }
          }
          const outcome = h.runner.run();
          expect(log).toEqual(want);
          expect(unknown).toEqual(wantUnknown);
          expect(h.calls()).toBe(done);
          if (refused) {
            expect(outcome.exits).toBe(done);
            expect(outcome.detail).toMatch(refused);
            expect(h.ended).toEqual([['error', 1]]);
          } else {
            expect(outcome).toEqual({ exits: done });
            expect(h.ended).toEqual([]);
          }
          const all = new Uint8Array(buf);
          expectSameBytes(all.subarray(GUARD, GUARD + len), new Uint8Array(area.buffer), 'kvm_run area');
          expect(all.subarray(0, GUARD).every((b) => b === 0xa5) && all.subarray(GUARD + len).every((b) => b === 0xa5)).toBe(true);
        },
      ),
      { numRuns: runs(300) },
    );
    expect(Object.entries(reached).filter(([, n]) => n === 0)).toEqual([]);
  });
});

describe('decodeExit on arbitrary kvm_run bytes (property)', () => {
  it('never throws, reads each field where structs.ts puts it, and caps ndata at 16', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 256, maxLength: 256 }),
        fc.oneof(fc.constantFrom(KVM_EXIT_IO, KVM_EXIT_MMIO, KVM_EXIT_HLT, KVM_EXIT_SHUTDOWN, KVM_EXIT_INTR, KVM_EXIT_SYSTEM_EVENT, 9, 17), fc.nat({ max: 0xffffffff })),
        (bytes, reason) => {
          const v = new DataView(Uint8Array.from(bytes).buffer);
          v.setUint32(O.exitReason, reason, true);
          const e = decodeExit(v);
          const u64 = (off: number): number => Number(v.getBigUint64(off, true));
          if (reason === KVM_EXIT_IO) {
            expect(e).toEqual({ kind: 'io', direction: bytes[O.ioDirection] === KVM_EXIT_IO_OUT ? 'out' : 'in', port: v.getUint16(O.ioPort, true), size: bytes[O.ioSize], count: v.getUint32(O.ioCount, true), dataOffset: u64(O.ioDataOffset) });
          } else if (reason === KVM_EXIT_MMIO) {
            expect(e).toEqual({ kind: 'mmio', isWrite: bytes[O.mmioIsWrite] !== 0, addr: u64(O.mmioPhysAddr), len: v.getUint32(O.mmioLen, true) });
          } else if (reason === 17 /* INTERNAL_ERROR */ || reason === KVM_EXIT_SYSTEM_EVENT) {
            const n = Math.min(v.getUint32(36, true), 16);
            expect(e.kind === 'internal-error' || e.kind === 'system-event').toBe(true);
            if (e.kind === 'internal-error' || e.kind === 'system-event') expect(e.data).toEqual(Array.from({ length: n }, (_, i) => v.getBigUint64(40 + 8 * i, true)));
          } else if (reason === 9 /* FAIL_ENTRY */) expect(e.kind).toBe('fail-entry');
          else if ([KVM_EXIT_HLT, KVM_EXIT_SHUTDOWN, KVM_EXIT_INTR].includes(reason)) expect(['hlt', 'shutdown', 'intr']).toContain(e.kind);
          else expect(e.kind === 'other' ? e.reason : reason).toBe(reason);
        },
      ),
      { numRuns: runs(300) },
    );
  });
});

describe('VcpuRunner: loop control', () => {
  it('posts started once, counts itself in CTRL_STARTED, and counts exits but not kicks', () => {
    const h = harness([(v) => plainExit(v, KVM_EXIT_HLT), () => -EINTR, (v) => plainExit(v, KVM_EXIT_INTR), () => -EAGAIN, (v) => plainExit(v, KVM_EXIT_HLT)]);
    expect(h.runner.run()).toEqual({ exits: 3 });
    expect(Atomics.load(h.ctrl, CTRL_STARTED)).toBe(1);
    expect(h.posted.map((m) => m.type)).toEqual(['started']);
    expect(h.fatals).toEqual([]);
    expect(h.ended).toEqual([]);
    expect(Atomics.load(h.ctrl, CTRL_EXIT_REASON)).toBe(ExitReasonCode.stopped);
  });

  it('a stop recorded in the control block ends the loop before the next KVM_RUN', () => {
    const h = harness([
      (v) => plainExit(v, KVM_EXIT_HLT),
      (v) => {
        recordExit(h.ctrl, 'stopped', 0, -1);
        return plainExit(v, KVM_EXIT_HLT);
      },
      (v) => plainExit(v, KVM_EXIT_HLT),
    ]);
    expect(h.runner.run()).toEqual({ exits: 2 });
    expect(h.calls()).toBe(2);
  });

  it('a VM already stopping never enters KVM_RUN and posts nothing', () => {
    const h = harness([(v) => plainExit(v, KVM_EXIT_HLT)]);
    recordExit(h.ctrl, 'stopped', 0, -1);
    expect(h.runner.run()).toEqual({ exits: 0 });
    expect(h.calls()).toBe(0);
    expect(h.posted).toEqual([]);
  });

  it('pause parks (counted in CTRL_PARKED, no KVM_RUN) until resume', () => {
    const parks: Array<{ parked: number; calls: number }> = [];
    const h: Harness = harness(
      [
        (v) => plainExit(v, KVM_EXIT_HLT),
        () => {
          // vm.pause(): the run state changes and the kick ends KVM_RUN with -EINTR.
          setRunState(h.ctrl, RUN_STATE_PAUSED);
          return -EINTR;
        },
        (v) => plainExit(v, KVM_EXIT_HLT),
      ],
      {
        park: (ctrl, seq) => {
          parks.push({ parked: Atomics.load(ctrl, CTRL_PARKED), calls: h.calls() });
          expect(Atomics.load(ctrl, CTRL_RUN_STATE)).toBe(RUN_STATE_PAUSED);
          // A spurious wake-up with the state unchanged parks again; then vm.resume().
          if (parks.length === 2) setRunState(ctrl, RUN_STATE_RUNNING);
          expect(Atomics.wait(ctrl, CTRL_RUN_SEQ, seq, 0)).toBe(parks.length === 2 ? 'not-equal' : 'timed-out');
        },
      },
    );
    expect(h.runner.run()).toEqual({ exits: 2 });
    expect(parks).toEqual([
      { parked: 1, calls: 2 },
      { parked: 1, calls: 2 },
    ]);
    expect(Atomics.load(h.ctrl, CTRL_PARKED)).toBe(0);
    expect(h.calls()).toBe(3);
  });

  it('a stop that overtakes a pause ends the loop without parking', () => {
    const h = harness([
      () => {
        setRunState(h.ctrl, RUN_STATE_PAUSED);
        recordExit(h.ctrl, 'stopped', 0, -1); // state → STOPPING before the loop looks again
        return -EINTR;
      },
    ]);
    expect(h.runner.run()).toEqual({ exits: 0 });
    expect(Atomics.load(h.ctrl, CTRL_PARKED)).toBe(0);
  });

  it('KVM_EXIT_SHUTDOWN goes to fatal(); its end and message become the outcome', () => {
    const h = harness([(v) => plainExit(v, KVM_EXIT_SHUTDOWN), (v) => plainExit(v, KVM_EXIT_HLT)]);
    expect(h.runner.run()).toEqual({ exits: 1, detail: 'triple fault on vCPU 0' });
    expect(h.fatals).toEqual([{ kind: 'shutdown' }]);
    expect(h.ended).toEqual([['triple-fault', 1]]);
    expect(Atomics.load(h.ctrl, CTRL_EXIT_REASON)).toBe(ExitReasonCode['triple-fault']);
  });

  it('an exit fatal() lets pass (a system event it ignores) keeps the loop running', () => {
    const h = harness([
      (v) => {
        v.setUint32(O.systemEventType, KVM_SYSTEM_EVENT_SHUTDOWN, true);
        v.setUint32(O.systemEventNdata, 0, true);
        return plainExit(v, KVM_EXIT_SYSTEM_EVENT);
      },
      (v) => plainExit(v, KVM_EXIT_HLT),
    ]);
    expect(h.runner.run()).toEqual({ exits: 2 });
    expect(h.fatals).toEqual([{ kind: 'system-event', type: KVM_SYSTEM_EVENT_SHUTDOWN, data: [] }]);
    expect(h.ended).toEqual([]);
  });

  it('a failing KVM_RUN ends the VM with reason error and a one-line detail', () => {
    const h = harness([
      (v) => plainExit(v, KVM_EXIT_HLT),
      () => {
        throw Object.assign(new Error('KVM_RUN failed: Bad address (EFAULT)'), { code: 'EFAULT' });
      },
    ]);
    expect(h.runner.run()).toEqual({ exits: 1, detail: 'vCPU 0: KVM_RUN failed: Bad address (EFAULT)' });
    expect(h.ended).toEqual([['error', 1]]);
  });
});

describe('vmEnder', () => {
  it('records the first end and kicks every other registered vCPU', () => {
    const ctrl = createControlBlock(4);
    Atomics.store(ctrl, ctrlKickSlot(0), 11); // handle 10
    Atomics.store(ctrl, ctrlKickSlot(1), 21); // this vCPU: not kicked
    Atomics.store(ctrl, ctrlKickSlot(3), 1); // handle 0
    const kicked: number[] = [];
    const end = vmEnder(ctrl, 1, 4, (handle) => kicked.push(handle));
    end('poweroff', 0);
    end('error', 1);
    expect(kicked).toEqual([10, 0, 10, 0]);
    expect(Atomics.load(ctrl, CTRL_EXIT_REASON)).toBe(ExitReasonCode.poweroff);
    expect(Atomics.load(ctrl, CTRL_EXIT_VCPU)).toBe(1);
  });
});
