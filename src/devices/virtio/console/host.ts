// The host end of virtio-console, on the main thread: what the guest wrote to hvc0 (transmitq0, plus
// emergency writes) goes to a sink (vm.console's readable side), and send() reaches the guest's
// receiveq0. Bytes move through the rings described in ./index.ts; the main thread is only on
// this console path, never on a vCPU exit or a disk I/O path.
//
// Back-pressure: output is drained in chunks of up to the ring size and pushed into the sink; when it
// returns false (nobody reads), draining stops until resume() (the stream's _read), so the ring
// fills, the backend holds the transmit chain, and the guest's writes block: memory stays bounded.
// Input: send() resolves once all of it is in the input ring; a guest that posts no receive buffers
// therefore stops the writer (its write callback waits).
import type { KvmAddon } from '../../../kvm/addon.js';
import { ByteRing } from '../../../shared/byte-ring.js';
import { C_WAITING_ROOM, type ConsoleParams } from './index.js';

const POLL_MS = 50;

export class ConsoleHost {
  private readonly input: ByteRing;
  private readonly output: ByteRing;
  private readonly emerg: ByteRing;
  private readonly control: Int32Array;
  private closed = false;
  private flowing = true;
  private wakeReader?: () => void;

  /**
   * `sink` receives the guest's output; it returns false when its reader is full (a Readable's push),
   * and draining then pauses until resume().
   */
  constructor(
    private readonly addon: Pick<KvmAddon, 'eventfdWrite'>,
    private readonly params: ConsoleParams,
    private readonly sink: (bytes: Buffer) => boolean,
  ) {
    this.input = new ByteRing(params.input);
    this.output = new ByteRing(params.output);
    this.emerg = new ByteRing(params.emerg);
    this.control = new Int32Array(params.control);
    void this.pump();
  }

  /** The reader wants more (a Readable's _read). */
  resume(): void {
    this.flowing = true;
    this.wakeReader?.();
  }

  /** Move everything the guest wrote so far to the sink (as far as it takes it). */
  drain(): void {
    for (const ring of [this.emerg, this.output]) {
      for (;;) {
        if (!this.flowing && !this.closed) return;
        const chunk = ring.pop();
        if (chunk.length === 0) break;
        if (ring === this.output && Atomics.load(this.control, C_WAITING_ROOM) !== 0) {
          Atomics.store(this.control, C_WAITING_ROOM, 0);
          this.wake();
        }
        if (!this.sink(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length))) this.flowing = false;
      }
    }
  }

  private async pump(): Promise<void> {
    while (!this.closed) {
      this.drain();
      if (!this.flowing) {
        await new Promise<void>((r) => (this.wakeReader = r));
        this.wakeReader = undefined;
        continue;
      }
      // Either ring may get data; the output ring's notification covers the common case.
      await this.output.waitAsync(this.emerg.available() > 0 ? 0 : POLL_MS);
    }
  }

  private wake(): void {
    try {
      this.addon.eventfdWrite(this.params.wakeFd, 1n);
    } catch {
      // the device is gone (VM stopping)
    }
  }

  /** Input for the guest; resolves once all of it is in the input ring. */
  async send(chunk: Uint8Array): Promise<void> {
    let rest = chunk;
    while (!this.closed && rest.length > 0) {
      const n = this.input.push(rest);
      if (n > 0) this.wake();
      rest = rest.subarray(n);
      if (rest.length > 0) await this.input.spaceAsync(POLL_MS);
    }
  }

  /** Final drain (everything, whether or not the reader keeps up). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.drain();
    this.wakeReader?.();
  }
}
