// virtio-vsock's backend (src/devices/virtio/vsock) driven through real ActiveQueues over guest RAM by
// a model driver (virtio-vsock-guest.ts), with recording host streams (virtio-vsock-fakes.ts):
// handshakes both ways, data both ways, SHUTDOWN/RST, credit stalls with a slow reader on either side
// (memory flat), 64 concurrent connections, RST on unknown ports, the connection limit, hostile
// packets, reset and restore.
import { describe, expect, it } from 'vitest';
import { VIRTIO_ID_VSOCK, featureBit } from '../../src/devices/virtio/constants.js';
import { checkDeviceState } from '../../src/devices/virtio/device.js';
import {
  VIRTIO_VSOCK_F_SEQPACKET,
  VIRTIO_VSOCK_F_STREAM,
  VsockBackend,
  vsockDeviceType,
  type VsockParams,
} from '../../src/devices/virtio/vsock/index.js';
import { BUF_ALLOC, HOST_PENDING_MAX, LOCAL_PORT_MIN, type GuestConnectRequest } from '../../src/devices/virtio/vsock/muxer.js';
import {
  VIRTIO_VSOCK_EVENT_TRANSPORT_RESET,
  VIRTIO_VSOCK_OP_CREDIT_REQUEST,
  VIRTIO_VSOCK_OP_CREDIT_UPDATE,
  VIRTIO_VSOCK_OP_REQUEST,
  VIRTIO_VSOCK_OP_RESPONSE,
  VIRTIO_VSOCK_OP_RST,
  VIRTIO_VSOCK_OP_RW,
  VIRTIO_VSOCK_OP_SHUTDOWN,
  VIRTIO_VSOCK_SHUTDOWN_RCV,
  VIRTIO_VSOCK_SHUTDOWN_SEND,
  VSOCK_HDR_SIZE,
  encodeHeader,
} from '../../src/devices/virtio/vsock/packet.js';
import { FakeStream } from './virtio-vsock-fakes.js';
import { VsockGuest, concat, pattern, type RxPkt } from './virtio-vsock-guest.js';
import { simpleChain } from './virtq-model.js';
import { expectSameBytes } from '../fuzz/bytes.js';

const CID = 42n;

/** A backend whose host side accepts guest connections to `ports` (a FakeStream each) and refuses the rest. */
function setup(o: { ports?: number[]; autoFlush?: boolean; maxConnections?: number; splitTx?: boolean; rxBufs?: number } = {}) {
  const streams = new Map<string, FakeStream>();
  const ports = new Set(o.ports ?? [5000]);
  const backend = new VsockBackend({
    guestCid: CID,
    maxConnections: o.maxConnections,
    onGuestConnect: (req: GuestConnectRequest) => {
      if (!ports.has(req.hostPort)) return req.refuse();
      const s = new FakeStream(o.autoFlush ?? true);
      streams.set(`${req.hostPort}:${req.guestPort}`, s);
      expect(req.accept(s)).toBe(true);
    },
  });
  const g = new VsockGuest(backend, CID, { splitTx: o.splitTx, rxBufs: o.rxBufs });
  g.activate();
  return { backend, g, streams, mux: backend.mux };
}

const ops = (ps: RxPkt[]): number[] => ps.map((p) => p.hdr.op);

function open(g: VsockGuest, hostPort: number, guestPort: number): RxPkt {
  g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: guestPort, dstPort: hostPort });
  const got = g.drain();
  expect(ops(got)).toEqual([VIRTIO_VSOCK_OP_RESPONSE]);
  return got[0];
}

describe('virtio-vsock device type', () => {
  it('offers STREAM only, three queues rx/tx/event and le64 guest_cid', () => {
    const params = { cid: 0x1_2345_6789n } as VsockParams;
    const d = vsockDeviceType.describe(params);
    expect(vsockDeviceType.deviceId).toBe(VIRTIO_ID_VSOCK);
    expect(d.features).toBe(featureBit(VIRTIO_VSOCK_F_STREAM));
    expect(d.features & featureBit(VIRTIO_VSOCK_F_SEQPACKET)).toBe(0n);
    expect(d.queues.map((q) => q.name)).toEqual(['rx', 'tx', 'event']);
    expect([...d.config]).toEqual([0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0]);
  });

  it('refuses CIDs below 3 or above 0xfffffffe before taking anything', () => {
    const host = { addon: {} } as never;
    for (const cid of [0, 1, 2, 0xffffffff, -1, 1.5]) expect(() => vsockDeviceType.prepare({ cid }, host)).toThrow(/vsock.cid/);
  });
});

describe('virtio-vsock connections', () => {
  it('guest-initiated: REQUEST → RESPONSE with kindling\'s credit; data both ways in order', () => {
    const { g, streams, backend, mux } = setup();
    const resp = open(g, 5000, 1025);
    expect(resp.hdr).toMatchObject({ srcPort: 5000, dstPort: 1025, bufAlloc: BUF_ALLOC, fwdCnt: 0, len: 0 });
    const s = streams.get('5000:1025')!;
    const a = pattern(3000, 1);
    const b = pattern(4000, 2);
    g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1025, dstPort: 5000 }, a);
    g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1025, dstPort: 5000 }, b);
    expectSameBytes(s.bytes(), concat([a, b]));
    // host → guest: 10000 bytes arrive as RW packets of at most a buffer each, in order
    const h = pattern(10000, 3);
    mux.hostData(5000, 1025, s, h.subarray(0, 6000));
    mux.hostData(5000, 1025, s, h.subarray(6000));
    backend.hostEvent();
    const got = g.drain();
    const rw = got.filter((p) => p.hdr.op === VIRTIO_VSOCK_OP_RW);
    expectSameBytes(concat(rw.map((p) => p.data)), h);
    expect(Math.max(...rw.map((p) => p.hdr.len))).toBeLessThanOrEqual(4096 - VSOCK_HDR_SIZE);
    expect(mux.stats()).toMatchObject({ connectionsOpened: 1, bytesToHost: 7000, bytesToGuest: 10000 });
  });

  it('accepts header and payload in separate buffers', () => {
    const { g, streams } = setup({ splitTx: true });
    open(g, 5000, 7);
    const a = pattern(5000, 9);
    g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 7, dstPort: 5000 }, a);
    expectSameBytes(streams.get('5000:7')!.bytes(), a);
  });

  it('host-initiated: REQUEST from a port in [2^30, 2^31); RESPONSE establishes, RST refuses', () => {
    const { g, backend, mux } = setup();
    const s = new FakeStream();
    const hp = mux.connectToGuest(1234, s)!;
    expect(hp).toBe(LOCAL_PORT_MIN);
    backend.hostEvent();
    const req = g.drain();
    expect(ops(req)).toEqual([VIRTIO_VSOCK_OP_REQUEST]);
    expect(req[0].hdr).toMatchObject({ srcPort: hp, dstPort: 1234, bufAlloc: BUF_ALLOC });
    expect(s.establishedPort).toBeUndefined();
    g.send({ op: VIRTIO_VSOCK_OP_RESPONSE, srcPort: 1234, dstPort: hp });
    expect(s.establishedPort).toBe(hp);
    g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 1234, dstPort: hp }, Uint8Array.of(1, 2, 3));
    expect([...s.bytes()]).toEqual([1, 2, 3]);

    const s2 = new FakeStream();
    const hp2 = mux.connectToGuest(1234, s2)!;
    expect(hp2).toBe(LOCAL_PORT_MIN + 1);
    backend.hostEvent();
    g.drain();
    g.send({ op: VIRTIO_VSOCK_OP_RST, srcPort: 1234, dstPort: hp2 });
    expect(s2.closed).toBe('hard');
    expect(s2.establishedPort).toBeUndefined();
    expect(mux.size).toBe(1);
  });

  it('host-initiated connection the guest never answers: closed after the timeout, guest gets RST', () => {
    let now = 0;
    const backend = new VsockBackend({ guestCid: CID, onGuestConnect: (r) => r.refuse(), now: () => now });
    const g = new VsockGuest(backend, CID);
    g.activate();
    const s = new FakeStream();
    const hp = backend.mux.connectToGuest(99, s)!;
    backend.hostEvent();
    expect(ops(g.drain())).toEqual([VIRTIO_VSOCK_OP_REQUEST]);
    now = 1999;
    backend.hostEvent();
    expect(s.closed).toBe('no');
    now = 2001;
    backend.hostEvent();
    expect(s.closed).toBe('hard');
    const rst = g.drain();
    expect(ops(rst)).toEqual([VIRTIO_VSOCK_OP_RST]);
    expect(rst[0].hdr).toMatchObject({ srcPort: hp, dstPort: 99 });
  });

  it('RST for a REQUEST nobody listens to, and for RW/SHUTDOWN/RESPONSE on unknown connections; never RST for RST', () => {
    const { g, mux } = setup();
    g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 10, dstPort: 6000 });
    g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 11, dstPort: 5000 }, Uint8Array.of(1));
    g.send({ op: VIRTIO_VSOCK_OP_SHUTDOWN, srcPort: 12, dstPort: 5000, flags: 3 });
    g.send({ op: VIRTIO_VSOCK_OP_RESPONSE, srcPort: 13, dstPort: 5000 });
    g.send({ op: VIRTIO_VSOCK_OP_RST, srcPort: 14, dstPort: 5000 });
    const got = g.drain();
    expect(got.map((p) => [p.hdr.op, p.hdr.srcPort, p.hdr.dstPort])).toEqual([
      [VIRTIO_VSOCK_OP_RST, 6000, 10],
      [VIRTIO_VSOCK_OP_RST, 5000, 11],
      [VIRTIO_VSOCK_OP_RST, 5000, 12],
      [VIRTIO_VSOCK_OP_RST, 5000, 13],
    ]);
    expect(mux.stats()).toMatchObject({ connectionsRefused: 1, rstUnknownConnection: 3 });
    expect(mux.size).toBe(0);
  });

  it('SHUTDOWN: SEND half-closes the host stream, then RCV as well ends the connection with RST (written bytes flushed)', () => {
    const { g, streams, mux } = setup();
    open(g, 5000, 20);
    const s = streams.get('5000:20')!;
    g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 20, dstPort: 5000 }, Uint8Array.of(9));
    g.send({ op: VIRTIO_VSOCK_OP_SHUTDOWN, srcPort: 20, dstPort: 5000, flags: VIRTIO_VSOCK_SHUTDOWN_SEND });
    expect(s.ended).toBe(true);
    expect(s.closed).toBe('no');
    // the host may still send after the guest's SHUTDOWN(SEND)
    mux.hostData(5000, 20, s, Uint8Array.of(7, 7));
    g.backend.hostEvent();
    const d = g.drain();
    expect(ops(d)).toEqual([VIRTIO_VSOCK_OP_RW]);
    // RW after the guest said it sends no more: a protocol violation → RST
    g.send({ op: VIRTIO_VSOCK_OP_SHUTDOWN, srcPort: 20, dstPort: 5000, flags: VIRTIO_VSOCK_SHUTDOWN_RCV });
    expect(s.closed).toBe('graceful');
    expect(ops(g.drain())).toEqual([VIRTIO_VSOCK_OP_RST]);
    expect(mux.size).toBe(0);
    expect([...s.bytes()]).toEqual([9]);
  });

  it('RW after the guest\'s own SHUTDOWN(SEND) resets the connection and never reaches the host', () => {
    const { g, streams, mux } = setup();
    open(g, 5000, 21);
    const s = streams.get('5000:21')!;
    g.send({ op: VIRTIO_VSOCK_OP_SHUTDOWN, srcPort: 21, dstPort: 5000, flags: VIRTIO_VSOCK_SHUTDOWN_SEND });
    g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 21, dstPort: 5000 }, Uint8Array.of(1, 2));
    expect(s.written.length).toBe(0);
    expect(s.closed).toBe('hard');
    expect(ops(g.drain())).toEqual([VIRTIO_VSOCK_OP_RST]);
    expect(mux.stats().rstProtocol).toBe(1);
  });

  it('host EOF → SHUTDOWN(SEND) after the pending bytes; host close → SHUTDOWN(RCV|SEND), then the guest\'s RST removes it', () => {
    const { g, streams, mux, backend } = setup();
    open(g, 5000, 30);
    const s = streams.get('5000:30')!;
    mux.hostData(5000, 30, s, pattern(100, 5));
    mux.hostEnd(5000, 30, s);
    backend.hostEvent();
    let d = g.drain();
    expect(d.map((p) => [p.hdr.op, p.hdr.flags])).toEqual([
      [VIRTIO_VSOCK_OP_RW, 0],
      [VIRTIO_VSOCK_OP_SHUTDOWN, VIRTIO_VSOCK_SHUTDOWN_SEND],
    ]);
    mux.hostClosed(5000, 30, s, false);
    backend.hostEvent();
    d = g.drain();
    expect(d.map((p) => [p.hdr.op, p.hdr.flags])).toEqual([[VIRTIO_VSOCK_OP_SHUTDOWN, 3]]);
    expect(mux.connections()[0].state).toBe('closing');
    // data from the guest now has nowhere to go: dropped, counted
    g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 30, dstPort: 5000 }, Uint8Array.of(1));
    expect(mux.stats().droppedAfterClose).toBe(1);
    g.send({ op: VIRTIO_VSOCK_OP_RST, srcPort: 30, dstPort: 5000 });
    expect(mux.size).toBe(0);
    expect(g.drain()).toEqual([]);
  });

  it('a host error resets the connection', () => {
    const { g, streams, mux, backend } = setup();
    open(g, 5000, 31);
    mux.hostClosed(5000, 31, streams.get('5000:31')!, true);
    backend.hostEvent();
    expect(ops(g.drain())).toEqual([VIRTIO_VSOCK_OP_RST]);
  });

  it('a duplicate REQUEST resets the connection', () => {
    const { g, streams, mux } = setup();
    open(g, 5000, 40);
    g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 40, dstPort: 5000 });
    expect(streams.get('5000:40')!.closed).toBe('hard');
    expect(ops(g.drain())).toEqual([VIRTIO_VSOCK_OP_RST]);
    expect(mux.stats().rstDuplicateRequest).toBe(1);
  });
});

describe('virtio-vsock credit flow control', () => {
  it('a slow host reader stalls a credit-respecting guest writer: at most buf_alloc held, every byte once and in order', () => {
    const { g, streams, mux } = setup({ autoFlush: false });
    open(g, 5000, 50);
    const s = streams.get('5000:50')!;
    const total = 1024 * 1024;
    const data = pattern(total, 11);
    let sent = 0;
    let peerFwd = 0;
    let peerAlloc = BUF_ALLOC;
    let maxHeld = 0;
    let stalls = 0;
    for (let round = 0; sent < total && round < 10000; round++) {
      // the guest sends what its credit allows, in 4 KiB packets
      let credit = peerAlloc - (sent - peerFwd);
      if (credit === 0) stalls++;
      while (credit > 0 && sent < total) {
        const n = Math.min(4096, credit, total - sent);
        g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 50, dstPort: 5000 }, data.subarray(sent, sent + n));
        sent += n;
        credit -= n;
      }
      maxHeld = Math.max(maxHeld, mux.connections()[0].unflushed);
      // the host reads slowly: 5 writes per round
      s.flush(5);
      for (const p of g.drain()) {
        expect(p.hdr.op).toBe(VIRTIO_VSOCK_OP_CREDIT_UPDATE);
        peerFwd = p.hdr.fwdCnt;
        peerAlloc = p.hdr.bufAlloc;
      }
    }
    s.flush();
    expect(sent).toBe(total);
    expect(stalls).toBeGreaterThan(10);
    expect(maxHeld).toBeLessThanOrEqual(BUF_ALLOC);
    expect(maxHeld).toBeGreaterThan(BUF_ALLOC / 2);
    expectSameBytes(s.bytes(), data);
    expect(mux.stats().rstCreditViolation).toBe(0);
  });

  it('an RW beyond the advertised credit resets the connection (the host never holds more than buf_alloc)', () => {
    const { g, streams, mux } = setup({ autoFlush: false });
    open(g, 5000, 51);
    const s = streams.get('5000:51')!;
    const chunk = pattern(65536, 3);
    for (let i = 0; i < 4; i++) g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 51, dstPort: 5000 }, chunk);
    expect(mux.connections()[0].unflushed).toBe(BUF_ALLOC);
    g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 51, dstPort: 5000 }, Uint8Array.of(1));
    expect(mux.stats().rstCreditViolation).toBe(1);
    expect(s.closed).toBe('hard');
    expect(s.written.length).toBe(4);
    expect(ops(g.drain())).toEqual([VIRTIO_VSOCK_OP_RST]);
  });

  it('host → guest: only within the guest\'s credit, CREDIT_REQUEST when stalled, the host stream paused while the queue is full', () => {
    const { g, streams, mux, backend } = setup();
    g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 60, dstPort: 5000, bufAlloc: 8192 });
    g.drain();
    const s = streams.get('5000:60')!;
    const data = pattern(300 * 1024, 4);
    let fed = 0;
    const got: Uint8Array[] = [];
    let received = 0;
    let reported = 0;
    let creditRequests = 0;
    for (let round = 0; received < data.length && round < 2000; round++) {
      while (!s.paused && fed < data.length) {
        const n = Math.min(16384, data.length - fed);
        mux.hostData(5000, 60, s, data.subarray(fed, fed + n));
        fed += n;
        expect(mux.connections()[0].pending).toBeLessThanOrEqual(HOST_PENDING_MAX + 16384);
      }
      backend.hostEvent();
      for (const p of g.drain()) {
        if (p.hdr.op === VIRTIO_VSOCK_OP_CREDIT_REQUEST) creditRequests++;
        else {
          expect(p.hdr.op).toBe(VIRTIO_VSOCK_OP_RW);
          got.push(p.data);
          received += p.data.length;
        }
        // never beyond what the guest allowed
        expect(received - reported).toBeLessThanOrEqual(8192);
      }
      // the guest application reads half of what arrived, and tells the device
      reported += Math.ceil((received - reported) / 2);
      g.send({ op: VIRTIO_VSOCK_OP_CREDIT_UPDATE, srcPort: 60, dstPort: 5000, bufAlloc: 8192, fwdCnt: reported });
    }
    expectSameBytes(concat(got), data);
    expect(s.pauses).toBeGreaterThan(0);
    expect(creditRequests).toBeGreaterThan(0);
  });

  it('a stalled connection asks for credit once while the guest\'s answers do not change it (no ping-pong)', () => {
    const { g, streams, mux, backend } = setup();
    g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 62, dstPort: 5000, bufAlloc: 100 });
    g.drain();
    mux.hostData(5000, 62, streams.get('5000:62')!, pattern(300, 1));
    backend.hostEvent();
    let requests = 0;
    let data = 0;
    for (let round = 0; round < 20; round++) {
      for (const p of g.drain()) {
        if (p.hdr.op === VIRTIO_VSOCK_OP_RW) data += p.hdr.len;
        if (p.hdr.op !== VIRTIO_VSOCK_OP_CREDIT_REQUEST) continue;
        requests++;
        // a guest whose application reads nothing: the same credit again
        g.send({ op: VIRTIO_VSOCK_OP_CREDIT_UPDATE, srcPort: 62, dstPort: 5000, bufAlloc: 100, fwdCnt: 0 });
      }
    }
    expect(data).toBe(100);
    expect(requests).toBe(1);
    // the guest read 50: credit changed, 50 more bytes and (still stalled) one more request
    g.send({ op: VIRTIO_VSOCK_OP_CREDIT_UPDATE, srcPort: 62, dstPort: 5000, bufAlloc: 100, fwdCnt: 50 });
    expect(g.drain().map((p) => [p.hdr.op, p.hdr.len])).toEqual([
      [VIRTIO_VSOCK_OP_RW, 50],
      [VIRTIO_VSOCK_OP_CREDIT_REQUEST, 0],
    ]);
  });

  it('CREDIT_REQUEST is answered with CREDIT_UPDATE carrying fwd_cnt', () => {
    const { g } = setup();
    open(g, 5000, 61);
    g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 61, dstPort: 5000 }, pattern(1000, 1));
    g.drain();
    g.send({ op: VIRTIO_VSOCK_OP_CREDIT_REQUEST, srcPort: 61, dstPort: 5000 });
    const d = g.drain();
    expect(d.map((p) => [p.hdr.op, p.hdr.fwdCnt, p.hdr.bufAlloc])).toEqual([[VIRTIO_VSOCK_OP_CREDIT_UPDATE, 1000, BUF_ALLOC]]);
  });
});

describe('virtio-vsock at scale and under hostile input', () => {
  it('64 concurrent connections, interleaved both ways, each stream intact', () => {
    const ports = [5000, 5001, 5002, 5003];
    const { g, streams, mux, backend } = setup({ ports });
    const conns = Array.from({ length: 64 }, (_, i) => ({ hp: ports[i % 4], gp: 2000 + i }));
    for (const c of conns) g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: c.gp, dstPort: c.hp });
    expect(g.drain().filter((p) => p.hdr.op === VIRTIO_VSOCK_OP_RESPONSE).length).toBe(64);
    const toHost = conns.map((_, i) => pattern(3000 + 97 * i, 100 + i));
    const toGuest = conns.map((_, i) => pattern(5000 + 31 * i, 900 + i));
    const recv = conns.map(() => [] as Uint8Array[]);
    for (let part = 0; part < 3; part++) {
      conns.forEach((c, i) => {
        const a = toHost[i];
        const k = Math.ceil(a.length / 3);
        g.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: c.gp, dstPort: c.hp }, a.subarray(part * k, (part + 1) * k));
        const b = toGuest[i];
        const m = Math.ceil(b.length / 3);
        mux.hostData(c.hp, c.gp, streams.get(`${c.hp}:${c.gp}`)!, b.subarray(part * m, (part + 1) * m));
      });
      backend.hostEvent();
      for (const p of g.drain()) {
        expect(p.hdr.op).toBe(VIRTIO_VSOCK_OP_RW);
        recv[p.hdr.dstPort - 2000].push(p.data);
      }
    }
    conns.forEach((c, i) => {
      expectSameBytes(streams.get(`${c.hp}:${c.gp}`)!.bytes(), toHost[i]);
      expectSameBytes(concat(recv[i]), toGuest[i]);
    });
    expect(mux.size).toBe(64);
  });

  it('a REQUEST beyond the connection limit gets RST', () => {
    const { g, mux } = setup({ maxConnections: 4 });
    for (let i = 0; i < 5; i++) g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 100 + i, dstPort: 5000 });
    // the limit's RST (a stray) goes out before the connections' RESPONSEs
    expect(ops(g.drain())).toEqual([VIRTIO_VSOCK_OP_RST, ...[1, 2, 3, 4].map(() => VIRTIO_VSOCK_OP_RESPONSE)]);
    expect(mux.size).toBe(4);
    expect(mux.stats().rstLimit).toBe(1);
    expect(mux.connectToGuest(1, new FakeStream())).toBeUndefined();
  });

  it('drops packets with a wrong source or destination CID and short chains; RST for unknown type, op or a lying len', () => {
    const { g, streams, mux } = setup();
    open(g, 5000, 70);
    const s = streams.get('5000:70')!;
    const base = { srcCid: CID, dstCid: 2n, srcPort: 70, dstPort: 5000, len: 0, type: 1, op: VIRTIO_VSOCK_OP_RW, flags: 0, bufAlloc: BUF_ALLOC, fwdCnt: 0 };
    g.sendRaw(encodeHeader({ ...base, srcCid: 43n, len: 1 }), Uint8Array.of(1));
    g.sendRaw(encodeHeader({ ...base, dstCid: 3n, len: 1 }), Uint8Array.of(1));
    g.sendRaw(encodeHeader(base).subarray(0, 43));
    expect(g.drain()).toEqual([]);
    expect(s.written.length).toBe(0);
    expect(mux.stats()).toMatchObject({ droppedBadCid: 2, droppedShort: 1 });
    g.sendRaw(encodeHeader({ ...base, srcPort: 71, type: 2 }));
    g.sendRaw(encodeHeader({ ...base, srcPort: 72, op: 99 }));
    expect(ops(g.drain())).toEqual([VIRTIO_VSOCK_OP_RST, VIRTIO_VSOCK_OP_RST]);
    // len says 100 but the buffer holds 10: the connection is reset, nothing forwarded
    g.sendRaw(encodeHeader({ ...base, len: 100 }), pattern(10, 1));
    expect(s.written.length).toBe(0);
    expect(s.closed).toBe('hard');
    expect(ops(g.drain())).toEqual([VIRTIO_VSOCK_OP_RST]);
    expect(mux.stats()).toMatchObject({ rstBadType: 1, rstBadOp: 1, rstBadLen: 1 });
  });

  it('an rx buffer too small for a header completes unused; one with room for a header only carries control packets', () => {
    const { g, backend, mux, streams } = setup();
    g.send({ op: VIRTIO_VSOCK_OP_REQUEST, srcPort: 80, dstPort: 5000 });
    const small = g.rx.drv.post(simpleChain([[0x38000, 20]], true))!;
    backend.processQueue(0);
    expect(g.rx.drv.takeUsed()).toEqual([{ id: small, len: 0 }]);
    const exact = g.rx.drv.post(simpleChain([[0x38000, VSOCK_HDR_SIZE]], true))!;
    backend.processQueue(0);
    expect(g.rx.drv.takeUsed()).toEqual([{ id: exact, len: VSOCK_HDR_SIZE }]);
    // data does not fit a header-only buffer: it is held until a bigger one comes
    mux.hostData(5000, 80, streams.get('5000:80')!, Uint8Array.of(1, 2, 3));
    const held = g.rx.drv.post(simpleChain([[0x38000, VSOCK_HDR_SIZE]], true))!;
    backend.hostEvent();
    expect(g.rx.drv.takeUsed()).toEqual([]);
    g.send({ op: VIRTIO_VSOCK_OP_CREDIT_REQUEST, srcPort: 80, dstPort: 5000 });
    expect(g.rx.drv.takeUsed()).toEqual([{ id: held, len: VSOCK_HDR_SIZE }]);
    const d = g.drain();
    expect(d.map((p) => [...p.data])).toEqual([[1, 2, 3]]);
  });
});

describe('virtio-vsock reset and restore', () => {
  it('a driver reset ends every connection (host streams closed); afterwards their packets get RST', () => {
    const { g, streams, backend, mux } = setup({ ports: [5000, 5001] });
    open(g, 5000, 90);
    open(g, 5001, 91);
    const pending = new FakeStream();
    mux.connectToGuest(5, pending);
    backend.reset();
    expect([...streams.values()].map((s) => s.closed)).toEqual(['hard', 'hard']);
    expect(pending.closed).toBe('hard');
    expect(mux.size).toBe(0);
    const g2 = new VsockGuest(backend, CID);
    g2.activate();
    expect(g2.drain()).toEqual([]); // nothing owed from before the reset
    g2.send({ op: VIRTIO_VSOCK_OP_RW, srcPort: 90, dstPort: 5000 }, Uint8Array.of(1));
    expect(ops(g2.drain())).toEqual([VIRTIO_VSOCK_OP_RST]);
  });

  it('restore() ends connections and sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET once an event buffer is posted', () => {
    const { g, streams, backend } = setup();
    open(g, 5000, 95);
    const state = backend.save();
    expect(() => checkDeviceState(state, 'vsock', 1)).not.toThrow();
    backend.restore(state);
    expect(streams.get('5000:95')!.closed).toBe('hard');
    expect(backend.transportResetOwed).toBe(true);
    g.postEvent();
    expect(g.events).toEqual([VIRTIO_VSOCK_EVENT_TRANSPORT_RESET]);
    expect(backend.transportResetOwed).toBe(false);
    g.postEvent();
    expect(g.events).toEqual([VIRTIO_VSOCK_EVENT_TRANSPORT_RESET]);
    expect(() => backend.restore({ kind: 'console', version: 1 })).toThrow(/vsock/);
  });
});
