// Moves bytes that other threads produce into SharedArrayBuffer byte rings (a guest's console output:
// COM1's TX ring, virtio-console's output and emergency rings) into a sink on this thread's event
// loop (a Readable's push), with back-pressure: when the sink returns false (its reader is full),
// draining stops until resume() (the Readable's _read). The rings then fill and their producers wait
// (a vCPU blocks on a full COM1 ring, virtio-console holds the guest's transmit chain), so an unread
// console costs the rings and the sink's buffer, never more.
import type { ByteRing } from './byte-ring.js';

export interface RingPumpOptions {
  /** Drained in this order on every pass. */
  rings: ByteRing[];
  /** The ring whose producer notifies (waitAsync); the others are looked at on every pass. */
  waitOn: ByteRing;
  /** Takes a chunk; false when its reader is full. */
  sink: (bytes: Buffer) => boolean;
  /** Called right after bytes were popped from `ring`, before they reach the sink (e.g. to wake a producer waiting for room). */
  onPopped?: (ring: ByteRing) => void;
  /** Longest wait on `waitOn` before the other rings are looked at again. */
  pollMs: number;
  /** After a wake-up with fewer than `bytes` ready, wait `ms` for a burst to gather (fewer, larger chunks). */
  coalesce?: { bytes: number; ms: number };
}

export class RingPump {
  private closed = false;
  /** The sink takes more (false after it returned false, until resume()). */
  private flowing = true;
  private wakePump?: () => void;

  constructor(private readonly o: RingPumpOptions) {
    void this.pump();
  }

  /** The sink's reader wants more (a Readable's _read). */
  resume(): void {
    this.flowing = true;
    this.wakePump?.();
  }

  /** Move what is in the rings to the sink, as far as it takes it (everything once closed). */
  drain(): void {
    for (const ring of this.o.rings) {
      for (;;) {
        if (!this.flowing && !this.closed) return;
        const chunk = ring.pop();
        if (chunk.length === 0) break;
        this.o.onPopped?.(ring);
        if (!this.o.sink(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length))) this.flowing = false;
      }
    }
  }

  /** Final drain (everything, whether or not the reader keeps up); the pump stops. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.drain();
    this.wakePump?.();
  }

  private async pump(): Promise<void> {
    const { rings, waitOn, pollMs, coalesce } = this.o;
    while (!this.closed) {
      this.drain();
      if (!this.flowing) {
        await new Promise<void>((r) => (this.wakePump = r));
        this.wakePump = undefined;
        continue;
      }
      const othersReady = rings.some((r) => r !== waitOn && r.available() > 0);
      if ((await waitOn.waitAsync(othersReady ? 0 : pollMs)) && coalesce && waitOn.available() < coalesce.bytes) {
        await new Promise<void>((r) => setTimeout(r, coalesce.ms));
      }
    }
  }
}
