// The passt port of virtio-net: Debian's `passt` (user-mode networking: DHCP, DNS, NAT to the host's
// network without root or a tap; Podman's choice) started by index.ts on one end of a socketpair
// (`passt --fd 3`), this end in the I/O worker. The stream is qemu's `-netdev stream` framing: every
// Ethernet frame preceded by its length as a 32-bit big-endian number; no virtio_net_hdr, so no
// offloads are offered.
//
// Receive: the length, then the frame read with readv straight into the rx chains' segments after the
// 12 bytes the backend keeps for the header. A stream hands out bytes as they come: a partly read
// length or frame is remembered and continued in the same buffers on the next readable event. A frame
// longer than the buffers (or than any frame the driver takes) is read into a scratch buffer and
// dropped; after a driver reset the rest of a partly delivered frame is discarded the same way, so
// the stream never loses its framing.
//
// Transmit: one writev of [length, frame segments]. A stream socket may take part of it: the rest is
// copied out of guest RAM (the chain completes at once) and the port is `blocked` until the socket is
// writable again and the copy has gone; the backend takes no transmit chain meanwhile (the driver's
// queue fills and it stops, which is flow control, not loss).
import type { KvmAddon } from '../../../kvm/addon.js';
import { PackedIov, slicePacked } from '../iovec.js';
import { VIRTIO_NET_HDR_LEN } from './header.js';
import { RECV_AGAIN, RECV_CLOSED, RECV_DROPPED, type NetPort } from './backend.js';

export type StreamAddon = Pick<KvmAddon, 'readvPacked' | 'writevPacked'>;

const SCRATCH = 1 << 16;

export class StreamPort implements NetPort {
  readonly vnetHdr = false;
  private readonly lenBuf = new SharedArrayBuffer(4);
  private readonly lenView = new DataView(this.lenBuf);
  private lenGot = 0;
  /** Length of the frame being read into the guest's buffers, or -1. */
  private frameLen = -1;
  private got = 0;
  /** Bytes still to discard (a frame too long, or the rest of one cut by a reset). */
  private discard = 0;
  private scratch: SharedArrayBuffer | undefined;
  private readonly part = new PackedIov(1024);
  private readonly one = new PackedIov(1);
  private readonly prefix = new SharedArrayBuffer(4);
  private pending: SharedArrayBuffer | undefined;
  private pendingOff = 0;
  private closed = false;

  constructor(
    private readonly addon: StreamAddon,
    readonly fd: number,
  ) {}

  get blocked(): boolean {
    return this.pending !== undefined;
  }

  private range(buf: SharedArrayBuffer, off: number, len: number): PackedIov {
    this.one.clear().addRange(buf, off, len);
    return this.one;
  }

  /** One readv; the byte count, or RECV_AGAIN / RECV_CLOSED. */
  private read(iov: PackedIov): number {
    if (this.closed) return RECV_CLOSED;
    let n: number;
    try {
      n = this.addon.readvPacked(this.fd, iov.buffers, iov.iov, iov.count);
    } catch {
      n = 0;
    }
    if (n === 0) {
      this.closed = true;
      return RECV_CLOSED;
    }
    return n < 0 ? RECV_AGAIN : n;
  }

  receive(iov: PackedIov): number {
    for (;;) {
      if (this.discard > 0) {
        this.scratch ??= new SharedArrayBuffer(SCRATCH);
        const r = this.read(this.range(this.scratch, 0, Math.min(this.discard, SCRATCH)));
        if (r < 0) return r;
        this.discard -= r;
        if (this.discard === 0) return RECV_DROPPED;
        continue;
      }
      if (this.frameLen < 0) {
        const r = this.read(this.range(this.lenBuf, this.lenGot, 4 - this.lenGot));
        if (r < 0) return r;
        this.lenGot += r;
        if (this.lenGot < 4) continue;
        this.lenGot = 0;
        const len = this.lenView.getUint32(0, false);
        if (len === 0) continue;
        if (len > iov.bytes - VIRTIO_NET_HDR_LEN) {
          this.discard = len;
          continue;
        }
        this.frameLen = len;
        this.got = 0;
      }
      const r = this.read(slicePacked(iov, VIRTIO_NET_HDR_LEN + this.got, this.frameLen - this.got, this.part));
      if (r < 0) return r;
      this.got += r;
      if (this.got < this.frameLen) continue;
      const n = this.frameLen;
      this.frameLen = -1;
      return n;
    }
  }

  send(iov: PackedIov, frameLen: number): boolean {
    if (this.closed || this.pending) return false;
    new DataView(this.prefix).setUint32(0, frameLen, false);
    // Entry 0 is the virtio_net_hdr (all zero: no offloads on this port): the length goes in its place.
    let b = iov.buffers.indexOf(this.prefix);
    if (b < 0) {
      if (iov.buffers.length === 64) return false;
      b = iov.buffers.push(this.prefix) - 1;
    }
    iov.iov[0] = b;
    iov.iov[1] = 0;
    iov.iov[2] = 4;
    const total = 4 + frameLen;
    let n: number;
    try {
      n = this.addon.writevPacked(this.fd, iov.buffers, iov.iov, iov.count);
    } catch {
      this.closed = true;
      return false;
    }
    if (n === total) return true;
    // Keep the rest (copied: the chain completes now, and guest RAM may change after that).
    const done = Math.max(n, 0);
    const rest = new SharedArrayBuffer(total - done);
    const out = new Uint8Array(rest);
    let pos = 0;
    let at = 0;
    for (let i = 0; i < iov.count; i++) {
      const buf = iov.buffers[iov.iov[3 * i]];
      const off = iov.iov[3 * i + 1];
      const len = iov.iov[3 * i + 2];
      const from = Math.max(done - pos, 0);
      pos += len;
      if (from >= len) continue;
      out.set(new Uint8Array(buf, off + from, len - from), at);
      at += len - from;
    }
    this.pending = rest;
    this.pendingOff = 0;
    return true;
  }

  flush(): boolean {
    const p = this.pending;
    if (!p) return true;
    let n: number;
    try {
      const one = this.range(p, this.pendingOff, p.byteLength - this.pendingOff);
      n = this.addon.writevPacked(this.fd, one.buffers, one.iov, one.count);
    } catch {
      this.closed = true;
      this.pending = undefined;
      return true;
    }
    if (n > 0) this.pendingOff += n;
    if (this.pendingOff < p.byteLength) return false;
    this.pending = undefined;
    return true;
  }

  resetRx(): void {
    if (this.frameLen >= 0) this.discard += this.frameLen - this.got;
    this.frameLen = -1;
    this.got = 0;
  }

  setGuestOffloads(): void {
    // None are offered on a stream.
  }

  close(): void {
    // The fd is the device's (index.ts release closes it, which ends passt).
  }
}
