// The legacy port space as a guest sees it (i8042, POST, debug-exit, ACPI sleep/reset registers and
// the unclaimed ports around them), driven by arbitrary in/out sequences of every width from two
// "vCPUs" — two sets of device instances over the same shared state, as two vCPU workers have — and
// compared step by step with an independent model: every value read, every interrupt pulse, every
// reset, power-off and exit request.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ACPI_RESET_VALUE,
  ACPI_S5_SLP_TYP,
  ACPI_SLEEP_CONTROL_PORT,
  ACPI_SLEEP_PORT_COUNT,
  DEBUG_EXIT_PORT,
  I8042_DATA_PORT,
  POST_PORT,
} from '../../src/arch/x86_64/layout.js';
import { bytewise, PioBus, type AccessSize } from '../../src/devices/bus.js';
import { AcpiSleep } from '../../src/devices/legacy/acpi-sleep.js';
import { DebugExit } from '../../src/devices/legacy/debug-exit.js';
import { I8042 } from '../../src/devices/legacy/i8042.js';
import { PostCode } from '../../src/devices/legacy/post.js';
import { runs } from '../fuzz/budget.js';

interface Events {
  resets: number;
  irqs: number;
  poweroffs: number;
  exits: number[];
}

/** One vCPU's bus over the shared device state, wired as src/vcpu-worker/buses.ts wires it. */
function vcpuBus(state: { i8042: SharedArrayBuffer; post: SharedArrayBuffer; sleep: SharedArrayBuffer }, ev: Events): PioBus {
  const bus = new PioBus();
  bus.register(I8042_DATA_PORT, I8042.LENGTH, bytewise(new I8042(state.i8042, { reset: () => ev.resets++, irq: () => ev.irqs++ })), 'i8042');
  bus.register(POST_PORT, 1, new PostCode(state.post), 'post');
  bus.register(DEBUG_EXIT_PORT, DebugExit.LENGTH, new DebugExit({ exit: (c) => ev.exits.push(c) }), 'debug-exit');
  bus.register(ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_PORT_COUNT, new AcpiSleep({ poweroff: () => ev.poweroffs++, reset: () => ev.resets++ }, state.sleep), 'acpi-sleep');
  return bus;
}

// ---- the model ----------------------------------------------------------------------------------

/** An 8042 controller with an MF2 keyboard and no AUX port, as the device header describes it. */
class Model8042 {
  ctr = 0x65; // keyboard interrupt, system flag, AUX disabled, translation
  outp = 0x03;
  lastWasCommand = false;
  pendingCmd = 0;
  kbdPending = 0;
  scanset = 2;
  out: number[] = [];
  constructor(private readonly ev: Events) {}

  private irqOn(): boolean {
    return (this.ctr & 0x11) === 0x01; // KBDINT set, KBDDIS clear
  }
  private push(bytes: number[]): void {
    for (const b of bytes) if (this.out.length < 16) this.out.push(b);
  }
  private respond(b: number): void {
    this.out = [];
    this.push([b]);
  }
  private kbd(bytes: number[]): void {
    const wasEmpty = this.out.length === 0;
    this.push(bytes);
    if (wasEmpty && this.irqOn()) this.ev.irqs++;
  }

  read(ofs: number): number {
    if (ofs === 4) return 0x10 | 0x04 | (this.lastWasCommand ? 0x08 : 0) | (this.out.length ? 1 : 0);
    if (ofs !== 0) return 0xff;
    const b = this.out.length ? (this.out.shift() as number) : 0;
    if (this.out.length && this.irqOn()) this.ev.irqs++;
    return b;
  }

  write(ofs: number, v: number): void {
    if (ofs === 4) {
      this.lastWasCommand = true;
      this.pendingCmd = 0;
      if ([0x60, 0xd1, 0xd2, 0xd3, 0xd4].includes(v)) this.pendingCmd = v;
      else if (v === 0x20) this.respond(this.ctr);
      else if (v === 0xa7) this.ctr |= 0x20;
      else if (v === 0xa8) this.ctr &= ~0x20;
      else if (v === 0xa9) this.respond(0x01);
      else if (v === 0xaa) {
        this.ctr |= 0x04;
        this.respond(0x55);
      } else if (v === 0xab) this.respond(0x00);
      else if (v === 0xad) this.ctr |= 0x10;
      else if (v === 0xae) this.ctr &= ~0x10;
      else if (v === 0xd0) this.respond(this.outp);
      else if (v === 0xfe || (v >= 0xf0 && (v & 1) === 0)) this.ev.resets++;
      return;
    }
    if (ofs !== 0) return;
    this.lastWasCommand = false;
    const cmd = this.pendingCmd;
    this.pendingCmd = 0;
    if (cmd === 0x60) this.ctr = v;
    else if (cmd === 0xd1) {
      this.outp = v;
      if ((v & 1) === 0) this.ev.resets++;
    } else if (cmd === 0xd2) this.kbd([v]);
    else if (cmd === 0xd3) this.respond(v);
    else if (cmd === 0xd4) return;
    else {
      // A byte for the keyboard.
      const pending = this.kbdPending;
      this.kbdPending = 0;
      this.out = [];
      if (pending === 0xf0) {
        if (v === 0) return this.kbd([0xfa, this.scanset]);
        if (v >= 1 && v <= 3) this.scanset = v;
        return this.kbd([0xfa]);
      }
      if (pending !== 0) return this.kbd([0xfa]);
      if (v === 0xee) return this.kbd([0xee]);
      if (v === 0xff) {
        this.scanset = 2;
        return this.kbd([0xfa, 0xaa]);
      }
      if (v === 0xf2) return this.kbd([0xfa, 0xab, 0x83]);
      if (v === 0xed || v === 0xf0 || v === 0xf3) this.kbdPending = v;
      this.kbd([0xfa]);
    }
  }
}

class LegacyModel {
  readonly ev: Events = { resets: 0, irqs: 0, poweroffs: 0, exits: [] };
  readonly kbc = new Model8042(this.ev);
  post = 0;
  slpTyp = 0;
  wak = false;

  /** The device covering `port` and its first port, if any. */
  private static owner(port: number): [string, number] | undefined {
    if (port >= I8042_DATA_PORT && port < I8042_DATA_PORT + 5) return ['i8042', I8042_DATA_PORT];
    if (port === POST_PORT) return ['post', POST_PORT];
    if (port >= DEBUG_EXIT_PORT && port < DEBUG_EXIT_PORT + 4) return ['exit', DEBUG_EXIT_PORT];
    if (port >= ACPI_SLEEP_CONTROL_PORT && port < ACPI_SLEEP_CONTROL_PORT + 3) return ['sleep', ACPI_SLEEP_CONTROL_PORT];
    return undefined;
  }

  /** Whole access inside one device → that device sees it whole; otherwise byte by byte. */
  read(port: number, size: AccessSize): number {
    const o = LegacyModel.owner(port);
    if (o && LegacyModel.owner(port + size - 1)?.[1] === o[1]) return this.deviceRead(o[0], port - o[1], size);
    if (!o && [...Array(size).keys()].every((i) => LegacyModel.owner(port + i) === undefined)) return 2 ** (8 * size) - 1;
    let v = 0;
    for (let i = 0; i < size; i++) v += this.read(port + i, 1) * 2 ** (8 * i);
    return v;
  }

  write(port: number, size: AccessSize, value: number): void {
    const o = LegacyModel.owner(port);
    if (o && LegacyModel.owner(port + size - 1)?.[1] === o[1]) return this.deviceWrite(o[0], port - o[1], size, value);
    if (!o && [...Array(size).keys()].every((i) => LegacyModel.owner(port + i) === undefined)) return;
    for (let i = 0; i < size; i++) this.write(port + i, 1, Math.floor(value / 2 ** (8 * i)) & 0xff);
  }

  private deviceRead(dev: string, ofs: number, size: AccessSize): number {
    let v = 0;
    for (let i = 0; i < size; i++) {
      let b: number;
      if (dev === 'i8042') b = this.kbc.read(ofs + i);
      else if (dev === 'post') b = Math.floor(this.post / 2 ** (8 * i)) & 0xff;
      else if (dev === 'exit') b = 0xff;
      else b = ofs + i === 0 ? this.slpTyp << 2 : ofs + i === 1 ? (this.wak ? 0x80 : 0) : ofs + i === 2 ? 0 : 0xff;
      v += b * 2 ** (8 * i);
    }
    return v;
  }

  private deviceWrite(dev: string, ofs: number, size: AccessSize, value: number): void {
    if (dev === 'post') {
      this.post = value % 2 ** (8 * size);
      return;
    }
    if (dev === 'exit') {
      if (ofs === 0) this.ev.exits.push(value & 0xff);
      return;
    }
    for (let i = 0; i < size; i++) {
      const b = Math.floor(value / 2 ** (8 * i)) & 0xff;
      if (dev === 'i8042') this.kbc.write(ofs + i, b);
      else if (ofs + i === 0) {
        this.slpTyp = (b >> 2) & 7;
        if (b & 0x20) {
          if (this.slpTyp === ACPI_S5_SLP_TYP) this.ev.poweroffs++;
          else this.wak = true;
        }
      } else if (ofs + i === 1 && b & 0x80) this.wak = false;
      else if (ofs + i === 2 && b === ACPI_RESET_VALUE) this.ev.resets++;
    }
  }
}

// ---- the property -------------------------------------------------------------------------------

const port = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(I8042_DATA_PORT, I8042_DATA_PORT + 4) },
  { weight: 3, arbitrary: fc.constantFrom(POST_PORT, DEBUG_EXIT_PORT, ACPI_SLEEP_CONTROL_PORT, ACPI_SLEEP_CONTROL_PORT + 1, ACPI_SLEEP_CONTROL_PORT + 2) },
  { weight: 4, arbitrary: fc.integer({ min: -3, max: 7 }).chain((d) => fc.constantFrom(I8042_DATA_PORT + d, POST_PORT + d, DEBUG_EXIT_PORT + d, ACPI_SLEEP_CONTROL_PORT + d)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xfffc }) },
);
/** Bytes an OS actually sends (controller and keyboard commands, sleep values) mixed with noise. */
const value = fc.oneof(
  fc.constantFrom(0x20, 0x60, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xad, 0xae, 0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xfe, 0xf0, 0xf2, 0xed, 0xee, 0xf3, 0xff, 0x00, 0x01, 0x02, 0x03),
  fc.constantFrom((ACPI_S5_SLP_TYP << 2) | 0x20, 0x20, 0x80, ACPI_RESET_VALUE),
  fc.integer({ min: 0, max: 0xff }),
  fc.integer({ min: 0, max: 0xffffffff }),
);
const byte = fc.integer({ min: 0, max: 0xff });
type Op = { vcpu: number; write: boolean; port: number; size: AccessSize; value: number };
const single: fc.Arbitrary<Op[]> = fc
  .record({ vcpu: fc.integer({ min: 0, max: 1 }), write: fc.boolean(), port, size: fc.constantFrom<AccessSize>(1, 1, 2, 4), value })
  .map((o) => [o]);
/** What drivers do: a controller command and its data byte (or a keyboard byte), repeated; fills the 16-byte buffer. */
const commandWithData: fc.Arbitrary<Op[]> = fc
  .tuple(fc.integer({ min: 0, max: 1 }), fc.constantFrom(0x60, 0xd1, 0xd2, 0xd2, 0xd3, 0xd4, 0xad, 0xae), fc.oneof(fc.array(byte, { minLength: 1, maxLength: 4 }), fc.array(byte, { minLength: 15, maxLength: 20 })))
  .map(([vcpu, cmd, data]) =>
    data.flatMap((d): Op[] => [
      { vcpu, write: true, port: I8042_DATA_PORT + 4, size: 1, value: cmd },
      { vcpu, write: true, port: I8042_DATA_PORT, size: 1, value: cmd === 0xd1 ? d | 1 : d },
    ]),
  );
/** Poll the status port and drain the data port, as i8042_flush does. */
const drain: fc.Arbitrary<Op[]> = fc
  .tuple(fc.integer({ min: 0, max: 1 }), fc.integer({ min: 1, max: 20 }))
  .map(([vcpu, n]) => Array.from({ length: n }, (_, i): Op => ({ vcpu, write: false, port: I8042_DATA_PORT + (i % 2 ? 0 : 4), size: 1, value: 0 })));
/** An OS entering a sleep state (any SLP_TYP) and polling WAK_STS, with arbitrary status writes. */
const CTL = ACPI_SLEEP_CONTROL_PORT;
const STS = ACPI_SLEEP_CONTROL_PORT + 1;
const sleep: fc.Arbitrary<Op[]> = fc
  .tuple(fc.integer({ min: 0, max: 1 }), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 0xff }), fc.integer({ min: 0, max: 0xff }))
  .map(([vcpu, typ, sts1, sts2]): Op[] => [
    { vcpu, write: true, port: STS, size: 1, value: sts1 },
    { vcpu, write: true, port: CTL, size: 1, value: (typ << 2) | 0x20 },
    { vcpu, write: false, port: STS, size: 1, value: 0 },
    { vcpu, write: true, port: STS, size: 1, value: sts2 },
    { vcpu: 1 - vcpu, write: false, port: STS, size: 1, value: 0 },
    { vcpu, write: false, port: CTL, size: 2, value: 0 },
  ]);
const ops = fc
  .array(fc.oneof({ weight: 8, arbitrary: single }, { weight: 1, arbitrary: commandWithData }, { weight: 1, arbitrary: drain }, { weight: 1, arbitrary: sleep }), { maxLength: 60 })
  .map((a) => a.flat());

describe('legacy port space', () => {
  it('property: any in/out sequence from two vCPUs matches the model (values, IRQs, resets, power-off, exits)', () => {
    const seen = { irqs: 0, resets: 0, poweroffs: 0, exits: 0 };
    fc.assert(
      fc.property(ops, (ops) => {
        const state = { i8042: I8042.createState(), post: PostCode.createState(), sleep: AcpiSleep.createState() };
        const ev: Events = { resets: 0, irqs: 0, poweroffs: 0, exits: [] };
        const buses = [vcpuBus(state, ev), vcpuBus(state, ev)];
        const model = new LegacyModel();
        for (const [i, o] of ops.entries()) {
          if (o.port + o.size > 0x10000) continue;
          const where = `op ${i}: ${o.write ? 'out' : 'in'}${o.size} 0x${o.port.toString(16)}`;
          if (o.write) {
            const v = o.value % 2 ** (8 * o.size);
            buses[o.vcpu].write(o.port, o.size, v);
            model.write(o.port, o.size, v);
          } else {
            expect(buses[o.vcpu].read(o.port, o.size), where).toBe(model.read(o.port, o.size));
          }
          expect(ev, where).toEqual(model.ev);
        }
        seen.irqs += ev.irqs;
        seen.resets += ev.resets;
        seen.poweroffs += ev.poweroffs;
        seen.exits += ev.exits.length;
      }),
      { numRuns: runs(300) },
    );
    // The generator reaches every kind of event, so the comparison above is not vacuous.
    for (const [k, n] of Object.entries(seen)) expect(n, k).toBeGreaterThan(0);
  });

  it('the 16-byte output buffer keeps the first 16 bytes written through 0xd2 and drops the rest', () => {
    const state = { i8042: I8042.createState(), post: PostCode.createState(), sleep: AcpiSleep.createState() };
    const ev: Events = { resets: 0, irqs: 0, poweroffs: 0, exits: [] };
    const bus = vcpuBus(state, ev);
    for (let i = 0; i < 20; i++) {
      bus.write(I8042_DATA_PORT + 4, 1, 0xd2);
      bus.write(I8042_DATA_PORT, 1, 0x30 + i);
    }
    const got: number[] = [];
    while (bus.read(I8042_DATA_PORT + 4, 1) & 1) got.push(bus.read(I8042_DATA_PORT, 1));
    expect(got).toEqual(Array.from({ length: 16 }, (_, i) => 0x30 + i));
  });
});
