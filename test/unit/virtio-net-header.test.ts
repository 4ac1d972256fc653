// Properties of struct virtio_net_hdr handling (src/devices/virtio/net/header.ts): decode∘encode is
// the identity on every field, decode never throws on any 12+ bytes, and validateTxHeader accepts a
// transmit header exactly when a straightforward model of §5.1.6.2.1 does.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  decodeNetHeader,
  encodeNetHeader,
  rxHeader,
  validateTxHeader,
  VIRTIO_NET_HDR_LEN,
  NO_OFFLOADS,
  type TxOffloads,
  type VirtioNetHdr,
} from '../../src/devices/virtio/net/header.js';

const u16 = fc.integer({ min: 0, max: 0xffff });
const hdrArb: fc.Arbitrary<VirtioNetHdr> = fc.record({
  flags: fc.oneof(fc.constantFrom(0, 1, 2, 3, 4), fc.integer({ min: 0, max: 255 })),
  gsoType: fc.oneof(fc.constantFrom(0, 1, 3, 4, 0x80, 0x81, 0x84), fc.integer({ min: 0, max: 255 })),
  hdrLen: fc.oneof(u16, fc.integer({ min: 0, max: 200 })),
  gsoSize: fc.oneof(u16, fc.constantFrom(0, 1, 1448)),
  csumStart: fc.oneof(u16, fc.integer({ min: 0, max: 1600 })),
  csumOffset: fc.oneof(u16, fc.integer({ min: 0, max: 20 })),
  numBuffers: u16,
});
const offArb: fc.Arbitrary<TxOffloads> = fc.record({ csum: fc.boolean(), tso4: fc.boolean(), tso6: fc.boolean(), ecn: fc.boolean() });

function model(h: VirtioNetHdr, len: number, max: number, o: TxOffloads): boolean {
  if (len < 14 || len > max) return false;
  const needsCsum = h.flags === 1;
  if (h.flags !== 0 && !needsCsum) return false;
  if (needsCsum && (!o.csum || h.csumStart + h.csumOffset + 2 > len)) return false;
  const ecn = h.gsoType >= 0x80;
  const kind = h.gsoType & 0x7f;
  if (kind === 0) return !ecn;
  const allowed = (kind === 1 && o.tso4) || (kind === 4 && o.tso6);
  if (!allowed || (ecn && !o.ecn) || !needsCsum) return false;
  return h.gsoSize > 0 && h.hdrLen <= len;
}

describe('virtio_net_hdr', () => {
  it('is 12 bytes and decode(encode(h)) === h', () => {
    fc.assert(
      fc.property(hdrArb, (h) => {
        const b = encodeNetHeader(h);
        expect(b.length).toBe(VIRTIO_NET_HDR_LEN);
        expect(decodeNetHeader(b)).toEqual(h);
      }),
    );
  });

  it('decodes any bytes without throwing, little-endian', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 12, maxLength: 40 }), (b) => {
        const h = decodeNetHeader(b);
        expect(h.numBuffers).toBe(b[10]! + 256 * b[11]!);
        expect(h.hdrLen).toBe(b[2]! + 256 * b[3]!);
        expect(encodeNetHeader(h)).toEqual(b.subarray(0, 12));
      }),
    );
    expect(() => decodeNetHeader(new Uint8Array(11))).toThrow(RangeError);
  });

  it('validateTxHeader agrees with the spec model for hostile headers', () => {
    fc.assert(
      fc.property(hdrArb, fc.integer({ min: 0, max: 70000 }), fc.constantFrom(1514, 65549), offArb, (h, len, max, o) => {
        expect(validateTxHeader(h, len, max, o).ok).toBe(model(h, len, max, o));
      }),
      { numRuns: 2000 },
    );
  });

  it('rejects every offload request when none was negotiated (passt)', () => {
    const base = { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0, numBuffers: 0 };
    expect(validateTxHeader(base, 60, 1514, NO_OFFLOADS)).toEqual({ ok: true });
    expect(validateTxHeader({ ...base, flags: 1, csumStart: 34, csumOffset: 16 }, 60, 1514, NO_OFFLOADS).ok).toBe(false);
    expect(validateTxHeader({ ...base, gsoType: 1, flags: 1, gsoSize: 1448 }, 60, 1514, NO_OFFLOADS).ok).toBe(false);
    expect(validateTxHeader(base, 1515, 1514, NO_OFFLOADS)).toEqual({ ok: false, reason: 'too-long' });
    expect(validateTxHeader(base, 13, 1514, NO_OFFLOADS)).toEqual({ ok: false, reason: 'too-short' });
    expect(Array.from(rxHeader(3))).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0]);
  });
  it('checksum and GSO boundaries: the checksum field must end inside the frame, gso_size must be non-zero', () => {
    const all = { csum: true, tso4: true, tso6: true, ecn: true };
    fc.assert(
      fc.property(fc.integer({ min: 14, max: 1514 }), fc.integer({ min: -3, max: 2 }), fc.integer({ min: 0, max: 1 }), (len, d, gso) => {
        const at = Math.max(0, len - 2 + d);
        const h = { flags: 1, gsoType: gso, hdrLen: 14, gsoSize: 0, csumStart: at, csumOffset: 0, numBuffers: 0 };
        expect(validateTxHeader(h, len, 1514, all).ok).toBe(at + 2 <= len && gso === 0);
        expect(validateTxHeader({ ...h, gsoSize: 1 }, len, 1514, all).ok).toBe(at + 2 <= len);
      }),
    );
  });
});
