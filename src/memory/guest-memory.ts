// The only path to guest RAM. Guest RAM is one external SharedArrayBuffer per KVM memory slot
// (created by the addon over an mmap), shared by every worker. Every access is bounds-checked
// against the slots; nothing here can read or write outside them.

export interface SlotDescriptor {
  slot: number;
  gpa: number;
  size: number;
  buffer: SharedArrayBuffer;
}

/** A piece of a guest-physical range that lies inside one slot. */
export interface MemorySegment {
  buffer: SharedArrayBuffer;
  /** byte offset inside buffer */
  offset: number;
  length: number;
  gpa: number;
}

export class GuestMemoryError extends Error {
  readonly gpa: number;
  readonly length: number;
  constructor(message: string, gpa: number, length: number) {
    super(message);
    this.name = 'GuestMemoryError';
    this.gpa = gpa;
    this.length = length;
  }
}

interface Slot extends SlotDescriptor {
  end: number;
  bytes: Uint8Array;
  view: DataView;
}

function hex(n: number): string {
  return '0x' + n.toString(16);
}

export class GuestMemory {
  private readonly slots: Slot[];
  /** Total bytes of RAM. */
  readonly size: number;

  constructor(descriptors: readonly SlotDescriptor[]) {
    const sorted = [...descriptors].sort((a, b) => a.gpa - b.gpa);
    this.slots = sorted.map((d) => {
      if (d.buffer.byteLength < d.size) throw new RangeError(`slot ${d.slot}: buffer smaller than slot`);
      return { ...d, end: d.gpa + d.size, bytes: new Uint8Array(d.buffer, 0, d.size), view: new DataView(d.buffer, 0, d.size) };
    });
    for (let i = 1; i < this.slots.length; i++) {
      if (this.slots[i].gpa < this.slots[i - 1].end) throw new RangeError('overlapping memory slots');
    }
    this.size = this.slots.reduce((a, s) => a + s.size, 0);
  }

  /** What to postMessage to a worker so it can build its own GuestMemory over the same RAM. */
  descriptors(): SlotDescriptor[] {
    return this.slots.map(({ slot, gpa, size, buffer }) => ({ slot, gpa, size, buffer }));
  }

  /** Highest guest-physical address + 1. */
  get end(): number {
    return this.slots.length ? this.slots[this.slots.length - 1].end : 0;
  }

  private findSlot(gpa: number): Slot | undefined {
    // Few slots (≤ a handful): linear scan beats a binary search here.
    for (const s of this.slots) if (gpa >= s.gpa && gpa < s.end) return s;
    return undefined;
  }

  private check(gpa: number, length: number): void {
    if (!Number.isSafeInteger(gpa) || gpa < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new GuestMemoryError(`invalid guest range ${gpa}+${length}`, gpa, length);
    }
  }

  /** True iff [gpa, gpa+length) is entirely RAM (it may span adjacent slots). */
  isRam(gpa: number, length: number): boolean {
    try {
      this.segments(gpa, length);
      return true;
    } catch {
      return false;
    }
  }

  /** Split [gpa, gpa+length) into per-slot segments; throws GuestMemoryError if any byte is not RAM. */
  segments(gpa: number, length: number): MemorySegment[] {
    const out: MemorySegment[] = [];
    this.appendSegments(gpa, length, out);
    return out;
  }

  /**
   * segments() appended to `out` (a descriptor walk collects a chain's buffers without an array per
   * buffer); throws GuestMemoryError if any byte is not RAM, and then appends nothing.
   */
  appendSegments(gpa: number, length: number, out: MemorySegment[]): void {
    this.check(gpa, length);
    if (length === 0) {
      if (!this.findSlot(gpa) && gpa !== this.end) throw new GuestMemoryError(`address ${hex(gpa)} is outside guest RAM`, gpa, length);
      return;
    }
    const start = out.length;
    let cur = gpa;
    let left = length;
    while (left > 0) {
      const s = this.findSlot(cur);
      if (!s) {
        out.length = start;
        throw new GuestMemoryError(`range ${hex(gpa)}+${hex(length)} is outside guest RAM`, gpa, length);
      }
      const n = Math.min(left, s.end - cur);
      out.push({ buffer: s.buffer, offset: cur - s.gpa, length: n, gpa: cur });
      cur += n;
      left -= n;
    }
  }

  /** A live view of [gpa, gpa+length), which must lie inside one slot. */
  subarray(gpa: number, length: number): Uint8Array {
    this.check(gpa, length);
    const s = this.findSlot(gpa);
    if (!s || gpa + length > s.end) {
      throw new GuestMemoryError(`range ${hex(gpa)}+${hex(length)} is not inside one RAM slot`, gpa, length);
    }
    return s.bytes.subarray(gpa - s.gpa, gpa - s.gpa + length);
  }

  private at(gpa: number, width: number): [DataView, number] {
    this.check(gpa, width);
    const s = this.findSlot(gpa);
    if (!s || gpa + width > s.end) {
      throw new GuestMemoryError(`access ${hex(gpa)}+${width} is outside guest RAM`, gpa, width);
    }
    return [s.view, gpa - s.gpa];
  }

  read8(gpa: number): number {
    const [v, o] = this.at(gpa, 1);
    return v.getUint8(o);
  }
  read16(gpa: number): number {
    const [v, o] = this.at(gpa, 2);
    return v.getUint16(o, true);
  }
  read32(gpa: number): number {
    const [v, o] = this.at(gpa, 4);
    return v.getUint32(o, true);
  }
  read64(gpa: number): bigint {
    const [v, o] = this.at(gpa, 8);
    return v.getBigUint64(o, true);
  }
  write8(gpa: number, value: number): void {
    const [v, o] = this.at(gpa, 1);
    v.setUint8(o, value);
  }
  write16(gpa: number, value: number): void {
    const [v, o] = this.at(gpa, 2);
    v.setUint16(o, value, true);
  }
  write32(gpa: number, value: number): void {
    const [v, o] = this.at(gpa, 4);
    v.setUint32(o, value >>> 0, true);
  }
  write64(gpa: number, value: bigint | number): void {
    const [v, o] = this.at(gpa, 8);
    v.setBigUint64(o, BigInt.asUintN(64, BigInt(value)), true);
  }

  /** Copy guest bytes out (may span slots). */
  readBytes(gpa: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let pos = 0;
    for (const seg of this.segments(gpa, length)) {
      out.set(new Uint8Array(seg.buffer, seg.offset, seg.length), pos);
      pos += seg.length;
    }
    return out;
  }

  /** Copy bytes into guest RAM (may span slots). The whole range is checked before anything is written. */
  writeBytes(gpa: number, data: Uint8Array): void {
    let pos = 0;
    for (const seg of this.segments(gpa, data.length)) {
      new Uint8Array(seg.buffer, seg.offset, seg.length).set(data.subarray(pos, pos + seg.length));
      pos += seg.length;
    }
  }

  fill(gpa: number, length: number, value: number): void {
    for (const seg of this.segments(gpa, length)) new Uint8Array(seg.buffer, seg.offset, seg.length).fill(value);
  }

  /** NUL-terminated string starting at gpa, at most max bytes (without the NUL). */
  readCString(gpa: number, max: number): string {
    const bytes: number[] = [];
    for (let i = 0; i < max; i++) {
      const b = this.read8(gpa + i);
      if (b === 0) break;
      bytes.push(b);
    }
    return Buffer.from(bytes).toString('latin1');
  }
}
