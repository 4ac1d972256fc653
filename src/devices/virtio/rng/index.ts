// virtio-rng / entropy device (virtio 1.2 §5.4, device id 4): one queue (requestq) of device-writable
// buffers that the device fills with random bytes from the host CSPRNG (crypto.randomFillSync, i.e.
// OpenSSL's DRBG seeded from getrandom(2)), straight into the guest's buffers: no copy. No feature
// bits, no config space.
//
// Hostile rings: device-readable descriptors in a request are ignored (the spec says the driver puts
// only device-writable buffers here); a chain the queue rejects completes with used length 0. A
// single request is filled up to RNG_MAX_REQUEST_BYTES (the used length says how much), so a guest
// cannot make one wake-up generate gigabytes.
import { randomFillSync } from 'node:crypto';
import { VIRTIO_ID_RNG } from '../constants.js';
import { checkDeviceState, type VirtioDeviceBackend, type VirtioDeviceType } from '../device.js';
import type { ActiveQueue } from '../queue-service.js';
import type { DescriptorChain } from '../queue.js';

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

/** virtio-rng takes no options. */
export type RngOptions = Record<string, never>;

export interface RngParams {
  stats: SharedArrayBuffer;
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

export class RngBackend implements VirtioDeviceBackend {
  private queue: ActiveQueue | undefined;
  private readonly counts: Int32Array;
  private readonly bytes: Float64Array;

  constructor(params: RngParams, private readonly fill: (view: Uint8Array) => void = randomFillSync) {
    this.counts = new Int32Array(params.stats, 0, S_WORDS);
    this.bytes = new Float64Array(params.stats, S_WORDS * 4, 1);
  }

  activate(d: { queues: ReadonlyArray<ActiveQueue | undefined> }): void {
    this.queue = d.queues[0];
  }

  processQueue(index: number): void {
    if (index !== 0 || !this.queue) return;
    this.queue.service((chain) => {
      const n = fillRequest(chain, RNG_MAX_REQUEST_BYTES, this.fill);
      Atomics.add(this.counts, S_REQUESTS, 1);
      this.bytes[0] += n;
      return n;
    });
  }

  reset(): void {
    this.queue = undefined;
  }

  /** Nothing is held between wake-ups. */
  save(): { kind: 'rng'; version: 1 } {
    return { kind: 'rng', version: 1 };
  }

  restore(state: unknown): void {
    checkDeviceState(state, 'rng', 1);
    this.queue = undefined;
  }
}

export const rngDeviceType: VirtioDeviceType<RngOptions, RngParams> = {
  kind: 'rng',
  deviceId: VIRTIO_ID_RNG,
  prepare() {
    return { params: { stats: createRngStats() }, release: () => undefined };
  },
  describe() {
    return { features: 0n, queues: [{ name: 'requestq', maxSize: RNG_QUEUE_SIZE }], config: new Uint8Array(0) };
  },
  createBackend(params) {
    return new RngBackend(params);
  },
};
