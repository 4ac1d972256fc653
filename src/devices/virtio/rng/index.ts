// virtio-rng / entropy device (virtio 1.2 §5.4, device id 4): one queue (requestq) of device-writable
// buffers that the device fills with random bytes from the host CSPRNG (crypto.randomFillSync, i.e.
// OpenSSL's DRBG seeded from getrandom(2)), straight into the guest's buffers: no copy. No feature
// bits, no config space.
//
// Hostile rings: device-readable descriptors in a request are ignored (the spec says the driver puts
// only device-writable buffers here); a chain the queue rejects completes with used length 0. A
// single request is filled up to RNG_MAX_REQUEST_BYTES (the used length says how much), so a guest
// cannot make one wake-up generate gigabytes.
//
// Rate limiter (Firecracker's entropy device rate_limiter, src/devices/rate-limiter.ts): each request
// costs one op and the random bytes it was given, paid after it was filled; while the limiter is in
// debt the queue is not served (one request at a time) until one timer for the moment it is paid.
import { randomFillSync } from 'node:crypto';
import { VIRTIO_ID_RNG } from '../constants.js';
import { RequestQueueBackend, type VirtioDeviceType } from '../device.js';
import type { DescriptorChain } from '../queue.js';
import { rateLimiter, type RateLimiter, type RateLimiterConfig } from '../../rate-limiter.js';

/** QueueNumMax of requestq. */
export const RNG_QUEUE_SIZE = 256;
/** Most bytes given for one request (the rest of its buffers are left untouched). */
export const RNG_MAX_REQUEST_BYTES = 64 * 1024;

const S_REQUESTS = 0;
const S_BYTES = 1; // Float64 after the Int32 words
const S_WORDS = 4;

export interface RngStats {
  /** Requests completed. */
  requests: number;
  /** Random bytes given to the guest. */
  bytes: number;
}

export function createRngStats(): SharedArrayBuffer {
  return new SharedArrayBuffer(S_WORDS * 4 + 8);
}

export function readRngStats(sab: SharedArrayBuffer): RngStats {
  return { requests: Atomics.load(new Int32Array(sab, 0, S_WORDS), S_REQUESTS) >>> 0, bytes: new Float64Array(sab, S_WORDS * 4, 1)[0] };
}

export interface RngOptions {
  /** Firecracker's entropy rate limiter (bandwidth: random bytes given; ops: requests). */
  rate?: RateLimiterConfig;
}

export interface RngParams {
  stats: SharedArrayBuffer;
  rate?: RateLimiterConfig;
}

/**
 * Fill a request's device-writable buffers with random bytes (at most `max`); returns the used length.
 * `fill` is the entropy source (tests substitute a deterministic one).
 */
export function fillRequest(chain: DescriptorChain, max: number = RNG_MAX_REQUEST_BYTES, fill: (view: Uint8Array) => void = randomFillSync): number {
  let n = 0;
  for (const s of chain.writable) {
    if (n >= max) break;
    const k = Math.min(s.length, max - n);
    fill(new Uint8Array(s.buffer, s.offset, k));
    n += k;
  }
  return n;
}

/**
 * virtio-rng's backend: requestq served by the standard loop, each request filled by fillRequest; with
 * a rate limiter, one request at a time while it is out of debt.
 */
export class RngBackend extends RequestQueueBackend {
  constructor(
    params: RngParams,
    fill: (view: Uint8Array) => void = randomFillSync,
    env: { guarded(fn: () => void): void } = { guarded: (fn) => fn() },
    now?: () => number,
  ) {
    const counts = new Int32Array(params.stats, 0, S_WORDS);
    const bytes = new Float64Array(params.stats, S_WORDS * 4, 1);
    const limiter: RateLimiter | undefined = rateLimiter(params.rate, now);
    super(
      'rng',
      (q) =>
        q.service(
          (chain) => {
            const n = fillRequest(chain, RNG_MAX_REQUEST_BYTES, fill);
            Atomics.add(counts, S_REQUESTS, 1);
            bytes[0] += n;
            limiter?.consume(n);
            return n;
          },
          undefined,
          limiter,
        ),
      limiter ? { waitMs: () => limiter.waitMs(), guarded: (fn) => env.guarded(fn) } : undefined,
    );
  }
}

export const rngDeviceType: VirtioDeviceType<RngOptions, RngParams> = {
  kind: 'rng',
  deviceId: VIRTIO_ID_RNG,
  prepare(options) {
    return { params: { stats: createRngStats(), ...(options.rate ? { rate: options.rate } : {}) }, release: () => undefined };
  },
  describe() {
    return { features: 0n, queues: [{ name: 'requestq', maxSize: RNG_QUEUE_SIZE }], config: new Uint8Array(0) };
  },
  createBackend(params, env) {
    return new RngBackend(params, randomFillSync, env);
  },
};
