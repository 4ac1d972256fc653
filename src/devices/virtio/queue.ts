// Split virtqueue, device side (virtio 1.2 §2.7). The driver's rings live in guest RAM and are read
// and written only through GuestMemory (bounds-checked); every guest-controlled value is validated.
//
// Layout (queue size n):
//   descriptor table  16 * n bytes, 16-aligned: { addr u64, len u32, flags u16, next u16 }
//   driver (avail)    6 + 2 * n,     2-aligned: { flags u16, idx u16, ring[n] u16, used_event u16 }
//   device (used)     6 + 8 * n,     4-aligned: { flags u16, idx u16, ring[n] {id u32, len u32}, avail_event u16 }
//
// Memory ordering. The driver writes ring entries before it publishes avail.idx, and reads used
// entries after it sees used.idx. Here avail.idx, used.idx and the notification-suppression words
// are accessed with Atomics on a Uint16Array over the slot's SharedArrayBuffer: Atomics.load orders
// the later plain reads of ring entries and descriptors after it (acquire), Atomics.store orders the
// earlier plain writes of used elements before it (release) and, being sequentially consistent (a
// locked instruction on x86), also orders it before the following load of used_event/avail.flags,
// which is the store→load barrier vring_need_event needs. (Little-endian host assumed: x86-64 only.)
// If a ring is split across slots or sits at an odd slot offset (never for page-aligned slots), the
// same words are accessed with plain reads bracketed by a full fence on a private SAB word.
//
// Errors. pop() throws only VirtqueueError (GuestMemoryError from ring access is wrapped). Each has
// `fatal`: a fatal error breaks the queue (every later pop() throws it again) and the device should
// set DEVICE_NEEDS_RESET; a per-chain error consumed one available entry whose head is in
// `error.head`, so the device can complete it (pushUsed(head, 0), or with an error status where the
// device protocol allows one) and carry on.
//
//   per-chain: 'loop', 'chain-too-long', 'out-of-range' (a buffer or indirect table not in RAM),
//              'bad-index' (a next index ≥ queue size / indirect table size), 'bad-indirect',
//              'order', 'length-overflow'
//   fatal:     'avail-overrun', 'bad-index' with a head ≥ queue size (no valid id to complete),
//              'out-of-range' while accessing the rings themselves (cannot happen after the
//              construction checks), 'invalid-config' (constructor only)
//
// Bounds. One pop() reads at most n descriptors of a direct chain; with an indirect table at most
// n + 1 descriptors in all (buffer descriptors — direct and indirect together — are limited to n,
// per "a driver MUST NOT create a descriptor chain longer than the Queue Size of the device"; the
// indirect pointer itself is not counted). Loops are detected exactly with generation stamps.

import { GuestMemoryError, type GuestMemory, type MemorySegment } from '../../memory/guest-memory.js';
import {
  VIRTQ_AVAIL_ALIGN,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_ALIGN,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  VIRTQ_MAX_SIZE,
  VIRTQ_USED_ALIGN,
  VIRTQ_USED_ELEM_SIZE,
  VIRTQ_USED_F_NO_NOTIFY,
} from './constants.js';

export type VirtqueueErrorKind =
  | 'loop'
  | 'chain-too-long'
  | 'out-of-range'
  | 'bad-index'
  | 'bad-indirect'
  | 'order'
  | 'avail-overrun'
  | 'length-overflow'
  | 'invalid-config';

export class VirtqueueError extends Error {
  readonly kind: VirtqueueErrorKind;
  /** The queue is unusable until the device is reset (set DEVICE_NEEDS_RESET). */
  readonly fatal: boolean;
  /** Head of the consumed chain, for per-chain errors (complete it with pushUsed). */
  readonly head: number | undefined;
  constructor(kind: VirtqueueErrorKind, message: string, fatal: boolean, head?: number) {
    super(message);
    this.name = 'VirtqueueError';
    this.kind = kind;
    this.fatal = fatal;
    this.head = head;
  }
}

export interface DescriptorChain {
  /** Descriptor index to hand back to pushUsed. */
  head: number;
  /** Device-readable buffers in chain order, split at RAM slot boundaries. */
  readable: MemorySegment[];
  /** Device-writable buffers in chain order, split at RAM slot boundaries. */
  writable: MemorySegment[];
  readableBytes: number;
  writableBytes: number;
}

export interface SplitQueueConfig {
  /** Queue size (QueueNum): a power of two, 1..32768. */
  size: number;
  descAddr: number;
  /** Driver area = available ring. */
  driverAddr: number;
  /** Device area = used ring. */
  deviceAddr: number;
  /** VIRTIO_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** Resume state (e.g. after a snapshot); both default to 0, as for a freshly enabled queue. */
  lastAvailIdx?: number;
  usedIdx?: number;
}

const fenceWord = new Int32Array(new SharedArrayBuffer(4));
/** Full (sequentially consistent) fence for the rare non-Atomics path. */
function fullFence(): void {
  Atomics.exchange(fenceWord, 0, 0);
}

/**
 * A guest-RAM range validated once. Fast path: one DataView (and, if 2-aligned in its buffer, one
 * Uint16Array for Atomics) when the range lies in one slot; otherwise byte copies through GuestMemory.
 */
class Region {
  private readonly mem: GuestMemory;
  private readonly gpa: number;
  private readonly dv: DataView | undefined;
  private readonly u16: Uint16Array | undefined;

  constructor(mem: GuestMemory, gpa: number, length: number) {
    const segs = mem.segments(gpa, length); // throws GuestMemoryError outside RAM
    this.mem = mem;
    this.gpa = gpa;
    if (segs.length === 1) {
      const s = segs[0];
      this.dv = new DataView(s.buffer, s.offset, length);
      this.u16 = s.offset % 2 === 0 ? new Uint16Array(s.buffer, s.offset, length >>> 1) : undefined;
    }
  }

  get16(off: number): number {
    if (this.dv) return this.dv.getUint16(off, true);
    const b = this.mem.readBytes(this.gpa + off, 2);
    return b[0] | (b[1] << 8);
  }
  get32(off: number): number {
    if (this.dv) return this.dv.getUint32(off, true);
    const b = this.mem.readBytes(this.gpa + off, 4);
    return (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
  }
  set32(off: number, v: number): void {
    if (this.dv) {
      this.dv.setUint32(off, v, true);
      return;
    }
    this.mem.writeBytes(this.gpa + off, new Uint8Array([v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff]));
  }
  /** Atomic (acquire, seq-cst) 16-bit load; `off` must be even. */
  load16(off: number): number {
    if (this.u16) return Atomics.load(this.u16, off >>> 1);
    fullFence();
    const v = this.get16(off);
    fullFence();
    return v;
  }
  /** Atomic (release, seq-cst) 16-bit store; `off` must be even. */
  store16(off: number, v: number): void {
    if (this.u16) {
      Atomics.store(this.u16, off >>> 1, v);
      return;
    }
    fullFence();
    if (this.dv) this.dv.setUint16(off, v, true);
    else this.mem.writeBytes(this.gpa + off, new Uint8Array([v & 0xff, (v >>> 8) & 0xff]));
    fullFence();
  }
}

/** A per-chain error: the chain is consumed and is to be completed by its head. */
function chainError(head: number, kind: VirtqueueErrorKind, msg: string): VirtqueueError {
  return new VirtqueueError(kind, `chain ${head}: ${msg}`, false, head);
}

const U32_MAX = 0xffffffff;
/** High word limit for a descriptor address to stay a safe integer (< 2^53). */
const ADDR_HI_LIMIT = 0x200000;

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

export class SplitQueue {
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  private readonly mem: GuestMemory;
  private readonly mask: number;
  private readonly desc: Region;
  private readonly avail: Region;
  private readonly used: Region;
  private readonly usedEventOff: number;
  private readonly availEventOff: number;

  private lastAvail: number;
  private nextUsed: number;
  private signalledUsed: number;
  private fatalError: VirtqueueError | undefined;
  /** What this queue last stored in used.flags (only the device writes it); -1: not stored yet. */
  private usedFlags = -1;
  private visited = 0;

  // Loop detection: stamps[i] === gen means descriptor i was visited during the current pop().
  private gen = 0;
  private readonly stamps: Uint32Array;
  private indirectStamps = new Uint32Array(0);

  // Scratch for the descriptor being decoded.
  private dLo = 0;
  private dHi = 0;
  private dLen = 0;
  private dFlags = 0;
  private dNext = 0;
  // Scratch for the chain being walked: buffer descriptors so far (direct + indirect), and whether a
  // device-writable one was seen (even a zero-length one).
  private bCount = 0;
  private bSawWritable = false;

  constructor(mem: GuestMemory, cfg: SplitQueueConfig) {
    const { size, descAddr, driverAddr, deviceAddr } = cfg;
    const bad = (msg: string): VirtqueueError => new VirtqueueError('invalid-config', msg, true);
    if (!isPow2(size) || size > VIRTQ_MAX_SIZE) throw bad(`queue size ${size} is not a power of two in 1..${VIRTQ_MAX_SIZE}`);
    const check = (name: string, addr: number, align: number): void => {
      if (!Number.isSafeInteger(addr) || addr < 0) throw bad(`${name} address ${addr} is not a guest-physical address`);
      if (addr % align !== 0) throw bad(`${name} address 0x${addr.toString(16)} is not ${align}-byte aligned`);
    };
    check('descriptor table', descAddr, VIRTQ_DESC_ALIGN);
    check('driver area', driverAddr, VIRTQ_AVAIL_ALIGN);
    check('device area', deviceAddr, VIRTQ_USED_ALIGN);
    for (const [name, v] of [
      ['lastAvailIdx', cfg.lastAvailIdx],
      ['usedIdx', cfg.usedIdx],
    ] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 0xffff)) throw bad(`${name} ${v} is not a 16-bit index`);
    }
    const region = (name: string, gpa: number, len: number): Region => {
      try {
        return new Region(mem, gpa, len);
      } catch (e) {
        if (e instanceof GuestMemoryError) throw bad(`${name} 0x${gpa.toString(16)}+0x${len.toString(16)} is not inside guest RAM`);
        throw e;
      }
    };
    this.desc = region('descriptor table', descAddr, VIRTQ_DESC_SIZE * size);
    this.avail = region('driver area', driverAddr, 6 + 2 * size);
    this.used = region('device area', deviceAddr, 6 + VIRTQ_USED_ELEM_SIZE * size);
    this.mem = mem;
    this.size = size;
    this.mask = size - 1;
    this.eventIdx = cfg.eventIdx;
    this.indirect = cfg.indirect;
    this.usedEventOff = 4 + 2 * size;
    this.availEventOff = 4 + VIRTQ_USED_ELEM_SIZE * size;
    this.lastAvail = cfg.lastAvailIdx ?? 0;
    this.nextUsed = cfg.usedIdx ?? 0;
    this.signalledUsed = this.nextUsed;
    this.stamps = new Uint32Array(size);
  }

  /** Index of the next available entry the device will consume (last_avail_idx). */
  get lastAvailIdx(): number {
    return this.lastAvail;
  }
  /** The device's used.idx (next used slot, mod 2^16). */
  get usedIdx(): number {
    return this.nextUsed;
  }
  /** Descriptors read by the last pop() (instrumentation; ≤ size + 1). */
  get lastPopVisited(): number {
    return this.visited;
  }
  /** The fatal error that broke this queue, if any. */
  get broken(): VirtqueueError | undefined {
    return this.fatalError;
  }

  /** Whether avail.idx differs from last_avail_idx (an acquire load). */
  hasAvailable(): boolean {
    return this.avail.load16(2) !== this.lastAvail;
  }

  /**
   * Take the next available descriptor chain, or undefined if there is none. Throws VirtqueueError
   * (see the header for per-chain vs fatal kinds).
   */
  pop(): DescriptorChain | undefined {
    this.visited = 0;
    if (this.fatalError) throw this.fatalError;
    let head: number | undefined;
    try {
      const availIdx = this.avail.load16(2);
      const pending = (availIdx - this.lastAvail) & 0xffff;
      if (pending === 0) return undefined;
      if (pending > this.size) {
        throw this.fatal('avail-overrun', `avail.idx ${availIdx} is ${pending} entries ahead of last_avail_idx ${this.lastAvail} (queue size ${this.size})`);
      }
      head = this.avail.get16(4 + 2 * (this.lastAvail & this.mask));
      this.lastAvail = (this.lastAvail + 1) & 0xffff;
      if (head >= this.size) throw this.fatal('bad-index', `available ring entry ${head} ≥ queue size ${this.size}`);
      return this.walk(head);
    } catch (e) {
      if (e instanceof VirtqueueError) throw e;
      if (e instanceof GuestMemoryError) throw this.fatal('out-of-range', `ring access outside guest RAM: ${e.message}`);
      throw e;
    }
  }

  /** Publish a used element: write it, then (release) store the new used.idx. */
  pushUsed(head: number, len: number): void {
    if (!Number.isInteger(head) || head < 0 || head >= this.size) throw new RangeError(`pushUsed: head ${head} out of range`);
    if (!Number.isInteger(len) || len < 0 || len > U32_MAX) throw new RangeError(`pushUsed: len ${len} is not a u32`);
    const off = 4 + VIRTQ_USED_ELEM_SIZE * (this.nextUsed & this.mask);
    this.used.set32(off, head);
    this.used.set32(off + 4, len);
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    this.used.store16(2, this.nextUsed);
  }

  /**
   * Whether the driver wants a used-buffer notification for what was pushed since the last call
   * (each call consumes the "since"). With VIRTIO_F_EVENT_IDX: vring_need_event(used_event,
   * new, old). Without: something was pushed and avail.flags lacks VIRTQ_AVAIL_F_NO_INTERRUPT.
   */
  needsInterrupt(): boolean {
    fullFence(); // the used.idx store must be visible before used_event / avail.flags is read
    const now = this.nextUsed;
    const old = this.signalledUsed;
    this.signalledUsed = now;
    if (this.eventIdx) {
      const usedEvent = this.avail.load16(this.usedEventOff);
      return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    if (now === old) return false;
    return (this.avail.load16(0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** With event idx: avail_event = last_avail_idx ("notify me once you add past what I have seen"). */
  setAvailEvent(): void {
    this.used.store16(this.availEventOff, this.lastAvail);
  }

  /**
   * Ask the driver not to notify (used.flags = VIRTQ_USED_F_NO_NOTIFY). With event idx this is a
   * no-op: avail_event stays behind, so the driver does not notify again until enableNotification().
   */
  disableNotification(): void {
    // Stored only when it changes: used.flags shares a cache line with used.idx, which a polling
    // driver reads in a loop, and a store per chain would pull that line away from it every time.
    if (!this.eventIdx && this.usedFlags !== VIRTQ_USED_F_NO_NOTIFY) {
      this.usedFlags = VIRTQ_USED_F_NO_NOTIFY;
      this.used.store16(0, VIRTQ_USED_F_NO_NOTIFY);
    }
  }

  /**
   * Re-enable driver notifications, then re-check: returns true if chains became available meanwhile
   * (the caller must keep processing — a notification for them may already have been suppressed).
   * Usage: do { q.disableNotification(); while ((c = q.pop())) …; } while (q.enableNotification());
   */
  enableNotification(): boolean {
    if (this.eventIdx) this.setAvailEvent();
    else {
      this.usedFlags = 0;
      this.used.store16(0, 0);
    }
    fullFence();
    return this.hasAvailable();
  }

  // ---- internals ------------------------------------------------------------------------------

  private fatal(kind: VirtqueueErrorKind, msg: string): VirtqueueError {
    this.fatalError = new VirtqueueError(kind, msg, true);
    return this.fatalError;
  }

  private nextGen(): number {
    this.gen = (this.gen + 1) >>> 0;
    if (this.gen === 0) {
      this.stamps.fill(0);
      this.indirectStamps.fill(0);
      this.gen = 1;
    }
    return this.gen;
  }

  private walk(head: number): DescriptorChain {
    // The chain is built in place (one object and two arrays per chain); the walk's own state is in
    // the scratch fields bCount / bSawWritable.
    const b: DescriptorChain = { head, readable: [], writable: [], readableBytes: 0, writableBytes: 0 };
    this.bCount = 0;
    this.bSawWritable = false;
    // No closure per chain (this runs once per request or frame): errors come from chainError.
    const gen = this.nextGen();
    let i = head;
    for (;;) {
      if (this.stamps[i] === gen) throw chainError(head, 'loop', `descriptor ${i} visited twice`);
      this.stamps[i] = gen;
      this.visited++;
      const o = VIRTQ_DESC_SIZE * i;
      this.dLo = this.desc.get32(o);
      this.dHi = this.desc.get32(o + 4);
      this.dLen = this.desc.get32(o + 8);
      this.dFlags = this.desc.get16(o + 12);
      this.dNext = this.desc.get16(o + 14);
      if (this.dFlags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) throw chainError(head, 'bad-indirect', `descriptor ${i}: INDIRECT without VIRTIO_F_INDIRECT_DESC`);
        if (this.dFlags & VIRTQ_DESC_F_NEXT) throw chainError(head, 'bad-indirect', `descriptor ${i}: INDIRECT together with NEXT`);
        if (this.dLen === 0 || this.dLen % VIRTQ_DESC_SIZE !== 0) {
          throw chainError(head, 'bad-indirect', `descriptor ${i}: indirect table length ${this.dLen} is not a non-zero multiple of 16`);
        }
        this.walkIndirect(b);
        break;
      }
      this.addBuffer(b);
      if (!(this.dFlags & VIRTQ_DESC_F_NEXT)) break;
      if (this.dNext >= this.size) throw chainError(head, 'bad-index', `descriptor ${i}: next ${this.dNext} ≥ queue size ${this.size}`);
      i = this.dNext;
    }
    return b;
  }

  /** Walk the indirect table described by the scratch descriptor (already length-checked). */
  private walkIndirect(b: DescriptorChain): void {
    const lo = this.dLo;
    const hi = this.dHi;
    const len = this.dLen;
    if (hi >= ADDR_HI_LIMIT) throw chainError(b.head, 'out-of-range', `indirect table at 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is outside guest RAM`);
    const table = hi * 2 ** 32 + lo;
    if (!this.mem.isRam(table, len)) throw chainError(b.head, 'out-of-range', `indirect table 0x${table.toString(16)}+0x${len.toString(16)} is outside guest RAM`);
    const n = len / VIRTQ_DESC_SIZE;
    // `next` is 16-bit, so only entries 0..65535 are reachable.
    const reachable = Math.min(n, 0x10000);
    if (this.indirectStamps.length < reachable) {
      let cap = Math.max(16, this.indirectStamps.length);
      while (cap < reachable) cap *= 2;
      this.indirectStamps = new Uint32Array(cap);
    }
    const stamps = this.indirectStamps;
    const gen = this.gen;
    let j = 0;
    for (;;) {
      if (j >= n) throw chainError(b.head, 'bad-index', `indirect next ${j} ≥ table size ${n}`);
      if (stamps[j] === gen) throw chainError(b.head, 'loop', `indirect descriptor ${j} visited twice`);
      if (this.bCount >= this.size) throw chainError(b.head, 'chain-too-long', `more than ${this.size} descriptors`);
      stamps[j] = gen;
      this.visited++;
      this.readDescAt(table + VIRTQ_DESC_SIZE * j);
      if (this.dFlags & VIRTQ_DESC_F_INDIRECT) throw chainError(b.head, 'bad-indirect', `indirect descriptor ${j}: nested INDIRECT`);
      this.addBuffer(b);
      if (!(this.dFlags & VIRTQ_DESC_F_NEXT)) return;
      j = this.dNext;
    }
  }

  /** Decode one descriptor at a validated guest address into the scratch fields. */
  private readDescAt(gpa: number): void {
    let raw: Uint8Array | undefined;
    try {
      this.dLo = this.mem.read32(gpa);
      this.dHi = this.mem.read32(gpa + 4);
      this.dLen = this.mem.read32(gpa + 8);
      this.dFlags = this.mem.read16(gpa + 12);
      this.dNext = this.mem.read16(gpa + 14);
      return;
    } catch (e) {
      if (!(e instanceof GuestMemoryError)) throw e;
      raw = this.mem.readBytes(gpa, VIRTQ_DESC_SIZE); // straddles a slot boundary
    }
    const v = new DataView(raw.buffer, raw.byteOffset, VIRTQ_DESC_SIZE);
    this.dLo = v.getUint32(0, true);
    this.dHi = v.getUint32(4, true);
    this.dLen = v.getUint32(8, true);
    this.dFlags = v.getUint16(12, true);
    this.dNext = v.getUint16(14, true);
  }

  /** Append the scratch descriptor's buffer to the chain. */
  private addBuffer(b: DescriptorChain): void {
    if (++this.bCount > this.size) throw chainError(b.head, 'chain-too-long', `more than ${this.size} descriptors`);
    const writable = (this.dFlags & VIRTQ_DESC_F_WRITE) !== 0;
    if (!writable && this.bSawWritable) throw chainError(b.head, 'order', 'device-readable descriptor after a device-writable one');
    const len = this.dLen;
    if (b.readableBytes + b.writableBytes + len > U32_MAX) throw chainError(b.head, 'length-overflow', 'chain longer than 2^32-1 bytes');
    if (this.dHi >= ADDR_HI_LIMIT) {
      throw chainError(b.head, 'out-of-range', `buffer 0x${this.dHi.toString(16)}${this.dLo.toString(16).padStart(8, '0')}+0x${len.toString(16)} is outside guest RAM`);
    }
    const addr = this.dHi * 2 ** 32 + this.dLo;
    try {
      this.mem.appendSegments(addr, len, writable ? b.writable : b.readable);
    } catch (e) {
      if (e instanceof GuestMemoryError) throw chainError(b.head, 'out-of-range', `buffer 0x${addr.toString(16)}+0x${len.toString(16)} is outside guest RAM`);
      throw e;
    }
    if (writable) {
      b.writableBytes += len;
      this.bSawWritable = true;
    } else {
      b.readableBytes += len;
    }
  }
}
