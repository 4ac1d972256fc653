// virtio-blk device logic (virtio 1.2 §5.2), independent of threads and fds so it can be unit-tested
// and fuzzed on synthetic rings:
//
//   parseRequest(chain)      pure: splits a descriptor chain into header, data and status byte
//   BlockDevice.execute(req) runs one parsed request against a BlockBackend (the only I/O)
//   BlockDevice.complete()   writes the status byte, returns the used length
//   serviceRequests(q, dev)  the queue loop (ActiveQueue.service): pop every available chain,
//                            execute, push used, interrupt as the driver asks; with a rate limiter,
//                            one chain at a time while the limiter is out of debt (else the pass
//                            ends `throttled` and RequestQueueBackend's timer resumes it)
//
// Request layout (§5.2.6, VIRTIO_F_VERSION_1 implies any framing): the first 16 device-readable
// bytes are the header { le32 type, le32 reserved, le64 sector }; the rest of the readable bytes are
// data-out; the device-writable bytes are data-in followed by one status byte (the last writable
// byte). Requests without a status byte cannot be answered with a status: they complete with used
// length 0 (like a per-chain VirtqueueError). Requests with a status byte never fail silently:
// OK, IOERR (bad header, out of range, not a multiple of 512, write to a read-only disk, host I/O
// error) or UNSUPP (unknown type, reserved flags).
import type { MemorySegment } from '../../../memory/guest-memory.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, featureBit } from '../constants.js';
import { gatherBytes, scatterBytes, splitSegments } from '../iovec.js';
import type { DescriptorChain } from '../queue.js';
import { readTransportStats, type ActiveQueue, type ServiceResult } from '../queue-service.js';
import { rateLimiter, type RateLimiter, type RateLimiterConfig } from '../../rate-limiter.js';

// ---- constants (§5.2.3, §5.2.6) -----------------------------------------------------------------
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_T_SECURE_ERASE = 14;

export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
export const VIRTIO_BLK_ID_BYTES = 20;
export const SECTOR_SIZE = 512;
export const BLK_REQ_HEADER_SIZE = 16;
/** struct virtio_blk_discard_write_zeroes { le64 sector; le32 num_sectors; le32 flags } */
export const BLK_DWZ_SEGMENT_SIZE = 16;

/** Queue size offered (QueueNumMax). */
export const BLK_QUEUE_SIZE = 256;
/** seg_max: data segments per request (queue size − header − status). */
export const BLK_SEG_MAX = BLK_QUEUE_SIZE - 2;
/** Limits offered for DISCARD / WRITE_ZEROES. */
export const BLK_MAX_DISCARD_SECTORS = 0x200000; // 1 GiB
export const BLK_MAX_DISCARD_SEG = 16;
export const BLK_DISCARD_SECTOR_ALIGNMENT = 8; // 4 KiB
export const BLK_MAX_WRITE_ZEROES_SECTORS = 0x200000;
export const BLK_MAX_WRITE_ZEROES_SEG = 16;

// struct virtio_blk_config offsets (§5.2.4)
export const BLK_CFG_CAPACITY = 0;
export const BLK_CFG_SIZE_MAX = 8;
export const BLK_CFG_SEG_MAX = 12;
export const BLK_CFG_BLK_SIZE = 20;
export const BLK_CFG_MAX_DISCARD_SECTORS = 36;
export const BLK_CFG_MAX_DISCARD_SEG = 40;
export const BLK_CFG_DISCARD_SECTOR_ALIGNMENT = 44;
export const BLK_CFG_MAX_WRITE_ZEROES_SECTORS = 48;
export const BLK_CFG_MAX_WRITE_ZEROES_SEG = 52;
export const BLK_CFG_WRITE_ZEROES_MAY_UNMAP = 56;
/** Config space up to and including write_zeroes_may_unmap + padding. */
export const BLK_CONFIG_SIZE = 60;

export interface BlockDeviceParams {
  /** Capacity in 512-byte sectors. */
  sectors: number;
  readOnly: boolean;
  /** GET_ID answer: 20 bytes, NUL-padded. */
  serial: Uint8Array;
}

/** Features offered: VERSION_1 is added by the transport. DISCARD/WRITE_ZEROES only when writable. */
export function blockDeviceFeatures(readOnly: boolean): bigint {
  let f =
    featureBit(VIRTIO_F_VERSION_1) |
    featureBit(VIRTIO_BLK_F_FLUSH) |
    featureBit(VIRTIO_BLK_F_SEG_MAX) |
    featureBit(VIRTIO_BLK_F_BLK_SIZE) |
    featureBit(VIRTIO_F_INDIRECT_DESC) |
    featureBit(VIRTIO_F_EVENT_IDX);
  if (readOnly) f |= featureBit(VIRTIO_BLK_F_RO);
  else f |= featureBit(VIRTIO_BLK_F_DISCARD) | featureBit(VIRTIO_BLK_F_WRITE_ZEROES);
  return f;
}

/** Initial config space (little-endian struct virtio_blk_config, BLK_CONFIG_SIZE bytes). */
export function blockConfigSpace(p: Pick<BlockDeviceParams, 'sectors' | 'readOnly'>): Uint8Array {
  const b = new Uint8Array(BLK_CONFIG_SIZE);
  const v = new DataView(b.buffer);
  v.setBigUint64(BLK_CFG_CAPACITY, BigInt(p.sectors), true);
  v.setUint32(BLK_CFG_SEG_MAX, BLK_SEG_MAX, true);
  v.setUint32(BLK_CFG_BLK_SIZE, SECTOR_SIZE, true);
  if (!p.readOnly) {
    v.setUint32(BLK_CFG_MAX_DISCARD_SECTORS, BLK_MAX_DISCARD_SECTORS, true);
    v.setUint32(BLK_CFG_MAX_DISCARD_SEG, BLK_MAX_DISCARD_SEG, true);
    v.setUint32(BLK_CFG_DISCARD_SECTOR_ALIGNMENT, BLK_DISCARD_SECTOR_ALIGNMENT, true);
    v.setUint32(BLK_CFG_MAX_WRITE_ZEROES_SECTORS, BLK_MAX_WRITE_ZEROES_SECTORS, true);
    v.setUint32(BLK_CFG_MAX_WRITE_ZEROES_SEG, BLK_MAX_WRITE_ZEROES_SEG, true);
    b[BLK_CFG_WRITE_ZEROES_MAY_UNMAP] = 1;
  }
  return b;
}

/**
 * The GET_ID serial of an image: `<basename>-<inode hex>`, the basename shortened (and characters
 * outside [A-Za-z0-9._-] replaced by '_') so the whole fits 20 bytes; NUL-padded to 20 bytes.
 */
export function blockSerial(path: string, inode: number | bigint): Uint8Array {
  const ino = BigInt(inode).toString(16);
  const base = (path.split('/').filter((s) => s.length > 0).pop() ?? 'disk').replace(/[^A-Za-z0-9._-]/g, '_');
  const room = Math.max(0, VIRTIO_BLK_ID_BYTES - 1 - ino.length);
  const text = (base.slice(0, room) + '-' + ino).slice(-VIRTIO_BLK_ID_BYTES);
  const out = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

// ---- parsing ------------------------------------------------------------------------------------

export interface BlockRequest {
  head: number;
  /** Present iff the chain has at least 16 device-readable bytes. */
  header?: { type: number; /** u64 as a number; ≥ 2^53 values are clamped to Number.MAX_SAFE_INTEGER */ sector: number };
  /** Device-readable bytes after the header (OUT data, DISCARD/WRITE_ZEROES segments). */
  dataOut: MemorySegment[];
  dataOutBytes: number;
  /** Device-writable bytes before the status byte (IN data, GET_ID buffer). */
  dataIn: MemorySegment[];
  dataInBytes: number;
  /** The last device-writable byte; absent if the chain has no writable byte. */
  status?: { buffer: SharedArrayBuffer; offset: number };
}

/** Split a chain into header, data and status byte. Pure apart from reading the 16 header bytes. */
export function parseRequest(chain: DescriptorChain): BlockRequest {
  const req: BlockRequest = { head: chain.head, dataOut: [], dataOutBytes: 0, dataIn: [], dataInBytes: 0 };
  if (chain.writableBytes >= 1) {
    const [data, status] = splitSegments(chain.writable, chain.writableBytes - 1);
    const s = status[0];
    req.status = { buffer: s.buffer, offset: s.offset };
    req.dataIn = data;
    req.dataInBytes = chain.writableBytes - 1;
  }
  if (chain.readableBytes >= BLK_REQ_HEADER_SIZE) {
    const h = gatherBytes(chain.readable, BLK_REQ_HEADER_SIZE);
    const v = new DataView(h.buffer);
    const lo = v.getUint32(8, true);
    const hi = v.getUint32(12, true);
    const sector = hi >= 0x200000 ? Number.MAX_SAFE_INTEGER : hi * 2 ** 32 + lo;
    req.header = { type: v.getUint32(0, true), sector };
    const [, out] = splitSegments(chain.readable, BLK_REQ_HEADER_SIZE);
    req.dataOut = out;
    req.dataOutBytes = chain.readableBytes - BLK_REQ_HEADER_SIZE;
  }
  return req;
}

// ---- execution ----------------------------------------------------------------------------------

/**
 * Where the bytes live. Methods throw an Error with an errno `code` ('EIO', 'ENOSPC', …) on a host
 * I/O failure (the request then completes with IOERR); any other exception is a device bug.
 */
export interface BlockBackend {
  /** Read `bytes` at byte offset `pos` into the segments; returns bytes read (short only at EOF). */
  readv(segs: readonly MemorySegment[], bytes: number, pos: number): number;
  /** Write the segments at `pos`; returns bytes written. */
  writev(segs: readonly MemorySegment[], bytes: number, pos: number): number;
  /** Make every completed write durable (fdatasync). */
  flush(): void;
  /** Deallocate [pos, pos+len) (contents afterwards: zeroes). */
  discard(pos: number, len: number): void;
  /** Zero [pos, pos+len); `unmap` allows deallocating. */
  writeZeroes(pos: number, len: number, unmap: boolean): void;
}

export interface BlockResult {
  /** VIRTIO_BLK_S_*, or -1 when the request has no status byte. */
  status: number;
  /** Bytes written into device-writable buffers (used length). */
  usedLen: number;
}

/** Counters (Int32, Atomics) and byte totals (Float64, single writer) in one SAB, readable anywhere. */
export const STAT_REQUESTS = 0;
export const STAT_READS = 1;
export const STAT_WRITES = 2;
export const STAT_FLUSHES = 3;
export const STAT_ERRORS = 4;
export const STAT_UNSUPPORTED = 5;
// Words 6, 7 and 10 (wake-ups, interrupts, NEEDS_RESET) moved to the transport counters
// (queue-service.ts TSTAT_*); readBlockStats takes them from there.
export const STAT_BATCHES = 8;
export const STAT_BAD_CHAINS = 9;
export const STAT_DISCARDS = 11;
export const STAT_WRITE_ZEROES = 12;
const STAT_WORDS = 16;
const STAT_BYTES_READ = 0; // Float64 index after the Int32 words
const STAT_BYTES_WRITTEN = 1;

export interface BlockStats {
  requests: number;
  reads: number;
  writes: number;
  flushes: number;
  discards: number;
  writeZeroes: number;
  /** Requests answered IOERR. */
  errors: number;
  /** Requests answered UNSUPP. */
  unsupported: number;
  /** Chains completed without a status (malformed). */
  badChains: number;
  /** Times the worker was woken by an eventfd (transport counter). */
  wakeups: number;
  /** irqfd pulses (transport counter). */
  interrupts: number;
  /** Batches (one pop pass + one used-ring publish). */
  batches: number;
  /** Times DEVICE_NEEDS_RESET was set (transport counter). */
  needsReset: number;
  bytesRead: number;
  bytesWritten: number;
}

export function createBlockStats(): SharedArrayBuffer {
  return new SharedArrayBuffer(STAT_WORDS * 4 + 2 * 8);
}

/** The device's counters, with wake-ups, interrupts and NEEDS_RESET from its transport counters (0 without). */
export function readBlockStats(sab: SharedArrayBuffer, transport?: SharedArrayBuffer): BlockStats {
  const t = transport ? readTransportStats(transport) : undefined;
  const w = new Int32Array(sab, 0, STAT_WORDS);
  const f = new Float64Array(sab, STAT_WORDS * 4, 2);
  const g = (i: number): number => Atomics.load(w, i) >>> 0;
  return {
    requests: g(STAT_REQUESTS),
    reads: g(STAT_READS),
    writes: g(STAT_WRITES),
    flushes: g(STAT_FLUSHES),
    discards: g(STAT_DISCARDS),
    writeZeroes: g(STAT_WRITE_ZEROES),
    errors: g(STAT_ERRORS),
    unsupported: g(STAT_UNSUPPORTED),
    badChains: g(STAT_BAD_CHAINS),
    wakeups: t?.wakeups ?? 0,
    interrupts: t?.interrupts ?? 0,
    batches: g(STAT_BATCHES),
    needsReset: t?.needsReset ?? 0,
    bytesRead: f[STAT_BYTES_READ],
    bytesWritten: f[STAT_BYTES_WRITTEN],
  };
}

/** An exception from a BlockBackend that means "the host I/O failed" (→ IOERR) rather than a bug. */
export function isHostIoError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code);
}

export class BlockDevice {
  readonly params: BlockDeviceParams;
  private backend: BlockBackend;
  private readonly stats: Int32Array;
  private readonly bytes: Float64Array;
  private capacityBytes: number;
  private readonly features: bigint;
  /**
   * Firecracker's block rate limiter: every request costs one op, a read or write also its data
   * bytes, paid after it ran (src/devices/rate-limiter.ts). serviceRequests takes no request while
   * it is in debt.
   */
  limiter: RateLimiter | undefined;

  constructor(params: BlockDeviceParams, backend: BlockBackend, stats: SharedArrayBuffer = createBlockStats(), rate?: RateLimiterConfig, now?: () => number) {
    if (!Number.isSafeInteger(params.sectors) || params.sectors < 0 || params.sectors * SECTOR_SIZE > Number.MAX_SAFE_INTEGER) {
      throw new RangeError(`virtio-blk: bad capacity ${params.sectors}`);
    }
    if (params.serial.length !== VIRTIO_BLK_ID_BYTES) throw new RangeError('virtio-blk: serial must be 20 bytes');
    this.params = params;
    this.backend = backend;
    this.stats = new Int32Array(stats, 0, STAT_WORDS);
    this.bytes = new Float64Array(stats, STAT_WORDS * 4, 2);
    this.capacityBytes = params.sectors * SECTOR_SIZE;
    this.features = blockDeviceFeatures(params.readOnly);
    this.limiter = rateLimiter(rate, now);
  }

  /**
   * Swap the medium (Firecracker's PATCH /drives path_on_host; how Kata hot-plugs container disks):
   * from the next request on, I/O goes to `backend` and the capacity is `sectors`. Requests run one
   * at a time on this thread, so none straddles the swap. The transport's config space and the
   * config-change interrupt are the caller's (the main thread's) part.
   */
  swapMedium(backend: BlockBackend, sectors: number): void {
    if (!Number.isSafeInteger(sectors) || sectors < 0 || sectors * SECTOR_SIZE > Number.MAX_SAFE_INTEGER) throw new RangeError(`virtio-blk: bad capacity ${sectors}`);
    this.backend = backend;
    this.params.sectors = sectors;
    this.capacityBytes = sectors * SECTOR_SIZE;
  }

  /** Count something in the shared stats (wakeups, interrupts, … from the worker loop). */
  count(stat: number, n = 1): void {
    Atomics.add(this.stats, stat, n);
  }

  /** [sector, sector + bytes/512) inside the disk? */
  private inRange(sector: number, bytes: number): boolean {
    return sector <= this.params.sectors && bytes <= this.capacityBytes - sector * SECTOR_SIZE;
  }

  private offered(bit: number): boolean {
    return (this.features & featureBit(bit)) !== 0n;
  }

  /** Run one request. Host I/O errors become IOERR; other exceptions propagate (device bug). */
  execute(req: BlockRequest): BlockResult {
    Atomics.add(this.stats, STAT_REQUESTS, 1);
    if (!req.status) {
      Atomics.add(this.stats, STAT_BAD_CHAINS, 1);
      return { status: -1, usedLen: 0 };
    }
    let r: BlockResult;
    try {
      r = this.run(req);
    } catch (e) {
      if (!isHostIoError(e)) throw e;
      r = { status: VIRTIO_BLK_S_IOERR, usedLen: 1 };
    }
    const type = req.header?.type;
    this.limiter?.consume(type === VIRTIO_BLK_T_IN ? req.dataInBytes : type === VIRTIO_BLK_T_OUT ? req.dataOutBytes : 0);
    if (r.status === VIRTIO_BLK_S_IOERR) Atomics.add(this.stats, STAT_ERRORS, 1);
    else if (r.status === VIRTIO_BLK_S_UNSUPP) Atomics.add(this.stats, STAT_UNSUPPORTED, 1);
    return r;
  }

  private run(req: BlockRequest): BlockResult {
    const IOERR: BlockResult = { status: VIRTIO_BLK_S_IOERR, usedLen: 1 };
    const h = req.header;
    if (!h) return IOERR;
    switch (h.type) {
      case VIRTIO_BLK_T_IN: {
        const len = req.dataInBytes;
        if (len % SECTOR_SIZE !== 0 || !this.inRange(h.sector, len)) return IOERR;
        const n = len === 0 ? 0 : this.backend.readv(req.dataIn, len, h.sector * SECTOR_SIZE);
        if (n !== len) return IOERR; // the file shrank under us
        Atomics.add(this.stats, STAT_READS, 1);
        this.bytes[STAT_BYTES_READ] += len;
        return { status: VIRTIO_BLK_S_OK, usedLen: len + 1 };
      }
      case VIRTIO_BLK_T_OUT: {
        const len = req.dataOutBytes;
        if (this.params.readOnly || len % SECTOR_SIZE !== 0 || !this.inRange(h.sector, len)) return IOERR;
        const n = len === 0 ? 0 : this.backend.writev(req.dataOut, len, h.sector * SECTOR_SIZE);
        if (n !== len) return IOERR;
        Atomics.add(this.stats, STAT_WRITES, 1);
        this.bytes[STAT_BYTES_WRITTEN] += len;
        return { status: VIRTIO_BLK_S_OK, usedLen: 1 };
      }
      case VIRTIO_BLK_T_FLUSH:
        this.backend.flush();
        Atomics.add(this.stats, STAT_FLUSHES, 1);
        return { status: VIRTIO_BLK_S_OK, usedLen: 1 };
      case VIRTIO_BLK_T_GET_ID: {
        const n = scatterBytes(req.dataIn, this.params.serial.subarray(0, Math.min(VIRTIO_BLK_ID_BYTES, req.dataInBytes)));
        return { status: VIRTIO_BLK_S_OK, usedLen: n + 1 };
      }
      case VIRTIO_BLK_T_DISCARD:
        if (!this.offered(VIRTIO_BLK_F_DISCARD)) return this.unsupportedOrRo();
        return this.discardOrZero(req, false);
      case VIRTIO_BLK_T_WRITE_ZEROES:
        if (!this.offered(VIRTIO_BLK_F_WRITE_ZEROES)) return this.unsupportedOrRo();
        return this.discardOrZero(req, true);
      default:
        return { status: VIRTIO_BLK_S_UNSUPP, usedLen: 1 };
    }
  }

  /** DISCARD/WRITE_ZEROES on a read-only disk: IOERR (§5.2.6.2); otherwise not offered → UNSUPP. */
  private unsupportedOrRo(): BlockResult {
    return { status: this.params.readOnly ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_UNSUPP, usedLen: 1 };
  }

  private discardOrZero(req: BlockRequest, zero: boolean): BlockResult {
    const IOERR: BlockResult = { status: VIRTIO_BLK_S_IOERR, usedLen: 1 };
    const len = req.dataOutBytes;
    const maxSeg = zero ? BLK_MAX_WRITE_ZEROES_SEG : BLK_MAX_DISCARD_SEG;
    const maxSectors = zero ? BLK_MAX_WRITE_ZEROES_SECTORS : BLK_MAX_DISCARD_SECTORS;
    if (len === 0 || len % BLK_DWZ_SEGMENT_SIZE !== 0 || len / BLK_DWZ_SEGMENT_SIZE > maxSeg) return IOERR;
    const raw = gatherBytes(req.dataOut, len);
    const v = new DataView(raw.buffer);
    // Every segment is checked before any is carried out. Reserved flag bits, and the unmap flag on a
    // discard, are unsupported (§5.2.6.2: UNSUPP "if any unknown flag is set", so this wins over a
    // range error in another segment); then a segment over the sector limit or past the end → IOERR.
    const ranges: Array<{ pos: number; len: number; unmap: boolean }> = [];
    let rangeError = false;
    for (let off = 0; off < len; off += BLK_DWZ_SEGMENT_SIZE) {
      const lo = v.getUint32(off, true);
      const hi = v.getUint32(off + 4, true);
      const num = v.getUint32(off + 8, true);
      const flags = v.getUint32(off + 12, true);
      if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 || (!zero && flags !== 0)) return { status: VIRTIO_BLK_S_UNSUPP, usedLen: 1 };
      const sector = hi >= 0x200000 ? Number.MAX_SAFE_INTEGER : hi * 2 ** 32 + lo;
      if (num > maxSectors || !this.inRange(sector, num * SECTOR_SIZE)) rangeError = true;
      else ranges.push({ pos: sector * SECTOR_SIZE, len: num * SECTOR_SIZE, unmap: (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 });
    }
    if (rangeError) return IOERR;
    for (const r of ranges) {
      if (r.len === 0) continue;
      if (zero) this.backend.writeZeroes(r.pos, r.len, r.unmap);
      else this.backend.discard(r.pos, r.len);
    }
    Atomics.add(this.stats, zero ? STAT_WRITE_ZEROES : STAT_DISCARDS, 1);
    return { status: VIRTIO_BLK_S_OK, usedLen: 1 };
  }

  /** Parse, execute and write the status byte; returns the used length to publish. */
  handle(chain: DescriptorChain): number {
    const req = parseRequest(chain);
    const r = this.execute(req);
    if (r.status < 0 || !req.status) return 0;
    new Uint8Array(req.status.buffer, req.status.offset, 1)[0] = r.status;
    return r.usedLen;
  }
}

/**
 * Serve every available request of the device's queue (the standard loop of ActiveQueue.service). A
 * chain the queue rejected is answered IOERR where it has a writable last byte (completeBrokenChain),
 * else with used length 0, and counted as a request and a bad chain.
 */
export function serviceRequests(q: ActiveQueue, dev: BlockDevice): Omit<ServiceResult, 'batches'> | undefined {
  // A limited device takes one request at a time and only while its limiter is out of debt.
  const r = q.service(
    (chain) => dev.handle(chain),
    (head) => {
      dev.count(STAT_REQUESTS);
      dev.count(STAT_BAD_CHAINS);
      const len = q.failChain(head, VIRTIO_BLK_S_IOERR);
      if (len) dev.count(STAT_ERRORS);
      return len;
    },
    dev.limiter,
  );
  if (!r) return undefined;
  dev.count(STAT_BATCHES, r.batches);
  return { completed: r.completed, interrupt: r.interrupt, ...(r.throttled ? { throttled: true } : {}) };
}
