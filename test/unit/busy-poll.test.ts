// Adaptive busy polling (src/devices/virtio/busy-poll.ts) and virtio-net's use of it on the transmit
// ring. AdaptivePoll against a model written from QEMU's rule (aio-posix.c: keep within the window,
// grow ×2 from 4 µs within max, drop to 0 beyond max); NetBackend driven by a guest that posts its next
// transmit chain a fixed time after the device took the previous one, on a clock that advances with
// every reading: the device must learn to find the chains by polling (no kick), and every time it
// stops polling the driver's next kick must be armed (used.flags / avail_event), else a real driver
// would never kick and the chain would wait forever.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AdaptivePoll, POLL_GROW_START_US } from '../../src/devices/virtio/busy-poll.js';
import { NET_COUNTERS, NET_RX, NET_TX, NetBackend, POLL_ROUNDS, RECV_AGAIN, readNetCounters } from '../../src/devices/virtio/net/backend.js';
import type { PackedIov } from '../../src/devices/virtio/iovec.js';
import { PortStub, STUB_ENV } from './net-port-stub.js';
import { VIRTIO_NET_HDR_LEN } from '../../src/devices/virtio/net/header.js';
import { runs } from '../fuzz/budget.js';
import { ModelRam, benchQueue, simpleChain, type QueueLayout } from './virtq-model.js';

type Ev = { k: 'trigger' | 'arrived'; dt: number };

/** QEMU's rule, per trigger: the window after each event, or the poll length trigger() returns. */
class Model {
  w = 0;
  since: number | undefined;
  constructor(readonly max: number) {}
  private adjust(waited: number): void {
    if (waited <= this.w) return;
    if (waited > this.max) this.w = 0;
    else this.w = Math.min(this.max, this.w === 0 ? POLL_GROW_START_US : this.w * 2);
  }
  trigger(now: number): number {
    if (this.since !== undefined && now - this.since > this.max) {
      this.adjust(Infinity);
      this.since = undefined;
    }
    this.since ??= now;
    return this.w;
  }
  arrived(now: number): void {
    if (this.since === undefined) return;
    this.adjust(now - this.since);
    this.since = undefined;
  }
}

describe('AdaptivePoll', () => {
  it('property: follows QEMU’s grow/shrink rule for any sequence of triggers and arrivals', () => {
    const seen = { grew: 0, dropped: 0 };
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 200 }),
        fc.array(fc.record({ k: fc.constantFrom<Ev['k']>('trigger', 'arrived'), dt: fc.oneof(fc.integer({ min: 0, max: 60 }), fc.integer({ min: 0, max: 400 })) }), { maxLength: 60 }),
        (max, evs) => {
          const p = new AdaptivePoll(max);
          const m = new Model(max);
          let now = 0;
          for (const [i, e] of evs.entries()) {
            now += e.dt;
            const before = p.windowUs;
            if (e.k === 'trigger') expect(p.trigger(now), `event ${i}`).toBe(m.trigger(now));
            else {
              p.arrived(now);
              m.arrived(now);
            }
            expect(p.windowUs, `event ${i}`).toBe(m.w);
            expect(p.windowUs).toBeGreaterThanOrEqual(0);
            expect(p.windowUs).toBeLessThanOrEqual(max);
            if (p.windowUs > before) seen.grew++;
            if (before > 0 && p.windowUs === 0) seen.dropped++;
          }
        },
      ),
      { numRuns: runs(300) },
    );
    for (const [k, n] of Object.entries(seen)) expect(n, k).toBeGreaterThan(0);
  });

  it('a guest answering after 20 µs is polled for within three answers; one that stops answering stops it', () => {
    const p = new AdaptivePoll(50);
    let now = 0;
    const windows: number[] = [];
    for (let i = 0; i < 6; i++) {
      windows.push(p.trigger(now));
      now += 20;
      p.arrived(now);
      now += 100;
    }
    expect(windows).toEqual([0, 4, 8, 16, 32, 32]);
    p.trigger(now);
    expect(p.trigger(now + 51)).toBe(0);
    // Capped at the configured window.
    const q = new AdaptivePoll(20);
    const w: number[] = [];
    for (let i = 0, t = 0; i < 6; i++, t += 100) {
      w.push(q.trigger(t));
      q.arrived(t + 20);
    }
    expect(w).toEqual([0, 4, 8, 16, 20, 20]);
  });

  it('refuses windows outside 1..1000 µs', () => {
    for (const bad of [0, -1, 1.5, 1001, Number.NaN]) expect(() => new AdaptivePoll(bad)).toThrow(RangeError);
  });
});

// ---- virtio-net's transmit polling ------------------------------------------------------------

const RX: QueueLayout = { size: 8, desc: 0x1000, avail: 0x2000, used: 0x3000 };
const TX: QueueLayout = { size: 16, desc: 0x5000, avail: 0x6000, used: 0x7000 };
const FRAME = 60;

class SinkPort extends PortStub {
  sent: number[] = [];
  onSend: () => void = () => undefined;
  override send(_iov: PackedIov, frameLen: number): boolean {
    this.sent.push(frameLen);
    this.onSend();
    return true;
  }
}

/**
 * A guest that posts `frames` transmit chains, each `answerUs` after the device sent the previous one,
 * and kicks only when the ring says it must. Returns the kicks, txPolled and the frames sent.
 */
function run(o: { pollUs: number; answerUs: number; frames: number; eventIdx: boolean; spurious?: boolean }): { kicks: number; polled: number; sent: number } {
  const ram = new ModelRam();
  const rx = benchQueue(ram, RX, { index: NET_RX, indirect: false, eventIdx: o.eventIdx });
  const tx = benchQueue(ram, TX, { index: NET_TX, indirect: false, eventIdx: o.eventIdx });
  const port = new SinkPort();
  let us = 0;
  let due: number | undefined;
  let posted = 0;
  let oldIdx = 0;
  let kicks = 0;
  let kicked = false;
  // The driver kicks right after posting when the ring says it must, even while the device is busy.
  const post = (): void => {
    // Chains reclaimed as they complete; each one header + frame in its own buffer.
    tx.drv.takeUsed();
    oldIdx = tx.drv.availIdx;
    const gpa = 0x10000 + (posted % 8) * 0x100;
    ram.write(gpa, new Uint8Array(VIRTIO_NET_HDR_LEN + FRAME));
    expect(tx.drv.post(simpleChain([[gpa, VIRTIO_NET_HDR_LEN + FRAME]], false))).toBeDefined();
    posted++;
    due = undefined;
    if (mustKick()) {
      kicks++;
      kicked = true;
    }
  };
  // The clock advances 1 µs per reading; the guest posts as soon as its answer is due.
  const now = (): number => {
    us += 1;
    if (due !== undefined && us >= due) post();
    return us / 1000;
  };
  port.onSend = () => {
    if (posted < o.frames) due = us + o.answerUs;
  };
  const counters = new SharedArrayBuffer(8 * NET_COUNTERS.length);
  const backend = new NetBackend({ port, counters, mtu: 1500, pollUs: o.pollUs, now, env: STUB_ENV });
  backend.activate({ mem: ram.mem, features: (1n << 32n) | (o.eventIdx ? 1n << 29n : 0n), queues: [rx.aq, tx.aq] });
  /** What a driver checks after publishing avail.idx: must it notify? */
  const mustKick = (): boolean => {
    if (!o.eventIdx) return (ram.mem.read16(TX.used) & 1) === 0;
    const ev = ram.mem.read16(TX.used + 4 + 8 * TX.size);
    const n = tx.drv.availIdx;
    return ((n - ev - 1) & 0xffff) < ((n - oldIdx) & 0xffff);
  };
  post();
  for (let guard = 0; guard < 10 * o.frames && port.sent.length < o.frames; guard++) {
    if (!kicked && due !== undefined) {
      us = Math.max(us, due);
      post();
      // The chain just posted was not taken by a poll: the device sleeps, so the driver must be told to kick.
      expect(kicked, `frame ${posted}: the device sleeps with notifications suppressed`).toBe(true);
    }
    expect(kicked, `frame ${posted}: the device sleeps with a chain it never sent`).toBe(true);
    kicked = false;
    backend.processQueue(NET_TX);
  }
  // spurious: one more kick, for nothing (a driver may kick for a chain a poll already took).
  if (o.spurious) backend.processQueue(NET_TX);
  expect(port.sent).toEqual(Array.from({ length: o.frames }, () => FRAME));
  // Done: the last window closed empty, and the next chain would be announced (event idx: avail_event
  // is the index the next chain gets).
  const idle = o.eventIdx ? ram.mem.read16(TX.used + 4 + 8 * TX.size) === tx.drv.availIdx : (ram.mem.read16(TX.used) & 1) === 0;
  expect(idle, 'idle with notifications suppressed').toBe(true);
  return { kicks, polled: readNetCounters(counters).txPolled, sent: port.sent.length };
}

/**
 * Request/response: the host sends one frame at a time; the guest answers `answerUs` after the device
 * delivered it, kicking only when the ring says so; the next frame comes once the answer went out.
 */
function requestResponse(o: { pollUs: number; answerUs: number; frames: number; burstAt?: number }): { kicks: number; polled: number; sent: number } {
  const ram = new ModelRam();
  const rx = benchQueue(ram, RX, { index: NET_RX, indirect: false });
  const tx = benchQueue(ram, TX, { index: NET_TX, indirect: false });
  const port = new SinkPort();
  let us = 0;
  let due: number | undefined;
  let hostFrames = 0;
  let kicks = 0;
  let kicked = false;
  // The guest posts its answer and kicks then if the ring asks for kicks (VIRTQ_USED_F_NO_NOTIFY
  // clear), as a polling driver does, even while the device is still busy delivering the request.
  const answer = (): void => {
    tx.drv.takeUsed();
    ram.write(0x18000, new Uint8Array(VIRTIO_NET_HDR_LEN + FRAME));
    expect(tx.drv.post(simpleChain([[0x18000, VIRTIO_NET_HDR_LEN + FRAME]], false))).toBeDefined();
    due = undefined;
    if ((ram.mem.read16(TX.used) & 1) === 0) {
      kicks++;
      kicked = true;
    }
  };
  port.receive = () => {
    if (hostFrames === 0) return RECV_AGAIN;
    hostFrames--;
    due = us + o.answerUs; // the guest sees the frame as it is published
    return FRAME;
  };
  const now = (): number => {
    us += 1;
    if (due !== undefined && us >= due) answer();
    return us / 1000;
  };
  const rxBuf = (i: number): void => void rx.drv.post(simpleChain([[0x10000 + i * 0x800, 1530]], true));
  for (let i = 0; i < RX.size; i++) rxBuf(i);
  const counters = new SharedArrayBuffer(8 * NET_COUNTERS.length);
  const backend = new NetBackend({ port, counters, mtu: 1500, pollUs: o.pollUs, now, env: STUB_ENV });
  backend.activate({ mem: ram.mem, features: 1n << 32n, queues: [rx.aq, tx.aq] });
  for (let f = 0; f < o.frames; f++) {
    us += 100; // the host's side of the round trip
    hostFrames = f === o.burstAt ? 2 : 1; // a burst: two frames in one pass (no poll follows), one answer
    backend.processQueue(NET_RX); // the tap became readable
    for (const u of rx.drv.takeUsed()) rxBuf((u.id + f) % RX.size); // reposted quietly (the device has buffers)
    if (!kicked && port.sent.length !== f + 1) {
      expect(due, `frame ${f}: delivered`).toBeDefined();
      us = Math.max(us, due!);
      answer();
      expect(kicked, `frame ${f}: the device sleeps with notifications suppressed`).toBe(true);
    }
    if (kicked) {
      kicked = false;
      backend.processQueue(NET_TX); // the kick's wake-up (finds nothing when a poll sent the answer)
    }
    expect(port.sent.length).toBe(f + 1);
  }
  expect(ram.mem.read16(TX.used) & 1, 'idle with notifications suppressed').toBe(0);
  return { kicks, polled: readNetCounters(counters).txPolled, sent: port.sent.length };
}

describe('virtio-net transmit busy-polling', () => {
  for (const eventIdx of [false, true]) {
    it(`finds a guest's chains without kicks once it learned the answer time, and arms the kick whenever it stops (event idx ${eventIdx})`, () => {
      // 0 → 4 → 8 → 16 µs: three kicks learn the 10 µs answer time, the rest is polled (16 polled
      // passes per wake-up at most, POLL_ROUNDS: then a kick, and again 16).
      expect(run({ pollUs: 50, answerUs: 10, frames: 3 + 1 + POLL_ROUNDS, eventIdx })).toEqual({ kicks: 4, polled: POLL_ROUNDS, sent: 3 + 1 + POLL_ROUNDS });
      expect(run({ pollUs: 50, answerUs: 10, frames: 3 + 2 * (1 + POLL_ROUNDS), eventIdx })).toEqual({ kicks: 5, polled: 2 * POLL_ROUNDS, sent: 3 + 2 * (1 + POLL_ROUNDS) });
    });

    it(`a guest posting its next chain while the device publishes the last does not kick once polled for (event idx ${eventIdx})`, () => {
      // The answer is due 1 µs after each send, i.e. at the device's next clock reading, before its
      // poll starts: the pass left the ring quiet, so only the wake-ups kick (the first, the one that
      // learns the window, and one after every POLL_ROUNDS polled passes).
      expect(run({ pollUs: 50, answerUs: 1, frames: 40, eventIdx })).toEqual({ kicks: 4, polled: 36, sent: 40 });
      expect(run({ pollUs: 0, answerUs: 1, frames: 40, eventIdx })).toEqual({ kicks: 40, polled: 0, sent: 40 });
      // A kick for nothing finds the ring empty in a quiet pass: it is armed again (else the next chain would wait).
      expect(run({ pollUs: 50, answerUs: 1, frames: 40, eventIdx, spurious: true })).toEqual({ kicks: 4, polled: 36, sent: 40 });
    });

    it(`never polls with poll-us 0, or for a guest slower than the window (event idx ${eventIdx})`, () => {
      expect(run({ pollUs: 0, answerUs: 10, frames: 20, eventIdx })).toEqual({ kicks: 20, polled: 0, sent: 20 });
      expect(run({ pollUs: 50, answerUs: 80, frames: 20, eventIdx })).toEqual({ kicks: 20, polled: 0, sent: 20 });
    });
  }

  it('request/response: after one delivered frame the answer is found by polling once the window has grown, and an answer posted during the publish does not kick; never with poll-us 0', () => {
    // Windows 0, 4, 8 miss the 10 µs answer (three kicks); from 16 µs on every answer is polled.
    expect(requestResponse({ pollUs: 50, answerUs: 10, frames: 30 })).toEqual({ kicks: 3, polled: 27, sent: 30 });
    expect(requestResponse({ pollUs: 0, answerUs: 10, frames: 30 })).toEqual({ kicks: 30, polled: 0, sent: 30 });
    expect(requestResponse({ pollUs: 50, answerUs: 70, frames: 30 })).toEqual({ kicks: 30, polled: 0, sent: 30 });
    // A guest that answers at once, while the device is still publishing the request: its kicks are
    // suppressed before the publish, so only the first answer (window 0, no poll) kicks.
    expect(requestResponse({ pollUs: 50, answerUs: 1, frames: 30 })).toEqual({ kicks: 1, polled: 29, sent: 30 });
    expect(requestResponse({ pollUs: 0, answerUs: 1, frames: 30 })).toEqual({ kicks: 30, polled: 0, sent: 30 });
    // Two frames in one pass: no poll follows, so the ring quieted before the publish is armed again
    // and that answer kicks; polling resumes with the next request.
    expect(requestResponse({ pollUs: 50, answerUs: 10, frames: 30, burstAt: 10 })).toEqual({ kicks: 4, polled: 26, sent: 30 });
  });

  it('property: any answer times, any window: every frame sent once, in order, and no chain waits for a suppressed kick', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 120 }), fc.integer({ min: 0, max: 100 }), fc.integer({ min: 1, max: 30 }), fc.boolean(), (pollUs, answerUs, frames, eventIdx) => {
        const r = run({ pollUs, answerUs, frames, eventIdx });
        expect(r.kicks + r.polled).toBe(frames);
      }),
      { numRuns: runs(100) },
    );
  });
});
