// virtio-net (virtio 1.2 §5.1, device id 1): one receive/transmit queue pair (receiveq1 = 0,
// transmitq1 = 1), no control queue. Config space (§5.1.4): mac[6], le16 status, le16
// max_virtqueue_pairs (1), le16 mtu.
//
// Features offered: VIRTIO_NET_F_MAC, F_STATUS (link up), F_MTU, F_MRG_RXBUF, and only the offloads the
// host end can honour: a tap with IFF_VNET_HDR takes the driver's virtio_net_hdr as is (CSUM, HOST_TSO4/6)
// and hands us frames with one (GUEST_CSUM, GUEST_TSO4/6, enabled on the tap with TUNSETOFFLOAD for
// exactly what the driver accepted); passt's stream carries bare Ethernet frames, so it gets none.
//
// Split along the thread boundary as every device:
//   header.ts   struct virtio_net_hdr and the validation of transmitted headers (pure)
//   backend.ts  NetBackend: the queues against a NetPort (I/O worker; it never sees the transport, so it
//               serves virtio-mmio and vhost-user alike)
//   tap.ts      the tap port (/dev/net/tun)
//   passt.ts    the passt port (Debian's passt on a socketpair, qemu's stream framing)
//   index.ts    the device type: prepare (open the tap / start passt), describe, createBackend
//
// Transmit: a chain's first 12 readable bytes are its header, copied and validated (validateTxHeader:
// offloads only as negotiated, csum/gso fields in range, frame length within the MTU or the GSO
// limit); the frame is written to the port with one writev straight from the chain's guest-RAM
// segments, behind our validated copy of the header (a driver that changes the header after we read
// it changes nothing). A bad chain is dropped and counted; every chain completes with used length 0.
//
// Receive: the port reads one frame with one readv straight into the writable segments of the rx
// chains the backend holds: one chain, or with MRG_RXBUF as many as it takes to hold the largest frame
// the driver accepts (12 + MTU + 18, or 12 + 65550 with GUEST_TSO). A chain shorter than the header is
// completed unused and counted. The frame is then split over the chains in order, num_buffers written
// into the first one's header, and all of them published as one batch (one interrupt). Chains not
// needed stay held for the next frame. On a tap (whose reads are whole frames) without an rx limiter,
// while every held chain holds a whole frame by itself (a Linux driver's mergeable buffers do), up to
// RX_BUDGET frames are read with one readvBatch call, one chain each, and published as one batch
// (batchReceive). While the driver has posted too few buffers the port's fd is
// not polled for readability (frames wait in the kernel, or passt stops reading); the driver's next
// rx kick resumes. At most RX_BUDGET frames per wake-up, so one busy NIC cannot starve the loop.
// Receive chains are popped with driver notifications left suppressed (QEMU's virtio-net policy):
// only when the device runs dry does it re-enable them and re-check the ring, so a driver reposting
// buffers exits to the device (a kick) only while the device waits for buffers.
//
// Transmit busy-polling (busy-poll.ts, QEMU's adaptive AioContext polling per trigger): after one
// frame was delivered (a request: a guest that answers will post its answer soon) and after a transmit
// pass that sent (a burst goes on), the device keeps the driver's tx notifications suppressed and watches the ring
// for up to an adaptive window (at most pollUs, default NET_DEFAULT_POLL_US; 0: never) before it
// sleeps: the answer is then sent without the guest's kick (an exit) and without a wake-up. The
// window grows while the guest answers within it and falls to 0 when it does not answer within
// pollUs, so a receive-only guest pays one window. Chains found that way count as txPolled. The
// notifications go off before the device publishes what the guest may answer (the rx frames; the
// completions of a pass a window follows, which empties the ring with popQuiet), since a polling
// driver answers sooner than the device gets from the publish to the poll; when no poll follows, the
// ring is armed again (and what came meanwhile is sent).
//
// Rate limiters (Firecracker's, src/devices/rate-limiter.ts), one per direction: a frame is paid for
// after it moved (bytes and one op), and while a limiter is in debt its queue is not served (tx) or the
// port not read (rx) until one timer for the moment the debt is paid.
//
// Reset drops the held chains (the driver reclaims every buffer at reset) and a partly read frame.
import { checkDeviceState, POLL_READABLE, POLL_WRITABLE, ResumeTimer, type ActiveDevice, type BackendEnv, type FdPoll, type VirtioDeviceBackend } from '../device.js';
import { AdaptivePoll } from '../busy-poll.js';
import { PackedIov, gatherInto, scatterBytes, scatterBytesAt } from '../iovec.js';
import { readTransportStats, type ActiveQueue } from '../queue-service.js';
import type { DescriptorChain } from '../queue.js';
import { featureBit } from '../constants.js';
import { rateLimiter, type RateLimiter, type RateLimiterConfig } from '../../rate-limiter.js';
import { NO_OFFLOADS, VIRTIO_NET_HDR_LEN, decodeNetHeader, encodeNetHeader, validateTxHeader, type TxOffloads } from './header.js';

export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;

export const VIRTIO_NET_S_LINK_UP = 1;

export const NET_RX = 0;
export const NET_TX = 1;
export const NET_QUEUE_SIZE = 256;
export const NET_CONFIG_SIZE = 12;
export const NET_DEFAULT_MTU = 1500;
/** Ethernet header plus one VLAN tag: what a frame may carry beyond the MTU. */
export const ETH_OVERHEAD = 18;
/** The largest GSO super-frame the device takes or gives: 64 KiB of IP packet and its Ethernet header (Firecracker's 65562-byte buffer less the header). */
export const GSO_MAX_FRAME = 65550;
/** Frames handled per wake-up before yielding to the loop. */
export const RX_BUDGET = 64;
export const TX_BATCH = 64;
/**
 * The default longest busy-poll window on the transmit ring, µs: above a guest's usual turnaround from
 * a received frame to its answer (measured under KVM-PVM with net.elf: 15–30 µs), so a request/response
 * guest answers without a kick; a guest that does not answer costs one window and then nothing.
 */
export const NET_DEFAULT_POLL_US = 50;
/** Ring passes one wake-up may chain through successful polls before it returns to the loop. */
export const POLL_ROUNDS = 16;

/** Counters (Float64, in params.counters), readable from any thread. */
export const NET_COUNTERS = [
  'rxFrames',
  'rxBytes',
  /** Frames the port had that the driver could not take (larger than it accepts). */
  'rxDropped',
  /** Receive chains completed unused (shorter than the header). */
  'rxBadBuffers',
  'txFrames',
  'txBytes',
  /** Transmit chains dropped for a bad header or length. */
  'txDropped',
  /** Frames the port refused (a write error). */
  'txErrors',
  /** Transmit passes started by busy-polling the ring (chains the driver posted without a kick). */
  'txPolled',
  /** Times the receive ring ran dry (no usable buffer left; receiving waits for the driver's kick). */
  'rxNoBuffers',
  /** Times a direction's rate limiter ran into debt and its queue waited for the resume timer. */
  'rxThrottled',
  'txThrottled',
  /** processQueue calls per queue: the driver's kicks (and one catch-up pass at each activation). */
  'rxQueueEvents',
  'txQueueEvents',
  /** Times the host end (tap, passt's socket) was reported readable. */
  'portRxEvents',
] as const;
export type NetCounters = Record<(typeof NET_COUNTERS)[number], number>;
const C = Object.fromEntries(NET_COUNTERS.map((n, i) => [n, i])) as Record<(typeof NET_COUNTERS)[number], number>;

export function readNetCounters(counters: SharedArrayBuffer): NetCounters {
  const c = new Float64Array(counters, 0, NET_COUNTERS.length);
  return Object.fromEntries(NET_COUNTERS.map((n, i) => [n, c[i]])) as NetCounters;
}

/** One NIC's counters and its transport's (VM.netStats, the API's net metrics). */
export interface NetStats extends NetCounters {
  /** Times the device's worker was woken (kick, tap, timer or control; transport counter). */
  wakeups: number;
  /** Interrupts signalled to the driver (transport counter). */
  interrupts: number;
  /** Times the device went to DEVICE_NEEDS_RESET (transport counter). */
  needsReset: number;
}

export function readNetStats(counters: SharedArrayBuffer, transport?: SharedArrayBuffer): NetStats {
  const t = transport ? readTransportStats(transport) : undefined;
  return { ...readNetCounters(counters), wakeups: t?.wakeups ?? 0, interrupts: t?.interrupts ?? 0, needsReset: t?.needsReset ?? 0 };
}

/** port.receive results other than a frame length. */
export const RECV_AGAIN = -1;
export const RECV_CLOSED = -2;
export const RECV_DROPPED = -3;

/** The host end of a NIC as the backend drives it (tap.ts, passt.ts). Never throws on its data. */
export interface NetPort {
  readonly fd: number;
  /** Frames on this port carry the 12-byte virtio_net_hdr (a tap with IFF_VNET_HDR); else bare frames. */
  readonly vnetHdr: boolean;
  /**
   * Read the next frame into `iov` (the held rx chains' writable segments from their first byte): a
   * vnetHdr port reads header and frame there, any other port the frame after VIRTIO_NET_HDR_LEN bytes.
   * Returns the frame's length (without the header), RECV_AGAIN (nothing complete; a partly read frame
   * continues in the same iov next time), RECV_CLOSED, or RECV_DROPPED (a frame longer than the room
   * was discarded).
   */
  receive(iov: PackedIov): number;
  /**
   * Optional, for a port whose reads are whole frames (a tap): up to `n` frames in one call, frame i
   * read (header first) into the counts[i] entries of `iov` after the previous sets; lengths[i] gets
   * its byte count including the header, or 0 when that frame was refused (it is gone; the set's
   * buffers are unused). Returns how many frames were read (0: none ready), or RECV_DROPPED when the
   * call failed as a whole.
   */
  receiveBatch?(iov: PackedIov, counts: Uint32Array, n: number, lengths: Float64Array): number;
  /** Write one frame: `iov` is its header (entry 0, 12 bytes) and then the frame. False: refused. */
  send(iov: PackedIov, frameLen: number): boolean;
  /** Output is waiting for the fd to become writable (no send until flush() says it has gone). */
  readonly blocked: boolean;
  /** Write pending output; true when nothing is pending any more. */
  flush(): boolean;
  /** The driver went away: forget a partly read frame (its remaining bytes are discarded). */
  resetRx(): void;
  /** Offloads the driver accepted for received frames (TUN_F_* for a tap; ignored elsewhere). */
  setGuestOffloads(csum: boolean, tso4: boolean, tso6: boolean): void;
  close(): void;
}

/** The runtime reconfiguration message of a virtio-net backend (undefined: keep, null: remove). */
export interface NetReconfigure {
  rxRate?: RateLimiterConfig | null;
  txRate?: RateLimiterConfig | null;
}

export interface NetBackendOptions {
  port: NetPort;
  counters: SharedArrayBuffer;
  mtu: number;
  env: Pick<BackendEnv, 'pollFd' | 'log' | 'guarded'>;
  /** Firecracker's rate limiters for frames to the guest (rx) and from it (tx). */
  rxRate?: RateLimiterConfig;
  txRate?: RateLimiterConfig;
  /**
   * The longest busy-poll window on the transmit ring, in µs (busy-poll.ts; NET_DEFAULT_POLL_US by
   * default, 0: never poll, wait for the driver's kicks).
   */
  pollUs?: number;
  /** Clock in ms for the limiters and the poll windows (tests); performance.now by default. */
  now?: () => number;
}

export class NetBackend implements VirtioDeviceBackend {
  private rx: ActiveQueue | undefined;
  private tx: ActiveQueue | undefined;
  private mrg = false;
  private txOff: TxOffloads = NO_OFFLOADS;
  private maxTx = 0;
  private rxNeed = 0;
  /** Popped rx chains not used yet, in ring order, and their writable bytes. */
  private held: DescriptorChain[] = [];
  private heldRoom = 0;
  /** The driver has posted too few rx buffers: wait for its kick. */
  private starved = false;
  private portClosed = false;
  private readonly port: NetPort;
  private readonly c: Float64Array;
  private readonly mtu: number;
  private readonly poll: FdPoll;
  private readonly env: NetBackendOptions['env'];
  private readonly rxIov: PackedIov;
  /** The batched receive path's sets (one per held chain) and their read lengths. */
  private readonly batchIov = new PackedIov(1024);
  private readonly batchCounts = new Uint32Array(RX_BUDGET);
  private readonly batchLengths = new Float64Array(RX_BUDGET);
  private readonly oneBuffer = new Uint8Array([1, 0]);
  /** The last batch read as many frames as it had room for (the port may have more). */
  private batchMore = false;
  private readonly txIov: PackedIov;
  private readonly hdr = new SharedArrayBuffer(VIRTIO_NET_HDR_LEN);
  private readonly hdrView = new Uint8Array(this.hdr);
  /** num_buffers, little-endian, written after the tap's header (deliver). */
  private readonly numBuffers = new Uint8Array(2);
  /**
   * The used elements of one publish, typed (no array growth per batch) and sized at activation for
   * the larger queue: no publish holds more chains than its queue has (a vhost-user frontend may set
   * sizes beyond NET_QUEUE_SIZE).
   */
  private heads = new Uint32Array(NET_QUEUE_SIZE);
  private lens = new Uint32Array(NET_QUEUE_SIZE);
  private rxLimit: RateLimiter | undefined;
  private txLimit: RateLimiter | undefined;
  /** A direction's resume while its limiter is in debt (rx armed: the port is not read meanwhile). */
  private readonly resume: { rx: ResumeTimer; tx: ResumeTimer };

  /** The limiters' and the poll windows' clock, in ms. */
  private readonly clock: () => number;
  /**
   * Busy-poll windows on the transmit ring (none with pollUs 0): after one frame was delivered (an
   * answer is likely) and after a transmit pass that sent (a burst goes on).
   */
  private readonly txPoll: { afterRx: AdaptivePoll; afterTx: AdaptivePoll } | undefined;

  constructor(o: NetBackendOptions) {
    this.clock = o.now ?? (() => performance.now());
    const pollUs = o.pollUs ?? NET_DEFAULT_POLL_US;
    if (pollUs > 0) this.txPoll = { afterRx: new AdaptivePoll(pollUs), afterTx: new AdaptivePoll(pollUs) };
    this.rxLimit = rateLimiter(o.rxRate, this.clock);
    this.txLimit = rateLimiter(o.txRate, this.clock);
    this.port = o.port;
    this.c = new Float64Array(o.counters, 0, NET_COUNTERS.length);
    this.mtu = o.mtu;
    this.env = o.env;
    this.resume = { rx: new ResumeTimer((fn) => o.env.guarded(fn)), tx: new ResumeTimer((fn) => o.env.guarded(fn)) };
    this.rxIov = new PackedIov(1024);
    this.txIov = new PackedIov(1024);
    this.poll = o.env.pollFd(o.port.fd, 0, (ready) => this.onPort(ready));
  }

  activate(d: ActiveDevice): void {
    const f = d.features;
    const has = (b: number): boolean => (f & featureBit(b)) !== 0n;
    this.rx = d.queues[NET_RX];
    this.tx = d.queues[NET_TX];
    const most = Math.max(this.rx?.size ?? 0, this.tx?.size ?? 0, TX_BATCH, RX_BUDGET);
    if (this.heads.length < most) {
      this.heads = new Uint32Array(most);
      this.lens = new Uint32Array(most);
    }
    this.mrg = has(VIRTIO_NET_F_MRG_RXBUF);
    this.txOff = { csum: has(VIRTIO_NET_F_CSUM), tso4: has(VIRTIO_NET_F_HOST_TSO4), tso6: has(VIRTIO_NET_F_HOST_TSO6), ecn: false };
    const guestTso = has(VIRTIO_NET_F_GUEST_TSO4) || has(VIRTIO_NET_F_GUEST_TSO6);
    this.maxTx = this.txOff.tso4 || this.txOff.tso6 ? GSO_MAX_FRAME : this.mtu + ETH_OVERHEAD;
    this.rxNeed = VIRTIO_NET_HDR_LEN + (guestTso ? GSO_MAX_FRAME : this.mtu + ETH_OVERHEAD);
    this.port.setGuestOffloads(has(VIRTIO_NET_F_GUEST_CSUM), has(VIRTIO_NET_F_GUEST_TSO4), has(VIRTIO_NET_F_GUEST_TSO6));
    this.held = [];
    this.heldRoom = 0;
    this.starved = false;
    this.transmit();
    this.receive();
  }

  processQueue(index: number): void {
    if (index === NET_RX) {
      this.c[C.rxQueueEvents]++;
      this.starved = false;
      this.receive();
    } else if (index === NET_TX) {
      this.c[C.txQueueEvents]++;
      // The driver's kick: the buffers a poll window waits for, if one is pending.
      if (this.txPoll) {
        const t = this.clockUs();
        this.txPoll.afterRx.arrived(t);
        this.txPoll.afterTx.arrived(t);
      }
      this.transmit();
    }
  }

  reset(): void {
    this.clearTimers();
    this.rx = this.tx = undefined;
    this.held = [];
    this.heldRoom = 0;
    this.port.resetRx();
    this.port.setGuestOffloads(false, false, false);
    this.updatePoll();
  }

  /** Nothing beyond guest RAM and the transport survives a snapshot: frames in flight are lost, as on a wire. */
  save(): { kind: 'net'; version: 1 } {
    return { kind: 'net', version: 1 };
  }

  restore(state: unknown): void {
    checkDeviceState(state, 'net', 1);
    this.held = [];
    this.heldRoom = 0;
    this.port.resetRx();
  }

  /**
   * New rate limiters on the running device (the API's PATCH /network-interfaces): `rxRate` / `txRate`
   * undefined keeps that direction's limiter, null removes it, a config replaces it (full buckets).
   * Both queues are then served again, as their limits changed.
   */
  reconfigure(msg: unknown): void {
    const m = msg as NetReconfigure | null;
    if (m === null || typeof m !== 'object') throw new Error('virtio-net: reconfiguration must be { rxRate?, txRate? }');
    if (m.rxRate !== undefined) this.rxLimit = rateLimiter(m.rxRate ?? undefined, this.clock);
    if (m.txRate !== undefined) this.txLimit = rateLimiter(m.txRate ?? undefined, this.clock);
    this.clearTimers();
    this.env.guarded(() => {
      if (!this.rx || !this.tx) return;
      this.transmit();
      this.receive();
      this.updatePoll();
    });
  }

  close(): void {
    this.clearTimers();
    this.poll.close();
    this.port.close();
  }

  private clearTimers(): void {
    this.resume.rx.cancel();
    this.resume.tx.cancel();
  }

  /** A limiter is in debt: resume the queue when it is paid (one timer per direction, no polling). */
  private throttle(which: 'rx' | 'tx', limit: RateLimiter): void {
    const t = this.resume[which];
    if (t.armed) return;
    this.c[which === 'rx' ? C.rxThrottled : C.txThrottled]++;
    t.arm(limit.waitMs(), () => (which === 'rx' ? this.receive() : this.transmit()));
  }

  private onPort(ready: number): void {
    if (ready & POLL_WRITABLE && this.port.flush()) this.transmit();
    if (ready & POLL_READABLE) {
      this.c[C.portRxEvents]++;
      this.receive();
    }
    this.updatePoll();
  }

  private updatePoll(): void {
    const r = this.rx && !this.starved && !this.portClosed && !this.resume.rx.armed ? POLL_READABLE : 0;
    const w = this.port.blocked && !this.portClosed ? POLL_WRITABLE : 0;
    this.poll.set(r | w);
  }

  /** The driver's receive ring ran dry: receiving waits for its kick (counted once per dry spell). */
  private runDry(): void {
    if (!this.starved) this.c[C.rxNoBuffers]++;
    this.starved = true;
  }

  private clockUs(): number {
    return this.clock() * 1000;
  }

  /**
   * Serve the transmit ring; while a pass sent frames, busy-poll for the next ones (txPoll.afterTx), at
   * most POLL_ROUNDS passes. It returns with the driver's notifications on (a plain pass that emptied
   * the ring, a window that closed empty, or the arm() after a quiet pass), except while the port is
   * blocked or the limiter in debt: then the writable event or the resume timer calls it again.
   */
  private transmit(): void {
    for (let i = 0; ; i++) {
      // When a poll window follows a pass that sends, the pass leaves the ring quiet as it empties it
      // (popQuiet): a chain the driver posts while the pass publishes does not kick, the poll finds it.
      const quiet = i < POLL_ROUNDS && this.txPoll !== undefined && this.txPoll.afterTx.windowUs > 0;
      const sent = this.transmitPass(quiet);
      if (sent > 0 && i < POLL_ROUNDS && this.txPoll && this.canPollTx() && this.pollRing(this.tx, this.txPoll.afterTx)) {
        this.c[C.txPolled]++;
        continue;
      }
      // A quiet pass no poll followed: notifications on again, and chains posted meanwhile get a pass.
      // (With the port blocked or the limiter in debt the writable event or the resume timer comes back here.)
      if (quiet && this.canPollTx() && this.tx?.arm() === true) continue;
      break;
    }
    this.updatePoll();
  }

  private canPollTx(): boolean {
    return !this.port.blocked && !this.portClosed && !this.txLimit?.blocked();
  }

  /**
   * Watch a ring for up to `w`'s window with the driver's kicks suppressed: true when chains came
   * (serve them), false when there is no window or it closed empty. When this returns false the
   * driver's notifications are on again (arm() re-checks the ring: a chain posted as the window closed
   * is found there and served).
   */
  private pollRing(q: ActiveQueue | undefined, w: AdaptivePoll): boolean {
    if (!q) return false;
    const t0 = this.clockUs();
    const win = w.trigger(t0);
    if (win <= 0 || !q.quiet()) return false;
    const end = t0 + win;
    for (;;) {
      if (q.hasAvailable()) break;
      if (this.clockUs() >= end) {
        if (q.arm() !== true) return false;
        break;
      }
    }
    w.arrived(this.clockUs());
    return true;
  }

  /**
   * One pass over the transmit ring (until empty, the port blocked or the limiter in debt); the frames
   * sent. `quiet`: an empty ring is left with the driver's notifications off (the caller polls or arms).
   */
  private transmitPass(quiet: boolean): number {
    const q = this.tx;
    if (!q) return 0;
    const sent0 = this.c[C.txFrames];
    q.work(() => {
      const heads = this.heads;
      const lens = this.lens;
      let n = 0;
      while (!this.port.blocked) {
        if (this.txLimit?.blocked()) {
          this.throttle('tx', this.txLimit);
          break;
        }
        const c = quiet ? q.popQuiet() : q.pop();
        if (!c) break;
        this.sendChain(c);
        heads[n] = c.head;
        lens[n++] = 0;
        if (n === TX_BATCH) {
          if (!q.pushMany(heads, lens, n)) return;
          n = 0;
        }
      }
      q.pushMany(heads, lens, n);
    });
    return this.c[C.txFrames] - sent0;
  }

  private sendChain(c: DescriptorChain): void {
    if (c.readableBytes < VIRTIO_NET_HDR_LEN) {
      this.c[C.txDropped]++;
      return;
    }
    gatherInto(c.readable, this.hdrView);
    const h = decodeNetHeader(this.hdrView);
    const frameLen = c.readableBytes - VIRTIO_NET_HDR_LEN;
    const v = validateTxHeader(h, frameLen, this.maxTx, this.txOff);
    if (!v.ok) {
      this.c[C.txDropped]++;
      this.env.log('warn', `transmitted frame dropped (${v.reason}, ${frameLen} bytes)`);
      return;
    }
    h.numBuffers = 0;
    encodeNetHeader(h, this.hdrView);
    const iov = this.txIov.clear();
    iov.addRange(this.hdr, 0, VIRTIO_NET_HDR_LEN);
    if (!iov.addSlice(c.readable, VIRTIO_NET_HDR_LEN)) {
      this.c[C.txDropped]++;
      return;
    }
    if (this.portClosed || !this.port.send(iov, frameLen)) {
      this.c[C.txErrors]++;
      return;
    }
    this.c[C.txFrames]++;
    this.c[C.txBytes] += frameLen;
    this.txLimit?.consume(frameLen);
  }

  /**
   * Pop rx chains until the held ones can take the largest frame; false when the driver has too few
   * (notifications are then armed: its next kick resumes) or the device was reset.
   */
  private fill(q: ActiveQueue): boolean {
    while (this.mrg ? this.heldRoom < this.rxNeed : this.held.length === 0) {
      const r = this.holdNext(q);
      if (r === 'reset' || (r === 'empty' && q.arm() !== true)) return false;
    }
    return true;
  }

  /**
   * Pop the next usable rx chain into `held`. §5.1.6.3.1: every receive buffer holds at least the
   * header (without MRG_RXBUF, a whole frame); a shorter one cannot be used and is completed with
   * nothing written, and the next is taken. 'empty': no chain available; 'reset': the device was reset.
   * The pop is quiet (QEMU's receive policy): the driver's kicks are wanted only while the device is
   * out of buffers, so only fill() and batchReceive arm notifications, when they run dry.
   */
  private holdNext(q: ActiveQueue): 'held' | 'empty' | 'reset' {
    for (;;) {
      const c = q.popQuiet();
      if (!c) return 'empty';
      if (c.writableBytes < VIRTIO_NET_HDR_LEN || (!this.mrg && c.writableBytes < this.rxNeed)) {
        this.c[C.rxBadBuffers]++;
        if (!q.push(c.head, 0)) return 'reset';
        continue;
      }
      this.held.push(c);
      this.heldRoom += c.writableBytes;
      return 'held';
    }
  }

  /**
   * Serve the port into the receive ring; after one frame was delivered (a request), busy-poll for
   * the guest's answer (txPoll.afterRx). Not after a burst: the guest answers a burst with a burst, whose
   * first kick starts txPoll.afterTx; polling for it here delayed the next frames (measured: 20 000
   * echoes, 32 in flight, 10 % slower, a third more device CPU).
   * When that poll has a window, the driver's transmit kicks are suppressed before the frames are
   * published, not after: a polling driver answers within a microsecond or two, sooner than this
   * thread gets from publishing to pollRing(), and its kick would be an exit the poll makes needless
   * (measured with bench:net --counters: 2 004 kicks for 3 001 answers, 2 543 of them found by the
   * poll). When no poll follows, the ring is armed again and what came meanwhile is sent.
   */
  private receive(): void {
    const got0 = this.c[C.rxFrames];
    const early = this.txPoll !== undefined && this.txPoll.afterRx.windowUs > 0 && this.tx !== undefined && this.canPollTx() && this.tx.quiet();
    this.receivePass();
    if (this.c[C.rxFrames] - got0 === 1 && this.txPoll && this.canPollTx() && this.pollRing(this.tx, this.txPoll.afterRx)) {
      this.c[C.txPolled]++;
      this.transmit();
      return;
    }
    // Quiet but not polled: notifications on again, and chains posted while they were off are served.
    if (early && this.tx?.arm() === true) this.transmit();
    else this.updatePoll();
  }

  private receivePass(): void {
    const q = this.rx;
    if (!q || this.portClosed) return;
    q.work(() => {
      for (let n = 0; n < RX_BUDGET; n++) {
        if (this.rxLimit?.blocked()) {
          this.throttle('rx', this.rxLimit);
          return;
        }
        // Whole-frame chains on a tap without a limiter: many frames per call (batchReceive).
        if (this.port.receiveBatch && !this.rxLimit) {
          const got = this.batchReceive(q, RX_BUDGET - n);
          if (got >= 0) {
            if (got === 0 || !this.batchMore) return;
            n += got - 1;
            continue;
          }
        }
        if (!this.fill(q)) {
          this.runDry();
          return;
        }
        // Never more room than the largest frame the driver takes (§5.1.6.3: with F_MTU no frame
        // beyond MTU + the Ethernet header unless GSO): a longer one fails to fit and is dropped.
        const iov = this.rxIov.clear();
        for (const c of this.held) if (iov.bytes >= this.rxNeed || !iov.addSlice(c.writable, 0, this.rxNeed - iov.bytes)) break;
        const r = this.port.receive(iov);
        if (r === RECV_AGAIN) return;
        if (r === RECV_CLOSED) {
          this.portClosed = true;
          this.env.log('warn', 'the host end of the network closed');
          return;
        }
        if (r === RECV_DROPPED) {
          this.c[C.rxDropped]++;
          continue;
        }
        if (!this.deliver(q, r)) return;
      }
    });
  }

  /**
   * The batched receive path: every held chain that holds a whole frame by itself (the usual case: a
   * Linux driver's mergeable buffers are ~1.5 KiB, and without MRG_RXBUF every buffer must be) gets
   * one set, and the port reads up to `max` frames in one call. Each frame is published in its chain
   * with num_buffers 1, all in one batch (one interrupt). Returns the frames handled (0: none ready, or
   * no buffers: starved), or -1 when the first held chain is too small for a frame (the per-frame path
   * gathers several). batchMore says whether every set was filled.
   */
  private batchReceive(q: ActiveQueue, max: number): number {
    const held = this.held;
    this.batchMore = false;
    for (;;) {
      while (held.length < max && (held.length === 0 || held[held.length - 1].writableBytes >= this.rxNeed)) {
        const r = this.holdNext(q);
        if (r === 'reset') return 0;
        if (r === 'empty') break;
      }
      if (held.length > 0) break;
      // Dry: arm the driver's kick, unless buffers arrived meanwhile (then take them).
      if (q.arm() !== true) {
        this.runDry();
        return 0;
      }
    }
    const iov = this.batchIov.clear();
    const counts = this.batchCounts;
    let sets = 0;
    for (; sets < held.length && sets < max; sets++) {
      const c = held[sets];
      if (c.writableBytes < this.rxNeed) break;
      const before = iov.count;
      if (!iov.addSlice(c.writable, 0, this.rxNeed) || iov.count - before > 64) {
        iov.count = before;
        break;
      }
      counts[sets] = iov.count - before;
    }
    if (sets === 0) return -1;
    const got = this.port.receiveBatch!(iov, counts, sets, this.batchLengths);
    if (got === RECV_DROPPED) {
      this.c[C.rxDropped]++;
      this.batchMore = true;
      return 1;
    }
    if (got <= 0) return 0;
    const heads = this.heads;
    const lens = this.lens;
    let used = 0;
    let kept = 0;
    let bytes = 0;
    for (let i = 0; i < got; i++) {
      const c = held[i];
      const n = this.batchLengths[i];
      if (n < VIRTIO_NET_HDR_LEN) {
        this.c[C.rxDropped]++;
        held[kept++] = c; // unused: stays held, in order
        continue;
      }
      // The tap wrote the first 10 bytes of the header; num_buffers (1) is ours.
      scatterBytesAt(c.writable, 10, this.oneBuffer);
      heads[used] = c.head;
      lens[used++] = n;
      bytes += n - VIRTIO_NET_HDR_LEN;
      this.heldRoom -= c.writableBytes;
    }
    this.dropHeld(kept, got);
    this.c[C.rxFrames] += used;
    this.c[C.rxBytes] += bytes;
    if (!q.pushMany(heads, lens, used)) return 0;
    this.batchMore = got === sets;
    return got;
  }

  /** Remove held[from, to), keeping the order of the rest (no splice: it allocates its result). */
  private dropHeld(from: number, to: number): void {
    const held = this.held;
    let w = from;
    for (let r = to; r < held.length; r++) held[w++] = held[r];
    held.length = w;
  }

  /** Publish a received frame of `len` bytes (after its header) over the held chains. */
  private deliver(q: ActiveQueue, len: number): boolean {
    let rest = VIRTIO_NET_HDR_LEN + len;
    const heads = this.heads;
    const lens = this.lens;
    let k = 0;
    while (rest > 0 && k < this.held.length) {
      const c = this.held[k];
      const use = Math.min(c.writableBytes, rest);
      heads[k] = c.head;
      lens[k++] = use;
      rest -= use;
    }
    const first = this.held[0];
    if (this.port.vnetHdr) {
      // The tap wrote the first 10 bytes (struct virtio_net_hdr); num_buffers is ours.
      this.numBuffers[0] = k & 0xff;
      this.numBuffers[1] = k >>> 8;
      scatterBytesAt(first.writable, 10, this.numBuffers);
    } else {
      this.hdrView.fill(0);
      this.hdrView[10] = k & 0xff;
      this.hdrView[11] = k >>> 8;
      scatterBytes(first.writable, this.hdrView);
    }
    for (let i = 0; i < k; i++) this.heldRoom -= this.held[i].writableBytes;
    this.dropHeld(0, k);
    this.c[C.rxFrames]++;
    this.c[C.rxBytes] += len;
    this.rxLimit?.consume(len);
    return q.pushMany(heads, lens, k);
  }
}
