import { describe, expect, it } from 'vitest';
import { I8042 } from '../../src/devices/legacy/i8042.js';

const DATA = 0;
const CMD = 4;

interface H {
  dev: I8042;
  resets: number;
  irqs: number;
}

function make(state: SharedArrayBuffer = I8042.createState()): H {
  const h: H = { dev: undefined as unknown as I8042, resets: 0, irqs: 0 };
  h.dev = new I8042(state, { reset: () => h.resets++, irq: () => h.irqs++ });
  return h;
}

/** What Linux's i8042_command does: command, parameters, then poll OBF and read each response. */
function command(dev: I8042, cmd: number, params: number[] = [], replies = 0): number[] {
  dev.write(CMD, cmd);
  for (const p of params) dev.write(DATA, p);
  const out: number[] = [];
  for (let i = 0; i < replies; i++) {
    expect(dev.read(CMD) & 0x01, `OBF for reply ${i} to 0x${cmd.toString(16)}`).toBe(1);
    out.push(dev.read(DATA));
  }
  return out;
}

describe('I8042', () => {
  it('starts with empty buffers, keyboard unlocked', () => {
    const { dev } = make();
    const st = dev.read(CMD);
    expect(st & 0x01).toBe(0); // OBF
    expect(st & 0x02).toBe(0); // IBF
    expect(st & 0x10).toBe(0x10);
    expect(dev.read(DATA)).toBe(0);
    expect(dev.read(1)).toBe(0xff);
  });

  it('self-test answers 0x55', () => {
    const { dev } = make();
    expect(command(dev, 0xaa, [], 1)).toEqual([0x55]);
    expect(dev.read(CMD) & 0x01).toBe(0);
    expect(dev.read(CMD) & 0x04).toBe(0x04); // SYS flag
  });

  it('reads and writes the command byte (CTR)', () => {
    const { dev } = make();
    const [ctr] = command(dev, 0x20, [], 1);
    expect(ctr & 0x01).toBe(0x01); // keyboard interrupt enabled by default
    dev.write(CMD, 0x60);
    expect(dev.read(CMD) & 0x08).toBe(0x08); // expecting the parameter after a command write
    dev.write(DATA, 0x52);
    expect(dev.read(CMD) & 0x08).toBe(0);
    expect(command(dev, 0x20, [], 1)).toEqual([0x52]);
  });

  it('0xAD / 0xAE disable and enable the keyboard interface in the CTR', () => {
    const { dev } = make();
    command(dev, 0xad);
    expect(command(dev, 0x20, [], 1)[0] & 0x10).toBe(0x10);
    command(dev, 0xae);
    expect(command(dev, 0x20, [], 1)[0] & 0x10).toBe(0);
  });

  it('0xFE pulses the reset line', () => {
    const h = make();
    h.dev.write(CMD, 0xfe);
    expect(h.resets).toBe(1);
    h.dev.write(CMD, 0xff); // pulses nothing
    expect(h.resets).toBe(1);
    h.dev.write(CMD, 0xf0); // bit 0 low: reset too
    expect(h.resets).toBe(2);
  });

  it('0xD1 writes the output port; clearing bit 0 resets, 0xD0 reads it back', () => {
    const h = make();
    expect(command(h.dev, 0xd0, [], 1)[0] & 0x01).toBe(0x01);
    command(h.dev, 0xd1, [0xdf]);
    expect(h.resets).toBe(0);
    expect(command(h.dev, 0xd0, [], 1)).toEqual([0xdf]);
    command(h.dev, 0xd1, [0xde]);
    expect(h.resets).toBe(1);
  });

  it("answers Linux's probe quickly: keyboard test OK, AUX absent", () => {
    const { dev } = make();
    expect(command(dev, 0xab, [], 1)).toEqual([0x00]);
    // AUX loop: a reply without the AUX-data status bit (Linux: "auxerr"), then AUX test says stuck.
    dev.write(CMD, 0xd3);
    dev.write(DATA, 0x5a);
    const st = dev.read(CMD);
    expect(st & 0x01).toBe(1);
    expect(st & 0x20).toBe(0);
    expect(command(dev, 0xa9, [], 1)).toEqual([0x01]);
    expect(dev.read(CMD) & 0x01).toBe(0);
  });

  it('acts as a keyboard on the data port: ACKs with an interrupt, reset → BAT, GET ID', () => {
    const h = make();
    h.dev.write(DATA, 0xf4); // enable scanning
    expect(h.irqs).toBe(1);
    expect(h.dev.read(DATA)).toBe(0xfa);
    h.dev.write(DATA, 0xff);
    expect(h.irqs).toBe(2);
    expect(h.dev.read(DATA)).toBe(0xfa);
    expect(h.irqs).toBe(3); // next byte loaded into the output buffer: new interrupt
    expect(h.dev.read(DATA)).toBe(0xaa);
    expect(h.irqs).toBe(3);
    h.dev.write(DATA, 0xf2);
    expect([h.dev.read(DATA), h.dev.read(DATA), h.dev.read(DATA)]).toEqual([0xfa, 0xab, 0x83]);
    h.dev.write(DATA, 0xed); // set LEDs + parameter: two ACKs
    expect(h.dev.read(DATA)).toBe(0xfa);
    h.dev.write(DATA, 0x02);
    expect(h.dev.read(DATA)).toBe(0xfa);
    h.dev.write(DATA, 0xf0); // get scancode set
    h.dev.read(DATA);
    h.dev.write(DATA, 0x00);
    expect([h.dev.read(DATA), h.dev.read(DATA)]).toEqual([0xfa, 0x02]);
  });

  it('does not interrupt when the CTR disables keyboard interrupts', () => {
    const h = make();
    command(h.dev, 0x60, [0x44]);
    h.dev.write(DATA, 0xf4);
    expect(h.irqs).toBe(0);
    expect(h.dev.read(DATA)).toBe(0xfa);
  });

  it('injects Ctrl-Alt-Del in the scancode set the guest sees', () => {
    const h = make();
    expect(h.dev.sendCtrlAltDel()).toBe(true);
    expect(h.irqs).toBe(1);
    const xl: number[] = [];
    while (h.dev.read(CMD) & 1) xl.push(h.dev.read(DATA));
    expect(xl).toEqual([0x1d, 0x38, 0xe0, 0x53]);
    command(h.dev, 0x60, [0x05]); // translation off
    h.dev.sendCtrlAltDel();
    const raw: number[] = [];
    while (h.dev.read(CMD) & 1) raw.push(h.dev.read(DATA));
    expect(raw).toEqual([0x14, 0x11, 0xe0, 0x71]);
    for (let i = 0; i < 4; i++) expect(h.dev.sendCtrlAltDel()).toBe(true);
    expect(h.dev.sendCtrlAltDel()).toBe(false); // 16-byte buffer full
  });

  it('shares state between instances (one per vCPU worker)', () => {
    const state = I8042.createState();
    const a = make(state);
    const b = make(state);
    a.dev.write(CMD, 0x60);
    b.dev.write(DATA, 0x33);
    expect(command(b.dev, 0x20, [], 1)).toEqual([0x33]);
    expect(() => new I8042(new SharedArrayBuffer(I8042.STATE_BYTES), { reset: () => undefined })).toThrow();
  });
});
