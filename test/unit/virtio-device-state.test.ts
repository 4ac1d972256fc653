// save()/restore() of every virtio device backend (blk, rng, console), built through its device type's
// createBackend as the I/O worker builds it: restore(save()) on a fresh backend is accepted and the
// device works after the next activation; another kind's state or garbage is refused with an Error
// that names the device.
import { describe, expect, it } from 'vitest';
import { blockDeviceType, type BlockParams } from '../../src/devices/virtio/block/index.js';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, blockSerial, createBlockStats } from '../../src/devices/virtio/block/device.js';
import type { FileBackendAddon } from '../../src/devices/virtio/block/file-backend.js';
import { consoleDeviceType, type ConsoleParams } from '../../src/devices/virtio/console/index.js';
import type { BackendEnv, VirtioDeviceBackend } from '../../src/devices/virtio/device.js';
import { createRngStats, readRngStats, rngDeviceType } from '../../src/devices/virtio/rng/index.js';
import { ByteRing } from '../../src/shared/byte-ring.js';
import { DATA, ModelRam, benchQueue, simpleChain, type QueueLayout } from './virtq-model.js';

/** The addon's packed iovec ((buffer index, offset, length) triples) as [buffer, offset, length] entries. */
function unpackIov(bufs: readonly SharedArrayBuffer[], packed: Float64Array, count: number): Array<[SharedArrayBuffer, number, number]> {
  return Array.from({ length: count }, (_, i) => [bufs[packed[3 * i]], packed[3 * i + 1], packed[3 * i + 2]]);
}


const L0: QueueLayout = { size: 8, desc: 0x1000, avail: 0x2000, used: 0x3000 };
const L1: QueueLayout = { size: 8, desc: 0x5000, avail: 0x6000, used: 0x7000 };

const SECTORS = 8;
const disk = Uint8Array.from({ length: SECTORS * 512 }, (_, i) => (i * 7 + 3) & 0xff);

/** An addon with just what FileBackend uses, over an in-memory image. */
const fileAddon: FileBackendAddon = {
  constants: { IOV_MAX: 1024, FALLOC_FL_KEEP_SIZE: 1, FALLOC_FL_PUNCH_HOLE: 2, FALLOC_FL_ZERO_RANGE: 16 },
  preadvPacked(_fd, bufs, packed, count, position) {
      const iov = unpackIov(bufs, packed, count);
    let p = Number(position);
    for (const [buf, off, len] of iov) {
      new Uint8Array(buf, off, len).set(disk.subarray(p, p + len));
      p += len;
    }
    return p - Number(position);
  },
  pwritevPacked: () => expect.unreachable(),
  fdatasync: () => undefined,
  fallocate: () => expect.unreachable(),
};

interface Kind {
  kind: string;
  make(): { backend: VirtioDeviceBackend; /** Activate on fresh rings and show that a request is served. */ works(): void };
}

const watchers: Array<() => void> = [];
const env = {
  addon: fileAddon,
  watchFd: () => () => undefined,
  watchEventfd: (_fd: number, cb: () => void) => (watchers.push(cb), () => undefined),
  log: () => undefined,
  guarded: (fn: () => void) => fn(),
} as unknown as BackendEnv;

const kinds: Kind[] = [
  {
    kind: 'blk',
    make() {
      const params: BlockParams = { path: '/img/a.raw', fd: 3, readOnly: false, sectors: SECTORS, serial: blockSerial('/img/a.raw', 1), stats: createBlockStats() };
      const backend = blockDeviceType.createBackend(params, env);
      return {
        backend,
        works() {
          const ram = new ModelRam();
          const q = benchQueue(ram, L0, { index: 0, indirect: true });
          backend.activate({ mem: ram.mem, features: 0n, queues: [q.aq] });
          const hdr = new Uint8Array(16);
          new DataView(hdr.buffer).setUint32(0, VIRTIO_BLK_T_IN, true);
          new DataView(hdr.buffer).setBigUint64(8, 2n, true);
          ram.write(DATA, hdr);
          const h = q.drv.post({
            bufs: [
              { addr: BigInt(DATA), len: 16, write: false },
              { addr: BigInt(DATA + 0x100), len: 512, write: true },
              { addr: BigInt(DATA + 0x400), len: 1, write: true },
            ],
            table: null,
            corrupt: 'none',
          })!;
          backend.processQueue(0);
          expect(q.drv.takeUsed()).toEqual([{ id: h, len: 513 }]);
          expect(ram.mem.read8(DATA + 0x400)).toBe(VIRTIO_BLK_S_OK);
          expect(ram.mem.readBytes(DATA + 0x100, 512)).toEqual(disk.subarray(1024, 1536));
        },
      };
    },
  },
  {
    kind: 'rng',
    make() {
      const params = { stats: createRngStats() };
      const backend = rngDeviceType.createBackend(params, env);
      return {
        backend,
        works() {
          const ram = new ModelRam();
          const q = benchQueue(ram, L0, { index: 0, indirect: false });
          backend.activate({ mem: ram.mem, features: 0n, queues: [q.aq] });
          const before = readRngStats(params.stats);
          const h = q.drv.post(simpleChain([[DATA, 300]], true))!;
          backend.processQueue(0);
          expect(q.drv.takeUsed()).toEqual([{ id: h, len: 300 }]);
          expect(readRngStats(params.stats)).toEqual({ requests: before.requests + 1, bytes: before.bytes + 300 });
        },
      };
    },
  },
  {
    kind: 'console',
    make() {
      const params: ConsoleParams = {
        input: ByteRing.create(64).sab,
        output: ByteRing.create(64).sab,
        emerg: ByteRing.create(16).sab,
        control: new SharedArrayBuffer(32),
        wakeFd: 5,
        cols: 80,
        rows: 24,
      };
      watchers.length = 0;
      const backend = consoleDeviceType.createBackend(params, env);
      const hostEvent = watchers[0];
      return {
        backend,
        works() {
          const ram = new ModelRam();
          const rx = benchQueue(ram, L0, { index: 0, indirect: false });
          const tx = benchQueue(ram, L1, { index: 1, indirect: false });
          backend.activate({ mem: ram.mem, features: 0n, queues: [rx.aq, tx.aq] });
          const r = rx.drv.post(simpleChain([[DATA, 16]], true))!;
          new ByteRing(params.input).push(Uint8Array.of(1, 2, 3));
          hostEvent();
          expect(rx.drv.takeUsed()).toEqual([{ id: r, len: 3 }]);
          expect(ram.mem.readBytes(DATA, 3)).toEqual(Uint8Array.of(1, 2, 3));
          ram.write(DATA + 0x100, Uint8Array.of(9, 8));
          const t = tx.drv.post(simpleChain([[DATA + 0x100, 2]], false))!;
          backend.processQueue(1);
          expect(tx.drv.takeUsed()).toEqual([{ id: t, len: 0 }]);
          expect(new ByteRing(params.output).pop()).toEqual(Uint8Array.of(9, 8));
        },
      };
    },
  },
];

describe('virtio device backend state', () => {
  for (const k of kinds) {
    it(`${k.kind}: save() is plain data; restore(save()) on a fresh backend is accepted and the device works after activation`, () => {
      const a = k.make();
      a.works();
      const state = a.backend.save();
      expect(structuredClone(state)).toEqual(state);
      expect(JSON.parse(JSON.stringify(state))).toEqual(state);
      const b = k.make();
      b.backend.restore(structuredClone(state));
      b.works();
      // and restoring an active backend leaves it inactive until the next activation
      b.backend.restore(b.backend.save());
      b.works();
    });

    it(`${k.kind}: restore() of another device's state or of garbage throws an Error naming the device`, () => {
      const { backend } = k.make();
      const others = kinds.filter((o) => o.kind !== k.kind).map((o) => o.make().backend.save());
      const own = backend.save() as Record<string, unknown>;
      const garbage: unknown[] = [undefined, null, 0, 1, 'x', k.kind, [], {}, { kind: k.kind }, { ...own, version: 2 }, { ...own, version: '1' }, { ...own, kind: 'net' }, { version: 1 }];
      for (const s of [...others, ...garbage]) {
        expect(() => backend.restore(s), `restore(${JSON.stringify(s)})`).toThrowError(new RegExp(`^virtio-${k.kind}: `));
      }
    });
  }
});
