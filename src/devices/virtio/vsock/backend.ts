// virtio-vsock (virtio 1.2 §5.10, device id 19): stream sockets between the guest (its CID from config
// space) and the host (CID 2). Three queues: rx (0, device → driver packets), tx (1, driver → device
// packets), event (2, virtio_vsock_event). Config space: le64 guest_cid. Feature VIRTIO_VSOCK_F_STREAM
// only; VIRTIO_VSOCK_F_SEQPACKET is not offered (no SOCK_SEQPACKET here).
//
// Split along the thread boundary as every device:
//   packet.ts   the 44-byte header codec and the validation of guest packets
//   muxer.ts    the connection table, state machine and credit flow control (pure)
//   backend.ts  VsockBackend: the muxer over the rx/tx/event ActiveQueues (I/O worker; it never sees
//               the transport, so it serves virtio-mmio and vhost-user alike)
//   index.ts    the device type (prepare/describe/createBackend) and what prepare() takes
//   host.ts     the host side in the I/O worker: Firecracker's hybrid vsock over Unix sockets and the
//               in-process bridge's worker end, both as Node stream sockets behind HostStream
//   bridge.ts   the main-thread end of the in-process bridge (vm.vsock: connect/listen)
//
// Data path: a tx chain is parsed (header gathered from its readable buffers, payload copied out only
// when the muxer accepts it: the host stream holds it until flushed, and guest RAM may change after the
// chain completes); every tx chain completes with used length 0. Rx: while the muxer has a packet and
// the driver posted a buffer, header and payload are written straight into the buffer's writable
// segments (used length 44 + len). A buffer too small for a header completes with used length 0; a
// buffer with room for a header only is held until a control packet fits.
//
// Reset: the driver's reset ends every connection (host streams closed). restore() (a snapshot) also
// ends them and owes the guest VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue (§5.10.6.7), sent
// as soon as the driver posts an event buffer.
import type { SocketFile } from '../../../main/socket-files.js';
import { checkDeviceState, type ActiveDevice, type VirtioDeviceBackend } from '../device.js';
import { gatherBytes, splitSegments } from '../iovec.js';
import type { ActiveQueue } from '../queue-service.js';
import type { DescriptorChain } from '../queue.js';
import type { MemorySegment } from '../../../memory/guest-memory.js';
import { VSOCK_COUNTERS, VsockMuxer, type GuestConnectRequest, type VsockCounters } from './muxer.js';
import {
  VIRTIO_VSOCK_EVENT_TRANSPORT_RESET,
  VSOCK_HDR_SIZE,
  VSOCK_MAX_GUEST_CID,
  VSOCK_MIN_GUEST_CID,
  encodeHeader,
  parseTxPacket,
} from './packet.js';

export const VIRTIO_VSOCK_F_STREAM = 0;
export const VIRTIO_VSOCK_F_SEQPACKET = 1;

export const VSOCK_RX = 0;
export const VSOCK_TX = 1;
export const VSOCK_EVENT = 2;
export const VSOCK_QUEUE_SIZE = 256;
export const VSOCK_CONFIG_SIZE = 8;

/** Control words (Int32) at the start of params.control; then the counters (Float64) at CTL_COUNTERS_OFFSET. */
export const CTL_LISTEN_TAKEN = 0;
export const CTL_DEV_CTL_TAKEN = 1;
export const CTL_HOST_CTL_TAKEN = 2;
export const CTL_WORDS = 4;
export const CTL_COUNTERS_OFFSET = CTL_WORDS * 4;

export interface VsockOptions {
  /** The guest's CID: 3 .. 0xfffffffe. */
  cid: number | bigint;
  /** Firecracker's hybrid vsock: listen on this Unix socket; guest connections to port P go to `<udsPath>_P`. */
  udsPath?: string;
}

export interface VsockParams {
  cid: bigint;
  udsPath?: string;
  /** The listening socket on udsPath (unixListen), or -1. The I/O worker serves it. */
  listenFd: number;
  /** udsPath's directory, held to remove the socket at release (src/main/socket-files.ts; main thread only). */
  udsFile?: SocketFile;
  /** The I/O worker's end of the control socketpair (in-process bridge). */
  devCtlFd: number;
  /** The main thread's end (bridge.ts). */
  hostCtlFd: number;
  /** Ownership words (which thread wrapped which fd) and the counters. */
  control: SharedArrayBuffer;
}

export function vsockConfigSpace(cid: bigint): Uint8Array {
  const b = new Uint8Array(VSOCK_CONFIG_SIZE);
  new DataView(b.buffer).setBigUint64(0, cid, true);
  return b;
}

export function vsockCounters(control: SharedArrayBuffer): Float64Array {
  return new Float64Array(control, CTL_COUNTERS_OFFSET, VSOCK_COUNTERS.length);
}

/** The device's counters (readable from any thread). */
export function readVsockStats(params: Pick<VsockParams, 'control'>): VsockCounters {
  const c = vsockCounters(params.control);
  return Object.fromEntries(VSOCK_COUNTERS.map((n, i) => [n, c[i]])) as VsockCounters;
}

/** Whether `cid` is a CID a guest may have. */
export function validGuestCid(cid: number | bigint): boolean {
  if (typeof cid === 'number' && !Number.isSafeInteger(cid)) return false;
  const c = BigInt(cid);
  return c >= VSOCK_MIN_GUEST_CID && c <= VSOCK_MAX_GUEST_CID;
}

/** Copy `pieces` one after the other into `segs` (which must hold them all). */
function scatterPieces(segs: readonly MemorySegment[], pieces: readonly Uint8Array[]): void {
  let si = 0;
  let so = 0;
  for (const p of pieces) {
    let po = 0;
    while (po < p.length) {
      const s = segs[si];
      const k = Math.min(s.length - so, p.length - po);
      new Uint8Array(s.buffer, s.offset + so, k).set(p.subarray(po, po + k));
      po += k;
      so += k;
      if (so === s.length) {
        si++;
        so = 0;
      }
    }
  }
}

export interface VsockBackendOptions {
  guestCid: bigint;
  onGuestConnect(req: GuestConnectRequest): void;
  counters?: Float64Array;
  maxConnections?: number;
  bufAlloc?: number;
  hostPendingMax?: number;
  now?: () => number;
  /** The VM is going away (close()): release the host side. */
  onClose?: () => void;
}

export class VsockBackend implements VirtioDeviceBackend {
  readonly mux: VsockMuxer;
  private rx: ActiveQueue | undefined;
  private tx: ActiveQueue | undefined;
  private event: ActiveQueue | undefined;
  /** An rx buffer popped with room for a header only, waiting for a control packet. */
  private heldRx: DescriptorChain | undefined;
  /** VIRTIO_VSOCK_EVENT_TRANSPORT_RESET is owed to the driver (after restore). */
  private eventOwed = false;
  private readonly hdr = new Uint8Array(VSOCK_HDR_SIZE);

  private readonly onClose: (() => void) | undefined;

  constructor(o: VsockBackendOptions) {
    this.mux = new VsockMuxer(o);
    this.onClose = o.onClose;
  }

  activate(d: ActiveDevice): void {
    this.rx = d.queues[VSOCK_RX];
    this.tx = d.queues[VSOCK_TX];
    this.event = d.queues[VSOCK_EVENT];
    this.heldRx = undefined;
    this.transmit();
    this.flush();
    this.deliverEvent();
  }

  processQueue(index: number): void {
    if (index === VSOCK_TX) this.transmit();
    else if (index === VSOCK_EVENT) this.deliverEvent();
    this.flush();
  }

  /** The host side changed something (data, a close, a new connection): fill rx buffers. */
  hostEvent(): void {
    this.mux.expire();
    this.flush();
  }

  reset(): void {
    this.mux.reset();
    this.rx = this.tx = this.event = undefined;
    this.heldRx = undefined;
  }

  /**
   * Connections are not carried across a snapshot (their host ends are sockets of this process): the
   * state is only kind and format, and restore() ends every connection and owes the guest a
   * TRANSPORT_RESET event, as the spec asks after a migration.
   */
  save(): { kind: 'vsock'; version: 1 } {
    return { kind: 'vsock', version: 1 };
  }

  restore(state: unknown): void {
    checkDeviceState(state, 'vsock', 1);
    this.mux.reset();
    this.heldRx = undefined;
    this.eventOwed = true;
    this.deliverEvent();
  }

  close(): void {
    this.mux.reset();
    this.onClose?.();
  }

  /** Whether the event is still owed (tests). */
  get transportResetOwed(): boolean {
    return this.eventOwed;
  }

  private transmit(): void {
    const q = this.tx;
    if (!q) return;
    q.service((chain) => {
      const head = gatherBytes(chain.readable, Math.min(VSOCK_HDR_SIZE, chain.readableBytes));
      const p = parseTxPacket(head, chain.readableBytes, this.mux.guestCid);
      this.mux.guestTx(p, () => (p.ok ? gatherBytes(splitSegments(chain.readable, VSOCK_HDR_SIZE)[1], p.hdr.len) : new Uint8Array(0)));
      return 0;
    });
  }

  private flush(): void {
    const q = this.rx;
    if (!q || !this.mux.hasRx()) return;
    q.work(() => {
      while (this.mux.hasRx()) {
        const c = this.heldRx ?? q.pop();
        this.heldRx = undefined;
        if (!c) return;
        const room = c.writableBytes - VSOCK_HDR_SIZE;
        if (room < 0) {
          // Not even a header fits: give the buffer back unused.
          if (!q.push(c.head, 0)) return;
          continue;
        }
        const pkt = this.mux.nextRx(room);
        if (!pkt) {
          this.heldRx = c;
          return;
        }
        encodeHeader(pkt.hdr, this.hdr);
        scatterPieces(c.writable, [this.hdr, ...pkt.payload]);
        if (!q.push(c.head, VSOCK_HDR_SIZE + pkt.hdr.len)) return;
      }
    });
  }

  private deliverEvent(): void {
    const q = this.event;
    if (!q || !this.eventOwed) return;
    q.work(() => {
      for (;;) {
        const c = q.pop();
        if (!c) return;
        if (c.writableBytes < 4) {
          if (!q.push(c.head, 0)) return;
          continue;
        }
        const ev = new Uint8Array(4);
        new DataView(ev.buffer).setUint32(0, VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, true);
        scatterPieces(c.writable, [ev]);
        if (q.push(c.head, 4)) this.eventOwed = false;
        return;
      }
    });
  }
}

