// Adaptive busy polling of a virtqueue: QEMU's AioContext polling (util/aio-posix.c: poll-max-ns,
// poll-grow 2, poll-shrink 0) applied to one queue and one trigger.
//
// After an event that makes the driver's next buffers likely soon (a frame delivered to a guest that
// answers it, a transmit pass in the middle of a burst), the device keeps the driver's notifications
// suppressed (VIRTQ_USED_F_NO_NOTIFY / avail_event) and watches the ring for a short window instead of
// sleeping until a kick. A kick costs the guest an exit (a few µs on hardware, ~55 µs of CPU under
// KVM-PVM) and the device a wake-up; a buffer found by polling costs neither. When the window closes
// empty, notifications are re-enabled and the ring re-checked before the device sleeps, so no buffer
// waits for a kick that was suppressed.
//
// The window follows the measured wait from the trigger to the buffers (found by polling or announced
// by a kick), as QEMU's does from the start of a poll to the next event:
//   wait <= window            kept (the sweet spot);
//   window < wait <= max      grown: ×2, from POLL_GROW_START_US, at most max;
//   wait > max, or never      back to 0 (a trigger more than max after a pending one that saw no
//                             buffer counts as never).
// At 0 the device does not poll but keeps measuring, so a guest that starts answering quickly grows
// the window again; a guest that never answers costs nothing after its first miss. Triggers while
// one is pending (more frames delivered before the answer) keep the earliest time. Pure: the caller
// passes the clock (µs).

/** The first window after a wait within max, in µs (QEMU starts at 4 µs too). */
export const POLL_GROW_START_US = 4;
/** The largest window a device may be configured with, in µs. */
export const POLL_MAX_US_LIMIT = 1000;

export class AdaptivePoll {
  /** The current window in µs (0: do not poll). */
  windowUs = 0;
  /** The earliest trigger still waiting for buffers, in µs; -1 when none is pending. */
  private since = -1;

  constructor(readonly maxUs: number) {
    if (!(Number.isInteger(maxUs) && maxUs > 0 && maxUs <= POLL_MAX_US_LIMIT)) throw new RangeError(`busy-poll window must be 1..${POLL_MAX_US_LIMIT} µs (got ${maxUs})`);
  }

  /** A trigger at `now`: the window to poll for from now (0: do not poll). */
  trigger(now: number): number {
    if (this.since >= 0 && now - this.since > this.maxUs) {
      this.adjust(Infinity);
      this.since = -1;
    }
    if (this.since < 0) this.since = now;
    return this.windowUs;
  }

  /** The awaited buffers arrived at `now` (a poll found them, or the driver's kick came). */
  arrived(now: number): void {
    if (this.since < 0) return;
    this.adjust(now - this.since);
    this.since = -1;
  }

  private adjust(waited: number): void {
    if (waited <= this.windowUs) return;
    if (waited > this.maxUs) this.windowUs = 0;
    else this.windowUs = Math.min(this.maxUs, this.windowUs === 0 ? POLL_GROW_START_US : this.windowUs * 2);
  }
}
