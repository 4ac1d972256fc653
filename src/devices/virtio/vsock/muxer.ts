// The virtio-vsock connection table and per-connection state machine (virtio 1.2 §5.10.6; Linux's
// net/vmw_vsock/virtio_transport_common.c is the reference peer). Pure: no queues, no sockets, no
// timers. The backend (index.ts) feeds it the guest's tx packets and asks it for rx packets; host-side
// streams (host.ts: Unix sockets, the in-process bridge; tests: fakes) are behind HostStream.
//
// A connection is keyed by (host port, guest port); the guest is always the peer with the configured
// CID, the host is CID 2. States:
//   host-pending   the guest sent REQUEST; the host side is being opened (onGuestConnect)
//   guest-pending  a host client asked for a guest port (connectToGuest); REQUEST queued or sent, the
//                  guest's RESPONSE or RST decides (CONNECT_TIMEOUT_MS, then refused)
//   established    data both ways
//   closing        we sent SHUTDOWN(RCV|SEND) because the host side is gone; waiting for the guest's RST
//                  (CLOSE_TIMEOUT_MS, then we send RST)
// A connection that ends is removed from the table at once; if the guest must be told, an RST for its
// ports goes into the bounded stray-RST queue (RST is never answered with RST).
//
// Credit (§5.10.6.3), both ways:
//   guest → host  kindling advertises buf_alloc = BUF_ALLOC per connection and fwd_cnt = bytes the host
//                 stream has taken (HostStream.write's `done`: flushed out of kindling). An RW that
//                 would make the bytes written but not yet flushed exceed buf_alloc breaks the credit
//                 rule: the connection is reset. So at most BUF_ALLOC bytes per connection are ever
//                 held on the host side, however slow its reader. A CREDIT_UPDATE goes out when the
//                 guest's view of free space has fallen below half and enough (a quarter, or all) was
//                 forwarded since the last advertisement, or on CREDIT_REQUEST; every packet sent also
//                 carries the current fwd_cnt.
//   host → guest  bytes from the host stream wait in a per-connection queue of at most HOST_PENDING_MAX
//                 bytes (the stream is paused above it, resumed below half); RW packets carry only what
//                 the guest's credit (peer_buf_alloc − (tx_cnt − peer_fwd_cnt), u32 arithmetic) allows;
//                 a connection stalled on credit sends one CREDIT_REQUEST.
// Counters are free-running JS numbers (exact up to 2^53 bytes); the wire carries them mod 2^32.
//
// Hostile packets (never a throw): rejected by parseTxPacket → dropped (bad CIDs, short) or answered
// with RST (bad type/op/length: the connection, if any, is reset); RW/RESPONSE/SHUTDOWN for an unknown
// connection → RST; a duplicate REQUEST resets the connection; RW after the guest's SHUTDOWN(SEND), on
// a pending connection or beyond credit → reset; REQUEST beyond MAX_CONNECTIONS → RST. Every case is
// counted (VsockCounters).
import {
  VIRTIO_VSOCK_OP_CREDIT_REQUEST,
  VIRTIO_VSOCK_OP_CREDIT_UPDATE,
  VIRTIO_VSOCK_OP_REQUEST,
  VIRTIO_VSOCK_OP_RESPONSE,
  VIRTIO_VSOCK_OP_RST,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
  VIRTIO_VSOCK_SHUTDOWN_RCV,
  VIRTIO_VSOCK_SHUTDOWN_SEND,
  VSOCK_MAX_PKT_PAYLOAD,
  hostHeader,
  type TxPacket,
  type TxRejection,
  type VsockHeader,
} from './packet.js';

/** buf_alloc kindling advertises per connection (Linux's default socket buffer size). */
export const BUF_ALLOC = 256 * 1024;
/** Most host → guest bytes queued per connection before the host stream is paused. */
export const HOST_PENDING_MAX = 64 * 1024;
/** Default connection limit per VM (host- and guest-initiated together). */
export const MAX_CONNECTIONS = 1024;
/** Host-initiated connection: how long the guest has to answer REQUEST (Firecracker: 2 s). */
export const CONNECT_TIMEOUT_MS = 2000;
/** After our SHUTDOWN(RCV|SEND): how long the guest has to answer with RST. */
export const CLOSE_TIMEOUT_MS = 2000;
/** Host-initiated connections get host ports in [2^30, 2^31), round robin (as Firecracker's muxer). */
export const LOCAL_PORT_MIN = 2 ** 30;

/** The host end of one connection (a Unix socket, the in-process bridge, a test fake). */
export interface HostStream {
  /** Bytes from the guest, in order; `done()` once they left kindling (flushed), which advances fwd_cnt. */
  write(data: Uint8Array, done: () => void): void;
  /** The guest sends no more: flush what was written, then half-close. */
  end(): void;
  /** Stop / restart delivering host data (hostData). */
  pause(): void;
  resume(): void;
  /** The connection is over: `graceful` flushes what was written first; otherwise close at once. */
  close(graceful: boolean): void;
  /** A host-initiated connection was accepted by the guest (Firecracker: `OK <hostPort>\n`). */
  established?(hostPort: number): void;
}

/** A guest REQUEST waiting for its host side (onGuestConnect). Exactly one of accept/refuse, once. */
export interface GuestConnectRequest {
  hostPort: number;
  guestPort: number;
  /** The host side is open: the guest gets RESPONSE. False if the connection is gone meanwhile (the stream is then closed). */
  accept(stream: HostStream): boolean;
  /** Nobody listens: the guest gets RST. */
  refuse(): void;
}

export type ConnState = 'host-pending' | 'guest-pending' | 'established' | 'closing';

/** What one connection looks like from outside (tests, stats). */
export interface ConnInfo {
  hostPort: number;
  guestPort: number;
  state: ConnState;
  /** Bytes handed to the host stream and not yet flushed (≤ BUF_ALLOC). */
  unflushed: number;
  /** Host bytes waiting for the guest. */
  pending: number;
}

/** Counter names (VsockCounters keys), in their SAB order. */
export const VSOCK_COUNTERS = [
  'connectionsOpened',
  'connectionsRefused',
  'connectionsReset',
  'rxPackets',
  'txPackets',
  'bytesToHost',
  'bytesToGuest',
  'creditUpdates',
  'creditRequests',
  'droppedShort',
  'droppedBadCid',
  'rstBadType',
  'rstBadOp',
  'rstBadLen',
  'rstUnknownConnection',
  'rstDuplicateRequest',
  'rstCreditViolation',
  'rstProtocol',
  'rstLimit',
  'droppedAfterClose',
  'strayRstDropped',
  'timeouts',
] as const;
export type VsockCounterName = (typeof VSOCK_COUNTERS)[number];
export type VsockCounters = Record<VsockCounterName, number>;

/** One rx packet to write into a guest buffer: header (len = payload bytes) then the payload pieces. */
export interface RxPacket {
  hdr: VsockHeader;
  payload: Uint8Array[];
}

class Conn {
  state: ConnState;
  stream: HostStream | undefined;
  dead = false;
  // guest → host
  rxCnt = 0;
  fwdCnt = 0;
  advertisedFwd = 0;
  // host → guest
  txCnt = 0;
  peerBufAlloc: number;
  peerFwdCnt: number;
  pending: Uint8Array[] = [];
  pendingBytes = 0;
  paused = false;
  creditRequested = false;
  // control owed to the guest
  needRequest = false;
  needResponse = false;
  needCreditUpdate = false;
  shutOwed = 0;
  shutSent = 0;
  /** SHUTDOWN flags received from the guest (cumulative). */
  guestShut = 0;
  deadline: number | undefined;

  constructor(
    readonly key: string,
    readonly hostPort: number,
    readonly guestPort: number,
    state: ConnState,
    peerBufAlloc: number,
    peerFwdCnt: number,
  ) {
    this.state = state;
    this.peerBufAlloc = peerBufAlloc;
    this.peerFwdCnt = peerFwdCnt;
  }

  /** Bytes the guest can take now. */
  credit(): number {
    const inflight = ((this.txCnt >>> 0) - this.peerFwdCnt) >>> 0;
    return inflight >= this.peerBufAlloc ? 0 : this.peerBufAlloc - inflight;
  }
}

export interface VsockMuxerOptions {
  guestCid: bigint;
  /** A guest REQUEST to a host port: open the host side and answer through the request. */
  onGuestConnect(req: GuestConnectRequest): void;
  /** Default MAX_CONNECTIONS. */
  maxConnections?: number;
  /** Default BUF_ALLOC. */
  bufAlloc?: number;
  /** Default HOST_PENDING_MAX. */
  hostPendingMax?: number;
  /** Milliseconds clock for the connect/close timeouts. */
  now?: () => number;
  /** Where the counters live (a Float64Array of VSOCK_COUNTERS.length, e.g. over a SAB). */
  counters?: Float64Array;
}

const keyOf = (hostPort: number, guestPort: number): string => `${hostPort}:${guestPort}`;

export class VsockMuxer {
  readonly guestCid: bigint;
  readonly maxConnections: number;
  readonly bufAlloc: number;
  readonly hostPendingMax: number;
  private readonly conns = new Map<string, Conn>();
  /** Connections that may have something for the guest (round robin). */
  private readonly ready = new Set<Conn>();
  /** RSTs for connections not in the table: [hostPort, guestPort]. */
  private readonly strays: Array<[number, number]> = [];
  private readonly localPorts = new Set<number>();
  private localPortLast = LOCAL_PORT_MIN - 1;
  private readonly now: () => number;
  private readonly onGuestConnect: (req: GuestConnectRequest) => void;
  readonly counters: Float64Array;

  constructor(o: VsockMuxerOptions) {
    this.guestCid = o.guestCid;
    this.onGuestConnect = o.onGuestConnect;
    this.maxConnections = o.maxConnections ?? MAX_CONNECTIONS;
    this.bufAlloc = o.bufAlloc ?? BUF_ALLOC;
    this.hostPendingMax = o.hostPendingMax ?? HOST_PENDING_MAX;
    this.now = o.now ?? Date.now;
    this.counters = o.counters ?? new Float64Array(VSOCK_COUNTERS.length);
  }

  private count(name: VsockCounterName, n = 1): void {
    this.counters[VSOCK_COUNTERS.indexOf(name)] += n;
  }

  stats(): VsockCounters {
    return Object.fromEntries(VSOCK_COUNTERS.map((n, i) => [n, this.counters[i]])) as VsockCounters;
  }

  get size(): number {
    return this.conns.size;
  }

  connections(): ConnInfo[] {
    return [...this.conns.values()].map((c) => ({ hostPort: c.hostPort, guestPort: c.guestPort, state: c.state, unflushed: c.rxCnt - c.fwdCnt, pending: c.pendingBytes }));
  }

  /** Most strays queued; beyond it further RSTs are dropped (counted). */
  private get strayMax(): number {
    return 2 * this.maxConnections + 64;
  }

  private stray(hostPort: number, guestPort: number): void {
    if (this.strays.length >= this.strayMax) {
      this.count('strayRstDropped');
      return;
    }
    this.strays.push([hostPort, guestPort]);
  }

  private markReady(c: Conn): void {
    if (!c.dead) this.ready.add(c);
  }

  /** Remove `c`; tell the guest with an RST when `rst`; close its host stream. */
  private kill(c: Conn, rst: boolean, graceful = false): void {
    if (c.dead) return;
    c.dead = true;
    this.conns.delete(c.key);
    this.ready.delete(c);
    if (c.hostPort >= LOCAL_PORT_MIN) this.localPorts.delete(c.hostPort);
    c.pending = [];
    c.pendingBytes = 0;
    if (rst) {
      this.count('connectionsReset');
      this.stray(c.hostPort, c.guestPort);
    }
    const s = c.stream;
    c.stream = undefined;
    s?.close(graceful);
  }

  // ---- guest → device ------------------------------------------------------------------------------

  /**
   * One guest tx packet. `payload()` copies the packet's payload out of the guest's buffer; it is called
   * only for data that is accepted (RW on an established connection, within credit).
   */
  guestTx(p: TxPacket, payload: () => Uint8Array): void {
    this.count('txPackets');
    if (!p.ok) return this.rejected(p.reason, p.hdr);
    const h = p.hdr;
    const c = this.conns.get(keyOf(h.dstPort, h.srcPort));
    if (!c) {
      if (h.op === VIRTIO_VSOCK_OP_REQUEST) return this.guestRequest(h);
      if (h.op !== VIRTIO_VSOCK_OP_RST) {
        this.count('rstUnknownConnection');
        this.stray(h.dstPort, h.srcPort);
      }
      return;
    }
    // Every packet carries the guest's credit (virtio_transport_space_update). Another CREDIT_REQUEST
    // only once the credit changed: a guest answering with the same credit must not make us ping-pong.
    if (h.bufAlloc !== c.peerBufAlloc || h.fwdCnt !== c.peerFwdCnt) {
      c.peerBufAlloc = h.bufAlloc;
      c.peerFwdCnt = h.fwdCnt;
      c.creditRequested = false;
      if (c.pendingBytes > 0) this.markReady(c);
    }
    switch (h.op) {
      case VIRTIO_VSOCK_OP_REQUEST:
        this.count('rstDuplicateRequest');
        return this.kill(c, true);
      case VIRTIO_VSOCK_OP_RESPONSE:
        if (c.state !== 'guest-pending') {
          this.count('rstProtocol');
          return this.kill(c, true);
        }
        c.state = 'established';
        c.deadline = undefined;
        this.count('connectionsOpened');
        c.stream?.established?.(c.hostPort);
        return this.markReady(c);
      case VIRTIO_VSOCK_OP_RST:
        return this.kill(c, false);
      case VIRTIO_VSOCK_OP_SHUTDOWN:
        return this.guestShutdown(c, h.flags);
      case VIRTIO_VSOCK_OP_RW:
        return this.guestData(c, h.len, payload);
      case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
        return;
      case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
        c.needCreditUpdate = true;
        return this.markReady(c);
    }
  }

  private rejected(reason: TxRejection, h: VsockHeader | undefined): void {
    if (reason === 'short') return this.count('droppedShort');
    if (reason === 'bad-src-cid' || reason === 'bad-dst-cid') return this.count('droppedBadCid');
    this.count(reason === 'bad-type' ? 'rstBadType' : reason === 'bad-op' ? 'rstBadOp' : 'rstBadLen');
    if (!h) return;
    const c = this.conns.get(keyOf(h.dstPort, h.srcPort));
    if (c) this.kill(c, true);
    else if (h.op !== VIRTIO_VSOCK_OP_RST) this.stray(h.dstPort, h.srcPort);
  }

  private guestRequest(h: VsockHeader): void {
    if (this.conns.size >= this.maxConnections) {
      this.count('rstLimit');
      return this.stray(h.dstPort, h.srcPort);
    }
    const c = new Conn(keyOf(h.dstPort, h.srcPort), h.dstPort, h.srcPort, 'host-pending', h.bufAlloc, h.fwdCnt);
    this.conns.set(c.key, c);
    let answered = false;
    this.onGuestConnect({
      hostPort: c.hostPort,
      guestPort: c.guestPort,
      accept: (stream) => {
        if (answered || c.dead) {
          stream.close(false);
          return false;
        }
        answered = true;
        c.stream = stream;
        c.state = 'established';
        c.needResponse = true;
        this.count('connectionsOpened');
        this.markReady(c);
        return true;
      },
      refuse: () => {
        if (answered || c.dead) return;
        answered = true;
        this.count('connectionsRefused');
        this.kill(c, true);
      },
    });
  }

  private guestShutdown(c: Conn, flags: number): void {
    if (c.state === 'host-pending' || c.state === 'guest-pending') {
      this.count('rstProtocol');
      return this.kill(c, true);
    }
    const f = flags & (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND);
    const fresh = f & ~c.guestShut;
    c.guestShut |= f;
    if (c.guestShut === (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND)) {
      // Linux: a peer that shut down both ways gets RST; what it wrote is still flushed to the host.
      return this.kill(c, true, true);
    }
    if (fresh & VIRTIO_VSOCK_SHUTDOWN_RCV) {
      // The guest reads no more: what the host sends from now on is discarded.
      c.pending = [];
      c.pendingBytes = 0;
      if (c.paused) {
        c.paused = false;
        c.stream?.resume();
      }
    }
    if (fresh & VIRTIO_VSOCK_SHUTDOWN_SEND) c.stream?.end();
  }

  private guestData(c: Conn, len: number, payload: () => Uint8Array): void {
    if (c.state === 'closing' || (c.state === 'established' && !c.stream)) {
      // The host side is gone: nowhere to put it (the guest learns from our SHUTDOWN / RST).
      return this.count('droppedAfterClose');
    }
    if (c.state !== 'established' || c.guestShut & VIRTIO_VSOCK_SHUTDOWN_SEND) {
      this.count('rstProtocol');
      return this.kill(c, true);
    }
    if (len === 0) return;
    if (c.rxCnt - c.fwdCnt + len > this.bufAlloc) {
      this.count('rstCreditViolation');
      return this.kill(c, true);
    }
    const data = payload();
    c.rxCnt += len;
    this.count('bytesToHost', len);
    c.stream!.write(data, () => this.forwarded(c, len));
  }

  /** `n` bytes of `c` left kindling on the host side. */
  private forwarded(c: Conn, n: number): void {
    if (c.dead) return;
    c.fwdCnt += n;
    const unadvertised = c.fwdCnt - c.advertisedFwd;
    const guestFree = this.bufAlloc - (c.rxCnt - c.advertisedFwd);
    if (unadvertised > 0 && guestFree < this.bufAlloc / 2 && (unadvertised >= this.bufAlloc / 4 || c.fwdCnt === c.rxCnt)) {
      c.needCreditUpdate = true;
      this.markReady(c);
    }
  }

  // ---- host → device -------------------------------------------------------------------------------

  /**
   * A host client asks for guest port `guestPort` over `stream`. Returns the host port of the new
   * connection, or undefined when the table is full (the caller closes the stream). The guest's answer
   * comes as stream.established(hostPort) or stream.close(false).
   */
  connectToGuest(guestPort: number, stream: HostStream): number | undefined {
    if (this.conns.size >= this.maxConnections) {
      this.count('connectionsRefused');
      return undefined;
    }
    let p = this.localPortLast;
    do p = p + 1 >= 2 ** 31 ? LOCAL_PORT_MIN : p + 1;
    while (this.localPorts.has(p));
    this.localPortLast = p;
    this.localPorts.add(p);
    const c = new Conn(keyOf(p, guestPort), p, guestPort >>> 0, 'guest-pending', 0, 0);
    c.stream = stream;
    c.needRequest = true;
    c.deadline = this.now() + CONNECT_TIMEOUT_MS;
    this.conns.set(c.key, c);
    this.markReady(c);
    return p;
  }

  private find(hostPort: number, guestPort: number, stream: HostStream): Conn | undefined {
    const c = this.conns.get(keyOf(hostPort, guestPort));
    return c && c.stream === stream ? c : undefined;
  }

  /** Data from a connection's host stream. */
  hostData(hostPort: number, guestPort: number, stream: HostStream, data: Uint8Array): void {
    const c = this.find(hostPort, guestPort, stream);
    if (!c || data.length === 0) return;
    // The guest reads no more (SHUTDOWN RCV): discarded, as a socket discards after SHUT_RD.
    if (c.guestShut & VIRTIO_VSOCK_SHUTDOWN_RCV) return;
    c.pending.push(data);
    c.pendingBytes += data.length;
    if (c.pendingBytes >= this.hostPendingMax && !c.paused) {
      c.paused = true;
      stream.pause();
    }
    this.markReady(c);
  }

  /** The host stream's read side ended (EOF): the guest gets SHUTDOWN(SEND) after the pending bytes. */
  hostEnd(hostPort: number, guestPort: number, stream: HostStream): void {
    const c = this.find(hostPort, guestPort, stream);
    if (!c) return;
    // Sent once the connection is established and the bytes before it are delivered.
    c.shutOwed |= VIRTIO_VSOCK_SHUTDOWN_SEND;
    this.markReady(c);
  }

  /**
   * The host stream is gone. Cleanly (`error` false): the guest gets the pending bytes, then
   * SHUTDOWN(RCV|SEND). With an error, or before the connection was established: RST.
   */
  hostClosed(hostPort: number, guestPort: number, stream: HostStream, error: boolean): void {
    const c = this.find(hostPort, guestPort, stream);
    if (!c) return;
    if (error || c.state !== 'established') {
      c.stream = undefined;
      return this.kill(c, true);
    }
    c.stream = undefined;
    c.shutOwed |= VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND;
    this.markReady(c);
  }

  /** Connect and close timeouts: call now and then (the earliest deadline is nextDeadline()). */
  expire(): void {
    const now = this.now();
    for (const c of [...this.conns.values()]) {
      if (c.deadline === undefined || c.deadline > now) continue;
      this.count('timeouts');
      if (c.state === 'guest-pending') this.count('connectionsRefused');
      this.kill(c, true);
    }
  }

  nextDeadline(): number | undefined {
    let d: number | undefined;
    for (const c of this.conns.values()) if (c.deadline !== undefined && (d === undefined || c.deadline < d)) d = c.deadline;
    return d;
  }

  /** Device reset / teardown: every connection ends at once (host streams closed), nothing is owed. */
  reset(): void {
    for (const c of [...this.conns.values()]) this.kill(c, false);
    this.strays.length = 0;
    this.ready.clear();
  }

  // ---- device → guest ------------------------------------------------------------------------------

  /** What `c` would send next with `capacity` payload bytes of room (0 = nothing). */
  private next(c: Conn, capacity: number): number {
    if (c.dead) return 0;
    if (c.needRequest) return VIRTIO_VSOCK_OP_REQUEST;
    if (c.needResponse) return VIRTIO_VSOCK_OP_RESPONSE;
    if (c.state !== 'established') return 0;
    if (c.pendingBytes > 0 && capacity > 0 && c.credit() > 0) return VIRTIO_VSOCK_OP_RW;
    if (c.shutOwed & ~c.shutSent && c.pendingBytes === 0) return VIRTIO_VSOCK_OP_SHUTDOWN;
    if (c.needCreditUpdate) return VIRTIO_VSOCK_OP_CREDIT_UPDATE;
    if (c.pendingBytes > 0 && c.credit() === 0 && !c.creditRequested) return VIRTIO_VSOCK_OP_CREDIT_REQUEST;
    return 0;
  }

  /** Whether some packet is waiting for an rx buffer (with room for at least one payload byte). */
  hasRx(): boolean {
    if (this.strays.length > 0) return true;
    for (const c of this.ready) {
      if (this.next(c, 1) !== 0) return true;
      this.ready.delete(c);
    }
    return false;
  }

  /** The next packet for an rx buffer with `capacity` payload bytes of room; undefined if none fits. */
  nextRx(capacity: number): RxPacket | undefined {
    const cap = Math.min(capacity, VSOCK_MAX_PKT_PAYLOAD);
    const stray = this.strays.shift();
    if (stray) {
      this.count('rxPackets');
      return { hdr: hostHeader(this.guestCid, stray[0], stray[1], VIRTIO_VSOCK_OP_RST, { bufAlloc: 0, fwdCnt: 0 }), payload: [] };
    }
    const skipped: Conn[] = [];
    let out: RxPacket | undefined;
    for (const c of this.ready) {
      this.ready.delete(c);
      const op = this.next(c, cap);
      if (op === 0) {
        if (this.next(c, 1) !== 0) skipped.push(c); // waits for a buffer with room for data
        continue;
      }
      out = this.emit(c, op, cap);
      if (this.next(c, 1) !== 0) this.ready.add(c);
      break;
    }
    for (const c of skipped) this.ready.add(c);
    if (out) this.count('rxPackets');
    return out;
  }

  private emit(c: Conn, op: number, cap: number): RxPacket {
    let len = 0;
    let flags = 0;
    const payload: Uint8Array[] = [];
    switch (op) {
      case VIRTIO_VSOCK_OP_REQUEST:
        c.needRequest = false;
        c.deadline = this.now() + CONNECT_TIMEOUT_MS;
        break;
      case VIRTIO_VSOCK_OP_RESPONSE:
        c.needResponse = false;
        break;
      case VIRTIO_VSOCK_OP_RW: {
        len = Math.min(c.pendingBytes, c.credit(), cap);
        let left = len;
        while (left > 0) {
          const b = c.pending[0];
          if (b.length <= left) {
            payload.push(b);
            c.pending.shift();
            left -= b.length;
          } else {
            payload.push(b.subarray(0, left));
            c.pending[0] = b.subarray(left);
            left = 0;
          }
        }
        c.pendingBytes -= len;
        c.txCnt += len;
        this.count('bytesToGuest', len);
        if (c.paused && c.pendingBytes < this.hostPendingMax / 2) {
          c.paused = false;
          c.stream?.resume();
        }
        break;
      }
      case VIRTIO_VSOCK_OP_SHUTDOWN:
        flags = c.shutOwed;
        c.shutSent = c.shutOwed;
        if (flags === (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND)) {
          c.state = 'closing';
          c.deadline = this.now() + CLOSE_TIMEOUT_MS;
        }
        break;
      case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
        this.count('creditUpdates');
        break;
      case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
        c.creditRequested = true;
        this.count('creditRequests');
        break;
    }
    // Every packet advertises the current credit.
    c.needCreditUpdate = false;
    c.advertisedFwd = c.fwdCnt;
    return { hdr: hostHeader(this.guestCid, c.hostPort, c.guestPort, op, { len, flags, bufAlloc: this.bufAlloc, fwdCnt: c.fwdCnt }), payload };
  }
}
