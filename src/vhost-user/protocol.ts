// The vhost-user wire protocol (QEMU docs/interop/vhost-user.rst), device ("back-end") side: message
// codes, the 12-byte header, the stream reassembler and the payload parsers. Pure: no fds are
// opened or closed here (the caller owns every fd a message carries), so the fast-check properties
// feed it arbitrary byte streams and fd counts.
//
// Header (little-endian): u32 request, u32 flags (bits 0-1 version = 1, bit 2 REPLY, bit 3
// NEED_REPLY), u32 size (payload bytes that follow). Payloads used here:
//   u64                 GET/SET_FEATURES, SET_PROTOCOL_FEATURES, SET_VRING_KICK/CALL/ERR (bits 0-7
//                       the vring index, bit 8 "no fd: poll"), replies and REPLY_ACK status
//   vring state         u32 index, u32 num          SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE
//   vring address       u32 index, u32 flags, u64 desc, u64 used, u64 avail, u64 log (40 bytes)
//   memory table        u32 nregions, u32 padding, then nregions × {u64 guest_addr, u64 size,
//                       u64 user_addr, u64 mmap_offset}; one fd per region
//   device config       u32 offset, u32 size, u32 flags, then size bytes (≤ 256)
//
// Framing. The reader takes the stream a piece at a time and asks only for what the current message
// still lacks (`want()`), so fds that arrive with a recvmsg belong to the message being read — the
// frontend sends each message with its fds in one sendmsg. A header whose version is not 1, a REPLY
// flag on a request, or a payload larger than MAX_PAYLOAD cannot be skipped safely: the reader then
// reports a framing error and the connection is closed.

export const VHOST_USER_GET_FEATURES = 1;
export const VHOST_USER_SET_FEATURES = 2;
export const VHOST_USER_SET_OWNER = 3;
export const VHOST_USER_RESET_OWNER = 4;
export const VHOST_USER_SET_MEM_TABLE = 5;
export const VHOST_USER_SET_LOG_BASE = 6;
export const VHOST_USER_SET_LOG_FD = 7;
export const VHOST_USER_SET_VRING_NUM = 8;
export const VHOST_USER_SET_VRING_ADDR = 9;
export const VHOST_USER_SET_VRING_BASE = 10;
export const VHOST_USER_GET_VRING_BASE = 11;
export const VHOST_USER_SET_VRING_KICK = 12;
export const VHOST_USER_SET_VRING_CALL = 13;
export const VHOST_USER_SET_VRING_ERR = 14;
export const VHOST_USER_GET_PROTOCOL_FEATURES = 15;
export const VHOST_USER_SET_PROTOCOL_FEATURES = 16;
export const VHOST_USER_GET_QUEUE_NUM = 17;
export const VHOST_USER_SET_VRING_ENABLE = 18;
export const VHOST_USER_SET_BACKEND_REQ_FD = 21;
export const VHOST_USER_GET_CONFIG = 24;
export const VHOST_USER_SET_CONFIG = 25;

/** Feature bit: the back-end speaks GET/SET_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;

export const VHOST_USER_PROTOCOL_F_MQ = 0;
export const VHOST_USER_PROTOCOL_F_REPLY_ACK = 3;
/** The back-end → front-end request channel (SET_BACKEND_REQ_FD; the spec's former SLAVE_REQ). */
export const VHOST_USER_PROTOCOL_F_BACKEND_REQ = 5;
export const VHOST_USER_PROTOCOL_F_CONFIG = 9;

export const VHOST_USER_VERSION = 1;
export const VHOST_USER_VERSION_MASK = 0x3;
export const VHOST_USER_FLAG_REPLY = 1 << 2;
export const VHOST_USER_FLAG_NEED_REPLY = 1 << 3;

export const HEADER_SIZE = 12;
/** Largest payload accepted: a memory table of VHOST_MEMORY_MAX_REGIONS regions or a 256-byte config. */
export const VHOST_MEMORY_MAX_REGIONS = 8;
export const MEM_REGION_SIZE = 32;
export const MAX_CONFIG_SIZE = 256;
export const CONFIG_HEADER_SIZE = 12;
export const MAX_PAYLOAD = 8 + VHOST_MEMORY_MAX_REGIONS * MEM_REGION_SIZE + 0x1000;
/** Most fds one message may carry (the memory table: one per region). */
export const MAX_FDS = 8;

export const VRING_INDEX_MASK = 0xff;
export const VRING_NOFD_MASK = 1 << 8;

/** Request names (for log lines and docs). */
export const REQUEST_NAMES: Readonly<Record<number, string>> = {
  1: 'GET_FEATURES',
  2: 'SET_FEATURES',
  3: 'SET_OWNER',
  4: 'RESET_OWNER',
  5: 'SET_MEM_TABLE',
  6: 'SET_LOG_BASE',
  7: 'SET_LOG_FD',
  8: 'SET_VRING_NUM',
  9: 'SET_VRING_ADDR',
  10: 'SET_VRING_BASE',
  11: 'GET_VRING_BASE',
  12: 'SET_VRING_KICK',
  13: 'SET_VRING_CALL',
  14: 'SET_VRING_ERR',
  15: 'GET_PROTOCOL_FEATURES',
  16: 'SET_PROTOCOL_FEATURES',
  17: 'GET_QUEUE_NUM',
  18: 'SET_VRING_ENABLE',
  21: 'SET_BACKEND_REQ_FD',
  24: 'GET_CONFIG',
  25: 'SET_CONFIG',
};

export function requestName(r: number): string {
  return REQUEST_NAMES[r] ?? `request ${r}`;
}

/** A protocol violation by the frontend that the message handler answers with an error (or a close). */
export class VhostUserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VhostUserError';
  }
}

export interface VhostUserMessage {
  request: number;
  flags: number;
  /** The payload (exactly header.size bytes; a copy the caller may keep). */
  payload: Uint8Array;
  /** Fds that came with the message, in order (the handler must keep or close every one). */
  fds: number[];
}

export type ReadResult =
  | { kind: 'message'; message: VhostUserMessage }
  | { kind: 'error'; reason: string; fds: number[] };

/**
 * Reassembles messages from the stream. Call want() for how many bytes to read next (never past the
 * current message), push() what was read with its fds, then take() complete messages.
 */
export class MessageReader {
  private readonly header = new Uint8Array(HEADER_SIZE);
  private headerFill = 0;
  private payload: Uint8Array | undefined;
  private payloadFill = 0;
  private fds: number[] = [];
  private failed: string | undefined;

  /** Bytes the current message still lacks (0 after a framing error). */
  want(): number {
    if (this.failed !== undefined) return 0;
    if (this.headerFill < HEADER_SIZE) return HEADER_SIZE - this.headerFill;
    return this.payload!.length - this.payloadFill;
  }

  /** Whether a framing error ended the stream. */
  get error(): string | undefined {
    return this.failed;
  }

  /**
   * Feed bytes read from the stream (at most want() of them) and the fds that came with them; returns
   * the message they complete, a framing error (with every fd still held, for the caller to close), or
   * undefined when more bytes are needed.
   */
  push(bytes: Uint8Array, fds: readonly number[] = []): ReadResult | undefined {
    for (const fd of fds) this.fds.push(fd);
    if (this.failed !== undefined) return this.fail(this.failed);
    if (bytes.length > this.want()) return this.fail(`${bytes.length} bytes pushed where ${this.want()} were wanted`);
    let pos = 0;
    if (this.headerFill < HEADER_SIZE) {
      const k = Math.min(bytes.length, HEADER_SIZE - this.headerFill);
      this.header.set(bytes.subarray(0, k), this.headerFill);
      this.headerFill += k;
      pos = k;
      if (this.headerFill < HEADER_SIZE) return undefined;
      const dv = new DataView(this.header.buffer);
      const flags = dv.getUint32(4, true);
      const size = dv.getUint32(8, true);
      if ((flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION) return this.fail(`header version ${flags & VHOST_USER_VERSION_MASK}, not ${VHOST_USER_VERSION}`);
      if ((flags & VHOST_USER_FLAG_REPLY) !== 0) return this.fail('a reply where a request was expected');
      if (size > MAX_PAYLOAD) return this.fail(`payload of ${size} bytes (at most ${MAX_PAYLOAD})`);
      this.payload = new Uint8Array(size);
      this.payloadFill = 0;
    }
    const p = this.payload!;
    const k = Math.min(bytes.length - pos, p.length - this.payloadFill);
    p.set(bytes.subarray(pos, pos + k), this.payloadFill);
    this.payloadFill += k;
    if (this.payloadFill < p.length) return undefined;
    const dv = new DataView(this.header.buffer);
    const message: VhostUserMessage = { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), payload: p, fds: this.fds };
    this.fds = [];
    this.headerFill = 0;
    this.payload = undefined;
    this.payloadFill = 0;
    return { kind: 'message', message };
  }

  /** Fds held for an incomplete message (to close at disconnect). */
  pendingFds(): number[] {
    const f = this.fds;
    this.fds = [];
    return f;
  }

  private fail(reason: string): ReadResult {
    this.failed = reason;
    const fds = this.fds;
    this.fds = [];
    return { kind: 'error', reason, fds };
  }
}

// ---- payload parsers (each checks the size exactly) -----------------------------------------------

function view(p: Uint8Array): DataView {
  return new DataView(p.buffer, p.byteOffset, p.byteLength);
}

function needSize(m: VhostUserMessage, size: number): void {
  if (m.payload.length !== size) throw new VhostUserError(`${requestName(m.request)}: payload of ${m.payload.length} bytes, expected ${size}`);
}

export function parseU64(m: VhostUserMessage): bigint {
  needSize(m, 8);
  return view(m.payload).getBigUint64(0, true);
}

export interface VringState {
  index: number;
  num: number;
}

export function parseVringState(m: VhostUserMessage): VringState {
  needSize(m, 8);
  const v = view(m.payload);
  return { index: v.getUint32(0, true), num: v.getUint32(4, true) };
}

export interface VringAddr {
  index: number;
  flags: number;
  /** Frontend user addresses (u64 as bigint). */
  desc: bigint;
  used: bigint;
  avail: bigint;
  log: bigint;
}

export function parseVringAddr(m: VhostUserMessage): VringAddr {
  needSize(m, 40);
  const v = view(m.payload);
  return {
    index: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    desc: v.getBigUint64(8, true),
    used: v.getBigUint64(16, true),
    avail: v.getBigUint64(24, true),
    log: v.getBigUint64(32, true),
  };
}

/** SET_VRING_KICK/CALL/ERR: the vring index and whether an fd comes with it. */
export function parseVringFile(m: VhostUserMessage): { index: number; noFd: boolean } {
  const u = parseU64(m);
  if (u >> 9n !== 0n) throw new VhostUserError(`${requestName(m.request)}: reserved bits set in 0x${u.toString(16)}`);
  return { index: Number(u & BigInt(VRING_INDEX_MASK)), noFd: (u & BigInt(VRING_NOFD_MASK)) !== 0n };
}

export interface MemRegionMsg {
  guestAddr: bigint;
  size: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
}

export function parseMemTable(m: VhostUserMessage): MemRegionMsg[] {
  if (m.payload.length < 8) throw new VhostUserError(`SET_MEM_TABLE: payload of ${m.payload.length} bytes`);
  const v = view(m.payload);
  const n = v.getUint32(0, true);
  if (n === 0 || n > VHOST_MEMORY_MAX_REGIONS) throw new VhostUserError(`SET_MEM_TABLE: ${n} regions (1..${VHOST_MEMORY_MAX_REGIONS})`);
  // The region array may be longer than n (QEMU sends all 8 slots, Linux's virtio_uml 2): entries
  // past n are ignored, but the payload must hold n of them and be a whole number of entries.
  const exact = 8 + n * MEM_REGION_SIZE;
  const full = 8 + VHOST_MEMORY_MAX_REGIONS * MEM_REGION_SIZE;
  if (m.payload.length < exact || m.payload.length > full || (m.payload.length - 8) % MEM_REGION_SIZE !== 0) {
    throw new VhostUserError(`SET_MEM_TABLE: payload of ${m.payload.length} bytes for ${n} regions`);
  }
  const out: MemRegionMsg[] = [];
  for (let i = 0; i < n; i++) {
    const o = 8 + i * MEM_REGION_SIZE;
    out.push({ guestAddr: v.getBigUint64(o, true), size: v.getBigUint64(o + 8, true), userAddr: v.getBigUint64(o + 16, true), mmapOffset: v.getBigUint64(o + 24, true) });
  }
  return out;
}

export interface ConfigMsg {
  offset: number;
  size: number;
  flags: number;
  data: Uint8Array;
}

export function parseConfig(m: VhostUserMessage): ConfigMsg {
  if (m.payload.length < CONFIG_HEADER_SIZE) throw new VhostUserError(`${requestName(m.request)}: payload of ${m.payload.length} bytes`);
  const v = view(m.payload);
  const offset = v.getUint32(0, true);
  const size = v.getUint32(4, true);
  const flags = v.getUint32(8, true);
  if (size > MAX_CONFIG_SIZE || m.payload.length !== CONFIG_HEADER_SIZE + size) {
    throw new VhostUserError(`${requestName(m.request)}: config size ${size} in a payload of ${m.payload.length} bytes`);
  }
  return { offset, size, flags, data: m.payload.subarray(CONFIG_HEADER_SIZE) };
}

// ---- replies ---------------------------------------------------------------------------------------

export function encodeReply(request: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, VHOST_USER_VERSION | VHOST_USER_FLAG_REPLY, true);
  v.setUint32(8, payload.length, true);
  out.set(payload, HEADER_SIZE);
  return out;
}

export function u64Payload(v: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
  return out;
}

export function vringStatePayload(index: number, num: number): Uint8Array {
  const out = new Uint8Array(8);
  const v = new DataView(out.buffer);
  v.setUint32(0, index >>> 0, true);
  v.setUint32(4, num >>> 0, true);
  return out;
}

export function configPayload(offset: number, flags: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(CONFIG_HEADER_SIZE + data.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, offset >>> 0, true);
  v.setUint32(4, data.length, true);
  v.setUint32(8, flags >>> 0, true);
  out.set(data, CONFIG_HEADER_SIZE);
  return out;
}

/** A request (frontend side; tests and tools). */
export function encodeRequest(request: number, payload: Uint8Array, flags = 0): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, VHOST_USER_VERSION | flags, true);
  v.setUint32(8, payload.length, true);
  out.set(payload, HEADER_SIZE);
  return out;
}
