// The device side of one vhost-user connection: a kindling VirtioDeviceType's backend (blk, console,
// rng…) served to a frontend over the vhost-user protocol instead of virtio-mmio. The backend is the
// very same object the I/O worker runs (createBackend(params, env)); it is given an ActiveDevice
// {mem, features, queues} whose ActiveQueues have a QueueGuard of this transport: ring accesses
// fenced by an activation generation, notifyUsed() writing the ring's call fd (an eventfd, or the
// write end of a pipe as user-mode Linux gives), kicks watched like ioeventfds.
//
// Ring life cycle (vhost-user spec, "Ring states"): a ring is *started* once it has a size
// (SET_VRING_NUM), addresses (SET_VRING_ADDR) and a kick fd (SET_VRING_KICK), and *enabled* by
// SET_VRING_ENABLE 1 when VHOST_USER_F_PROTOCOL_FEATURES was negotiated (at once otherwise). A ring is
// *ready* when it is started and enabled and a memory table is mapped.
//
// Activation rule (the vhost-user equivalent of DRIVER_OK): the backend is activated with the ready
// rings when every queue of the device is ready, or when a ready ring is kicked (a frontend that uses
// only some queues). Whenever the ready set changes under an active backend (GET_VRING_BASE stops a
// ring, SET_VRING_ENABLE 0, a new kick fd, SET_VRING_NUM/ADDR/BASE, SET_MEM_TABLE, SET_FEATURES,
// RESET_OWNER, disconnect) the backend is reset (backend.reset(), the generation bumped so stale ring
// accesses are refused) and reactivated by the same rule; each ring resumes at its last_avail_idx
// (SET_VRING_BASE, or where it stopped) and at the used.idx found in guest memory. Right after an
// activation each active queue gets one processQueue() pass to catch up on earlier kicks.
//
// Hostile frontends: every message is size-checked (protocol.ts), fd counts checked (missing → error,
// extra fds closed), regions validated (memory.ts), rings checked inside one region, sizes a power of
// two ≤ QueueNumMax, indices < the queue count, requests in the wrong state refused. A refused
// request gets REPLY_ACK status 1 when the frontend asked for an ack (NEED_REPLY with REPLY_ACK
// negotiated); a refused GET_* (whose reply the frontend waits for) closes the connection. Anything a
// backend throws (a fatal VirtqueueError on a broken ring) stops the device until a ring is restarted
// (as NEEDS_RESET does over virtio-mmio) and signals each ring's err fd.
import { GuestMemory } from '../memory/guest-memory.js';
import { RateLimiter } from '../shared/rate-limit.js';
import { VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, VIRTQ_AVAIL_ALIGN, VIRTQ_DESC_ALIGN, VIRTQ_USED_ALIGN, featureBit } from '../devices/virtio/constants.js';
import type { AnyVirtioDeviceType, ConfigSpace, VirtioDeviceBackend } from '../devices/virtio/device.js';
import { ActiveQueue, TSTAT_ACTIVATIONS, TSTAT_INTERRUPTS, TSTAT_LOG_SUPPRESSED, TSTAT_NEEDS_RESET, TSTAT_RESETS, TSTAT_WAKEUPS, countTransport } from '../devices/virtio/queue-service.js';
import { SplitQueue } from '../devices/virtio/queue.js';
import { mapRegions, releaseRegions, translateUser, validateRegions, type MappedMemory, type RegionMapper } from './memory.js';
import {
  MAX_CONFIG_SIZE,
  VHOST_USER_FLAG_NEED_REPLY,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_GET_CONFIG,
  VHOST_USER_GET_FEATURES,
  VHOST_USER_GET_PROTOCOL_FEATURES,
  VHOST_USER_GET_QUEUE_NUM,
  VHOST_USER_GET_VRING_BASE,
  VHOST_USER_PROTOCOL_F_BACKEND_REQ,
  VHOST_USER_PROTOCOL_F_CONFIG,
  VHOST_USER_PROTOCOL_F_MQ,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VHOST_USER_RESET_OWNER,
  VHOST_USER_SET_BACKEND_REQ_FD,
  VHOST_USER_SET_CONFIG,
  VHOST_USER_SET_FEATURES,
  VHOST_USER_SET_MEM_TABLE,
  VHOST_USER_SET_OWNER,
  VHOST_USER_SET_PROTOCOL_FEATURES,
  VHOST_USER_SET_VRING_ADDR,
  VHOST_USER_SET_VRING_BASE,
  VHOST_USER_SET_VRING_CALL,
  VHOST_USER_SET_VRING_ENABLE,
  VHOST_USER_SET_VRING_ERR,
  VHOST_USER_SET_VRING_KICK,
  VHOST_USER_SET_VRING_NUM,
  VhostUserError,
  configPayload,
  encodeReply,
  parseConfig,
  parseMemTable,
  parseU64,
  parseVringAddr,
  parseVringFile,
  parseVringState,
  requestName,
  u64Payload,
  vringStatePayload,
  type VhostUserMessage,
} from './protocol.js';

/** Protocol features offered: exactly what this file implements. */
// BACKEND_REQ: the channel is accepted and held (Linux 6.1's virtio_uml allocates its virtqueue IRQs
// only when it has set one up); kindling sends no back-end requests on it.
export const OFFERED_PROTOCOL_FEATURES =
  (1n << BigInt(VHOST_USER_PROTOCOL_F_MQ)) |
  (1n << BigInt(VHOST_USER_PROTOCOL_F_REPLY_ACK)) |
  (1n << BigInt(VHOST_USER_PROTOCOL_F_BACKEND_REQ)) |
  (1n << BigInt(VHOST_USER_PROTOCOL_F_CONFIG));

/**
 * Largest ring accepted over vhost-user, whatever the device's own QueueNumMax (256 for kindling's
 * virtio-mmio): the frontend chooses the size, and QEMU's virtio-mmio transport (its microvm
 * machine) always reports VIRTQUEUE_MAX_SIZE = 1024 to its guest, whose driver then takes all of it.
 * Nothing in the backends is sized by the ring (SplitQueue sizes its own state by the ring).
 */
export const VHOST_USER_MAX_QUEUE_SIZE = 1024;

/** What the session needs from the host (the addon, or fakes in tests). */
export interface SessionHost extends RegionMapper {
  close(fd: number): void;
  /** Signal a call/err fd (write a u64 1); false when a pipe is full. */
  notifyFd(fd: number): boolean;
  /** Watch a kick fd (an eventfd, drained natively); returns the unwatch function. Throws if it cannot be watched. */
  watchKick(fd: number, onKick: () => void): () => void;
}

export interface SessionOptions {
  name: string;
  type: AnyVirtioDeviceType;
  params: unknown;
  backend: VirtioDeviceBackend;
  host: SessionHost;
  /** Transport counters (createTransportStats). */
  stats: SharedArrayBuffer;
  log: (level: 'info' | 'warn' | 'error', msg: string) => void;
}

/** The frontend broke the protocol so that the connection must be closed. */
export class CloseConnection extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CloseConnection';
  }
}

interface Ring {
  index: number;
  maxSize: number;
  num: number | undefined;
  /** Frontend user addresses from SET_VRING_ADDR. */
  addr: { desc: bigint; avail: bigint; used: bigint } | undefined;
  base: number;
  kickFd: number | undefined;
  unwatch: (() => void) | undefined;
  callFd: number | undefined;
  errFd: number | undefined;
  enabled: boolean;
  /** The SplitQueue while the backend is active with this ring. */
  queue: SplitQueue | undefined;
  /** Whether addr/num lay inside `memory` when last checked (ready()). */
  checked?: { memory: MappedMemory; addr: NonNullable<Ring['addr']>; num: number; ok: boolean };
}

export class VhostUserSession {
  readonly numQueues: number;
  private readonly o: SessionOptions;
  private readonly offered: bigint;
  private readonly config: Uint8Array;
  private acked = 0n;
  private featuresSet = false;
  private protocol = 0n;
  /** SET_PROTOCOL_FEATURES was received (see has(-1)). */
  private protocolSet = false;
  private memory: MappedMemory | undefined;
  /** The back-end request channel (SET_BACKEND_REQ_FD), held until the connection ends. */
  private backendReqFd: number | undefined;
  private readonly rings: Ring[];
  private active = false;
  private broken = false;
  private gen = 0;
  private activeSet = '';
  private closed = false;
  private readonly limiter = new RateLimiter({ burst: 10, perSecond: 0.5 });

  constructor(opts: SessionOptions) {
    this.o = opts;
    const d = opts.type.describe(opts.params);
    // The ring features are the transport's (SplitQueue implements both for every device), offered
    // for every device: QEMU 7.2's vhost-user-rng acks the guest's INDIRECT_DESC/EVENT_IDX without
    // checking what the back-end offered, and a refused SET_FEATURES would leave its rings dead.
    this.offered = d.features | featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(VIRTIO_F_EVENT_IDX) | (1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES));
    this.config = new Uint8Array(d.config);
    this.numQueues = d.queues.length;
    this.rings = d.queues.map((q, index) => ({
      index,
      maxSize: Math.max(q.maxSize, VHOST_USER_MAX_QUEUE_SIZE),
      num: undefined,
      addr: undefined,
      base: 0,
      kickFd: undefined,
      unwatch: undefined,
      callFd: undefined,
      errFd: undefined,
      enabled: false,
      queue: undefined,
    }));
  }

  /** Whether the backend is activated. */
  get isActive(): boolean {
    return this.active;
  }

  /** Device features offered in GET_FEATURES. */
  get offeredFeatures(): bigint {
    return this.offered;
  }

  /**
   * Handle one message; returns the reply bytes to send (or undefined). Closes every fd the message
   * carried that it does not keep. Throws CloseConnection when the connection must be closed.
   */
  handle(m: VhostUserMessage): Uint8Array | undefined {
    const fds = [...m.fds];
    const take = (n: number): number[] => {
      if (fds.length < n) throw new VhostUserError(`${requestName(m.request)}: ${fds.length} fds, expected ${n}`);
      return fds.splice(0, n);
    };
    // Evaluated after the request: SET_PROTOCOL_FEATURES that negotiates REPLY_ACK is itself acked
    // (Linux's virtio_uml sets NEED_REPLY on it and waits).
    const wantsAck = (): boolean => (m.flags & VHOST_USER_FLAG_NEED_REPLY) !== 0 && this.has(VHOST_USER_PROTOCOL_F_REPLY_ACK);
    try {
      const reply = this.dispatch(m, take);
      if (reply) return encodeReply(m.request, reply);
      return wantsAck() ? encodeReply(m.request, u64Payload(0n)) : undefined;
    } catch (e) {
      if (e instanceof CloseConnection) throw e;
      if (!(e instanceof VhostUserError)) throw e;
      this.logLimited('warn', `${this.o.name}: ${e.message}`);
      if (isGet(m.request)) throw new CloseConnection(e.message);
      return wantsAck() ? encodeReply(m.request, u64Payload(1n)) : undefined;
    } finally {
      for (const fd of fds) this.safeClose(fd); // extra fds, or those of a refused request
    }
  }

  /** A kick on ring `index` (its kick fd fired). */
  kick(index: number): void {
    countTransport(this.o.stats, TSTAT_WAKEUPS);
    this.outsideMessage(() =>
      this.fenced(() => {
        this.reconcile(index);
        if (this.active && this.rings[index].queue) this.o.backend.processQueue(index);
      }),
    );
  }

  /** Backend work started by a host fd (BackendEnv.guarded): runs only while active, fenced. */
  guarded(fn: () => void): void {
    countTransport(this.o.stats, TSTAT_WAKEUPS);
    this.outsideMessage(() =>
      this.fenced(() => {
        if (this.active) fn();
      }),
    );
  }

  /**
   * Work run from an fd watcher rather than for a message: nothing may be thrown out of it (it would
   * escape the event loop's callback). A protocol error found there (none is expected: rings are
   * checked before they count as ready) stops the device like a broken ring.
   */
  private outsideMessage(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.stopBroken(e);
    }
  }

  /** The connection ended: stop the backend, release every fd and mapping. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.deactivate();
    for (const r of this.rings) this.clearRing(r);
    if (this.backendReqFd !== undefined) this.safeClose(this.backendReqFd);
    this.backendReqFd = undefined;
    this.dropMemory();
  }

  /** Forget the memory table and release its mappings at once (the backend is reset by then). */
  private dropMemory(): void {
    const old = this.memory;
    this.memory = undefined;
    releaseRegions(this.o.host, old);
  }

  // ---- dispatch ------------------------------------------------------------------------------

  private dispatch(m: VhostUserMessage, take: (n: number) => number[]): Uint8Array | undefined {
    switch (m.request) {
      case VHOST_USER_GET_FEATURES:
        this.noPayload(m);
        return u64Payload(this.offered);
      case VHOST_USER_SET_FEATURES: {
        const f = parseU64(m);
        const extra = f & ~this.offered;
        if (extra !== 0n) throw new VhostUserError(`SET_FEATURES: bits 0x${extra.toString(16)} were not offered`);
        const device = f & ~(1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES));
        if (this.o.type.validateFeatures && !this.o.type.validateFeatures(this.o.params, device)) throw new VhostUserError(`SET_FEATURES: 0x${f.toString(16)} refused by the device`);
        if (this.active && f !== this.acked) this.deactivate();
        this.acked = f;
        this.featuresSet = true;
        this.afterChange();
        return undefined;
      }
      case VHOST_USER_GET_PROTOCOL_FEATURES:
        this.noPayload(m);
        return u64Payload(OFFERED_PROTOCOL_FEATURES);
      case VHOST_USER_SET_PROTOCOL_FEATURES: {
        const f = parseU64(m);
        const extra = f & ~OFFERED_PROTOCOL_FEATURES;
        if (extra !== 0n) throw new VhostUserError(`SET_PROTOCOL_FEATURES: bits 0x${extra.toString(16)} were not offered`);
        this.protocol = f;
        this.protocolSet = true;
        return undefined;
      }
      case VHOST_USER_SET_OWNER:
        this.noPayload(m);
        return undefined;
      case VHOST_USER_RESET_OWNER:
        this.noPayload(m);
        this.deactivate();
        for (const r of this.rings) {
          this.clearRing(r);
          r.num = undefined;
          r.addr = undefined;
          r.base = 0;
        }
        this.dropMemory();
        this.acked = 0n;
        this.featuresSet = false;
        this.broken = false;
        return undefined;
      case VHOST_USER_SET_MEM_TABLE: {
        const regions = validateRegions(parseMemTable(m));
        const fds = take(regions.length);
        try {
          const mapped = mapRegions(this.o.host, regions, fds);
          this.deactivate();
          this.dropMemory(); // the old table's pages are let go of now (memory.ts: releaseRegions)
          this.memory = mapped;
        } finally {
          for (const fd of fds) this.safeClose(fd);
        }
        this.afterChange();
        return undefined;
      }
      case VHOST_USER_SET_VRING_NUM: {
        const s = parseVringState(m);
        const r = this.ring(s.index, m);
        if (!Number.isInteger(s.num) || s.num < 1 || s.num > r.maxSize || (s.num & (s.num - 1)) !== 0) {
          throw new VhostUserError(`SET_VRING_NUM: ring ${s.index} size ${s.num} is not a power of two in 1..${r.maxSize}`);
        }
        this.stopIfActive(r);
        r.num = s.num;
        this.afterChange();
        return undefined;
      }
      case VHOST_USER_SET_VRING_ADDR: {
        const a = parseVringAddr(m);
        const r = this.ring(a.index, m);
        if (!this.memory) throw new VhostUserError('SET_VRING_ADDR before SET_MEM_TABLE');
        if (r.num === undefined) throw new VhostUserError(`SET_VRING_ADDR: ring ${a.index} has no size (SET_VRING_NUM) yet`);
        const addr = { desc: a.desc, avail: a.avail, used: a.used };
        this.translateRing(addr, r.num); // throws when a ring is outside every region or misaligned
        this.stopIfActive(r);
        r.addr = addr;
        this.afterChange();
        return undefined;
      }
      case VHOST_USER_SET_VRING_BASE: {
        const s = parseVringState(m);
        const r = this.ring(s.index, m);
        if (s.num > 0xffff) throw new VhostUserError(`SET_VRING_BASE: ring ${s.index} base ${s.num} is not a 16-bit index`);
        this.stopIfActive(r);
        r.base = s.num;
        this.afterChange();
        return undefined;
      }
      case VHOST_USER_GET_VRING_BASE: {
        const s = parseVringState(m);
        const r = this.ring(s.index, m);
        this.stopIfActive(r);
        // The ring stops: its kick fd is no longer watched (a new SET_VRING_KICK starts it again).
        if (r.unwatch) r.unwatch();
        r.unwatch = undefined;
        if (r.kickFd !== undefined) this.safeClose(r.kickFd);
        r.kickFd = undefined;
        this.afterChange();
        return vringStatePayload(r.index, r.base);
      }
      case VHOST_USER_SET_VRING_KICK: {
        const f = parseVringFile(m);
        const r = this.ring(f.index, m);
        if (f.noFd) throw new VhostUserError(`SET_VRING_KICK: ring ${f.index} without an fd (polling is not supported)`);
        const [fd] = take(1);
        this.stopIfActive(r);
        if (r.unwatch) r.unwatch();
        if (r.kickFd !== undefined) this.safeClose(r.kickFd);
        r.unwatch = undefined;
        r.kickFd = undefined;
        try {
          r.unwatch = this.o.host.watchKick(fd, () => this.kick(r.index));
        } catch (e) {
          this.safeClose(fd);
          throw new VhostUserError(`SET_VRING_KICK: ring ${f.index}: the fd cannot be watched (${(e as { code?: string }).code ?? (e as Error).message})`);
        }
        r.kickFd = fd;
        if (!this.has(-1)) r.enabled = true; // without protocol features a ring is enabled when it starts
        this.broken = false;
        this.afterChange();
        return undefined;
      }
      case VHOST_USER_SET_VRING_CALL:
      case VHOST_USER_SET_VRING_ERR: {
        const f = parseVringFile(m);
        const r = this.ring(f.index, m);
        const fd = f.noFd ? undefined : take(1)[0];
        const key = m.request === VHOST_USER_SET_VRING_CALL ? 'callFd' : 'errFd';
        const old = r[key];
        r[key] = fd;
        if (old !== undefined) this.safeClose(old);
        return undefined;
      }
      case VHOST_USER_SET_VRING_ENABLE: {
        const s = parseVringState(m);
        const r = this.ring(s.index, m);
        if (!this.has(-1)) throw new VhostUserError('SET_VRING_ENABLE without VHOST_USER_F_PROTOCOL_FEATURES');
        if (s.num > 1) throw new VhostUserError(`SET_VRING_ENABLE: ring ${s.index} state ${s.num} is not 0 or 1`);
        if (!s.num) this.stopIfActive(r);
        r.enabled = s.num === 1;
        this.afterChange();
        return undefined;
      }
      case VHOST_USER_SET_BACKEND_REQ_FD: {
        if (!this.has(VHOST_USER_PROTOCOL_F_BACKEND_REQ)) throw new VhostUserError('SET_BACKEND_REQ_FD without VHOST_USER_PROTOCOL_F_BACKEND_REQ');
        this.noPayload(m);
        const [fd] = take(1);
        if (this.backendReqFd !== undefined) this.safeClose(this.backendReqFd);
        this.backendReqFd = fd;
        return undefined;
      }
      case VHOST_USER_GET_QUEUE_NUM:
        this.noPayload(m);
        return u64Payload(BigInt(this.numQueues));
      case VHOST_USER_GET_CONFIG: {
        if (!this.has(VHOST_USER_PROTOCOL_F_CONFIG)) throw new VhostUserError('GET_CONFIG without VHOST_USER_PROTOCOL_F_CONFIG');
        const c = parseConfig(m);
        if (c.offset + c.size > MAX_CONFIG_SIZE) throw new VhostUserError(`GET_CONFIG: offset ${c.offset} + size ${c.size} beyond ${MAX_CONFIG_SIZE}`);
        const out = new Uint8Array(c.size); // bytes past the device's config space read as 0
        out.set(this.config.subarray(Math.min(c.offset, this.config.length), Math.min(c.offset + c.size, this.config.length)));
        return configPayload(c.offset, c.flags, out);
      }
      case VHOST_USER_SET_CONFIG: {
        if (!this.has(VHOST_USER_PROTOCOL_F_CONFIG)) throw new VhostUserError('SET_CONFIG without VHOST_USER_PROTOCOL_F_CONFIG');
        const c = parseConfig(m);
        if (c.offset + c.size > this.config.length) throw new VhostUserError(`SET_CONFIG: offset ${c.offset} + size ${c.size} beyond the ${this.config.length}-byte config space`);
        const w = this.o.type.configWrite;
        if (!w) throw new VhostUserError('SET_CONFIG: the device has no writable config fields');
        const space: ConfigSpace = {
          read: () => this.config.slice(),
          write: (bytes, offset) => {
            if (offset >= 0 && offset + bytes.length <= this.config.length) this.config.set(bytes, offset);
          },
        };
        const d = c.data;
        if (c.size === 1 || c.size === 2 || c.size === 4) {
          let v = 0;
          for (let i = c.size - 1; i >= 0; i--) v = (v * 256 + d[i]) >>> 0;
          w(this.o.params, space, c.offset, c.size, v);
        } else {
          for (let i = 0; i < c.size; i++) w(this.o.params, space, c.offset + i, 1, d[i]);
        }
        return undefined;
      }
      default:
        if ((m.flags & VHOST_USER_FLAG_NEED_REPLY) !== 0 && this.has(VHOST_USER_PROTOCOL_F_REPLY_ACK)) {
          throw new VhostUserError(`${requestName(m.request)} is not supported`);
        }
        // The frontend may be waiting for a reply we cannot give: end the connection cleanly.
        throw new CloseConnection(`${requestName(m.request)} is not supported`);
    }
  }

  // ---- rings and activation ------------------------------------------------------------------

  /**
   * Protocol feature `bit` negotiated; bit -1: VHOST_USER_F_PROTOCOL_FEATURES negotiated, which is
   * the bit acked in SET_FEATURES or SET_PROTOCOL_FEATURES received (a front-end may only send it
   * after seeing the bit in GET_FEATURES). QEMU 7.2's vhost-user-net acks its SET_FEATURES with the
   * virtio-net bits alone yet negotiates protocol features and enables its rings with
   * SET_VRING_ENABLE, as libvhost-user and DPDK accept.
   */
  private has(bit: number): boolean {
    if (bit === -1) return this.protocolSet || (this.acked & (1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES))) !== 0n;
    return (this.protocol & (1n << BigInt(bit))) !== 0n;
  }

  private noPayload(m: VhostUserMessage): void {
    // GET_FEATURES and friends carry no payload; QEMU sends none, some frontends send a zero u64.
    if (m.payload.length !== 0 && m.payload.length !== 8) throw new VhostUserError(`${requestName(m.request)}: payload of ${m.payload.length} bytes`);
  }

  private ring(index: number, m: VhostUserMessage): Ring {
    const r = this.rings[index];
    if (!r) throw new VhostUserError(`${requestName(m.request)}: ring ${index} (the device has ${this.numQueues})`);
    return r;
  }

  private translateRing(addr: { desc: bigint; avail: bigint; used: bigint }, num: number): { desc: number; avail: number; used: number } {
    const regions = this.memory?.regions ?? [];
    const t = (name: string, ua: bigint, len: number, align: number): number => {
      const g = translateUser(regions, ua, len);
      if (g === undefined) throw new VhostUserError(`ring ${name} at user address 0x${ua.toString(16)}+0x${len.toString(16)} is not inside one memory region`);
      if (g % align !== 0) throw new VhostUserError(`ring ${name} at 0x${g.toString(16)} is not ${align}-byte aligned`);
      // A region larger than MAX_REGION_SLOT is several slots: a ring part must not straddle two.
      if (this.memory && !this.memory.mem.isRam(g, len)) throw new VhostUserError(`ring ${name} at 0x${g.toString(16)}+0x${len.toString(16)} is not mapped`);
      return g;
    };
    return { desc: t('descriptor table', addr.desc, 16 * num, VIRTQ_DESC_ALIGN), avail: t('avail', addr.avail, 6 + 2 * num, VIRTQ_AVAIL_ALIGN), used: t('used', addr.used, 6 + 8 * num, VIRTQ_USED_ALIGN) };
  }

  /**
   * Started, enabled, and its three parts inside the current memory table: a ring whose addresses the
   * table no longer holds (a later SET_MEM_TABLE) waits, stopped, for a new SET_VRING_ADDR.
   */
  private ready(r: Ring): boolean {
    if (this.memory === undefined || r.num === undefined || r.addr === undefined || r.kickFd === undefined || !r.enabled) return false;
    // Checked once per (table, addresses, size): reconcile() runs on every kick.
    const c = r.checked;
    if (c && c.memory === this.memory && c.addr === r.addr && c.num === r.num) return c.ok;
    let ok = true;
    try {
      this.translateRing(r.addr, r.num);
    } catch {
      ok = false;
    }
    r.checked = { memory: this.memory, addr: r.addr, num: r.num, ok };
    return ok;
  }

  /** A ring's configuration changes: an active backend must let go of it first. */
  private stopIfActive(r: Ring): void {
    if (this.active && r.queue) this.deactivate();
  }

  private afterChange(): void {
    this.fenced(() => this.reconcile(undefined));
  }

  private reconcile(kicked: number | undefined): void {
    if (this.broken || this.closed || !this.featuresSet) return;
    const readyRings = this.rings.filter((r) => this.ready(r));
    const key = readyRings.map((r) => r.index).join(',');
    if (this.active && key !== this.activeSet) this.deactivate();
    if (this.active || readyRings.length === 0) return;
    if (readyRings.length !== this.numQueues && (kicked === undefined || !readyRings.some((r) => r.index === kicked))) return;
    this.activate(readyRings, key);
  }

  private activate(readyRings: Ring[], key: string): void {
    const mem: GuestMemory = this.memory!.mem;
    const gen = ++this.gen;
    const features = this.acked & ~(1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES));
    const queues: Array<ActiveQueue | undefined> = this.rings.map(() => undefined);
    // Every ring translated before any state changes (ready() checked them: this cannot throw).
    const addrs = readyRings.map((r) => this.translateRing(r.addr!, r.num!));
    readyRings.forEach((r, k) => {
      const a = addrs[k];
      let usedIdx = 0;
      try {
        usedIdx = mem.read16(a.used + 2);
      } catch {
        usedIdx = 0;
      }
      r.queue = new SplitQueue(mem, {
        size: r.num!,
        descAddr: a.desc,
        driverAddr: a.avail,
        deviceAddr: a.used,
        eventIdx: (features & featureBit(VIRTIO_F_EVENT_IDX)) !== 0n,
        indirect: (features & featureBit(VIRTIO_F_INDIRECT_DESC)) !== 0n,
        lastAvailIdx: r.base,
        usedIdx,
      });
      queues[r.index] = new ActiveQueue({
        index: r.index,
        queue: r.queue,
        mem,
        descAddr: a.desc,
        stats: this.o.stats,
        guard: {
          rings: (fn) => (this.gen === gen && this.active ? fn() : undefined),
          enter: () => undefined, // one thread: a reset cannot run while work is in flight
          leave: () => undefined,
          notifyUsed: () => {
            if (this.gen !== gen || r.callFd === undefined) return;
            countTransport(this.o.stats, TSTAT_INTERRUPTS);
            try {
              this.o.host.notifyFd(r.callFd);
            } catch (e) {
              this.logLimited('warn', `${this.o.name}: ring ${r.index}: call fd write failed (${(e as { code?: string }).code ?? (e as Error).message})`);
            }
          },
        },
      });
    });
    this.active = true;
    this.activeSet = key;
    countTransport(this.o.stats, TSTAT_ACTIVATIONS);
    this.o.backend.activate({ mem, features, queues });
    for (const r of readyRings) if (this.active && r.queue) this.o.backend.processQueue(r.index);
  }

  private deactivate(): void {
    if (!this.active) return;
    this.active = false;
    this.gen++;
    this.activeSet = '';
    for (const r of this.rings) {
      if (r.queue) r.base = r.queue.lastAvailIdx;
      r.queue = undefined;
    }
    countTransport(this.o.stats, TSTAT_RESETS);
    this.o.backend.reset();
  }

  private clearRing(r: Ring): void {
    if (r.unwatch) r.unwatch();
    r.unwatch = undefined;
    for (const k of ['kickFd', 'callFd', 'errFd'] as const) {
      const fd = r[k];
      if (fd !== undefined) this.safeClose(fd);
      r[k] = undefined;
    }
    r.enabled = false;
    r.queue = undefined;
  }

  /** Run device work; a throw stops the device (NEEDS_RESET's equivalent) and signals the err fds. */
  private fenced(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      if (e instanceof VhostUserError || e instanceof CloseConnection) throw e;
      this.stopBroken(e);
    }
  }

  /** NEEDS_RESET's equivalent: stop the backend until a ring is restarted, signal the err fds. */
  private stopBroken(e: unknown): void {
    this.broken = true;
    try {
      this.deactivate();
    } catch {
      // the backend is idle anyway: it gets no more kicks until a ring is restarted
    }
    countTransport(this.o.stats, TSTAT_NEEDS_RESET);
    this.logLimited('warn', `${this.o.name}: device stopped until a ring is restarted: ${e instanceof Error ? e.message : String(e)}`);
    for (const r of this.rings) {
      if (r.errFd === undefined) continue;
      try {
        this.o.host.notifyFd(r.errFd);
      } catch {
        // nothing more to tell
      }
    }
  }

  private safeClose(fd: number): void {
    try {
      this.o.host.close(fd);
    } catch {
      // already gone
    }
  }

  private logLimited(level: 'info' | 'warn' | 'error', msg: string): void {
    const r = this.limiter.take();
    if (!r.ok) {
      countTransport(this.o.stats, TSTAT_LOG_SUPPRESSED);
      return;
    }
    this.o.log(level, r.suppressed ? `${msg} (${r.suppressed} similar lines suppressed)` : msg);
  }
}

function isGet(request: number): boolean {
  return request === VHOST_USER_GET_FEATURES || request === VHOST_USER_GET_PROTOCOL_FEATURES || request === VHOST_USER_GET_VRING_BASE || request === VHOST_USER_GET_QUEUE_NUM || request === VHOST_USER_GET_CONFIG;
}
