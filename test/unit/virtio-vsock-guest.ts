// A model virtio-vsock driver for the vsock suites: the three queues of a VsockBackend as real
// ActiveQueues over a ModelRam (virtq-model.ts), and the driver's side of them. It posts rx buffers
// (a fixed pool, reposted once read), sends tx packets (header + payload in one or two buffers) and
// reads the rx packets the device published, decoding them from guest RAM.
import { expect } from 'vitest';
import { VSOCK_EVENT, VSOCK_RX, VSOCK_TX, type VsockBackend } from '../../src/devices/virtio/vsock/backend.js';
import { VSOCK_HDR_SIZE, VSOCK_HOST_CID, VIRTIO_VSOCK_TYPE_STREAM, decodeHeader, encodeHeader, type VsockHeader } from '../../src/devices/virtio/vsock/packet.js';
import { ModelRam, benchQueue, simpleChain, type QueueLayout } from './virtq-model.js';

export const RXQ: QueueLayout = { size: 32, desc: 0x1000, avail: 0x1400, used: 0x1600 };
export const TXQ: QueueLayout = { size: 32, desc: 0x2000, avail: 0x2400, used: 0x2600 };
export const EVQ: QueueLayout = { size: 8, desc: 0x3000, avail: 0x3400, used: 0x3600 };
/** rx buffers: RX_BUFS of RX_BUF_SIZE from 0x10000 (the pool crosses the slot edge at 0x20000). */
export const RX_BUF_SIZE = 4096;
export const RX_BUFS = 24;
const RX_BASE = 0x10000;
/** tx packets are built here (each send is consumed before the next). */
const TX_BASE = 0x2a000;
const EV_BASE = 0x3f000;

export interface RxPkt {
  hdr: VsockHeader;
  data: Uint8Array;
}

export class VsockGuest {
  readonly ram = new ModelRam();
  readonly rx;
  readonly tx;
  readonly ev;
  /** rx buffer address by posted head. */
  private readonly rxAddr = new Map<number, number>();
  private readonly freeRx: number[] = [];
  private readonly evAddr = new Map<number, number>();
  /** Events read from the event queue. */
  readonly events: number[] = [];

  constructor(
    readonly backend: VsockBackend,
    readonly cid: bigint,
    o: { rxBufs?: number; rxBufSize?: number; splitTx?: boolean } = {},
  ) {
    this.rx = benchQueue(this.ram, RXQ, { index: VSOCK_RX, indirect: false });
    this.tx = benchQueue(this.ram, TXQ, { index: VSOCK_TX, indirect: false });
    this.ev = benchQueue(this.ram, EVQ, { index: VSOCK_EVENT, indirect: false });
    this.rxBufSize = o.rxBufSize ?? RX_BUF_SIZE;
    for (let i = 0; i < (o.rxBufs ?? RX_BUFS); i++) this.freeRx.push(RX_BASE + i * this.rxBufSize);
    this.splitTx = o.splitTx ?? false;
  }
  readonly rxBufSize: number;
  readonly splitTx: boolean;

  activate(): void {
    this.backend.activate({ mem: this.ram.mem, features: 1n, queues: [this.rx.aq, this.tx.aq, this.ev.aq] });
  }

  /** Post every free rx buffer (or `n` of them) and kick rx. */
  postRx(n = Infinity): void {
    while (n-- > 0 && this.freeRx.length > 0) {
      const a = this.freeRx.shift()!;
      const head = this.rx.drv.post(simpleChain([[a, this.rxBufSize]], true));
      expect(head).toBeDefined();
      this.rxAddr.set(head!, a);
    }
    this.backend.processQueue(VSOCK_RX);
  }

  /** Post one event buffer and kick the event queue. */
  postEvent(): void {
    const head = this.ev.drv.post(simpleChain([[EV_BASE, 8]], true));
    this.evAddr.set(head!, EV_BASE);
    this.backend.processQueue(VSOCK_EVENT);
    for (const u of this.ev.drv.takeUsed()) {
      expect(u.len).toBe(4);
      this.events.push(this.ram.mem.read32(this.evAddr.get(u.id)!));
    }
  }

  /** Packets the device published on rx since the last call (their buffers go back to the pool, not reposted). */
  recv(): RxPkt[] {
    const out: RxPkt[] = [];
    for (const u of this.rx.drv.takeUsed()) {
      const a = this.rxAddr.get(u.id)!;
      this.rxAddr.delete(u.id);
      this.freeRx.push(a);
      expect(u.len).toBeGreaterThanOrEqual(VSOCK_HDR_SIZE);
      const hdr = decodeHeader(this.ram.mem.readBytes(a, VSOCK_HDR_SIZE));
      expect(u.len).toBe(VSOCK_HDR_SIZE + hdr.len);
      expect(hdr.srcCid).toBe(VSOCK_HOST_CID);
      expect(hdr.dstCid).toBe(this.cid);
      expect(hdr.type).toBe(VIRTIO_VSOCK_TYPE_STREAM);
      out.push({ hdr, data: this.ram.mem.readBytes(a + VSOCK_HDR_SIZE, hdr.len) });
    }
    return out;
  }

  /** Repost and read until the device has nothing more (at most `rounds` times). */
  drain(rounds = 1000): RxPkt[] {
    const out: RxPkt[] = [];
    for (let i = 0; i < rounds; i++) {
      this.postRx();
      const got = this.recv();
      if (got.length === 0) break;
      out.push(...got);
    }
    return out;
  }

  /** Send one packet on tx (raw header bytes override the fields when given) and kick tx. */
  sendRaw(hdrBytes: Uint8Array, payload: Uint8Array = new Uint8Array(0)): void {
    const bytes = new Uint8Array(hdrBytes.length + payload.length);
    bytes.set(hdrBytes);
    bytes.set(payload, hdrBytes.length);
    this.ram.write(TX_BASE, bytes);
    const bufs: Array<[number, number]> =
      this.splitTx && bytes.length > VSOCK_HDR_SIZE ? [[TX_BASE, VSOCK_HDR_SIZE], [TX_BASE + VSOCK_HDR_SIZE, bytes.length - VSOCK_HDR_SIZE]] : [[TX_BASE, Math.max(bytes.length, 1)]];
    const head = this.tx.drv.post(simpleChain(bufs, false));
    expect(head).toBeDefined();
    this.backend.processQueue(VSOCK_TX);
    const used = this.tx.drv.takeUsed();
    expect(used).toEqual([{ id: head, len: 0 }]);
  }

  send(h: Partial<VsockHeader> & { op: number; srcPort: number; dstPort: number }, payload: Uint8Array = new Uint8Array(0)): void {
    const hdr: VsockHeader = {
      srcCid: this.cid,
      dstCid: VSOCK_HOST_CID,
      len: payload.length,
      type: VIRTIO_VSOCK_TYPE_STREAM,
      flags: 0,
      bufAlloc: 256 * 1024,
      fwdCnt: 0,
      ...h,
    };
    this.sendRaw(encodeHeader(hdr), payload);
  }
}

export function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) | 0;
    b[i] = x >>> 24;
  }
  return b;
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
