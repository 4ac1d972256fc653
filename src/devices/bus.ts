// Port-I/O and MMIO buses: route a guest access to the device registered over that address range.
//
// Devices see offsets relative to the base they were registered at. Ranges are kept sorted and looked
// up by binary search. Unknown addresses read as all-ones for the access size and drop writes; the
// bus's onUnknown callback fires the first time each unknown port/address is touched (the caller logs
// it once). An access that runs past the end of a device's range, and every multi-byte access to a
// byte-wide device (registerBytewise, e.g. the UART), is split into byte accesses, each routed on its
// own and reassembled little-endian.

/** Size of one device access. */
export type AccessSize = 1 | 2 | 4;
/** Size of one bus access: 8 occurs for MMIO only and reaches devices as two 4-byte accesses. */
export type BusAccessSize = AccessSize | 8;

/** A device that understands 1-, 2- and 4-byte accesses at offsets from its base. */
export interface PioDevice {
  read(offset: number, size: AccessSize): number;
  write(offset: number, size: AccessSize, value: number): void;
}

/** Same shape for MMIO. */
export type MmioDevice = PioDevice;

/** An 8-bit-only register block (UART, i8042): one byte per offset. */
export interface ByteDevice {
  read(offset: number): number;
  write(offset: number, value: number): void;
}

export type UnknownAccessKind = 'read' | 'write';
export type UnknownAccessHandler = (kind: UnknownAccessKind, address: number) => void;

export interface BusRange {
  readonly base: number;
  readonly length: number;
  readonly name: string;
}

/** All-ones value for an access size: 0xff, 0xffff, 0xffffffff. */
export function allOnes(size: AccessSize): number {
  return size === 4 ? 0xffffffff : size === 2 ? 0xffff : 0xff;
}

/** Wrap a byte-wide register block as a PioDevice; wider accesses become byte accesses (LE). */
export function bytewise(dev: ByteDevice): PioDevice {
  return {
    read(offset: number, size: AccessSize): number {
      if (size === 1) return dev.read(offset) & 0xff;
      let v = 0;
      for (let i = 0; i < size; i++) v += (dev.read(offset + i) & 0xff) * 2 ** (8 * i);
      return v;
    },
    write(offset: number, size: AccessSize, value: number): void {
      if (size === 1) {
        dev.write(offset, value & 0xff);
        return;
      }
      for (let i = 0; i < size; i++) dev.write(offset + i, Math.floor(value / 2 ** (8 * i)) & 0xff);
    },
  };
}

/**
 * The device access size a `len`-byte guest access is split into: 1/2/4 as they are, 8 as two 4-byte
 * halves (low first), any other length byte by byte. (One loop over one call site: the exit path
 * stays small enough for V8 to inline.)
 */
function pieceSize(len: number): AccessSize {
  return len === 1 || len === 2 || len === 4 ? len : len === 8 ? 4 : 1;
}

interface Entry {
  base: number;
  end: number; // exclusive
  length: number;
  name: string;
  device: PioDevice;
}

/** Most distinct unknown addresses remembered (and reported) per bus. */
const MAX_UNKNOWN_REPORTED = 4096;

/** Shared implementation of PioBus and MmioBus. */
export class AddressBus {
  onUnknown: UnknownAccessHandler | undefined;
  private readonly entries: Entry[] = [];
  private readonly seenUnknown = new Set<number>();
  private readonly limit: number;
  private readonly what: string;

  constructor(limit: number, what: string, onUnknown?: UnknownAccessHandler) {
    this.limit = limit;
    this.what = what;
    this.onUnknown = onUnknown;
  }

  /** Map [base, base+length) to `device`. Throws on overlap or out-of-range. */
  register(base: number, length: number, device: PioDevice, name: string): void {
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(length) || base < 0 || length <= 0 || base + length > this.limit) {
      throw new RangeError(`${this.what}: bad range for ${name}: base ${base}, length ${length}`);
    }
    const end = base + length;
    const i = this.lowerBound(base);
    const prev = this.entries[i - 1];
    const next = this.entries[i];
    if ((prev !== undefined && prev.end > base) || (next !== undefined && next.base < end)) {
      const other = prev !== undefined && prev.end > base ? prev : (next as Entry);
      throw new Error(`${this.what}: ${name} [0x${base.toString(16)}, 0x${end.toString(16)}) overlaps ${other.name}`);
    }
    this.entries.splice(i, 0, { base, end, length, name, device });
  }

  /** Register a byte-wide device (multi-byte accesses are split into byte accesses). */
  registerBytewise(base: number, length: number, device: ByteDevice, name: string): void {
    this.register(base, length, bytewise(device), name);
  }

  /** The range containing `address`, if any. */
  lookup(address: number): BusRange | undefined {
    const e = this.find(address);
    return e === undefined ? undefined : { base: e.base, length: e.length, name: e.name };
  }

  /** All registered ranges, ascending. */
  ranges(): BusRange[] {
    return this.entries.map((e) => ({ base: e.base, length: e.length, name: e.name }));
  }

  /**
   * Guest read of `size` bytes at `address` (unsigned, never wider than `size` bytes whatever the
   * device returned). Size 8 (MMIO only) is split into two 4-byte accesses and combined into a
   * number, exact below 2^53; use readInto for exact 64-bit data.
   */
  read(address: number, size: BusAccessSize): number {
    if (size === 8) return this.read(address, 4) + this.read(address + 4, 4) * 2 ** 32;
    const e = this.find(address);
    if (e !== undefined) {
      if (address + size <= e.end) {
        // Only `size` bytes of what the device returns reach the guest: bits above them would
        // otherwise land in the neighbouring bytes when this read is one byte of a split access.
        const v = e.device.read(address - e.base, size);
        return size === 4 ? v >>> 0 : v & (size === 2 ? 0xffff : 0xff);
      }
    } else if (this.noneInside(address, size)) {
      this.unknown('read', address);
      return allOnes(size);
    }
    // Straddles a range boundary: one byte at a time.
    let v = 0;
    for (let i = 0; i < size; i++) v += this.read(address + i, 1) * 2 ** (8 * i);
    return v;
  }

  /** Guest write; `value` is truncated to `size` bytes. Size 8 as in read (value exact below 2^53). */
  write(address: number, size: BusAccessSize, value: number): void {
    if (size === 8) {
      this.write(address, 4, value % 2 ** 32);
      this.write(address + 4, 4, Math.floor(value / 2 ** 32) % 2 ** 32);
      return;
    }
    const e = this.find(address);
    if (e !== undefined) {
      if (address + size <= e.end) {
        e.device.write(address - e.base, size, size === 4 ? value >>> 0 : value & (size === 2 ? 0xffff : 0xff));
        return;
      }
    } else if (this.noneInside(address, size)) {
      this.unknown('write', address);
      return;
    }
    const v = value >>> 0;
    for (let i = 0; i < size; i++) this.write(address + i, 1, Math.floor(v / 2 ** (8 * i)) & 0xff);
  }

  /**
   * The one splitter of a guest access into device accesses (a KVM_EXIT_MMIO, or one item of a
   * KVM_EXIT_IO): read `len` bytes at `address` into view[offset, offset+len), little-endian. Lengths
   * 1/2/4 are one access, 8 is two 4-byte accesses (low half first), any other length is byte accesses.
   * Allocation-free, for the vCPU exit path (the view is the vCPU's kvm_run).
   */
  readInto(address: number, len: number, view: DataView, offset: number): void {
    const size = pieceSize(len);
    for (let i = 0; i < len; i += size) {
      const v = this.read(address + i, size);
      if (size === 4) view.setUint32(offset + i, v, true);
      else if (size === 2) view.setUint16(offset + i, v, true);
      else view.setUint8(offset + i, v);
    }
  }

  /** Write the `len` bytes at view[offset, offset+len) (little-endian) to `address`; split as readInto. */
  writeFrom(address: number, len: number, view: DataView, offset: number): void {
    const size = pieceSize(len);
    for (let i = 0; i < len; i += size) {
      const o = offset + i;
      this.write(address + i, size, size === 4 ? view.getUint32(o, true) : size === 2 ? view.getUint16(o, true) : view.getUint8(o));
    }
  }

  /** readInto for a byte buffer: `data.length` bytes at `address` into `data`. */
  readBytes(address: number, data: Uint8Array): void {
    this.readInto(address, data.length, new DataView(data.buffer, data.byteOffset, data.byteLength), 0);
  }

  /** writeFrom for a byte buffer: `data` (little-endian) to `address`. */
  writeBytes(address: number, data: Uint8Array): void {
    this.writeFrom(address, data.length, new DataView(data.buffer, data.byteOffset, data.byteLength), 0);
  }

  /** No range starts inside (address, address+size). */
  private noneInside(address: number, size: number): boolean {
    if (size === 1) return true;
    const i = this.lowerBound(address + 1);
    const e = this.entries[i];
    return e === undefined || e.base >= address + size;
  }

  private unknown(kind: UnknownAccessKind, address: number): void {
    if (this.seenUnknown.has(address) || this.seenUnknown.size >= MAX_UNKNOWN_REPORTED) return;
    this.seenUnknown.add(address);
    this.onUnknown?.(kind, address);
  }

  /** Index of the first entry with base >= address. */
  private lowerBound(address: number): number {
    let lo = 0;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.entries[mid].base < address) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private find(address: number): Entry | undefined {
    const i = this.lowerBound(address + 1) - 1; // last entry with base <= address
    if (i < 0) return undefined;
    const e = this.entries[i];
    return address < e.end ? e : undefined;
  }
}

/** x86 port-I/O space (ports 0..0xffff). */
export class PioBus extends AddressBus {
  constructor(onUnknown?: UnknownAccessHandler) {
    super(0x10000, 'PioBus', onUnknown);
  }
}

/** Guest-physical MMIO space (addresses below 2^53). */
export class MmioBus extends AddressBus {
  constructor(onUnknown?: UnknownAccessHandler) {
    super(Number.MAX_SAFE_INTEGER, 'MmioBus', onUnknown);
  }
}
