// The tap port of virtio-net: a Linux tap opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte
// vnet header (native/tap.cc), as Firecracker opens it. Every frame in either direction is one
// readv/writev of [struct virtio_net_hdr_mrg_rxbuf, frame] straight on guest-RAM segments: the kernel
// parses our validated copy of the driver's header on transmit (checksum and GSO offloads done by the
// host stack), and writes the header of a received frame (DATA_VALID / NEEDS_CSUM, GSO fields) into
// the guest's buffer itself. Which receive offloads the kernel may use is set with TUNSETOFFLOAD from
// the driver's GUEST_* features at activation.
//
// Errors from the kernel on one frame (EFAULT for a frame longer than the buffers, EINVAL for a header
// the stack refuses) drop that frame; they are the guest's or the wire's, never a reason to stop.
import type { KvmAddon } from '../../../kvm/addon.js';
import type { PackedIov } from '../iovec.js';
import { VIRTIO_NET_HDR_LEN } from './header.js';
import { RECV_AGAIN, RECV_DROPPED, type NetPort } from './backend.js';

export type TapAddon = Pick<KvmAddon, 'readvPacked' | 'readvBatch' | 'writevPacked' | 'tapSetOffload' | 'tapConstants'>;

export class TapPort implements NetPort {
  readonly vnetHdr = true;
  readonly blocked = false;
  private offloads = -1;

  constructor(
    private readonly addon: TapAddon,
    readonly fd: number,
  ) {}

  receive(iov: PackedIov): number {
    let n: number;
    try {
      n = this.addon.readvPacked(this.fd, iov.buffers, iov.iov, iov.count);
    } catch {
      return RECV_DROPPED;
    }
    if (n < 0) return RECV_AGAIN;
    if (n < VIRTIO_NET_HDR_LEN) return n === 0 ? RECV_AGAIN : RECV_DROPPED;
    return n - VIRTIO_NET_HDR_LEN;
  }

  receiveBatch(iov: PackedIov, counts: Uint32Array, n: number, lengths: Float64Array): number {
    try {
      return this.addon.readvBatch(this.fd, iov.buffers, iov.iov, counts, n, lengths);
    } catch {
      return RECV_DROPPED; // a bad argument: nothing was read
    }
  }

  send(iov: PackedIov, frameLen: number): boolean {
    try {
      // A tap takes a whole frame per write or none of it (a full queue drops it, as a wire would).
      return this.addon.writevPacked(this.fd, iov.buffers, iov.iov, iov.count) === VIRTIO_NET_HDR_LEN + frameLen;
    } catch {
      return false;
    }
  }

  flush(): boolean {
    return true;
  }

  resetRx(): void {
    // Frames are whole per read: nothing is ever half read.
  }

  setGuestOffloads(csum: boolean, tso4: boolean, tso6: boolean): void {
    const k = this.addon.tapConstants;
    const f = csum ? k.TUN_F_CSUM | (tso4 ? k.TUN_F_TSO4 : 0) | (tso6 ? k.TUN_F_TSO6 : 0) : 0;
    if (f === this.offloads) return;
    this.addon.tapSetOffload(this.fd, f);
    this.offloads = f;
  }

  close(): void {
    // The fd is the device's (index.ts release closes it after the worker ended).
  }
}
