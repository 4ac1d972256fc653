// The frontend's memory as the back-end sees it (vhost-user SET_MEM_TABLE): a table of regions, each
// { guest_addr, size, user_addr, mmap_offset } with an fd, mapped here MAP_SHARED and wrapped like guest
// RAM, so the device code reads rings and buffers through GuestMemory (bounds-checked) and the image
// I/O runs preadv/pwritev straight into the frontend's pages.
//
// Two address spaces. Descriptor buffers are guest-physical addresses (guest_addr), which GuestMemory
// resolves. Ring addresses in SET_VRING_ADDR are the frontend's *user* addresses (user_addr):
// translateRing() maps one to guest-physical through the region that contains the whole ring, and
// refuses a ring that is not inside one region.
//
// Validation (validateRegions, pure): every region non-empty; guest_addr + size, user_addr + size and
// mmap_offset + size neither wrap nor pass 2^53 (safe integers); no two regions overlap in guest
// addresses or in user addresses. A region larger than MAX_REGION_SLOT is mapped as several slots of
// at most that size (V8 typed arrays address at most 2^32 elements; the addon maps ≤ 2 GiB at once).
// The mapping checks the fd (regular file or memfd, long enough), so creating the map cannot fault.
// A frontend that later shrinks its own memfd makes accesses fault (SIGBUS), as with every
// vhost-user back-end; that is the frontend destroying its own guest.
//
// Release (releaseRegions): a replaced or abandoned table's mappings are turned into private zero
// pages at once (the addon's releaseFdMapping), so the frontend's memory is not held until V8
// collects the buffers; a stale view left anywhere then reads zeros and writes nowhere.
import { GuestMemory, type SlotDescriptor } from '../memory/guest-memory.js';
import { VhostUserError, type MemRegionMsg } from './protocol.js';

/** Largest slot one mapping becomes. */
export const MAX_REGION_SLOT = 2 ** 31;
const LIMIT = 2n ** 53n;

export interface MemRegion {
  guestAddr: number;
  size: number;
  userAddr: number;
  mmapOffset: number;
}

/** Check a SET_MEM_TABLE region list (throws VhostUserError with the first problem). */
export function validateRegions(msgs: readonly MemRegionMsg[]): MemRegion[] {
  const out: MemRegion[] = [];
  msgs.forEach((r, i) => {
    if (r.size === 0n) throw new VhostUserError(`region ${i}: size 0`);
    for (const [name, base] of [
      ['guest_addr', r.guestAddr],
      ['user_addr', r.userAddr],
      ['mmap_offset', r.mmapOffset],
    ] as const) {
      if (base + r.size > LIMIT) throw new VhostUserError(`region ${i}: ${name} 0x${base.toString(16)} + size 0x${r.size.toString(16)} passes 2^53`);
    }
    out.push({ guestAddr: Number(r.guestAddr), size: Number(r.size), userAddr: Number(r.userAddr), mmapOffset: Number(r.mmapOffset) });
  });
  for (let i = 0; i < out.length; i++) {
    for (let j = i + 1; j < out.length; j++) {
      const a = out[i];
      const b = out[j];
      if (a.guestAddr < b.guestAddr + b.size && b.guestAddr < a.guestAddr + a.size) throw new VhostUserError(`regions ${i} and ${j} overlap in guest addresses`);
      if (a.userAddr < b.userAddr + b.size && b.userAddr < a.userAddr + a.size) throw new VhostUserError(`regions ${i} and ${j} overlap in user addresses`);
    }
  }
  return out;
}

/**
 * The guest-physical address of the frontend user range [ua, ua+len), which must lie inside one
 * region; undefined otherwise.
 */
export function translateUser(regions: readonly MemRegion[], ua: bigint, len: number): number | undefined {
  if (len < 0 || ua < 0n) return undefined;
  for (const r of regions) {
    const start = BigInt(r.userAddr);
    if (ua >= start && ua + BigInt(len) <= start + BigInt(r.size)) return r.guestAddr + Number(ua - start);
  }
  return undefined;
}

export interface MappedMemory {
  regions: MemRegion[];
  mem: GuestMemory;
}

export interface RegionMapper {
  mapFdShared(fd: number, offset: number, size: number): SharedArrayBuffer;
  /** Drop a mapping's file pages now (optional: without it they go when the buffer is collected). */
  releaseFdMapping?(sab: SharedArrayBuffer): boolean;
}

/** Let go of a table's mappings now (see the header); returns how many were released. */
export function releaseRegions(mapper: RegionMapper, mapped: MappedMemory | undefined): number {
  if (!mapped || !mapper.releaseFdMapping) return 0;
  let n = 0;
  for (const d of mapped.mem.descriptors()) {
    try {
      if (mapper.releaseFdMapping(d.buffer as SharedArrayBuffer)) n++;
    } catch {
      // mmap refused (ENOMEM): the pages go when the buffer is collected
    }
  }
  return n;
}

/**
 * Map validated regions (fds[i] for regions[i]) as GuestMemory slots. The fds are not closed here.
 * Throws VhostUserError when a region cannot be mapped (not a regular file, shorter than the region).
 */
export function mapRegions(addon: RegionMapper, regions: readonly MemRegion[], fds: readonly number[]): MappedMemory {
  const slots: SlotDescriptor[] = [];
  regions.forEach((r, i) => {
    for (let off = 0; off < r.size; off += MAX_REGION_SLOT) {
      const n = Math.min(MAX_REGION_SLOT, r.size - off);
      let buffer: SharedArrayBuffer;
      try {
        buffer = addon.mapFdShared(fds[i], r.mmapOffset + off, n);
      } catch (e) {
        throw new VhostUserError(`region ${i}: cannot map ${n} bytes at offset 0x${(r.mmapOffset + off).toString(16)} of its fd (${(e as { code?: string }).code ?? (e as Error).message})`);
      }
      slots.push({ slot: slots.length, gpa: r.guestAddr + off, size: n, buffer });
    }
  });
  return { regions: [...regions], mem: new GuestMemory(slots) };
}
