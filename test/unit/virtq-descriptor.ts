// The driver side of a split virtqueue, shared by the virtqueue and virtio-blk suites: one 16-byte
// descriptor (virtio 1.2 §2.7.5: le64 addr, le32 len, le16 flags, le16 next) at any guest address,
// a table entry or an indirect-table entry. `addr` wraps to 64 bits, `len` to 32.
import type { GuestMemory } from '../../src/memory/guest-memory.js';

export function writeDescriptor(mem: GuestMemory, gpa: number, addr: bigint | number, len: number, flags: number, next = 0): void {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt.asUintN(64, BigInt(addr)), true);
  v.setUint32(8, len >>> 0, true);
  v.setUint16(12, flags, true);
  v.setUint16(14, next, true);
  mem.writeBytes(gpa, b);
}
