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
import { RingPump } from '../../../shared/ring-pump.js';
import { C_WAITING_ROOM, type ConsoleParams } from './index.js';

const POLL_MS = 50;

export class ConsoleHost {
  private readonly input: ByteRing;
  private readonly output: RingPump;
  private closed = false;

  /**
   * `sink` receives the guest's output; it returns false when its reader is full (a Readable's push),
   * and draining then pauses until resume().
   */
  constructor(
    private readonly addon: Pick<KvmAddon, 'eventfdWrite'>,
    private readonly params: ConsoleParams,
    sink: (bytes: Buffer) => boolean,
  ) {
    this.input = new ByteRing(params.input);
    const output = new ByteRing(params.output);
    const control = new Int32Array(params.control);
    this.output = new RingPump({
      rings: [new ByteRing(params.emerg), output],
      waitOn: output,
      sink,
      pollMs: POLL_MS,
      // Room in the output ring for a backend holding a transmit chain: wake it.
      onPopped: (ring) => {
        if (ring === output && Atomics.load(control, C_WAITING_ROOM) !== 0) {
          Atomics.store(control, C_WAITING_ROOM, 0);
          this.wake();
        }
      },
    });
  }

  /** The reader wants more (a Readable's _read). */
  resume(): void {
    this.output.resume();
  }

  /** Move everything the guest wrote so far to the sink (as far as it takes it). */
  drain(): void {
    this.output.drain();
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
    this.output.close();
  }
}
