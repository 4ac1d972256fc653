// Bounds-checked little-endian reader over a kernel image. Every field read goes through it, so a
// short or hostile image can only ever produce a KernelFormatError that says which field is missing
// ("bzImage is truncated: 518 bytes, setup header field version at 0x206 needs 2 bytes"), never a
// RangeError from DataView and never a read beyond the image.
import { KernelFormatError } from './errors.js';

const hex = (n: number): string => '0x' + n.toString(16);

export class ImageReader {
  readonly length: number;
  private readonly view: DataView;

  /** `what` names the image in messages ("bzImage", "ELF file"). */
  constructor(
    readonly image: Uint8Array,
    readonly what: string,
  ) {
    this.length = image.length;
    this.view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  }

  /** True iff [offset, offset + size) lies inside the image. */
  has(offset: number, size: number): boolean {
    return Number.isSafeInteger(offset) && offset >= 0 && size >= 0 && offset + size <= this.length;
  }

  /** Throws KernelFormatError unless [offset, offset + size) lies inside the image. */
  need(offset: number, size: number, field: string): void {
    if (!this.has(offset, size)) {
      throw new KernelFormatError(`${this.what} is truncated: ${this.length} bytes, ${field} at ${hex(offset)} needs ${size} bytes`);
    }
  }

  u8(offset: number, field: string): number {
    this.need(offset, 1, field);
    return this.view.getUint8(offset);
  }

  u16(offset: number, field: string): number {
    this.need(offset, 2, field);
    return this.view.getUint16(offset, true);
  }

  u32(offset: number, field: string): number {
    this.need(offset, 4, field);
    return this.view.getUint32(offset, true);
  }

  u64(offset: number, field: string): bigint {
    this.need(offset, 8, field);
    return this.view.getBigUint64(offset, true);
  }
}
