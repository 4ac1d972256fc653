// A host stream for the vsock suites that records everything the muxer does to it and flushes the
// guest's writes only when the test says so (a slow host reader).
import type { HostStream } from '../../src/devices/virtio/vsock/muxer.js';

export class FakeStream implements HostStream {
  readonly written: Uint8Array[] = [];
  private readonly unflushed: Array<() => void> = [];
  ended = false;
  closed: 'no' | 'graceful' | 'hard' = 'no';
  paused = false;
  establishedPort: number | undefined;
  /** A write after end() or close(): a bug. */
  writeAfterEnd = false;
  pauses = 0;

  constructor(public autoFlush = true) {}

  write(data: Uint8Array, done: () => void): void {
    if (this.ended || this.closed !== 'no') this.writeAfterEnd = true;
    this.written.push(data.slice());
    if (this.autoFlush) done();
    else this.unflushed.push(done);
  }
  /** Flush up to `n` writes (default all). */
  flush(n = Infinity): void {
    while (n-- > 0 && this.unflushed.length > 0) this.unflushed.shift()!();
  }
  get waiting(): number {
    return this.unflushed.length;
  }
  end(): void {
    this.ended = true;
  }
  pause(): void {
    this.paused = true;
    this.pauses++;
  }
  resume(): void {
    this.paused = false;
  }
  close(graceful: boolean): void {
    if (this.closed === 'no') this.closed = graceful ? 'graceful' : 'hard';
  }
  established(hostPort: number): void {
    this.establishedPort = hostPort;
  }
  bytes(): Uint8Array {
    const n = this.written.reduce((s, w) => s + w.length, 0);
    const out = new Uint8Array(n);
    let o = 0;
    for (const w of this.written) {
      out.set(w, o);
      o += w.length;
    }
    return out;
  }
}
