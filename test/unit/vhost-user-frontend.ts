// A vhost-user frontend written for the tests: drives a kindling VhostUserDevice over a socketpair
// (addon.vhostSend/vhostRecv with SCM_RIGHTS), gives it a memfd as guest memory (mapped here too, so
// the test plays the driver on the same pages) and sets up split virtqueues in it.
import { loadAddon } from '../../src/kvm/addon.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import {
  HEADER_SIZE,
  VHOST_USER_FLAG_NEED_REPLY,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_GET_FEATURES,
  VHOST_USER_GET_PROTOCOL_FEATURES,
  VHOST_USER_SET_FEATURES,
  VHOST_USER_SET_MEM_TABLE,
  VHOST_USER_SET_OWNER,
  VHOST_USER_SET_PROTOCOL_FEATURES,
  VHOST_USER_SET_VRING_ADDR,
  VHOST_USER_SET_VRING_BASE,
  VHOST_USER_SET_VRING_CALL,
  VHOST_USER_SET_VRING_ENABLE,
  VHOST_USER_SET_VRING_KICK,
  VHOST_USER_SET_VRING_NUM,
  encodeRequest,
  u64Payload,
  vringStatePayload,
} from '../../src/vhost-user/protocol.js';
import { VhostUserDevice } from '../../src/vhost-user/server.js';
import type { AnyVirtioDeviceType } from '../../src/devices/virtio/device.js';

export const addon = loadAddon();
export const MEM_SIZE = 1 << 20;
/** The frontend's user address of guest-physical 0 (distinct, to exercise the translation). */
export const USER_BASE = 0x7f12_3400_0000n;

let frontendCount = 0;

export interface Reply {
  request: number;
  flags: number;
  payload: Uint8Array;
}

export class TestFrontend {
  readonly fd: number;
  readonly serverFd: number;
  readonly memfd: number;
  /** The memfd's name (unique per frontend: /proc/self/maps shows it as /memfd:NAME). */
  readonly memName = `vhost-user-test-${++frontendCount}`;
  readonly mem: GuestMemory;
  readonly device: VhostUserDevice;
  readonly served: Promise<void>;
  readonly logs: string[] = [];
  private readonly own: number[] = [];

  constructor(type: AnyVirtioDeviceType, params: unknown) {
    const [a, b] = addon.socketpair();
    this.fd = a;
    this.serverFd = b;
    addon.setNonblocking(b, true);
    addon.setNonblocking(a, true);
    this.memfd = addon.memfdCreate(this.memName, MEM_SIZE);
    this.mem = new GuestMemory([{ slot: 0, gpa: 0, size: MEM_SIZE, buffer: addon.mapFdShared(this.memfd, 0, MEM_SIZE) }]);
    this.device = new VhostUserDevice({ name: 'test', type, params, addon, log: (_l, m) => this.logs.push(m) });
    this.served = this.device.serve(b);
  }

  /** Send a request (fds passed with it). */
  send(request: number, payload: Uint8Array = new Uint8Array(0), fds: number[] = [], flags = 0): void {
    if (!addon.vhostSend(this.fd, encodeRequest(request, payload, flags), fds)) throw new Error('send timed out');
  }

  sendRaw(bytes: Uint8Array, fds: number[] = []): void {
    if (!addon.vhostSend(this.fd, bytes, fds)) throw new Error('send timed out');
  }

  /** Wait for one reply (or EOF: undefined) within `ms`. */
  async recv(ms = 5000): Promise<Reply | undefined> {
    const hdr = new Uint8Array(HEADER_SIZE);
    let got = 0;
    const deadline = Date.now() + ms;
    const read = async (buf: Uint8Array): Promise<boolean> => {
      got = 0;
      while (got < buf.length) {
        const r = addon.vhostRecv(this.fd, buf, got, buf.length - got);
        for (const f of r.fds) addon.close(f);
        if (r.n === 0) return false;
        if (r.n > 0) {
          got += r.n;
          continue;
        }
        if (Date.now() > deadline) throw new Error('no reply in time');
        await new Promise((res) => setTimeout(res, 2));
      }
      return true;
    };
    if (!(await read(hdr))) return undefined;
    const v = new DataView(hdr.buffer);
    const payload = new Uint8Array(v.getUint32(8, true));
    if (payload.length && !(await read(payload))) return undefined;
    return { request: v.getUint32(0, true), flags: v.getUint32(4, true), payload };
  }

  async request(request: number, payload?: Uint8Array, fds?: number[], flags = 0): Promise<Reply | undefined> {
    this.send(request, payload, fds, flags);
    return this.recv();
  }

  /** Request with NEED_REPLY; resolves with the REPLY_ACK status. */
  async acked(request: number, payload?: Uint8Array, fds?: number[]): Promise<bigint | undefined> {
    const r = await this.request(request, payload, fds, VHOST_USER_FLAG_NEED_REPLY);
    if (!r) return undefined;
    return new DataView(r.payload.buffer).getBigUint64(0, true);
  }

  /** Whether the server closed the connection (EOF within `ms`). */
  async closedByServer(ms = 5000): Promise<boolean> {
    try {
      return (await this.recv(ms)) === undefined;
    } catch {
      return false;
    }
  }

  async u64(request: number): Promise<bigint> {
    const r = await this.request(request);
    if (!r) throw new Error('connection closed');
    return new DataView(r.payload.buffer).getBigUint64(0, true);
  }

  eventfd(): number {
    const fd = addon.eventfd(0, addon.constants.EFD_NONBLOCK);
    this.own.push(fd);
    return fd;
  }

  /** SET_OWNER, features (all offered, or `features`), protocol features REPLY_ACK|CONFIG|MQ, memory table. */
  async handshake(features?: bigint): Promise<bigint> {
    this.send(VHOST_USER_SET_OWNER);
    const offered = await this.u64(VHOST_USER_GET_FEATURES);
    const proto = await this.u64(VHOST_USER_GET_PROTOCOL_FEATURES);
    if ((await this.acked(VHOST_USER_SET_PROTOCOL_FEATURES, u64Payload(proto))) !== 0n) throw new Error('SET_PROTOCOL_FEATURES refused');
    if ((await this.acked(VHOST_USER_SET_FEATURES, u64Payload(features ?? offered))) !== 0n) throw new Error('SET_FEATURES refused');
    if ((await this.acked(VHOST_USER_SET_MEM_TABLE, memTable([{ gpa: 0n, size: BigInt(MEM_SIZE), ua: USER_BASE, off: 0n }]), [this.memfd])) !== 0n) {
      throw new Error('SET_MEM_TABLE refused');
    }
    return offered;
  }

  /** Set up ring `index` at guest-physical `base` (size, last_avail_idx 0, addresses, call, kick, enable); returns the queue and its fds. */
  async ring(index: number, size: number, base: number): Promise<{ q: RingLayout; kick: number; call: number }> {
    const q: RingLayout = { size, desc: base, avail: base + 16 * size, used: alignUp(base + 16 * size + 6 + 2 * size, 4), availIdx: 0, lastUsed: 0 };
    const call = this.eventfd();
    const kick = this.eventfd();
    const ok = async (req: number, p: Uint8Array, fds?: number[]): Promise<void> => {
      const s = await this.acked(req, p, fds);
      if (s !== 0n) throw new Error(`request ${req} refused (${s})`);
    };
    await ok(VHOST_USER_SET_VRING_CALL, u64Payload(BigInt(index)), [call]);
    await ok(VHOST_USER_SET_VRING_NUM, vringStatePayload(index, size));
    await ok(VHOST_USER_SET_VRING_BASE, vringStatePayload(index, 0));
    await ok(VHOST_USER_SET_VRING_ADDR, vringAddr(index, USER_BASE + BigInt(q.desc), USER_BASE + BigInt(q.used), USER_BASE + BigInt(q.avail)));
    await ok(VHOST_USER_SET_VRING_KICK, u64Payload(BigInt(index)), [kick]);
    await ok(VHOST_USER_SET_VRING_ENABLE, vringStatePayload(index, 1));
    return { q, kick, call };
  }

  /** Restart a ring stopped by GET_VRING_BASE: SET_VRING_BASE `availBase`, a new kick fd, enable. */
  async restart(index: number, availBase: number): Promise<number> {
    const kick = this.eventfd();
    for (const [req, p, fds] of [
      [VHOST_USER_SET_VRING_BASE, vringStatePayload(index, availBase), []],
      [VHOST_USER_SET_VRING_KICK, u64Payload(BigInt(index)), [kick]],
      [VHOST_USER_SET_VRING_ENABLE, vringStatePayload(index, 1), []],
    ] as const) {
      const st = await this.acked(req, p, [...fds]);
      if (st !== 0n) throw new Error(`request ${req} refused (${st})`);
    }
    return kick;
  }

  /** Kick ring `kick` (write its eventfd). */
  kick(kick: number): void {
    addon.eventfdWrite(kick, 1n);
  }

  /** Post a chain of [gpa, len, writable] buffers; returns its head. */
  post(q: RingLayout, bufs: ReadonlyArray<readonly [number, number, boolean]>, firstDesc: number): number {
    bufs.forEach(([gpa, len, w], i) => {
      const d = q.desc + 16 * (firstDesc + i);
      this.mem.write64(d, BigInt(gpa));
      this.mem.write32(d + 8, len);
      this.mem.write16(d + 12, (i + 1 < bufs.length ? 1 : 0) | (w ? 2 : 0));
      this.mem.write16(d + 14, firstDesc + i + 1);
    });
    this.mem.write16(q.avail + 4 + 2 * (q.availIdx % q.size), firstDesc);
    q.availIdx = (q.availIdx + 1) & 0xffff;
    this.mem.write16(q.avail + 2, q.availIdx);
    return firstDesc;
  }

  /** Wait until used.idx moves past what was seen; returns the new used elements. */
  async used(q: RingLayout, ms = 5000): Promise<Array<{ id: number; len: number }>> {
    const deadline = Date.now() + ms;
    while (this.mem.read16(q.used + 2) === q.lastUsed) {
      if (Date.now() > deadline) throw new Error('no used entry in time');
      await new Promise((r) => setTimeout(r, 2));
    }
    const out: Array<{ id: number; len: number }> = [];
    const now = this.mem.read16(q.used + 2);
    while (q.lastUsed !== now) {
      const e = q.used + 4 + 8 * (q.lastUsed % q.size);
      out.push({ id: this.mem.read32(e), len: this.mem.read32(e + 4) });
      q.lastUsed = (q.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /** Close our end and wait until the server has let go; releases every fd the test made. */
  async close(): Promise<void> {
    try {
      addon.close(this.fd);
    } catch {
      // closed already
    }
    await this.served;
    for (const f of [...this.own, this.memfd]) {
      try {
        addon.close(f);
      } catch {
        // closed already
      }
    }
    this.device.close();
  }
}

export interface RingLayout {
  size: number;
  desc: number;
  avail: number;
  used: number;
  availIdx: number;
  lastUsed: number;
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

export function memTable(regions: ReadonlyArray<{ gpa: bigint; size: bigint; ua: bigint; off: bigint }>): Uint8Array {
  const out = new Uint8Array(8 + 32 * regions.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, regions.length, true);
  regions.forEach((r, i) => {
    v.setBigUint64(8 + 32 * i, r.gpa, true);
    v.setBigUint64(16 + 32 * i, r.size, true);
    v.setBigUint64(24 + 32 * i, r.ua, true);
    v.setBigUint64(32 + 32 * i, r.off, true);
  });
  return out;
}

export function vringAddr(index: number, desc: bigint, used: bigint, avail: bigint): Uint8Array {
  const out = new Uint8Array(40);
  const v = new DataView(out.buffer);
  v.setUint32(0, index, true);
  v.setBigUint64(8, desc, true);
  v.setBigUint64(16, used, true);
  v.setBigUint64(24, avail, true);
  v.setBigUint64(32, 0n, true);
  return out;
}

export const PROTOCOL_FEATURES_BIT = 1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES);
