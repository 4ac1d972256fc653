// virtio-blk (device id 2) as a kindling device type: one image per device, one request queue.
// device.ts holds the request logic, file-backend.ts the image I/O, image.ts the open/lock.
import { VIRTIO_ID_BLOCK } from '../constants.js';
import { RequestQueueBackend, type VirtioDeviceType } from '../device.js';
import { BLK_CONFIG_SIZE, BLK_QUEUE_SIZE, BlockDevice, blockConfigSpace, blockDeviceFeatures, createBlockStats, serviceRequests } from './device.js';
import { FileBackend } from './file-backend.js';
import { openDisk } from './image.js';
import { rateLimiter, type RateLimiterConfig } from '../../rate-limiter.js';

export interface BlockOptions {
  path: string;
  readOnly: boolean;
  /** Firecracker's rate limiter (bytes of reads and writes, and requests). */
  rate?: RateLimiterConfig;
}

/**
 * The runtime reconfiguration message of a virtio-blk backend: a new limiter (null: none), and/or a
 * new medium (an image the main thread opened and locked; its fd stays the main thread's).
 */
export interface BlockReconfigure {
  rate?: RateLimiterConfig | null;
  medium?: { fd: number; sectors: number };
}

/** What every thread gets: the open image fd and its geometry, and the device counters. */
export interface BlockParams {
  path: string;
  fd: number;
  readOnly: boolean;
  sectors: number;
  serial: Uint8Array;
  /** Device counters (readBlockStats). */
  stats: SharedArrayBuffer;
  rate?: RateLimiterConfig;
}

export const blockDeviceType: VirtioDeviceType<BlockOptions, BlockParams> = {
  kind: 'blk',
  deviceId: VIRTIO_ID_BLOCK,
  prepare(options, host) {
    const d = openDisk(host.addon, options);
    return {
      params: { path: d.path, fd: d.fd, readOnly: d.readOnly, sectors: d.sectors, serial: d.serial, stats: createBlockStats(), ...(options.rate ? { rate: options.rate } : {}) },
      release: () => host.addon.close(d.fd),
    };
  },
  describe(p) {
    return {
      features: blockDeviceFeatures(p.readOnly),
      queues: [{ name: 'requestq', maxSize: BLK_QUEUE_SIZE }],
      config: blockConfigSpace(p).subarray(0, BLK_CONFIG_SIZE),
    };
  },
  createBackend(p, env) {
    const dev = new BlockDevice({ sectors: p.sectors, readOnly: p.readOnly, serial: p.serial }, new FileBackend(env.addon, p.fd), p.stats, p.rate);
    return new RequestQueueBackend('blk', (q) => serviceRequests(q, dev), {
      waitMs: () => dev.limiter?.waitMs() ?? 0,
      guarded: (fn) => env.guarded(fn),
      reconfigure: (msg) => {
        const m = msg as BlockReconfigure | null;
        if (m === null || typeof m !== 'object' || (m.rate === undefined && m.medium === undefined)) throw new Error('virtio-blk: reconfiguration must be { rate?, medium? }');
        if (m.medium !== undefined) dev.swapMedium(new FileBackend(env.addon, m.medium.fd), m.medium.sectors);
        if (m.rate !== undefined) dev.limiter = rateLimiter(m.rate ?? undefined);
      },
    });
  },
};
