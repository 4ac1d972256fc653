// struct virtio_net_hdr (virtio 1.2 §5.1.6): with VIRTIO_F_VERSION_1 it is always 12 bytes,
//   u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size; le16 csum_start; le16 csum_offset; le16 num_buffers.
// The driver fills it on transmit (guest-controlled, hostile); the device fills it on receive.
// validateTxHeader decides whether a transmitted frame may be handed to a backend given the offloads
// negotiated (a backend that cannot honour CSUM/TSO never has them offered, so any such request is a
// driver fault: drop and count). decodeNetHeader never throws on any 12 bytes.

export const VIRTIO_NET_HDR_LEN = 12;

export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;

export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

export interface VirtioNetHdr {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  numBuffers: number;
}

/** Offloads the device offered and the driver accepted (host side = tx from the guest). */
export interface TxOffloads {
  /** VIRTIO_NET_F_CSUM: the driver may ask the device to complete a partial checksum. */
  csum: boolean;
  /** VIRTIO_NET_F_HOST_TSO4 / HOST_TSO6 / HOST_ECN. */
  tso4: boolean;
  tso6: boolean;
  ecn: boolean;
}

export const NO_OFFLOADS: TxOffloads = { csum: false, tso4: false, tso6: false, ecn: false };

export function decodeNetHeader(b: Uint8Array): VirtioNetHdr {
  if (b.length < VIRTIO_NET_HDR_LEN) throw new RangeError(`virtio_net_hdr needs ${VIRTIO_NET_HDR_LEN} bytes, got ${b.length}`);
  const le16 = (o: number): number => b[o]! | (b[o + 1]! << 8);
  return {
    flags: b[0]!,
    gsoType: b[1]!,
    hdrLen: le16(2),
    gsoSize: le16(4),
    csumStart: le16(6),
    csumOffset: le16(8),
    numBuffers: le16(10),
  };
}

export function encodeNetHeader(h: VirtioNetHdr, out: Uint8Array = new Uint8Array(VIRTIO_NET_HDR_LEN)): Uint8Array {
  const put16 = (o: number, v: number): void => {
    out[o] = v & 0xff;
    out[o + 1] = (v >>> 8) & 0xff;
  };
  out[0] = h.flags & 0xff;
  out[1] = h.gsoType & 0xff;
  put16(2, h.hdrLen);
  put16(4, h.gsoSize);
  put16(6, h.csumStart);
  put16(8, h.csumOffset);
  put16(10, h.numBuffers);
  return out;
}

export type TxVerdict = { ok: true } | { ok: false; reason: 'bad-flags' | 'bad-csum' | 'bad-gso' | 'too-long' | 'too-short' };

/** Minimum Ethernet header. */
export const ETH_HLEN = 14;

/**
 * Whether a transmitted frame (its virtio_net_hdr and `frameLen` bytes after it) may go to the backend.
 * `maxFrame` is MTU + 14 (+ the GSO payload limit when TSO was negotiated, 65535 + 14).
 * §5.1.6.2.1: the driver MUST NOT set NEEDS_CSUM unless CSUM was negotiated, nor a gso_type other than
 * NONE unless the matching HOST_* feature was; csum_start + csum_offset + 2 must lie within the frame;
 * with GSO, gso_size must be non-zero and hdr_len no larger than the frame. num_buffers is ignored on tx.
 */
export function validateTxHeader(h: VirtioNetHdr, frameLen: number, maxFrame: number, off: TxOffloads): TxVerdict {
  if (frameLen < ETH_HLEN) return { ok: false, reason: 'too-short' };
  if (frameLen > maxFrame) return { ok: false, reason: 'too-long' };
  if ((h.flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) return { ok: false, reason: 'bad-flags' };
  if (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
    if (!off.csum) return { ok: false, reason: 'bad-flags' };
    if (h.csumStart + h.csumOffset + 2 > frameLen) return { ok: false, reason: 'bad-csum' };
  }
  const ecn = (h.gsoType & VIRTIO_NET_HDR_GSO_ECN) !== 0;
  const kind = h.gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
  if (kind === VIRTIO_NET_HDR_GSO_NONE) {
    if (ecn) return { ok: false, reason: 'bad-gso' };
    return { ok: true };
  }
  if (kind === VIRTIO_NET_HDR_GSO_TCPV4 ? !off.tso4 : kind === VIRTIO_NET_HDR_GSO_TCPV6 ? !off.tso6 : true) {
    return { ok: false, reason: 'bad-gso' };
  }
  if (ecn && !off.ecn) return { ok: false, reason: 'bad-gso' };
  // GSO needs the checksum offload too (the segments' checksums are the device's to compute).
  if (!(h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)) return { ok: false, reason: 'bad-gso' };
  if (h.gsoSize === 0 || h.hdrLen > frameLen) return { ok: false, reason: 'bad-gso' };
  return { ok: true };
}

/** The receive header the device writes when it offers no guest offloads: all zero but num_buffers. */
export function rxHeader(numBuffers: number): Uint8Array {
  return encodeNetHeader({ flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0, numBuffers });
}
