// virtio-blk request handling on synthetic rings in SharedArrayBuffers: parsing, every request type,
// the status each error gets, used lengths, batching and interrupt suppression, broken chains, and a
// property test that arbitrary descriptor tables never make the device throw anything but a fatal
// VirtqueueError (which the worker turns into DEVICE_NEEDS_RESET).
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import {
  BLK_CONFIG_SIZE,
  BLK_MAX_DISCARD_SECTORS,
  BLK_MAX_DISCARD_SEG,
  BLK_MAX_WRITE_ZEROES_SECTORS,
  BLK_MAX_WRITE_ZEROES_SEG,
  BLK_SEG_MAX,
  BlockDevice,
  type BlockBackend,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  blockConfigSpace,
  blockDeviceFeatures,
  blockSerial,
  createBlockStats,
  parseRequest,
  readBlockStats,
  serviceRequests,
} from '../../src/devices/virtio/block/device.js';
import { ActiveQueue, createTransportStats, type QueueGuard } from '../../src/devices/virtio/queue-service.js';
import { FileBackend, type FileBackendAddon } from '../../src/devices/virtio/block/file-backend.js';
import { GuestMemory, type MemorySegment } from '../../src/memory/guest-memory.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, VIRTQ_AVAIL_F_NO_INTERRUPT, featureBit } from '../../src/devices/virtio/constants.js';
import { SplitQueue, VirtqueueError, type DescriptorChain } from '../../src/devices/virtio/queue.js';
import { runs } from '../fuzz/budget.js';
import { GRACE_MS, type RateLimiterConfig } from '../../src/devices/rate-limiter.js';
import { RequestQueueBackend, type ActiveDevice } from '../../src/devices/virtio/device.js';
import { writeDescriptor } from './virtq-descriptor.js';
import { expectSameBytes } from '../fuzz/bytes.js';

/** The addon's packed iovec ((buffer index, offset, length) triples) as [buffer, offset, length] entries. */
function unpackIov(bufs: readonly SharedArrayBuffer[], packed: Float64Array, count: number): Array<[SharedArrayBuffer, number, number]> {
  return Array.from({ length: count }, (_, i) => [bufs[packed[3 * i]], packed[3 * i + 1], packed[3 * i + 2]]);
}


const NEXT = 1;
const WRITE = 2;
const INDIRECT = 4;

// Guest RAM: two slots so buffers can straddle a slot boundary at 0x80000.
const RAM = [
  { gpa: 0, size: 0x80000 },
  { gpa: 0x80000, size: 0x80000 },
];
const DESC = 0x1000;
const AVAIL = 0x2000;
const USED = 0x3000;
const HDR = 0x4000; // request headers, 16 bytes each
const STATUS = 0x5000; // status bytes
const DATA = 0x10000; // data buffers
const SECTORS = 64;

class MemBackend implements BlockBackend {
  readonly disk: Uint8Array;
  flushes = 0;
  failNext: unknown;
  log: string[] = [];
  constructor(sectors: number) {
    this.disk = new Uint8Array(sectors * 512);
    for (let i = 0; i < this.disk.length; i++) this.disk[i] = (i * 131 + (i >> 9)) & 0xff;
  }
  private maybeFail(): void {
    if (this.failNext !== undefined) {
      const e = this.failNext;
      this.failNext = undefined;
      throw e;
    }
  }
  readv(segs: readonly MemorySegment[], bytes: number, pos: number): number {
    this.maybeFail();
    let p = pos;
    for (const s of segs) {
      new Uint8Array(s.buffer, s.offset, s.length).set(this.disk.subarray(p, p + s.length));
      p += s.length;
    }
    expect(p - pos).toBe(bytes);
    return bytes;
  }
  writev(segs: readonly MemorySegment[], bytes: number, pos: number): number {
    this.maybeFail();
    let p = pos;
    for (const s of segs) {
      this.disk.set(new Uint8Array(s.buffer, s.offset, s.length), p);
      p += s.length;
    }
    expect(p - pos).toBe(bytes);
    return bytes;
  }
  flush(): void {
    this.maybeFail();
    this.flushes++;
    this.log.push('flush');
  }
  discard(pos: number, len: number): void {
    this.disk.fill(0, pos, pos + len);
    this.log.push(`discard ${pos} ${len}`);
  }
  writeZeroes(pos: number, len: number, unmap: boolean): void {
    this.disk.fill(0, pos, pos + len);
    this.log.push(`zero ${pos} ${len} ${unmap}`);
  }
}

interface Seg {
  addr: number | bigint;
  len: number;
  write?: boolean;
}

/** The driver side: descriptor table, avail ring, used ring in guest RAM. */
class Driver {
  availIdx = 0;
  usedSeen = 0;
  constructor(
    readonly mem: GuestMemory,
    readonly size: number,
  ) {}
  writeDesc(gpa: number, addr: number | bigint, len: number, flags: number, next: number): void {
    writeDescriptor(this.mem, gpa, addr, len, flags, next);
  }
  /** A chain of `segs` at descriptor `first` (consecutive indexes); returns the head. */
  chain(first: number, segs: Seg[]): number {
    segs.forEach((s, i) => {
      const last = i === segs.length - 1;
      this.writeDesc(DESC + 16 * (first + i), s.addr, s.len, (last ? 0 : NEXT) | (s.write ? WRITE : 0), last ? 0 : first + i + 1);
    });
    return first;
  }
  publish(...heads: number[]): void {
    for (const h of heads) {
      this.mem.write16(AVAIL + 4 + 2 * (this.availIdx % this.size), h);
      this.availIdx = (this.availIdx + 1) & 0xffff;
    }
    this.mem.write16(AVAIL + 2, this.availIdx);
  }
  usedIdx(): number {
    return this.mem.read16(USED + 2);
  }
  used(k: number): { id: number; len: number } {
    const o = USED + 4 + 8 * (k % this.size);
    return { id: this.mem.read32(o), len: this.mem.read32(o + 4) };
  }
  setUsedEvent(v: number): void {
    this.mem.write16(AVAIL + 4 + 2 * this.size, v);
  }
  header(slot: number, type: number, sector: number | bigint): number {
    const gpa = HDR + 16 * slot;
    this.mem.write32(gpa, type);
    this.mem.write32(gpa + 4, 0);
    this.mem.write64(gpa + 8, BigInt(sector));
    return gpa;
  }
}

/**
 * The blk queue loop over an ActiveQueue whose guard runs ring accesses through `rings` (the transport's
 * withRings in production; refusing = a reset in progress) and records each interrupt.
 */
function serviceQueue(q: SplitQueue, dev: BlockDevice, mem: GuestMemory, descAddr: number, rings: <T>(fn: () => T) => T | undefined, onInterrupt: (irq: boolean) => void) {
  const guard: QueueGuard = { rings, enter: () => undefined, leave: () => undefined, notifyUsed: () => onInterrupt(true) };
  return serviceRequests(new ActiveQueue({ index: 0, queue: q, guard, mem, descAddr, stats: createTransportStats() }), dev);
}

function setup(opts: { readOnly?: boolean; size?: number; eventIdx?: boolean; indirect?: boolean; sectors?: number; rate?: RateLimiterConfig; now?: () => number } = {}) {
  const slots = RAM.map((r, i) => ({ slot: i, gpa: r.gpa, size: r.size, buffer: new SharedArrayBuffer(r.size) }));
  const mem = new GuestMemory(slots);
  const size = opts.size ?? 16;
  const backend = new MemBackend(opts.sectors ?? SECTORS);
  const stats = createBlockStats();
  const serial = blockSerial('/images/test.img', 0x1234);
  const dev = new BlockDevice({ sectors: opts.sectors ?? SECTORS, readOnly: opts.readOnly ?? false, serial }, backend, stats, opts.rate, opts.now);
  const q = new SplitQueue(mem, { size, descAddr: DESC, driverAddr: AVAIL, deviceAddr: USED, eventIdx: opts.eventIdx ?? false, indirect: opts.indirect ?? false });
  const drv = new Driver(mem, size);
  const interrupts: boolean[] = [];
  const service = () => serviceQueue(q, dev, mem, DESC, (fn) => fn(), (irq) => interrupts.push(irq));
  return { mem, backend, dev, q, drv, stats, service, interrupts, serial };
}

/** One request in slot `s` (descriptors 4s..4s+3): header, optional data, status. Returns the head. */
function request(t: ReturnType<typeof setup>, s: number, type: number, sector: number | bigint, data?: Seg[]): number {
  const hdr = t.drv.header(s, type, sector);
  t.mem.write8(STATUS + s, 0xee);
  return t.drv.chain(s * 4, [{ addr: hdr, len: 16 }, ...(data ?? []), { addr: STATUS + s, len: 1, write: true }]);
}
const status = (t: ReturnType<typeof setup>, s: number): number => t.mem.read8(STATUS + s);

describe('virtio-blk config and identity', () => {
  it('offers the features of the spec list; RO only when read-only, DISCARD/WRITE_ZEROES only when writable', () => {
    const rw = blockDeviceFeatures(false);
    const ro = blockDeviceFeatures(true);
    for (const b of [VIRTIO_F_VERSION_1, VIRTIO_BLK_F_FLUSH, 2 /* SEG_MAX */, 6 /* BLK_SIZE */, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_EVENT_IDX]) {
      expect(rw & featureBit(b)).not.toBe(0n);
      expect(ro & featureBit(b)).not.toBe(0n);
    }
    expect(rw & featureBit(VIRTIO_BLK_F_RO)).toBe(0n);
    expect(ro & featureBit(VIRTIO_BLK_F_RO)).not.toBe(0n);
    expect(rw & featureBit(VIRTIO_BLK_F_DISCARD)).not.toBe(0n);
    expect(rw & featureBit(VIRTIO_BLK_F_WRITE_ZEROES)).not.toBe(0n);
    expect(ro & (featureBit(VIRTIO_BLK_F_DISCARD) | featureBit(VIRTIO_BLK_F_WRITE_ZEROES))).toBe(0n);
  });

  it('config space: capacity, seg_max ≤ queue size − 2, blk_size, discard/write-zeroes limits', () => {
    const c = blockConfigSpace({ sectors: 0x1_2345_6789, readOnly: false });
    expect(c.length).toBe(BLK_CONFIG_SIZE);
    const v = new DataView(c.buffer);
    expect(v.getBigUint64(0, true)).toBe(0x1_2345_6789n);
    expect(v.getUint32(12, true)).toBe(BLK_SEG_MAX);
    expect(BLK_SEG_MAX).toBeLessThanOrEqual(256 - 2);
    expect(v.getUint32(20, true)).toBe(512);
    expect(v.getUint32(36, true)).toBeGreaterThan(0);
    expect(v.getUint32(40, true)).toBe(BLK_MAX_DISCARD_SEG);
    expect(v.getUint32(48, true)).toBeGreaterThan(0);
    expect(c[56]).toBe(1);
  });

  it('serial: basename and inode, ≤ 20 bytes, NUL-padded, printable', () => {
    const s = blockSerial('/a/b/disk.img', 0x2a);
    expect(s.length).toBe(20);
    expect(Buffer.from(s).toString('latin1').replace(/\0+$/, '')).toBe('disk.img-2a');
    const long = Buffer.from(blockSerial('/x/a very long image name with spaces.raw', 123456789n)).toString('latin1');
    expect(long.length).toBe(20);
    expect(long).toMatch(/^[A-Za-z0-9._-]+-75bcd15$/);
  });
});

describe('virtio-blk requests', () => {
  it('IN reads the sectors into a scattered buffer (crossing a RAM slot), status OK, used len = data + 1', () => {
    const t = setup();
    const head = request(t, 0, VIRTIO_BLK_T_IN, 3, [
      { addr: DATA, len: 512, write: true },
      { addr: 0x80000 - 256, len: 1024, write: true }, // straddles the slot boundary
    ]);
    t.drv.publish(head);
    expect(t.service()).toEqual({ completed: 1, interrupt: true });
    expect(status(t, 0)).toBe(VIRTIO_BLK_S_OK);
    expect(t.drv.used(0)).toEqual({ id: head, len: 1536 + 1 });
    expect(t.mem.readBytes(DATA, 512)).toEqual(t.backend.disk.subarray(3 * 512, 4 * 512));
    expect(t.mem.readBytes(0x80000 - 256, 1024)).toEqual(t.backend.disk.subarray(4 * 512, 6 * 512));
  });

  it('OUT writes, FLUSH flushes before it completes, GET_ID returns the serial', () => {
    const t = setup();
    t.mem.fill(DATA, 1024, 0x5a);
    const w = request(t, 0, VIRTIO_BLK_T_OUT, 10, [{ addr: DATA, len: 1024 }]);
    t.drv.publish(w);
    t.service();
    expect(status(t, 0)).toBe(VIRTIO_BLK_S_OK);
    expect(t.drv.used(0).len).toBe(1);
    expect([...new Set(t.backend.disk.subarray(10 * 512, 12 * 512))]).toEqual([0x5a]);

    // The flush's used entry must not be visible while the backend is flushing.
    const f = request(t, 1, VIRTIO_BLK_T_FLUSH, 0);
    const usedBefore = t.drv.usedIdx();
    const flush = t.backend.flush.bind(t.backend);
    t.backend.flush = () => {
      expect(t.drv.usedIdx()).toBe(usedBefore);
      flush();
    };
    t.drv.publish(f);
    t.service();
    expect(t.backend.flushes).toBe(1);
    expect(status(t, 1)).toBe(VIRTIO_BLK_S_OK);
    expect(t.drv.usedIdx()).toBe(usedBefore + 1);

    const id = request(t, 2, VIRTIO_BLK_T_GET_ID, 0, [{ addr: DATA + 0x1000, len: 20, write: true }]);
    t.drv.publish(id);
    t.service();
    expect(status(t, 2)).toBe(VIRTIO_BLK_S_OK);
    expect(t.mem.readBytes(DATA + 0x1000, 20)).toEqual(t.serial);
    expect(t.drv.used(2).len).toBe(21);
  });

  it('answers IOERR for out-of-range, unaligned, read-only writes, short headers; UNSUPP for unknown types', () => {
    const t = setup();
    const cases: Array<[number, number | bigint, Seg[], number]> = [
      [VIRTIO_BLK_T_IN, SECTORS, [{ addr: DATA, len: 512, write: true }], VIRTIO_BLK_S_IOERR], // sector = capacity
      [VIRTIO_BLK_T_IN, SECTORS - 1, [{ addr: DATA, len: 1024, write: true }], VIRTIO_BLK_S_IOERR], // runs past the end
      [VIRTIO_BLK_T_IN, 0xffff_ffff_ffff_ffffn, [{ addr: DATA, len: 512, write: true }], VIRTIO_BLK_S_IOERR],
      [VIRTIO_BLK_T_IN, 0, [{ addr: DATA, len: 100, write: true }], VIRTIO_BLK_S_IOERR], // not a multiple of 512
      [VIRTIO_BLK_T_OUT, SECTORS, [{ addr: DATA, len: 512 }], VIRTIO_BLK_S_IOERR],
      [VIRTIO_BLK_T_OUT, 0, [{ addr: DATA, len: 513 }], VIRTIO_BLK_S_IOERR],
      [0x7f, 0, [], VIRTIO_BLK_S_UNSUPP],
      [10 /* GET_LIFETIME, not offered */, 0, [], VIRTIO_BLK_S_UNSUPP],
      [VIRTIO_BLK_T_IN, SECTORS - 1, [{ addr: DATA, len: 512, write: true }], VIRTIO_BLK_S_OK], // the last sector is fine
      [VIRTIO_BLK_T_IN, SECTORS, [], VIRTIO_BLK_S_OK], // zero-length read at capacity
    ];
    for (const [type, sector, data, want] of cases) {
      t.drv.publish(request(t, 0, type, sector, data));
      t.service();
      expect([type, String(sector), status(t, 0)]).toEqual([type, String(sector), want]);
    }
    expect(readBlockStats(t.stats)).toMatchObject({ errors: 6, unsupported: 2 });
    const disk = setup({ readOnly: true });
    disk.drv.publish(request(disk, 0, VIRTIO_BLK_T_OUT, 0, [{ addr: DATA, len: 512 }]));
    disk.service();
    expect(status(disk, 0)).toBe(VIRTIO_BLK_S_IOERR);
    expect(disk.backend.disk).toEqual(new MemBackend(SECTORS).disk);
    // DISCARD/WRITE_ZEROES on a read-only disk: IOERR
    disk.drv.publish(request(disk, 1, VIRTIO_BLK_T_DISCARD, 0, [{ addr: DATA, len: 16 }]));
    disk.service();
    expect(status(disk, 1)).toBe(VIRTIO_BLK_S_IOERR);

    // A header split over two descriptors works; 8 readable bytes are not a header (IOERR).
    const h = setup();
    const hdr = h.drv.header(0, VIRTIO_BLK_T_IN, 2);
    h.mem.write8(STATUS, 0xee);
    h.drv.chain(0, [{ addr: hdr, len: 8 }, { addr: hdr + 8, len: 8 }, { addr: DATA, len: 512, write: true }, { addr: STATUS, len: 1, write: true }]);
    h.drv.publish(0);
    h.service();
    expect(status(h, 0)).toBe(VIRTIO_BLK_S_OK);
    expect(h.mem.readBytes(DATA, 512)).toEqual(h.backend.disk.subarray(1024, 1536));
    h.mem.write8(STATUS, 0xee);
    h.drv.chain(0, [{ addr: hdr, len: 8 }, { addr: STATUS, len: 1, write: true }]);
    h.drv.publish(0);
    h.service();
    expect(status(h, 0)).toBe(VIRTIO_BLK_S_IOERR);
  });

  it('a chain without a writable byte completes with used len 0; a host I/O error is IOERR; a bug propagates', () => {
    const t = setup();
    const hdr = t.drv.header(0, VIRTIO_BLK_T_IN, 0);
    t.drv.chain(0, [{ addr: hdr, len: 16 }]);
    t.drv.publish(0);
    expect(t.service()?.completed).toBe(1);
    expect(t.drv.used(0)).toEqual({ id: 0, len: 0 });
    expect(readBlockStats(t.stats).badChains).toBe(1);

    t.backend.failNext = Object.assign(new Error('pwritev failed: I/O error (EIO)'), { code: 'EIO' });
    t.drv.publish(request(t, 1, VIRTIO_BLK_T_OUT, 0, [{ addr: DATA, len: 512 }]));
    t.service();
    expect(status(t, 1)).toBe(VIRTIO_BLK_S_IOERR);

    t.backend.failNext = new TypeError('a bug');
    t.drv.publish(request(t, 1, VIRTIO_BLK_T_FLUSH, 0));
    expect(() => t.service()).toThrow(TypeError);
  });

  it('DISCARD and WRITE_ZEROES: ranges zeroed, flags and limits checked', () => {
    const t = setup();
    const seg = (gpa: number, sector: number, num: number, flags: number): void => {
      t.mem.write64(gpa, BigInt(sector));
      t.mem.write32(gpa + 8, num);
      t.mem.write32(gpa + 12, flags);
    };
    seg(DATA, 2, 2, 0);
    seg(DATA + 16, 8, 1, 0);
    t.drv.publish(request(t, 0, VIRTIO_BLK_T_DISCARD, 0, [{ addr: DATA, len: 32 }]));
    t.service();
    expect(status(t, 0)).toBe(VIRTIO_BLK_S_OK);
    expect(t.backend.log).toEqual(['discard 1024 1024', 'discard 4096 512']);
    seg(DATA, 20, 4, 1);
    t.drv.publish(request(t, 0, VIRTIO_BLK_T_WRITE_ZEROES, 0, [{ addr: DATA, len: 16 }]));
    t.service();
    expect(status(t, 0)).toBe(VIRTIO_BLK_S_OK);
    expect(t.backend.log.at(-1)).toBe('zero 10240 2048 true');
    expect([...new Set(t.backend.disk.subarray(10240, 12288))]).toEqual([0]);

    const expectStatus = (type: number, len: number, want: number): void => {
      t.drv.publish(request(t, 0, type, 0, [{ addr: DATA, len }]));
      t.service();
      expect(status(t, 0)).toBe(want);
    };
    seg(DATA, 0, 1, 1); // unmap flag on a discard
    expectStatus(VIRTIO_BLK_T_DISCARD, 16, VIRTIO_BLK_S_UNSUPP);
    seg(DATA, 0, 1, 2); // reserved flag
    expectStatus(VIRTIO_BLK_T_WRITE_ZEROES, 16, VIRTIO_BLK_S_UNSUPP);
    seg(DATA, SECTORS - 1, 2, 0); // past the end
    expectStatus(VIRTIO_BLK_T_WRITE_ZEROES, 16, VIRTIO_BLK_S_IOERR);
    expectStatus(VIRTIO_BLK_T_DISCARD, 15, VIRTIO_BLK_S_IOERR); // not a multiple of 16
    for (let i = 0; i <= BLK_MAX_DISCARD_SEG; i++) seg(DATA + 16 * i, 0, 1, 0);
    expectStatus(VIRTIO_BLK_T_DISCARD, 16 * (BLK_MAX_DISCARD_SEG + 1), VIRTIO_BLK_S_IOERR); // too many segments
  });

  it('a chain the queue rejects gets IOERR in its status byte when it has one, used len 0 otherwise', () => {
    const t = setup();
    const hdr = t.drv.header(0, VIRTIO_BLK_T_IN, 0);
    t.mem.write8(STATUS, 0xee);
    // data buffer far outside RAM (blk.bad=oob)
    t.drv.chain(0, [{ addr: hdr, len: 16 }, { addr: 0xfff0_0000_0000_0000n, len: 512, write: true }, { addr: STATUS, len: 1, write: true }]);
    // a loop: 8 → 9 → 8
    t.drv.writeDesc(DESC + 16 * 8, hdr, 16, NEXT, 9);
    t.drv.writeDesc(DESC + 16 * 9, STATUS + 1, 1, NEXT | WRITE, 8);
    t.mem.write8(STATUS + 1, 0xee);
    t.drv.publish(0, 8);
    expect(t.service()?.completed).toBe(2);
    expect(t.drv.used(0)).toEqual({ id: 0, len: 1 });
    expect(status(t, 0)).toBe(VIRTIO_BLK_S_IOERR);
    expect(t.drv.used(1)).toEqual({ id: 8, len: 0 });
    expect(t.mem.read8(STATUS + 1)).toBe(0xee);
    // and the queue keeps working
    t.drv.publish(request(t, 2, VIRTIO_BLK_T_IN, 1, [{ addr: DATA, len: 512, write: true }]));
    t.service();
    expect(status(t, 2)).toBe(VIRTIO_BLK_S_OK);
  });

  it('indirect descriptors', () => {
    const t = setup({ indirect: true });
    const hdr = t.drv.header(0, VIRTIO_BLK_T_IN, 5);
    const table = 0x6000;
    t.drv.writeDesc(table, hdr, 16, NEXT, 1);
    t.drv.writeDesc(table + 16, DATA, 1024, NEXT | WRITE, 2);
    t.drv.writeDesc(table + 32, STATUS, 1, WRITE, 0);
    t.drv.writeDesc(DESC, table, 48, INDIRECT, 0);
    t.drv.publish(0);
    t.service();
    expect(status(t, 0)).toBe(VIRTIO_BLK_S_OK);
    expect(t.mem.readBytes(DATA, 1024)).toEqual(t.backend.disk.subarray(5 * 512, 7 * 512));

    // An indirect table longer than the queue (4 here): the queue rejects the chain, the status says IOERR.
    const s = setup({ indirect: true, size: 4 });
    for (let i = 0; i < 5; i++) s.drv.writeDesc(table + 16 * i, i === 0 ? hdr : DATA + 512 * i, i === 0 ? 16 : 512, NEXT | (i ? WRITE : 0), i + 1);
    s.drv.writeDesc(table + 16 * 5, STATUS, 1, WRITE, 0);
    s.drv.writeDesc(DESC, table, 96, INDIRECT, 0);
    s.mem.write8(STATUS, 0xee);
    s.drv.publish(0);
    s.service();
    expect(s.drv.used(0)).toEqual({ id: 0, len: 1 });
    expect(status(s, 0)).toBe(VIRTIO_BLK_S_IOERR);
  });

  it('serves every available request per wake-up and interrupts once per batch, as the driver asks', () => {
    const t = setup({ size: 16 });
    const heads = [0, 1].map((s) => request(t, s, VIRTIO_BLK_T_IN, s, [{ addr: DATA + 512 * s, len: 512, write: true }]));
    t.drv.publish(...heads);
    expect(t.service()).toEqual({ completed: 2, interrupt: true });
    expect(t.interrupts).toEqual([true]);
    expect(readBlockStats(t.stats)).toMatchObject({ requests: 2, reads: 2, batches: 1, bytesRead: 1024 });

    // VIRTQ_AVAIL_F_NO_INTERRUPT: no interrupt
    t.mem.write16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
    t.drv.publish(request(t, 0, VIRTIO_BLK_T_FLUSH, 0));
    expect(t.service()).toEqual({ completed: 1, interrupt: false });

    // event idx: interrupt only when used.idx passes used_event
    const e = setup({ eventIdx: true });
    e.drv.setUsedEvent(5);
    for (let round = 0; round < 8; round++) {
      e.drv.publish(request(e, 0, VIRTIO_BLK_T_FLUSH, 0));
      const r = e.service();
      expect(r?.interrupt).toBe(round === 5); // used idx goes 5 → 6 in round 5
    }
    // avail_event is left at last_avail_idx, so the driver notifies for the next request
    expect(e.mem.read16(USED + 4 + 8 * 16)).toBe(8);
  });

  it('a rate limiter: requests are taken while its buckets are out of debt, the rest stay available until the clock has paid the debt', () => {
    let now = 0;
    // 1024 bytes per 10 ms, no burst; each request reads 2 sectors (1024 bytes) → one per 10 ms after the first.
    const t = setup({ size: 16, rate: { bandwidth: { size: 1024, refillTimeMs: 10 } }, now: () => now });
    const heads = [0, 1, 2, 3].map((s) => request(t, s, VIRTIO_BLK_T_IN, 2 * s, [{ addr: DATA + 1024 * s, len: 1024, write: true }]));
    t.drv.publish(...heads);
    // The full bucket pays the first request exactly (0 left, not in debt), so the second runs too and goes into debt.
    expect(t.service()).toEqual({ completed: 2, interrupt: true, throttled: true });
    expect(t.drv.usedIdx()).toBe(2);
    // 1024 owed: paid at 10 ms; a debt that one more ms pays does not block (GRACE_MS).
    expect(t.dev.limiter!.waitMs()).toBe(9);
    now = 8;
    expect(t.service()).toEqual({ completed: 0, interrupt: false, throttled: true });
    now = 10;
    expect(t.service()).toEqual({ completed: 1, interrupt: true, throttled: true });
    // The last one puts the bucket into debt again: the pass cannot tell whether more were made
    // available (notifications are still off from the last pop), so it ends throttled and the timer's
    // pass finds the ring empty and turns notifications back on.
    now = 20;
    expect(t.service()).toEqual({ completed: 1, interrupt: true, throttled: true });
    expect(t.drv.usedIdx()).toBe(4);
    now = 30;
    expect(t.service()).toEqual({ completed: 0, interrupt: false });
    expect(readBlockStats(t.stats)).toMatchObject({ requests: 4, reads: 4, bytesRead: 4096 });
    // An ops bucket counts requests of any type (a flush too); no bandwidth bucket: flushes cost no bytes.
    const o = setup({ size: 16, rate: { ops: { size: 2, refillTimeMs: 100 } }, now: () => now });
    o.drv.publish(...[0, 1, 2, 3].map((s) => request(o, s, VIRTIO_BLK_T_FLUSH, 0)));
    expect(o.service()).toMatchObject({ completed: 3, throttled: true });
    expect(o.dev.limiter!.waitMs()).toBe(49);
  });

  it('property: with a rate limiter, bytes served by any time t stay within size·t/refill + size + burst + one request, and everything is served on time', () => {
    fc.assert(
      fc.property(
        fc.record({
          size: fc.integer({ min: 512, max: 16384 }),
          refill: fc.integer({ min: 1, max: 100 }),
          burst: fc.integer({ min: 0, max: 8192 }),
          ops: fc.option(fc.record({ size: fc.integer({ min: 1, max: 8 }), refill: fc.integer({ min: 1, max: 50 }) }), { nil: undefined }),
          sectors: fc.array(fc.integer({ min: 1, max: 8 }), { minLength: 1, maxLength: 16 }),
        }),
        (c) => {
          let now = 0;
          const rate: RateLimiterConfig = { bandwidth: { size: c.size, refillTimeMs: c.refill, oneTimeBurst: c.burst }, ...(c.ops ? { ops: { size: c.ops.size, refillTimeMs: c.ops.refill } } : {}) };
          const t = setup({ size: 64, rate, now: () => now });
          const heads = c.sectors.map((n, s) => request(t, s, VIRTIO_BLK_T_IN, 0, [{ addr: DATA + 4096 * s, len: 512 * n, write: true }]));
          t.drv.publish(...heads);
          const total = c.sectors.reduce((a, n) => a + 512 * n, 0);
          let served = 0;
          let opsServed = 0;
          for (let round = 0; ; round++) {
            expect(round).toBeLessThan(10 * c.sectors.length + 10);
            const r = t.service()!;
            served = readBlockStats(t.stats).bytesRead;
            opsServed += r.completed;
            // pay-after: at most one request beyond what the bucket had (by t + GRACE_MS)
            expect(served).toBeLessThanOrEqual(c.size + c.burst + (c.size * (now + GRACE_MS)) / c.refill + 4096);
            if (c.ops) expect(opsServed).toBeLessThanOrEqual(c.ops.size + (c.ops.size * (now + GRACE_MS)) / c.ops.refill + 1);
            if (!r.throttled) break;
            const wait = t.dev.limiter!.waitMs();
            expect(wait).toBeGreaterThan(0);
            now += wait;
          }
          expect(served).toBe(total);
          expect(t.drv.usedIdx()).toBe(c.sectors.length);
          // On time: every wait is the debt's exact pay-off time (rounded up to whole ms).
          const bwTime = (Math.max(0, total - c.size - c.burst) * c.refill) / c.size;
          const opsTime = c.ops ? (Math.max(0, c.sectors.length - c.ops.size) * c.ops.refill) / c.ops.size : 0;
          expect(now).toBeLessThanOrEqual(bwTime + opsTime + c.sectors.length + 1);
        },
      ),
      { numRuns: runs(300) },
    );
  });

  it('RequestQueueBackend: a throttled pass arms one timer for waitMs, kicks meanwhile add none, the timer serves the queue; reset cancels it; reconfigure serves again', () => {
    vi.useFakeTimers();
    try {
      const calls: string[] = [];
      let throttled = true;
      const b = new RequestQueueBackend('blk', () => (calls.push('serve'), { completed: 0, interrupt: false, ...(throttled ? { throttled: true } : {}) }), {
        waitMs: () => 25,
        guarded: (fn) => (calls.push('guarded'), fn()),
        reconfigure: (m) => calls.push(`reconfigure ${JSON.stringify(m)}`),
      });
      b.activate({ queues: [{}] } as unknown as ActiveDevice);
      b.processQueue(0);
      b.processQueue(0);
      expect(calls).toEqual(['serve', 'serve']);
      vi.advanceTimersByTime(24);
      expect(calls.length).toBe(2);
      throttled = false;
      vi.advanceTimersByTime(1);
      expect(calls).toEqual(['serve', 'serve', 'guarded', 'serve']);
      expect(vi.getTimerCount()).toBe(0);
      throttled = true;
      b.processQueue(0);
      b.reset();
      expect(vi.getTimerCount()).toBe(0);
      b.activate({ queues: [{}] } as unknown as ActiveDevice);
      calls.length = 0;
      throttled = false;
      b.reconfigure({ rate: null });
      expect(calls).toEqual(['reconfigure {"rate":null}', 'guarded', 'serve']);
      expect(() => new RequestQueueBackend('rng', () => undefined).reconfigure({})).toThrow(/takes no runtime reconfiguration/);
    } finally {
      vi.useRealTimers();
    }
  });

  it('an avail.idx too far ahead is fatal (the worker sets NEEDS_RESET)', () => {
    const t = setup({ size: 4 });
    t.mem.write16(AVAIL + 2, 100);
    let err: unknown;
    try {
      t.service();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VirtqueueError);
    expect((err as VirtqueueError).fatal).toBe(true);
  });

  it('does nothing when the transport refuses ring access (reset in progress)', () => {
    const t = setup();
    t.drv.publish(request(t, 0, VIRTIO_BLK_T_IN, 0, [{ addr: DATA, len: 512, write: true }]));
    expect(serviceQueue(t.q, t.dev, t.mem, DESC, () => undefined, () => undefined)).toBeUndefined();
    expect(status(t, 0)).toBe(0xee);
  });

  it('parseRequest splits header / data / status at any descriptor boundaries', () => {
    const t = setup();
    const hdr = t.drv.header(0, VIRTIO_BLK_T_IN, 7);
    t.drv.chain(0, [{ addr: hdr, len: 16 }, { addr: DATA, len: 600, write: true }, { addr: DATA + 1000, len: 425, write: true }]);
    t.drv.publish(0);
    const c = t.q.pop()!;
    const r = parseRequest(c);
    expect(r.header).toEqual({ type: VIRTIO_BLK_T_IN, sector: 7 });
    expect(r.dataInBytes).toBe(1024);
    expect(r.dataIn.map((s) => [s.gpa, s.length])).toEqual([
      [DATA, 600],
      [DATA + 1000, 424],
    ]);
    expect(r.status?.offset).toBe(DATA + 1000 + 424);
  });

  it('property: any descriptor table and avail ring → no exception but a fatal VirtqueueError, every chain completed once', () => {
    const descArb = fc.record({
      addr: fc.oneof(fc.constantFrom(HDR, STATUS, DATA, 0x80000 - 8, 0x100000 - 1, 0x100000), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
      len: fc.oneof(fc.constantFrom(0, 1, 15, 16, 17, 512, 513, 4096), fc.nat()),
      flags: fc.nat(7),
      next: fc.nat(20),
    });
    fc.assert(
      fc.property(
        fc.array(descArb, { minLength: 8, maxLength: 8 }),
        fc.array(fc.nat(9), { minLength: 1, maxLength: 12 }),
        fc.array(fc.nat(0xff), { minLength: 16, maxLength: 16 }),
        fc.boolean(),
        fc.boolean(),
        (descs, heads, header, indirect, ro) => {
          const t = setup({ size: 8, indirect, readOnly: ro });
          t.mem.writeBytes(HDR, Uint8Array.from(header));
          descs.forEach((d, i) => t.drv.writeDesc(DESC + 16 * i, d.addr, d.len, d.flags, d.next));
          t.drv.publish(...heads);
          let r;
          try {
            r = t.service();
          } catch (e) {
            expect(e).toBeInstanceOf(VirtqueueError);
            expect((e as VirtqueueError).fatal).toBe(true);
            return;
          }
          expect(r?.completed).toBe(heads.length);
          expect(t.drv.usedIdx()).toBe(heads.length);
          for (let k = 0; k < heads.length; k++) expect(t.drv.used(k).id).toBe(heads[k]);
          if (ro) expectSameBytes(t.backend.disk, new MemBackend(SECTORS).disk, 'read-only disk');
        },
      ),
      { numRuns: runs(300) },
    );
  });

  it('property: well-formed chains with arbitrary type, sector and length → the status and disk contents a model of the disk predicts', () => {
    const reqArb = fc.record({
      type: fc.oneof(fc.constantFrom(VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES), fc.nat(0xff)),
      sector: fc.oneof(fc.nat(SECTORS + 2), fc.constantFrom(SECTORS - 1, SECTORS, 2 ** 32, 2 ** 53 - 1)),
      // data lengths: whole sectors mostly, sometimes not a multiple of 512
      len: fc.oneof(fc.integer({ min: 0, max: 8 }).map((n) => n * 512), fc.integer({ min: 1, max: 4096 })),
      fill: fc.nat(0xff),
    });
    fc.assert(
      fc.property(fc.array(reqArb, { minLength: 1, maxLength: 4 }), fc.boolean(), (reqs, ro) => {
        const t = setup({ size: 16, readOnly: ro });
        const model = Uint8Array.from(t.backend.disk);
        const heads: number[] = [];
        const expected: Array<{ status: number; used: number; read?: Uint8Array }> = [];
        reqs.forEach((r, s) => {
          const dataAddr = DATA + s * 0x2000;
          const isWrite = r.type === VIRTIO_BLK_T_OUT;
          const data: Seg[] = r.len > 0 ? [{ addr: dataAddr, len: r.len, write: !isWrite }] : [];
          if (isWrite) t.mem.fill(dataAddr, r.len, r.fill);
          heads.push(request(t, s, r.type, r.sector, data));
          // The model: what a virtio-blk device must answer (virtio 1.2 §5.2.6).
          const end = r.sector * 512 + r.len;
          const inRange = r.len % 512 === 0 && end <= SECTORS * 512;
          if (r.type === VIRTIO_BLK_T_IN) {
            if (inRange) expected.push({ status: VIRTIO_BLK_S_OK, used: r.len + 1, read: model.slice(r.sector * 512, end) });
            else expected.push({ status: VIRTIO_BLK_S_IOERR, used: 1 });
          } else if (r.type === VIRTIO_BLK_T_OUT) {
            if (inRange && !ro) {
              model.fill(r.fill, r.sector * 512, end);
              expected.push({ status: VIRTIO_BLK_S_OK, used: 1 });
            } else expected.push({ status: VIRTIO_BLK_S_IOERR, used: 1 });
          } else if (r.type === VIRTIO_BLK_T_FLUSH) expected.push({ status: VIRTIO_BLK_S_OK, used: 1 });
          else if (r.type === VIRTIO_BLK_T_GET_ID) {
            // a short id buffer gets the serial's first bytes (the device fills what there is)
            const n = Math.min(20, r.len);
            expected.push({ status: VIRTIO_BLK_S_OK, used: n + 1, read: t.serial.subarray(0, n) });
          } else if ([VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES].includes(r.type)) {
            // here their data is device-writable, so there is no segment to read: IOERR, disk untouched
            // (read-only: IOERR too). Real segment payloads: the DISCARD/WRITE_ZEROES properties below.
            expected.push({ status: VIRTIO_BLK_S_IOERR, used: 1 });
          } else expected.push({ status: VIRTIO_BLK_S_UNSUPP, used: 1 });
        });
        t.drv.publish(...heads);
        t.service();
        expect(t.drv.usedIdx()).toBe(reqs.length);
        reqs.forEach((r, s) => {
          const e = expected[s];
          expect(status(t, s)).toBe(e.status);
          expect(t.drv.used(s)).toEqual({ id: heads[s], len: e.used });
          if (e.read && e.status === VIRTIO_BLK_S_OK) expectSameBytes(t.mem.readBytes(DATA + s * 0x2000, e.read.length), e.read, `request ${s} data`);
        });
        expectSameBytes(t.backend.disk, model, 'disk');
      }),
      { numRuns: runs(300) },
    );
  });
});

// ---- DISCARD / WRITE_ZEROES against a modelled disk ------------------------------------------------
//
// The rules (virtio 1.2 §5.2.6, and this device's documented choices):
//  - on a read-only disk (DISCARD/WRITE_ZEROES not offered) both are IOERR;
//  - the device-readable bytes after the header are struct virtio_blk_discard_write_zeroes
//    { le64 sector; le32 num_sectors; le32 flags }: none, a partial segment, or more than
//    max_discard_seg / max_write_zeroes_seg (16) segments → IOERR;
//  - every segment is checked before anything is done: a flag other than
//    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP in any segment, or the unmap flag on a DISCARD → UNSUPP (the
//    spec's MUSTs, "if any unknown flag is set": they win over a range error in another segment);
//    else num_sectors above max_discard_sectors / max_write_zeroes_sectors, or a range running past
//    the capacity → IOERR; a refused request changes no byte of the disk;
//  - otherwise every range reads back as zeroes afterwards (WRITE_ZEROES: whatever the unmap flag;
//    DISCARD: the backend punches holes, documented to read back as zeroes), num_sectors 0 is a
//    no-op, status OK, used length 1 (device-writable bytes before the status byte are ignored).

interface DwzOutcome {
  status: number;
  /** backend calls of an OK request, in order */
  calls: string[];
}

/** The model's answer for a DISCARD (zero = false) or WRITE_ZEROES payload, decoded with BigInts. */
function dwzModel(payload: Uint8Array, zero: boolean, readOnly: boolean, sectors: number, maxSectors: number, maxSeg: number): DwzOutcome {
  const IOERR = { status: VIRTIO_BLK_S_IOERR, calls: [] };
  if (readOnly) return IOERR;
  if (payload.length === 0 || payload.length % 16 !== 0 || payload.length / 16 > maxSeg) return IOERR;
  const segs: Array<{ sector: bigint; num: number; flags: number }> = [];
  for (let off = 0; off < payload.length; off += 16) {
    let sector = 0n;
    for (let i = 7; i >= 0; i--) sector = (sector << 8n) | BigInt(payload[off + i]);
    const num = payload[off + 8] + payload[off + 9] * 2 ** 8 + payload[off + 10] * 2 ** 16 + payload[off + 11] * 2 ** 24;
    const flags = payload[off + 12] + payload[off + 13] * 2 ** 8 + payload[off + 14] * 2 ** 16 + payload[off + 15] * 2 ** 24;
    segs.push({ sector, num, flags });
  }
  if (segs.some((g) => g.flags > 1 || (!zero && g.flags !== 0))) return { status: VIRTIO_BLK_S_UNSUPP, calls: [] };
  if (segs.some((g) => g.num > maxSectors || g.sector + BigInt(g.num) > BigInt(sectors))) return IOERR;
  const calls = segs
    .filter((g) => g.num > 0)
    .map((g) => (zero ? `zero ${Number(g.sector) * 512} ${g.num * 512} ${g.flags === 1}` : `discard ${Number(g.sector) * 512} ${g.num * 512}`));
  return { status: VIRTIO_BLK_S_OK, calls };
}

function encodeSegments(segs: Array<{ sector: bigint; num: number; flags: number }>): Uint8Array {
  const b = new Uint8Array(16 * segs.length);
  const v = new DataView(b.buffer);
  segs.forEach((g, i) => {
    v.setBigUint64(16 * i, g.sector, true);
    v.setUint32(16 * i + 8, g.num, true);
    v.setUint32(16 * i + 12, g.flags, true);
  });
  return b;
}

describe('virtio-blk DISCARD / WRITE_ZEROES (property)', () => {
  const segArb = fc.record({
    sector: fc.oneof(
      { weight: 6, arbitrary: fc.nat(SECTORS + 4).map(BigInt) },
      { weight: 1, arbitrary: fc.constantFrom(BigInt(SECTORS - 1), BigInt(SECTORS), 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n) },
    ),
    num: fc.oneof({ weight: 6, arbitrary: fc.nat(12) }, { weight: 1, arbitrary: fc.constantFrom(0, SECTORS, 0x200000, 0x200001, 0xffffffff) }),
    flags: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(0, 1) }, { weight: 1, arbitrary: fc.oneof(fc.constantFrom(2, 3, 0x80000000, 0xffffffff), fc.nat({ max: 0xffffffff })) }),
  });
  /** Structured segments (mostly), sometimes with a partial segment after them, or raw bytes. */
  const payloadArb = fc.oneof(
    { weight: 6, arbitrary: fc.array(segArb, { minLength: 1, maxLength: 4 }).map(encodeSegments) },
    { weight: 1, arbitrary: fc.array(segArb, { minLength: 15, maxLength: 18 }).map(encodeSegments) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.array(segArb, { maxLength: 3 }), fc.uint8Array({ minLength: 1, maxLength: 15 }))
        .map(([segs, tail]) => Uint8Array.from([...encodeSegments(segs), ...tail])),
    },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 18 * 16 + 15 }) },
  );

  it('status, backend calls, stats and disk contents are what the model predicts; refused requests change nothing', () => {
    const reached = new Map<string, number>();
    fc.assert(
      fc.property(
        fc.boolean(),
        payloadArb,
        fc.array(fc.nat(18 * 16 + 15), { maxLength: 4 }),
        fc.nat(600),
        fc.constantFrom(false, false, false, true),
        (zero, payload, cuts, extraWritable, readOnly) => {
          const t = setup({ size: 16, readOnly });
          const model = Uint8Array.from(t.backend.disk);
          // The payload in pieces at arbitrary cut points, each piece in its own buffer.
          const points = [...new Set(cuts.filter((c) => c > 0 && c < payload.length))].sort((a, b) => a - b);
          const bounds = [0, ...points, payload.length];
          const data: Seg[] = [];
          for (let k = 0; k + 1 < bounds.length; k++) {
            const piece = payload.subarray(bounds[k], bounds[k + 1]);
            if (piece.length === 0) continue;
            const gpa = DATA + k * 0x400;
            t.mem.writeBytes(gpa, piece);
            data.push({ addr: gpa, len: piece.length });
          }
          if (extraWritable > 0) data.push({ addr: DATA + 0x4000, len: extraWritable, write: true });
          const type = zero ? VIRTIO_BLK_T_WRITE_ZEROES : VIRTIO_BLK_T_DISCARD;
          t.drv.publish(request(t, 0, type, 0, data));
          t.service();

          const want = dwzModel(payload, zero, readOnly, SECTORS, zero ? BLK_MAX_WRITE_ZEROES_SECTORS : BLK_MAX_DISCARD_SECTORS, zero ? BLK_MAX_WRITE_ZEROES_SEG : BLK_MAX_DISCARD_SEG);
          const key = `${zero ? 'wz' : 'discard'} ${want.status}${want.calls.length ? ' with ranges' : ''}`;
          reached.set(key, (reached.get(key) ?? 0) + 1);
          expect(status(t, 0)).toBe(want.status);
          expect(t.drv.used(0)).toEqual({ id: 0, len: 1 });
          expect(t.backend.log).toEqual(want.calls);
          for (const c of want.calls) {
            const [, pos, len] = c.split(' ').map(Number);
            model.fill(0, pos, pos + len);
          }
          expectSameBytes(t.backend.disk, model, 'disk');
          expect(readBlockStats(t.stats)).toMatchObject({
            requests: 1,
            discards: !zero && want.status === VIRTIO_BLK_S_OK ? 1 : 0,
            writeZeroes: zero && want.status === VIRTIO_BLK_S_OK ? 1 : 0,
            errors: want.status === VIRTIO_BLK_S_IOERR ? 1 : 0,
            unsupported: want.status === VIRTIO_BLK_S_UNSUPP ? 1 : 0,
          });
        },
      ),
      { numRuns: runs(400) },
    );
    // Every outcome of both commands was reached.
    for (const k of ['wz 0 with ranges', 'wz 1', 'wz 2', 'discard 0 with ranges', 'discard 1', 'discard 2']) expect([k, reached.get(k) ?? 0]).not.toEqual([k, 0]);
  });

  it('the sector limits: max_discard_sectors / max_write_zeroes_sectors accepted, one more refused (on a 3 GiB disk)', () => {
    const sectors = 3 * 0x200000;
    const calls: string[] = [];
    const backend: BlockBackend = {
      readv: () => 0,
      writev: () => 0,
      flush: () => undefined,
      discard: (pos, len) => void calls.push(`discard ${pos} ${len}`),
      writeZeroes: (pos, len, unmap) => void calls.push(`zero ${pos} ${len} ${unmap}`),
    };
    const stats = createBlockStats();
    const dev = new BlockDevice({ sectors, readOnly: false, serial: blockSerial('/x', 1) }, backend, stats);
    const mem = new GuestMemory([{ slot: 0, gpa: 0, size: 0x10000, buffer: new SharedArrayBuffer(0x10000) }]);
    const run = (type: number, segs: Array<{ sector: bigint; num: number; flags: number }>): number => {
      const payload = encodeSegments(segs);
      mem.write32(0, type);
      mem.write32(4, 0);
      mem.write64(8, 0n);
      mem.writeBytes(0x100, payload);
      const chain: DescriptorChain = {
        head: 0,
        readable: [...mem.segments(0, 16), ...mem.segments(0x100, payload.length)],
        writable: mem.segments(0x1000, 1),
        readableBytes: 16 + payload.length,
        writableBytes: 1,
      };
      const req = parseRequest(chain);
      return dev.execute(req).status;
    };
    for (const [type, max] of [
      [VIRTIO_BLK_T_DISCARD, BLK_MAX_DISCARD_SECTORS],
      [VIRTIO_BLK_T_WRITE_ZEROES, BLK_MAX_WRITE_ZEROES_SECTORS],
    ] as const) {
      calls.length = 0;
      expect(run(type, [{ sector: 8n, num: max, flags: 0 }])).toBe(VIRTIO_BLK_S_OK);
      expect(calls).toHaveLength(1);
      expect(run(type, [{ sector: 8n, num: max + 1, flags: 0 }])).toBe(VIRTIO_BLK_S_IOERR);
      // a later segment over the limit refuses the whole request: the first range is not done either
      expect(run(type, [{ sector: 0n, num: 8, flags: 0 }, { sector: 8n, num: max + 1, flags: 0 }])).toBe(VIRTIO_BLK_S_IOERR);
      expect(calls).toHaveLength(1);
    }
  });
});

describe('FileBackend', () => {
  function fakeAddon(file: Uint8Array, opts: { maxPerCall?: number; iovMax?: number; fallocate?: 'ok' | 'EOPNOTSUPP' } = {}) {
    const calls: string[] = [];
    const addon: FileBackendAddon = {
      constants: { IOV_MAX: opts.iovMax ?? 1024, FALLOC_FL_KEEP_SIZE: 1, FALLOC_FL_PUNCH_HOLE: 2, FALLOC_FL_ZERO_RANGE: 16 },
      preadvPacked(_fd, bufs, packed, count, position) {
      const iov = unpackIov(bufs, packed, count);
        calls.push(`preadv ${iov.length}@${position}`);
        let p = Number(position);
        let n = 0;
        for (const [buf, off, len] of iov) {
          const k = Math.max(0, Math.min(len, file.length - p, (opts.maxPerCall ?? Infinity) - n));
          new Uint8Array(buf, off, k).set(file.subarray(p, p + k));
          p += k;
          n += k;
          if (k < len) break;
        }
        return n;
      },
      pwritevPacked(_fd, bufs, packed, count, position) {
      const iov = unpackIov(bufs, packed, count);
        calls.push(`pwritev ${iov.length}@${position}`);
        let p = Number(position);
        let n = 0;
        for (const [buf, off, len] of iov) {
          const k = Math.min(len, (opts.maxPerCall ?? Infinity) - n);
          file.set(new Uint8Array(buf, off, k), p);
          p += k;
          n += k;
          if (k < len) break;
        }
        return n;
      },
      fdatasync() {
        calls.push('fdatasync');
      },
      fallocate(_fd, mode, offset, len) {
        calls.push(`fallocate ${mode} ${offset} ${len}`);
        if (opts.fallocate === 'EOPNOTSUPP') throw Object.assign(new Error('fallocate failed (EOPNOTSUPP)'), { code: 'EOPNOTSUPP' });
        file.fill(0, Number(offset), Number(offset + len));
      },
    };
    return { addon, calls };
  }
  const segsOf = (buf: SharedArrayBuffer, lens: number[]): MemorySegment[] => {
    let off = 0;
    return lens.map((length) => {
      const s = { buffer: buf, offset: off, length, gpa: off };
      off += length;
      return s;
    });
  };

  it('resumes short transfers and splits at IOV_MAX', () => {
    const file = Uint8Array.from({ length: 8192 }, (_, i) => i & 0xff);
    const { addon, calls } = fakeAddon(file, { maxPerCall: 700, iovMax: 3 });
    const b = new FileBackend(addon, 3);
    const ram = new SharedArrayBuffer(4096);
    expect(b.readv(segsOf(ram, [512, 512, 512, 512, 1024]), 3072, 1024)).toBe(3072);
    expect(new Uint8Array(ram, 0, 3072)).toEqual(file.subarray(1024, 4096));
    expect(calls.every((c) => Number(c.split(' ')[1].split('@')[0]) <= 3)).toBe(true);
    new Uint8Array(ram).fill(7);
    expect(b.writev(segsOf(ram, [100, 2000, 948]), 3048, 0)).toBe(3048);
    expect([...new Set(file.subarray(0, 3048))]).toEqual([7]);
    // EOF: a short read that cannot continue returns what it got
    expect(b.readv(segsOf(ram, [4096]), 4096, 8192 - 512)).toBe(512);
  });

  it('fallocate for discard / write zeroes, zeroes written when unsupported', () => {
    const file = new Uint8Array(1 << 21).fill(9);
    const ok = fakeAddon(file);
    new FileBackend(ok.addon, 3).discard(512, 1024);
    new FileBackend(ok.addon, 3).writeZeroes(4096, 512, false);
    expect(ok.calls).toEqual(['fallocate 3 512 1024', 'fallocate 17 4096 512']);
    const no = fakeAddon(file, { fallocate: 'EOPNOTSUPP' });
    new FileBackend(no.addon, 3).writeZeroes(8192, (1 << 20) + 512, true);
    expect(no.calls[0]).toBe('fallocate 3 8192 1049088');
    expect(no.calls.slice(1)).toEqual(['pwritev 1@8192', `pwritev 1@${8192 + (1 << 20)}`]);
    expect([...new Set(file.subarray(8192, 8192 + (1 << 20) + 512))]).toEqual([0]);
    expect(file[8191]).toBe(9);
  });
});
