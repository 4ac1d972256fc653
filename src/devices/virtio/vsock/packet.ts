// virtio-vsock packets (virtio 1.2 §5.10.6): the 44-byte little-endian header every packet on the rx and
// tx queues starts with, its codec, and the validation of what a guest put on the tx queue.
//
//   struct virtio_vsock_hdr {
//     le64 src_cid;   0      le64 dst_cid;   8
//     le32 src_port; 16      le32 dst_port; 20
//     le32 len;      24      le16 type;     28      le16 op; 30
//     le32 flags;    32      le32 buf_alloc; 36     le32 fwd_cnt; 40
//   };                                              (44 bytes, packed)
//
// `len` is the payload length; the payload follows the header in the same descriptor chain (Linux puts
// header and payload in one buffer or in two; either is accepted here, the chain is one byte space).
// Only stream sockets (type 1) exist on this device: VIRTIO_VSOCK_F_SEQPACKET is not offered.
//
// Guest-made packets are hostile. parseTxPacket() never throws and never reads past the bytes it is
// given; it classifies every packet as valid (with its header) or as one of the rejections below, and
// the muxer (muxer.ts) decides between RST and drop (and counts).

export const VSOCK_HDR_SIZE = 44;

/** The host's CID (VMADDR_CID_HOST): the other end of every guest connection. */
export const VSOCK_HOST_CID = 2n;
/** Lowest CID a guest may have (0, 1 and 2 are reserved: hypervisor, local, host). */
export const VSOCK_MIN_GUEST_CID = 3n;
/** Highest valid guest CID: 0xffffffff is VMADDR_CID_ANY (and CIDs are 32-bit in AF_VSOCK's sockaddr). */
export const VSOCK_MAX_GUEST_CID = 0xfffffffen;

/** The largest payload one packet carries (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE in Linux). */
export const VSOCK_MAX_PKT_PAYLOAD = 64 * 1024;

export const VIRTIO_VSOCK_TYPE_STREAM = 1;
export const VIRTIO_VSOCK_TYPE_SEQPACKET = 2;

export const VIRTIO_VSOCK_OP_INVALID = 0;
export const VIRTIO_VSOCK_OP_REQUEST = 1;
export const VIRTIO_VSOCK_OP_RESPONSE = 2;
export const VIRTIO_VSOCK_OP_RST = 3;
export const VIRTIO_VSOCK_OP_SHUTDOWN = 4;
export const VIRTIO_VSOCK_OP_RW = 5;
export const VIRTIO_VSOCK_OP_CREDIT_UPDATE = 6;
export const VIRTIO_VSOCK_OP_CREDIT_REQUEST = 7;

/** SHUTDOWN flags: the sender will receive no more data / send no more data. */
export const VIRTIO_VSOCK_SHUTDOWN_RCV = 1;
export const VIRTIO_VSOCK_SHUTDOWN_SEND = 2;

/** virtio_vsock_event ids (the event queue). */
export const VIRTIO_VSOCK_EVENT_TRANSPORT_RESET = 0;

export interface VsockHeader {
  srcCid: bigint;
  dstCid: bigint;
  srcPort: number;
  dstPort: number;
  len: number;
  type: number;
  op: number;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
}

/** Decode a header from the first 44 bytes of `b` (which must have at least that many). */
export function decodeHeader(b: Uint8Array): VsockHeader {
  if (b.length < VSOCK_HDR_SIZE) throw new RangeError(`vsock header needs ${VSOCK_HDR_SIZE} bytes, got ${b.length}`);
  const v = new DataView(b.buffer, b.byteOffset, VSOCK_HDR_SIZE);
  return {
    srcCid: v.getBigUint64(0, true),
    dstCid: v.getBigUint64(8, true),
    srcPort: v.getUint32(16, true),
    dstPort: v.getUint32(20, true),
    len: v.getUint32(24, true),
    type: v.getUint16(28, true),
    op: v.getUint16(30, true),
    flags: v.getUint32(32, true),
    bufAlloc: v.getUint32(36, true),
    fwdCnt: v.getUint32(40, true),
  };
}

/** Encode `h` into the first 44 bytes of `out` (or a new array). Fields are truncated to their width. */
export function encodeHeader(h: VsockHeader, out: Uint8Array = new Uint8Array(VSOCK_HDR_SIZE)): Uint8Array {
  const v = new DataView(out.buffer, out.byteOffset, VSOCK_HDR_SIZE);
  v.setBigUint64(0, BigInt.asUintN(64, h.srcCid), true);
  v.setBigUint64(8, BigInt.asUintN(64, h.dstCid), true);
  v.setUint32(16, h.srcPort >>> 0, true);
  v.setUint32(20, h.dstPort >>> 0, true);
  v.setUint32(24, h.len >>> 0, true);
  v.setUint16(28, h.type & 0xffff, true);
  v.setUint16(30, h.op & 0xffff, true);
  v.setUint32(32, h.flags >>> 0, true);
  v.setUint32(36, h.bufAlloc >>> 0, true);
  v.setUint32(40, h.fwdCnt >>> 0, true);
  return out;
}

/** Why a tx packet was rejected. */
export type TxRejection =
  /** Fewer than 44 bytes of device-readable buffer: no header at all. */
  | 'short'
  /** `len` is more than the chain holds after the header. */
  | 'len-beyond-buffer'
  /** `len` is more than one packet may carry (VSOCK_MAX_PKT_PAYLOAD). */
  | 'len-too-big'
  /** A payload on an op that has none (everything but RW). */
  | 'len-on-control'
  /** src_cid is not the guest's CID. */
  | 'bad-src-cid'
  /** dst_cid is not the host (CID 2). */
  | 'bad-dst-cid'
  /** type is not VIRTIO_VSOCK_TYPE_STREAM. */
  | 'bad-type'
  /** op is not one of REQUEST..CREDIT_REQUEST. */
  | 'bad-op';

export type TxPacket =
  | { ok: true; hdr: VsockHeader }
  /** `hdr` is present when there were 44 bytes to decode (the muxer may answer with an RST to its ports). */
  | { ok: false; reason: TxRejection; hdr?: VsockHeader };

/**
 * Classify a guest tx packet: `head` holds (at least) the first 44 bytes the chain's readable buffers
 * start with, `readable` is the chain's total readable byte count. A valid packet's payload is
 * readable bytes [44, 44 + hdr.len). Checks run in a fixed order (the first failing one is reported):
 * short, bad-src-cid, bad-dst-cid, bad-type, bad-op, len-too-big, len-beyond-buffer, len-on-control.
 */
export function parseTxPacket(head: Uint8Array, readable: number, guestCid: bigint): TxPacket {
  if (readable < VSOCK_HDR_SIZE || head.length < VSOCK_HDR_SIZE) return { ok: false, reason: 'short' };
  const hdr = decodeHeader(head);
  if (hdr.srcCid !== guestCid) return { ok: false, reason: 'bad-src-cid', hdr };
  if (hdr.dstCid !== VSOCK_HOST_CID) return { ok: false, reason: 'bad-dst-cid', hdr };
  if (hdr.type !== VIRTIO_VSOCK_TYPE_STREAM) return { ok: false, reason: 'bad-type', hdr };
  if (hdr.op < VIRTIO_VSOCK_OP_REQUEST || hdr.op > VIRTIO_VSOCK_OP_CREDIT_REQUEST) return { ok: false, reason: 'bad-op', hdr };
  if (hdr.len > VSOCK_MAX_PKT_PAYLOAD) return { ok: false, reason: 'len-too-big', hdr };
  if (hdr.len > readable - VSOCK_HDR_SIZE) return { ok: false, reason: 'len-beyond-buffer', hdr };
  if (hdr.len !== 0 && hdr.op !== VIRTIO_VSOCK_OP_RW) return { ok: false, reason: 'len-on-control', hdr };
  return { ok: true, hdr };
}

/** A header the device sends (host → guest): src is the host, dst the guest; stream type. */
export function hostHeader(guestCid: bigint, hostPort: number, guestPort: number, op: number, o: { len?: number; flags?: number; bufAlloc: number; fwdCnt: number }): VsockHeader {
  return {
    srcCid: VSOCK_HOST_CID,
    dstCid: guestCid,
    srcPort: hostPort,
    dstPort: guestPort,
    len: o.len ?? 0,
    type: VIRTIO_VSOCK_TYPE_STREAM,
    op,
    flags: o.flags ?? 0,
    bufAlloc: o.bufAlloc,
    fwdCnt: o.fwdCnt,
  };
}
