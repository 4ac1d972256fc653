// virtio-console (src/devices/virtio/console) on synthetic rings: receiveq0 fed from the host input
// ring, transmitq0 copied into the output ring (the chain held while the ring is full), emergency
// writes, the config hook, the main-thread ConsoleHost, and properties: any interleaving of host and
// guest actions with hostile chains against a model of both byte streams and of guest RAM.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VIRTIO_ID_CONSOLE, featureBit } from '../../src/devices/virtio/constants.js';
import { ConsoleHost } from '../../src/devices/virtio/console/host.js';
import {
  CONSOLE_CFG_EMERG_WR,
  CONSOLE_CONFIG_SIZE,
  CONSOLE_QUEUE_SIZE,
  C_WAITING_ROOM,
  ConsoleBackend,
  VIRTIO_CONSOLE_F_EMERG_WRITE,
  VIRTIO_CONSOLE_F_MULTIPORT,
  VIRTIO_CONSOLE_F_SIZE,
  consoleDeviceType,
  emergencyWrite,
  readConsoleStats,
  type ConsoleParams,
} from '../../src/devices/virtio/console/index.js';
import { VirtqueueError } from '../../src/devices/virtio/queue.js';
import type { BackendEnv, ConfigSpace } from '../../src/devices/virtio/device.js';
import { ByteRing } from '../../src/shared/byte-ring.js';
import { runs } from '../fuzz/budget.js';
import { expectSameBytes } from '../fuzz/bytes.js';
import {
  DATA,
  HIGH,
  HOLE,
  ModelRam,
  RAM_END,
  SLOT_EDGE,
  benchQueue,
  brokenChains,
  chainArb,
  selfOverlaps,
  simpleChain,
  usedRingBytes,
  walkChain,
  type ChainSpec,
  type QueueLayout,
  type Range,
} from './virtq-model.js';

const RX: QueueLayout = { size: 16, desc: 0x1000, avail: 0x2000, used: 0x3000 };
const TX: QueueLayout = { size: 16, desc: 0x5000, avail: 0x6000, used: 0x7000 };

function consoleParams(o: { inCap?: number; outCap?: number; emergCap?: number } = {}): ConsoleParams {
  return {
    input: ByteRing.create(o.inCap ?? 64).sab,
    output: ByteRing.create(o.outCap ?? 256).sab,
    emerg: ByteRing.create(o.emergCap ?? 16).sab,
    control: new SharedArrayBuffer(8 * 4),
    wakeFd: -1,
    cols: 80,
    rows: 24,
  };
}

const bytesOf = (a: ArrayLike<number>): Uint8Array => Uint8Array.from(a);

/**
 * The device on a bench, driven one action at a time; every action first runs on the model, then on
 * the device, then check() compares. The model: the host input ring and output ring as byte queues,
 * the chains the driver made available on each queue, the held transmit chain, and guest RAM.
 */
class Bench {
  readonly ram = new ModelRam();
  readonly params: ConsoleParams;
  readonly input: ByteRing;
  readonly output: ByteRing;
  readonly control: Int32Array;
  readonly rx;
  readonly tx;
  readonly backend: ConsoleBackend;
  readonly indirect: boolean;

  // the model
  readonly m = {
    input: [] as number[],
    output: [] as number[],
    rxAvail: [] as number[],
    txAvail: [] as number[],
    rxPopped: 0,
    txPopped: 0,
    pending: undefined as { head: number; ranges: Range[]; total: number; done: number } | undefined,
    /** The backend holds a chain and the host has not cleared WAITING_ROOM since. */
    waiting: false,
    rxBytes: 0,
    txBytes: 0,
    rxBroken: 0,
    txBroken: 0,
    rxDone: 0,
    txDone: 0,
  };
  private expRx: Array<{ id: number; len: number; ranges: Range[]; data: Uint8Array }> = [];
  private expTx: Array<{ id: number; len: number; pushed: number }> = [];
  // what the device did, seen at the moment each used entry was published
  private gotRx: Array<{ id: number; len: number; data?: Uint8Array }> = [];
  private gotTx: Array<{ id: number; len: number; pushed: number }> = [];
  /** The four ends of the two streams. */
  readonly hostSent: number[] = [];
  readonly guestGot: number[] = [];
  readonly guestSent: number[] = [];
  readonly hostGot: number[] = [];
  readonly cover = { rxData: 0, rxMultiSeg: 0, rxRejected: 0, txRejected: 0, held: 0, resumed: 0 };

  /** `watch: false`: used entries are left for the test to take (drv.takeUsed) instead of being checked. */
  constructor(o: { indirect: boolean; inCap?: number; outCap?: number; watch?: boolean }) {
    this.indirect = o.indirect;
    this.params = consoleParams(o);
    this.input = new ByteRing(this.params.input);
    this.output = new ByteRing(this.params.output);
    this.control = new Int32Array(this.params.control);
    const watch = o.watch ?? true;
    this.rx = benchQueue(this.ram, RX, { index: 0, indirect: o.indirect, onPublish: () => watch && this.onPublish(0) });
    this.tx = benchQueue(this.ram, TX, { index: 1, indirect: o.indirect, onPublish: () => watch && this.onPublish(1) });
    this.backend = new ConsoleBackend(this.params);
    this.backend.activate({ mem: this.ram.mem, features: 0n, queues: [this.rx.aq, this.tx.aq] });
  }

  /** The driver sees new used entries: a receive buffer's bytes are read right then. */
  private onPublish(q: 0 | 1): void {
    if (q === 0) {
      for (const e of this.rx.drv.takeUsed()) {
        const exp = this.expRx[this.gotRx.length];
        const readable = exp && exp.id === e.id && exp.len === e.len && !selfOverlaps(exp.ranges, e.len);
        this.gotRx.push({ ...e, data: readable ? this.ram.readReal(exp.ranges, e.len) : undefined });
      }
    } else {
      for (const e of this.tx.drv.takeUsed()) this.gotTx.push({ ...e, pushed: this.hostGot.length + this.output.available() });
    }
  }

  // ---- the model ---------------------------------------------------------------------------------

  private modelDeliver(): void {
    const m = this.m;
    while (m.input.length > 0) {
      const head = m.rxAvail.shift();
      if (head === undefined) return;
      m.rxPopped++;
      const w = walkChain(this.ram, { desc: RX.desc, size: RX.size, indirect: this.indirect }, head);
      if (!w.ok) {
        m.rxBroken++;
        this.cover.rxRejected++;
        this.expRx.push({ id: head, len: 0, ranges: [], data: new Uint8Array(0) });
        continue;
      }
      const data: number[] = [];
      let segs = 0;
      for (const r of w.writable) {
        const bytes = m.input.splice(0, Math.min(r.len, m.input.length));
        this.ram.model.set(bytes, r.gpa);
        data.push(...bytes);
        if (bytes.length > 0) segs++;
        if (bytes.length < r.len) break;
      }
      m.rxBytes += data.length;
      if (data.length > 0) this.cover.rxData++;
      if (segs > 1) this.cover.rxMultiSeg++;
      this.expRx.push({ id: head, len: data.length, ranges: w.writable, data: bytesOf(data) });
    }
  }

  private modelTransmit(): void {
    const m = this.m;
    for (;;) {
      let p = m.pending;
      if (!p) {
        const head = m.txAvail.shift();
        if (head === undefined) return;
        m.txPopped++;
        const w = walkChain(this.ram, { desc: TX.desc, size: TX.size, indirect: this.indirect }, head);
        if (!w.ok) {
          m.txBroken++;
          this.cover.txRejected++;
          this.expTx.push({ id: head, len: 0, pushed: this.guestSent.length });
          continue;
        }
        p = m.pending = { head, ranges: w.readable, total: w.readableBytes, done: 0 };
      } else this.cover.resumed++;
      const k = Math.min(p.total - p.done, this.output.capacity - m.output.length);
      const bytes = this.ram.readModel(p.ranges, p.done, k);
      for (const b of bytes) {
        m.output.push(b);
        this.guestSent.push(b);
      }
      m.txBytes += k;
      p.done += k;
      if (p.done < p.total) {
        m.waiting = true;
        this.cover.held++;
        return;
      }
      m.pending = undefined;
      this.expTx.push({ id: p.head, len: 0, pushed: this.guestSent.length });
    }
  }

  // ---- actions -----------------------------------------------------------------------------------

  postRx(spec: ChainSpec, kick: boolean): void {
    const h = this.rx.drv.post(spec);
    if (h !== undefined) this.m.rxAvail.push(h);
    if (kick) this.kick(0);
  }

  postTx(spec: ChainSpec, seed: number, kick: boolean): void {
    this.tx.drv.fillReadable(spec, seed);
    const h = this.tx.drv.post(spec);
    if (h !== undefined) this.m.txAvail.push(h);
    if (kick) this.kick(1);
  }

  kick(q: 0 | 1): void {
    if (q === 0) this.modelDeliver();
    else this.modelTransmit();
    this.backend.processQueue(q);
  }

  hostEvent(): void {
    this.modelTransmit();
    this.modelDeliver();
    this.backend.hostEvent();
  }

  /** The host writes input (as much as fits) and, if `wake`, signals the backend. */
  hostPush(bytes: Uint8Array, wake: boolean): void {
    const k = Math.min(bytes.length, this.input.capacity - this.m.input.length);
    for (const b of bytes.subarray(0, k)) {
      this.m.input.push(b);
      this.hostSent.push(b);
    }
    expect(this.input.push(bytes), 'bytes the input ring accepts').toBe(k);
    if (wake && k > 0) this.hostEvent();
  }

  /** The host takes up to `n` bytes of output; like ConsoleHost, it clears WAITING_ROOM and (if `wake`) wakes the backend. */
  hostDrain(n: number, wake: boolean): void {
    const got = this.output.pop(n);
    expectSameBytes(got, bytesOf(this.m.output.splice(0, n)), 'output drained');
    for (const b of got) this.hostGot.push(b);
    if (got.length > 0 && Atomics.load(this.control, C_WAITING_ROOM) !== 0) {
      Atomics.store(this.control, C_WAITING_ROOM, 0);
      this.m.waiting = false;
      if (wake) this.hostEvent();
    }
  }

  // ---- comparison --------------------------------------------------------------------------------

  check(ram: boolean): void {
    const m = this.m;
    const idLen = (e: { id: number; len: number }) => ({ id: e.id, len: e.len });
    expect(this.gotRx.map(idLen), 'receiveq used entries').toEqual(this.expRx.map(idLen));
    this.gotRx.forEach((g, k) => {
      const e = this.expRx[k];
      if (g.data) expectSameBytes(g.data, e.data, `bytes received in chain ${g.id}`);
      for (const b of e.data) this.guestGot.push(b);
    });
    expect(this.gotTx, 'transmitq used entries (pushed: output bytes when published)').toEqual(this.expTx);
    m.rxDone += this.gotRx.length;
    m.txDone += this.gotTx.length;
    this.gotRx = [];
    this.expRx = [];
    this.gotTx = [];
    this.expTx = [];
    expect(this.input.available(), 'input ring').toBe(m.input.length);
    expect(this.output.available(), 'output ring').toBe(m.output.length);
    expect(this.input.available()).toBeLessThanOrEqual(this.input.capacity);
    expect(this.output.available()).toBeLessThanOrEqual(this.output.capacity);
    expect(this.rx.sq.lastAvailIdx, 'receive chains taken').toBe(m.rxPopped & 0xffff);
    expect(this.tx.sq.lastAvailIdx, 'transmit chains taken').toBe(m.txPopped & 0xffff);
    expect(readConsoleStats(this.params)).toEqual({ rxBytes: m.rxBytes, txBytes: m.txBytes, emergDropped: 0 });
    expect(brokenChains(this.rx.stats)).toBe(m.rxBroken);
    expect(brokenChains(this.tx.stats)).toBe(m.txBroken);
    for (const q of [this.rx, this.tx]) {
      expect(q.log.enters, 'enter/leave balanced').toBe(q.log.leaves);
      expect(q.log.depth).toBe(0);
    }
    // one interrupt per used entry (flags 0, no event idx)
    expect(this.rx.log.notifies).toBe(m.rxDone);
    expect(this.tx.log.notifies).toBe(m.txDone);
    if (m.waiting) expect(Atomics.load(this.control, C_WAITING_ROOM), 'WAITING_ROOM while a chain is held').toBe(1);
    expectSameBytes(bytesOf(this.guestGot), bytesOf(this.hostSent.slice(0, this.guestGot.length)), 'guest input stream');
    expectSameBytes(bytesOf(this.hostGot), bytesOf(this.guestSent.slice(0, this.hostGot.length)), 'host output stream');
    if (ram) {
      this.ram.adopt(RX.used, usedRingBytes(RX));
      this.ram.adopt(TX.used, usedRingBytes(TX));
      this.ram.expectSame('guest RAM');
    }
  }

  /** Drain, post receive buffers and wake until both streams are through; then they must be equal end to end. */
  flush(): void {
    const m = this.m;
    for (let it = 0; m.input.length > 0 || m.pending || m.txAvail.length > 0 || m.output.length > 0; it++) {
      expect(it, 'the streams drain').toBeLessThan(20_000);
      this.hostDrain(this.output.capacity, true);
      if (m.input.length > 0 && this.rx.drv.freeDescriptors > 0) this.postRx(simpleChain([[HOLE - 0x1000, 5], [HOLE - 0x2000, 59]], true), false);
      this.hostEvent();
      this.check(false);
    }
    this.check(true);
    expectSameBytes(bytesOf(this.guestGot), bytesOf(this.hostSent), 'everything the host sent reached the guest');
    expectSameBytes(bytesOf(this.hostGot), bytesOf(this.guestSent), 'everything the guest sent reached the host');
    expect(this.input.available() + this.output.available()).toBe(0);
  }
}

describe('virtio-console device type', () => {
  it('prepare: rings, control words, an eventfd released with the device; terminal size clamped', () => {
    const fds: number[] = [];
    const addon = { eventfd: () => 42, close: (fd: number) => fds.push(fd) } as never;
    const p = consoleDeviceType.prepare({ cols: 132, rows: 50 }, { addon });
    expect(p.params).toMatchObject({ wakeFd: 42, cols: 132, rows: 50 });
    for (const sab of [p.params.input, p.params.output, p.params.emerg]) expect(new ByteRing(sab).available()).toBe(0);
    expect(readConsoleStats(p.params)).toEqual({ rxBytes: 0, txBytes: 0, emergDropped: 0 });
    p.release();
    expect(fds).toEqual([42]);
    expect(consoleDeviceType.prepare({ cols: 0, rows: 0x10000 }, { addon }).params).toMatchObject({ cols: 80, rows: 24 });
  });

  it('describe: SIZE and EMERG_WRITE (no MULTIPORT), receiveq0 / transmitq0, config cols, rows, max_nr_ports 1', () => {
    expect(consoleDeviceType.kind).toBe('console');
    expect(consoleDeviceType.deviceId).toBe(VIRTIO_ID_CONSOLE);
    const d = consoleDeviceType.describe({ ...consoleParams(), cols: 100, rows: 40 });
    expect(d.features).toBe(featureBit(VIRTIO_CONSOLE_F_SIZE) | featureBit(VIRTIO_CONSOLE_F_EMERG_WRITE));
    expect(d.features & featureBit(VIRTIO_CONSOLE_F_MULTIPORT)).toBe(0n);
    expect(d.queues).toEqual([
      { name: 'receiveq0', maxSize: CONSOLE_QUEUE_SIZE },
      { name: 'transmitq0', maxSize: CONSOLE_QUEUE_SIZE },
    ]);
    expect(d.config.length).toBe(CONSOLE_CONFIG_SIZE);
    const v = new DataView(d.config.buffer, d.config.byteOffset);
    expect([v.getUint16(0, true), v.getUint16(2, true), v.getUint32(4, true), v.getUint32(8, true)]).toEqual([100, 40, 1, 0]);
  });

  it('createBackend watches the wake eventfd; its callback is the host event (input delivered)', () => {
    const p = consoleParams();
    const watched: Array<[number, () => void]> = [];
    const env = { watchEventfd: (fd: number, cb: () => void) => (watched.push([fd, cb]), () => undefined) } as unknown as BackendEnv;
    const b = consoleDeviceType.createBackend({ ...p, wakeFd: 7 }, env);
    expect(watched.map(([fd]) => fd)).toEqual([7]);
    const t = new Bench({ indirect: false, watch: false });
    b.activate({ mem: t.ram.mem, features: 0n, queues: [t.rx.aq, t.tx.aq] });
    const h = t.rx.drv.post(simpleChain([[DATA, 8]], true))!;
    new ByteRing(p.input).push(Uint8Array.of(1, 2, 3));
    watched[0][1]();
    expect(t.rx.drv.takeUsed()).toEqual([{ id: h, len: 3 }]);
    expect(t.ram.mem.readBytes(DATA, 3)).toEqual(Uint8Array.of(1, 2, 3));
  });
});

describe('virtio-console emergency write', () => {
  it('bytes appear in the emerg ring in order; when it is full they are dropped and counted', () => {
    const p = consoleParams({ emergCap: 4 });
    const ring = new ByteRing(p.emerg);
    for (const b of [0x41, 0x142, 0x43, 0x44, 0x45, 0x46]) emergencyWrite(p, b);
    expect(ring.pop()).toEqual(Uint8Array.of(0x41, 0x42, 0x43, 0x44));
    expect(readConsoleStats(p).emergDropped).toBe(2);
    emergencyWrite(p, 0x47);
    expect(ring.pop()).toEqual(Uint8Array.of(0x47));
    expect(readConsoleStats(p)).toEqual({ rxBytes: 0, txBytes: 0, emergDropped: 2 });
  });

  it('configWrite: a write at emerg_wr (offset 8) emits its low byte, any other offset does nothing', () => {
    const p = consoleParams();
    const ring = new ByteRing(p.emerg);
    const cfg: ConfigSpace = { read: () => expect.unreachable(), write: () => expect.unreachable() };
    for (const size of [1, 2, 4] as const) consoleDeviceType.configWrite!(p, cfg, CONSOLE_CFG_EMERG_WR, size, 0x1234500 + size);
    expect(ring.pop()).toEqual(Uint8Array.of(1, 2, 4));
    for (let off = 0; off < CONSOLE_CONFIG_SIZE; off++) if (off !== CONSOLE_CFG_EMERG_WR) consoleDeviceType.configWrite!(p, cfg, off, 1, 0x55);
    expect(ring.available()).toBe(0);
    expect(readConsoleStats(p).emergDropped).toBe(0);
  });

  it('property: any interleaving of emergency writes, config writes at any offset and host reads → the ring holds the emitted bytes in order, drops counted', () => {
    const op = fc.oneof(
      fc.record({ k: fc.constant('emerg' as const), value: fc.integer({ min: 0, max: 0xfff }) }),
      fc.record({ k: fc.constant('cfg' as const), offset: fc.nat(CONSOLE_CONFIG_SIZE - 1), size: fc.constantFrom(1 as const, 2 as const, 4 as const), value: fc.nat() }),
      fc.record({ k: fc.constant('read' as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), fc.constantFrom(2, 4, 16), (ops, cap) => {
        const p = consoleParams({ emergCap: cap });
        const ring = new ByteRing(p.emerg);
        const model: number[] = [];
        let dropped = 0;
        for (const o of ops) {
          if (o.k === 'read') {
            expect(ring.pop()).toEqual(bytesOf(model.splice(0)));
            continue;
          }
          if (o.k === 'cfg') {
            consoleDeviceType.configWrite!(p, {} as ConfigSpace, o.offset, o.size, o.value);
            if (o.offset !== CONSOLE_CFG_EMERG_WR) continue;
          } else emergencyWrite(p, o.value);
          if (model.length < cap) model.push(o.value & 0xff);
          else dropped++;
        }
        expect(ring.pop()).toEqual(bytesOf(model));
        expect(readConsoleStats(p).emergDropped).toBe(dropped);
      }),
      { numRuns: runs(100) },
    );
  });
});

describe('virtio-console data path', () => {
  it('host input fills receive buffers in order across segments (straddling a slot edge); used length = bytes delivered', () => {
    const t = new Bench({ indirect: true });
    t.postRx(simpleChain([[SLOT_EDGE - 3, 5], [DATA, 4]], true), false);
    t.postRx(simpleChain([[HIGH, 100]], true), false);
    t.hostPush(Uint8Array.from('hello, world', (c) => c.charCodeAt(0)), true);
    t.check(true);
    expect(Buffer.from(t.ram.mem.readBytes(SLOT_EDGE - 3, 5)).toString()).toBe('hello');
    expect(Buffer.from(t.ram.mem.readBytes(DATA, 4)).toString()).toBe(', wo');
    expect(Buffer.from(t.ram.mem.readBytes(HIGH, 3)).toString()).toBe('rld');
    expect(t.m.rxDone).toBe(2);
    expect(readConsoleStats(t.params).rxBytes).toBe(12);
  });

  it('without input no receive buffer is taken; without buffers input waits in the ring (and the ring stops the host when full)', () => {
    const t = new Bench({ indirect: false, inCap: 8 });
    t.postRx(simpleChain([[DATA, 4]], true), true);
    t.check(true);
    expect(t.rx.sq.lastAvailIdx).toBe(0);
    t.hostPush(Uint8Array.of(1, 2, 3, 4, 5, 6), false);
    t.hostPush(Uint8Array.of(7, 8, 9, 10, 11, 12), false); // only 7 and 8 fit
    t.check(true);
    expect(t.input.available()).toBe(8);
    expect(t.hostSent).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    t.kick(0);
    t.check(true);
    expect(t.guestGot).toEqual([1, 2, 3, 4]);
    t.postRx(simpleChain([[DATA + 0x100, 100]], true), true);
    t.check(true);
    expect(t.guestGot).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('receiveq: device-readable descriptors are never written; a chain without writable bytes completes with 0', () => {
    const t = new Bench({ indirect: false });
    t.postRx({ bufs: [{ addr: BigInt(DATA), len: 8, write: false }, { addr: BigInt(DATA + 8), len: 2, write: true }], table: null, corrupt: 'none' }, false);
    t.postRx(simpleChain([[DATA + 0x40, 8]], false), false);
    t.postRx(simpleChain([[HOLE - 2, 8]], true), false); // outside RAM: rejected
    t.postRx(simpleChain([[DATA + 0x80, 8]], true), false);
    t.hostPush(Uint8Array.of(9, 8, 7, 6, 5), true);
    t.check(true);
    expect(t.guestGot).toEqual([9, 8, 7, 6, 5]);
    expect(brokenChains(t.rx.stats)).toBe(1);
  });

  it('transmitq: readable bytes reach the output ring in order; writable descriptors are ignored; used length 0', () => {
    const t = new Bench({ indirect: true });
    const spec: ChainSpec = {
      bufs: [{ addr: BigInt(SLOT_EDGE - 2), len: 4, write: false }],
      table: { at: BigInt(DATA + 0x200), bufs: [{ addr: BigInt(DATA), len: 3, write: false }, { addr: BigInt(DATA + 0x100), len: 16, write: true }], lenDelta: 0, withNext: false, nested: false },
      corrupt: 'none',
    };
    t.postTx(spec, 5, true);
    t.check(true);
    expect(t.output.available()).toBe(7);
    expect(t.m.txDone).toBe(1);
    t.hostDrain(100, false);
    t.check(true);
    expect(t.hostGot).toEqual([...t.ram.mem.readBytes(SLOT_EDGE - 2, 4), ...t.ram.mem.readBytes(DATA, 3)]);
  });

  it('a full output ring holds the transmit chain: its used entry appears only after the host drained the rest', () => {
    const t = new Bench({ indirect: false, outCap: 16 });
    t.postTx(simpleChain([[DATA, 10], [DATA + 0x100, 30]], false), 1, true);
    t.postTx(simpleChain([[DATA + 0x200, 3]], false), 2, true);
    t.check(true);
    expect(t.output.available()).toBe(16);
    expect(t.m.txDone).toBe(0);
    expect(t.tx.sq.lastAvailIdx).toBe(1); // the second chain is not taken while the first is held
    expect(Atomics.load(t.control, C_WAITING_ROOM)).toBe(1);
    t.kick(1); // a kick changes nothing while the ring is full
    t.check(true);
    t.hostDrain(5, true);
    t.check(true);
    expect(t.m.txDone).toBe(0);
    t.hostDrain(100, true);
    t.hostDrain(100, true);
    t.check(true);
    expect(t.m.txDone).toBe(2);
    t.hostDrain(100, true);
    t.flush();
    expect(t.hostGot.length).toBe(43);
  });

  it('reset drops the held chain and clears WAITING_ROOM; after a new activation the device works again', () => {
    const t = new Bench({ indirect: false, outCap: 4 });
    t.postTx(simpleChain([[DATA, 10]], false), 1, true);
    expect(Atomics.load(t.control, C_WAITING_ROOM)).toBe(1);
    t.backend.reset();
    expect(Atomics.load(t.control, C_WAITING_ROOM)).toBe(0);
    t.output.pop();
    t.backend.hostEvent();
    t.backend.processQueue(0);
    t.backend.processQueue(1);
    expect(t.output.available()).toBe(0);
    const u = new Bench({ indirect: false, outCap: 4, watch: false });
    t.backend.activate({ mem: u.ram.mem, features: 0n, queues: [u.rx.aq, u.tx.aq] });
    const h = u.tx.drv.post(simpleChain([[DATA, 3]], false))!;
    t.backend.processQueue(1);
    expect(u.tx.drv.takeUsed()).toEqual([{ id: h, len: 0 }]);
    expect(t.output.pop()).toEqual(u.ram.mem.readBytes(DATA, 3));
  });

  it('a broken ring throws a fatal VirtqueueError (receive side only when there is input to deliver)', () => {
    const t = new Bench({ indirect: false });
    t.rx.drv.publish(RX.size + 1);
    t.backend.processQueue(0); // no input: the ring is not looked at
    t.input.push(Uint8Array.of(1));
    expect(() => t.backend.processQueue(0)).toThrow(VirtqueueError);
    t.ram.write16(TX.avail + 2, 1000);
    let err: unknown;
    try {
      t.backend.processQueue(1);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VirtqueueError);
    expect((err as VirtqueueError).fatal).toBe(true);
    for (const q of [t.rx, t.tx]) expect(q.log.enters).toBe(q.log.leaves);
  });

  it('property: any interleaving of host input, receive buffers, transmit chains (hostile or good), drains and kicks → both streams and guest RAM as the model says', () => {
    const rxChain = chainArb({ writeTenths: 8, big: [256, 1024], small: 24, maxTable: 18 });
    const txChain = chainArb({ writeTenths: 2, big: [256, 1024], small: 64, maxTable: 18 });
    const action = fc.oneof(
      { weight: 3, arbitrary: fc.record({ k: fc.constant('rx' as const), spec: rxChain, kick: fc.boolean() }) },
      { weight: 3, arbitrary: fc.record({ k: fc.constant('tx' as const), spec: txChain, seed: fc.nat(), kick: fc.boolean() }) },
      { weight: 3, arbitrary: fc.record({ k: fc.constant('push' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 100 }), wake: fc.boolean() }) },
      { weight: 3, arbitrary: fc.record({ k: fc.constant('drain' as const), n: fc.oneof(fc.nat(40), fc.constant(1 << 20)), wake: fc.boolean() }) },
      { weight: 1, arbitrary: fc.record({ k: fc.constant('event' as const) }) },
      { weight: 1, arbitrary: fc.record({ k: fc.constant('kick' as const), q: fc.constantFrom(0 as const, 1 as const) }) },
    );
    const cover = { rxData: 0, rxMultiSeg: 0, rxRejected: 0, txRejected: 0, held: 0, resumed: 0 };
    fc.assert(
      fc.property(fc.array(action, { minLength: 1, maxLength: 30 }), fc.boolean(), fc.constantFrom(2, 16, 64), fc.constantFrom(16, 128, 1024), (actions, indirect, inCap, outCap) => {
        const t = new Bench({ indirect, inCap, outCap });
        for (const a of actions) {
          if (a.k === 'rx') t.postRx(a.spec, a.kick);
          else if (a.k === 'tx') t.postTx(a.spec, a.seed, a.kick);
          else if (a.k === 'push') t.hostPush(a.bytes, a.wake);
          else if (a.k === 'drain') t.hostDrain(a.n, a.wake);
          else if (a.k === 'event') t.hostEvent();
          else t.kick(a.q);
          t.check(true);
        }
        t.flush();
        for (const k of Object.keys(cover) as Array<keyof typeof cover>) cover[k] += t.cover[k];
      }),
      { numRuns: runs(100) },
    );
    for (const [k, v] of Object.entries(cover)) expect(v, `outcome '${k}' reached`).toBeGreaterThan(0);
  });

  it('property: any descriptor tables and avail rings (buffers may cover the rings) → no exception but a fatal VirtqueueError, rings bounded', () => {
    const descArb = fc.record({
      addr: fc.oneof(
        fc.constantFrom(0, RX.desc, RX.avail, RX.used, TX.desc, TX.used, DATA, SLOT_EDGE - 8, HOLE - 1, HIGH),
        fc.integer({ min: 0, max: RAM_END + 0x10000 }),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      ),
      len: fc.oneof(fc.constantFrom(0, 1, 16, 64, 0x1000, 0x80000), fc.nat()),
      flags: fc.nat(7),
      next: fc.nat(20),
    });
    const side = fc.record({ descs: fc.array(descArb, { minLength: 8, maxLength: 8 }), heads: fc.array(fc.oneof(fc.nat(9), fc.nat(20)), { maxLength: 12 }) });
    const op = fc.oneof(fc.constantFrom('rx', 'tx', 'event'), fc.uint8Array({ minLength: 1, maxLength: 40 }), fc.nat(64));
    fc.assert(
      fc.property(side, side, fc.array(op, { maxLength: 12 }), fc.boolean(), (rx, tx, ops, indirect) => {
        const t = new Bench({ indirect, inCap: 64, outCap: 16, watch: false });
        for (const [s, l, drv] of [
          [rx, RX, t.rx.drv],
          [tx, TX, t.tx.drv],
        ] as const) {
          s.descs.forEach((d, i) => t.ram.writeDesc(l.desc + 16 * i, BigInt(d.addr), d.len, d.flags, d.next));
          for (const h of s.heads) drv.publish(h);
        }
        try {
          for (const o of ops) {
            if (o === 'rx') t.backend.processQueue(0);
            else if (o === 'tx') t.backend.processQueue(1);
            else if (o === 'event') t.backend.hostEvent();
            else if (typeof o === 'number') t.output.pop(o);
            else t.input.push(o);
            expect(t.input.available()).toBeLessThanOrEqual(t.input.capacity);
            expect(t.output.available()).toBeLessThanOrEqual(t.output.capacity);
          }
        } catch (e) {
          expect(e).toBeInstanceOf(VirtqueueError);
          expect((e as VirtqueueError).fatal).toBe(true);
        }
        for (const q of [t.rx, t.tx]) {
          expect(q.log.enters).toBe(q.log.leaves);
          expect(q.log.depth).toBe(0);
        }
      }),
      { numRuns: runs(300) },
    );
  });
});

describe('ConsoleHost', () => {
  it('send() reaches the input ring and wakes the backend; drain() moves output to the sink, clears WAITING_ROOM and wakes', async () => {
    const p = consoleParams({ outCap: 16 });
    const wakes: Array<[number, bigint]> = [];
    const sunk: number[] = [];
    const host = new ConsoleHost({ eventfdWrite: (fd: number, v: bigint) => void wakes.push([fd, v]) } as never, { ...p, wakeFd: 9 }, (b) => (sunk.push(...b), true));
    try {
      await host.send(Uint8Array.of(1, 2, 3));
      expect(new ByteRing(p.input).pop()).toEqual(Uint8Array.of(1, 2, 3));
      expect(wakes).toEqual([[9, 1n]]);
      // the backend holds a chain: WAITING_ROOM set, output full
      const out = new ByteRing(p.output);
      out.push(new Uint8Array(16).fill(7));
      Atomics.store(new Int32Array(p.control), C_WAITING_ROOM, 1);
      host.drain();
      expect(sunk).toEqual(new Array(16).fill(7));
      expect(Atomics.load(new Int32Array(p.control), C_WAITING_ROOM)).toBe(0);
      expect(wakes).toHaveLength(2);
      // output drained without the flag: no wake
      out.push(Uint8Array.of(5));
      host.drain();
      expect(sunk.at(-1)).toBe(5);
      expect(wakes).toHaveLength(2);
      // emergency bytes go to the sink too
      emergencyWrite(p, 0x21);
      host.drain();
      expect(sunk.at(-1)).toBe(0x21);
    } finally {
      host.close();
    }
  });

  it('a sink that returns false stops draining until resume(); close() drains the rest', () => {
    const p = consoleParams({ outCap: 16 });
    const chunks: number[][] = [];
    let accept = false;
    const host = new ConsoleHost({ eventfdWrite: () => undefined } as never, p, (b) => (chunks.push([...b]), accept));
    const out = new ByteRing(p.output);
    out.push(Uint8Array.of(1, 2));
    host.drain();
    expect(chunks).toEqual([[1, 2]]);
    out.push(Uint8Array.of(3));
    host.drain();
    expect(chunks).toEqual([[1, 2]]); // paused
    accept = true;
    host.resume();
    host.drain();
    expect(chunks).toEqual([[1, 2], [3]]);
    accept = false;
    out.push(Uint8Array.of(4));
    host.drain();
    out.push(Uint8Array.of(5));
    host.close();
    expect(chunks).toEqual([[1, 2], [3], [4], [5]]);
  });
});
