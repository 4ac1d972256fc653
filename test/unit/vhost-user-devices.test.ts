// kindling's blk, rng and console backends served over vhost-user (src/vhost-user/server.ts) to the
// test frontend (./vhost-user-frontend.ts): a socketpair, a memfd as guest memory mapped on both
// sides, split virtqueues the test drives as a driver would. Data are checked where they land: the
// image file for blk writes, guest memory for reads, the console host's sink for transmitted bytes.
// Also the ring life cycle: GET_VRING_BASE stops a ring and returns its next avail index, and a
// restart from SET_VRING_BASE continues from there.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { consoleDeviceType, type ConsoleParams } from '../../src/devices/virtio/console/index.js';
import { ConsoleHost } from '../../src/devices/virtio/console/host.js';
import { blockDeviceType, type BlockParams } from '../../src/devices/virtio/block/index.js';
import { VIRTIO_BLK_F_RO, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../src/devices/virtio/block/device.js';
import { featureBit } from '../../src/devices/virtio/constants.js';
import { RNG_MAX_REQUEST_BYTES, rngDeviceType } from '../../src/devices/virtio/rng/index.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { VHOST_USER_F_PROTOCOL_FEATURES, VHOST_USER_GET_FEATURES, VHOST_USER_GET_VRING_BASE, VHOST_USER_SET_MEM_TABLE, vringStatePayload } from '../../src/vhost-user/protocol.js';
import { MEM_SIZE, TestFrontend, USER_BASE, addon, memTable, type RingLayout } from './vhost-user-frontend.js';

const RING0 = 0x1000;
const RING1 = 0x3000;
const BUF = 0x10000;

let dir = '';
const releases: Array<() => void> = [];
const frontends: TestFrontend[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kindling-vu-dev-'));
});

afterEach(async () => {
  for (const f of frontends.splice(0)) await f.close();
  for (const r of releases.splice(0)) r();
  rmSync(dir, { recursive: true, force: true });
});

function blkHeader(fe: TestFrontend, gpa: number, type: number, sector: number): void {
  fe.mem.write32(gpa, type);
  fe.mem.write32(gpa + 4, 0);
  fe.mem.write64(gpa + 8, BigInt(sector));
}

async function blkDevice(readOnly: boolean): Promise<{ fe: TestFrontend; image: string; params: BlockParams; q: RingLayout; kick: number; offered: bigint }> {
  const image = join(dir, 'disk.img');
  const pattern = new Uint8Array(64 * 1024);
  for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 7 + 3) & 0xff;
  writeFileSync(image, pattern);
  const prepared = blockDeviceType.prepare({ path: image, readOnly }, { addon });
  releases.push(prepared.release);
  const fe = new TestFrontend(blockDeviceType, prepared.params);
  frontends.push(fe);
  const offered = await fe.handshake();
  const { q, kick } = await fe.ring(0, 16, RING0);
  return { fe, image, params: prepared.params, q, kick, offered };
}

describe('vhost-user blk', () => {
  it('reads, writes (checked in the image file), flushes and gets its id', async () => {
    const { fe, image, params, q, kick, offered } = await blkDevice(false);
    expect(offered & featureBit(VIRTIO_BLK_F_RO)).toBe(0n);
    // read 1024 bytes at sector 2
    blkHeader(fe, BUF, VIRTIO_BLK_T_IN, 2);
    fe.mem.fill(BUF + 0x100, 1024, 0xee);
    fe.mem.write8(BUF + 0x600, 0xff);
    fe.post(q, [[BUF, 16, false], [BUF + 0x100, 1024, true], [BUF + 0x600, 1, true]], 0);
    fe.kick(kick);
    const [r1] = await fe.used(q);
    expect(r1).toEqual({ id: 0, len: 1025 });
    expect(fe.mem.read8(BUF + 0x600)).toBe(VIRTIO_BLK_S_OK);
    expect(Buffer.from(fe.mem.readBytes(BUF + 0x100, 1024))).toEqual(readFileSync(image).subarray(1024, 2048));

    // write 512 bytes at sector 5
    const data = new Uint8Array(512).map((_, i) => (i * 13) ^ 0x5a);
    blkHeader(fe, BUF + 0x1000, VIRTIO_BLK_T_OUT, 5);
    fe.mem.writeBytes(BUF + 0x1100, data);
    fe.mem.write8(BUF + 0x1400, 0xff);
    fe.post(q, [[BUF + 0x1000, 16, false], [BUF + 0x1100, 512, false], [BUF + 0x1400, 1, true]], 3);
    fe.kick(kick);
    const [r2] = await fe.used(q);
    expect(r2).toEqual({ id: 3, len: 1 });
    expect(fe.mem.read8(BUF + 0x1400)).toBe(VIRTIO_BLK_S_OK);
    const after = readFileSync(image);
    expect(after.subarray(5 * 512, 6 * 512)).toEqual(Buffer.from(data));
    expect(after[5 * 512 - 1]).toBe(((5 * 512 - 1) * 7 + 3) & 0xff); // neighbours untouched
    expect(after[6 * 512]).toBe((6 * 512 * 7 + 3) & 0xff);

    // flush, then get-id, in one kick
    blkHeader(fe, BUF + 0x2000, VIRTIO_BLK_T_FLUSH, 0);
    fe.mem.write8(BUF + 0x2100, 0xff);
    fe.post(q, [[BUF + 0x2000, 16, false], [BUF + 0x2100, 1, true]], 6);
    blkHeader(fe, BUF + 0x3000, VIRTIO_BLK_T_GET_ID, 0);
    fe.mem.write8(BUF + 0x3100, 0xff);
    fe.post(q, [[BUF + 0x3000, 16, false], [BUF + 0x3080, 20, true], [BUF + 0x3100, 1, true]], 8);
    fe.kick(kick);
    const got = await fe.used(q);
    while (got.length < 2) got.push(...(await fe.used(q)));
    expect(got).toEqual([{ id: 6, len: 1 }, { id: 8, len: 21 }]);
    expect(fe.mem.read8(BUF + 0x2100)).toBe(VIRTIO_BLK_S_OK);
    expect(fe.mem.read8(BUF + 0x3100)).toBe(VIRTIO_BLK_S_OK);
    expect(fe.mem.readBytes(BUF + 0x3080, 20)).toEqual(params.serial);
  });

  it('a read-only device offers VIRTIO_BLK_F_RO and refuses writes (the image unchanged)', async () => {
    const { fe, image, q, kick, offered } = await blkDevice(true);
    const before = readFileSync(image);
    expect(offered & featureBit(VIRTIO_BLK_F_RO)).not.toBe(0n);
    blkHeader(fe, BUF, VIRTIO_BLK_T_OUT, 0);
    fe.mem.fill(BUF + 0x100, 512, 0x11);
    fe.mem.write8(BUF + 0x400, 0xff);
    fe.post(q, [[BUF, 16, false], [BUF + 0x100, 512, false], [BUF + 0x400, 1, true]], 0);
    fe.kick(kick);
    const [r] = await fe.used(q);
    expect(r).toEqual({ id: 0, len: 1 });
    expect(fe.mem.read8(BUF + 0x400)).toBe(VIRTIO_BLK_S_IOERR);
    expect(readFileSync(image)).toEqual(before);
  });

  it('GET_VRING_BASE stops the ring at its next avail index; SET_VRING_BASE restarts it there', async () => {
    const { fe, image, q, kick } = await blkDevice(false);
    const readAt = async (desc: number, sector: number): Promise<void> => {
      blkHeader(fe, BUF + desc * 0x100, VIRTIO_BLK_T_IN, sector);
      fe.mem.write8(BUF + desc * 0x100 + 0x20, 0xff);
      fe.post(q, [[BUF + desc * 0x100, 16, false], [BUF + 0x8000 + desc * 0x200, 512, true], [BUF + desc * 0x100 + 0x20, 1, true]], desc);
    };
    for (let i = 0; i < 3; i++) {
      await readAt(i * 3, i);
      fe.kick(kick);
      await fe.used(q);
    }
    const stop = await fe.request(VHOST_USER_GET_VRING_BASE, vringStatePayload(0, 0));
    expect(stop).toBeDefined();
    const v = new DataView(stop!.payload.buffer);
    expect([v.getUint32(0, true), v.getUint32(4, true)]).toEqual([0, 3]);
    // Stopped: a request posted now is not served (its old kick fd is no longer watched).
    await readAt(9, 7);
    fe.kick(kick);
    await new Promise((r) => setTimeout(r, 50));
    expect(fe.mem.read16(q.used + 2)).toBe(3);
    // Restart from 3: the pending request is served, with the right data.
    const kick2 = await fe.restart(0, 3);
    fe.kick(kick2);
    const [r] = await fe.used(q);
    expect(r).toEqual({ id: 9, len: 513 });
    expect(fe.mem.read8(BUF + 9 * 0x100 + 0x20)).toBe(VIRTIO_BLK_S_OK);
    expect(Buffer.from(fe.mem.readBytes(BUF + 0x8000 + 9 * 0x200, 512))).toEqual(readFileSync(image).subarray(7 * 512, 8 * 512));
    const again = await fe.request(VHOST_USER_GET_VRING_BASE, vringStatePayload(0, 0));
    expect(new DataView(again!.payload.buffer).getUint32(4, true)).toBe(4);
  });
});

describe('vhost-user rng', () => {
  it('fills request buffers with random bytes, at most RNG_MAX_REQUEST_BYTES per request', async () => {
    const prepared = rngDeviceType.prepare({}, { addon });
    releases.push(prepared.release);
    const fe = new TestFrontend(rngDeviceType, prepared.params);
    frontends.push(fe);
    await fe.handshake();
    const { q, kick } = await fe.ring(0, 16, RING0);
    fe.mem.fill(BUF, 256, 0);
    fe.post(q, [[BUF, 256, true]], 0);
    // One request larger than the cap: two 48 KiB buffers.
    const big = 48 * 1024;
    fe.mem.fill(0x20000, 2 * big, 0);
    fe.post(q, [[0x20000, big, true], [0x20000 + big, big, true]], 1);
    fe.kick(kick);
    const got = await fe.used(q);
    while (got.length < 2) got.push(...(await fe.used(q)));
    expect(got).toEqual([{ id: 0, len: 256 }, { id: 1, len: RNG_MAX_REQUEST_BYTES }]);
    const small = fe.mem.readBytes(BUF, 256);
    expect(small.some((b) => b !== 0)).toBe(true);
    expect(new Set(small).size).toBeGreaterThan(64); // 256 random bytes: ~160 distinct values
    // Bytes past the cap are left as they were.
    const tail = fe.mem.readBytes(0x20000 + RNG_MAX_REQUEST_BYTES, 2 * big - RNG_MAX_REQUEST_BYTES);
    expect(tail.every((b) => b === 0)).toBe(true);
    expect(fe.mem.readBytes(0x20000 + RNG_MAX_REQUEST_BYTES - 64, 64).some((b) => b !== 0)).toBe(true);
  });
});

describe('vhost-user protocol features as QEMU 7.2\'s vhost-user-net negotiates them', () => {
  it('SET_PROTOCOL_FEATURES without VHOST_USER_F_PROTOCOL_FEATURES in SET_FEATURES: SET_VRING_ENABLE is accepted and the ring works', async () => {
    const prepared = rngDeviceType.prepare({}, { addon });
    releases.push(prepared.release);
    const fe = new TestFrontend(rngDeviceType, prepared.params);
    frontends.push(fe);
    const offered = await fe.u64(VHOST_USER_GET_FEATURES);
    expect(offered & (1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES))).not.toBe(0n);
    await fe.handshake(offered & ~(1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES)));
    const { q, kick } = await fe.ring(0, 16, RING0); // its SET_VRING_ENABLE 1 must be acked with 0
    fe.mem.fill(BUF, 64, 0);
    fe.post(q, [[BUF, 64, true]], 0);
    fe.kick(kick);
    expect(await fe.used(q)).toEqual([{ id: 0, len: 64 }]);
  });
});

describe('vhost-user console', () => {
  it('transmitq bytes reach the host sink; host input reaches receiveq', async () => {
    const prepared = consoleDeviceType.prepare({}, { addon });
    releases.push(prepared.release);
    const params = prepared.params as ConsoleParams;
    const fe = new TestFrontend(consoleDeviceType, params);
    frontends.push(fe);
    const sunk: Buffer[] = [];
    const host = new ConsoleHost(addon, params, (b) => {
      sunk.push(Buffer.from(b));
      return true;
    });
    releases.unshift(() => host.close());
    await fe.handshake();
    const rx = await fe.ring(0, 16, RING0);
    const tx = await fe.ring(1, 16, RING1);
    // guest → host
    const text = Buffer.from('hello from the vhost-user guest\n');
    fe.mem.writeBytes(BUF, text);
    fe.post(tx.q, [[BUF, text.length, false]], 0);
    fe.kick(tx.kick);
    const [t] = await fe.used(tx.q);
    expect(t.id).toBe(0);
    const deadline = Date.now() + 2000;
    while (Buffer.concat(sunk).length < text.length && Date.now() < deadline) {
      host.drain();
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(Buffer.concat(sunk).toString()).toBe(text.toString());
    // host → guest
    fe.mem.fill(BUF + 0x1000, 64, 0);
    fe.post(rx.q, [[BUF + 0x1000, 64, true]], 0);
    fe.kick(rx.kick);
    await host.send(Buffer.from('typed keys'));
    const [r] = await fe.used(rx.q);
    expect(r).toEqual({ id: 0, len: 10 });
    expect(Buffer.from(fe.mem.readBytes(BUF + 0x1000, 10)).toString()).toBe('typed keys');
  });
});

describe('vhost-user memory mappings', () => {
  const mappings = (name: string): number => readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(`/memfd:${name} `)).length;

  it('releaseFdMapping: the view reads zeros at once and writes no longer reach the file', () => {
    const fd = addon.memfdCreate('vu-release', 8192);
    try {
      const sab = addon.mapFdShared(fd, 4096, 4096);
      const other = new Uint8Array(addon.mapFdShared(fd, 0, 8192));
      new Uint8Array(sab).fill(0x5a);
      expect(other[4096]).toBe(0x5a);
      expect(mappings('vu-release')).toBe(2);
      expect(addon.releaseFdMapping(sab)).toBe(true);
      expect(addon.releaseFdMapping(sab)).toBe(false); // once
      expect(mappings('vu-release')).toBe(1);
      const v = new Uint8Array(sab);
      expect(v.every((b) => b === 0)).toBe(true);
      v.fill(0x11);
      expect(other[4096]).toBe(0x5a);
      expect(addon.releaseFdMapping(new SharedArrayBuffer(16))).toBe(false); // not a mapping
    } finally {
      addon.close(fd);
    }
  });

  it("a replaced memory table and a disconnect let go of the frontend's memfd at once, not at GC", async () => {
    const prepared = rngDeviceType.prepare({}, { addon });
    releases.push(prepared.release);
    const fe = new TestFrontend(rngDeviceType, prepared.params);
    frontends.push(fe);
    await fe.handshake();
    expect(mappings(fe.memName)).toBe(2); // the test's own view and the server's
    const second = addon.memfdCreate('vu-second', MEM_SIZE);
    releases.push(() => addon.close(second));
    expect(await fe.acked(VHOST_USER_SET_MEM_TABLE, memTable([{ gpa: 0n, size: BigInt(MEM_SIZE), ua: USER_BASE, off: 0n }]), [second])).toBe(0n);
    expect(mappings(fe.memName)).toBe(1);
    expect(mappings('vu-second')).toBe(1);
    // The device runs on the new table.
    const view = new GuestMemory([{ slot: 0, gpa: 0, size: MEM_SIZE, buffer: addon.mapFdShared(second, 0, MEM_SIZE) }]);
    const drv = Object.create(fe, { mem: { value: view } }) as TestFrontend;
    const { q, kick } = await drv.ring(0, 8, RING0);
    drv.post(q, [[BUF, 64, true]], 0);
    drv.kick(kick);
    expect(await drv.used(q)).toEqual([{ id: 0, len: 64 }]);
    await fe.close();
    frontends.splice(frontends.indexOf(fe), 1);
    expect(mappings('vu-second')).toBe(1); // only the test's view is left
  });
});
