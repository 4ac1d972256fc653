// The platform's legacy devices, main-thread side: creates their shared state, wires COM1's and the
// i8042 keyboard's interrupts (an eventfd each, registered as KVM_IRQFD on GSI 4 and GSI 1: an irqfd
// write asserts and deasserts the line, one edge for the in-kernel PIC/IOAPIC), moves console bytes
// between the UART and vm.serial, and injects Ctrl-Alt-Del into the keyboard controller. The vCPU workers serve the guest's register accesses (src/vcpu-worker/buses.ts).
import { COM1_GSI, I8042_GSI } from '../arch/x86_64/layout.js';
import { AcpiSleep } from '../devices/legacy/acpi-sleep.js';
import { I8042 } from '../devices/legacy/i8042.js';
import { PostCode } from '../devices/legacy/post.js';
import { Serial16550 } from '../devices/legacy/serial.js';
import type { VmFd } from '../kvm/vm-fd.js';
import { ByteRing } from '../shared/byte-ring.js';
import { RingPump } from '../shared/ring-pump.js';
import type { LegacyDeviceState } from '../vcpu-worker/protocol.js';

/** Console output ring: big enough that a guest printing a screenful never waits for the main thread. */
const SERIAL_TX_RING_BYTES = 64 * 1024;
/** Output waits up to COALESCE_MS for COALESCE_BYTES to gather before it is handed on. */
const COALESCE_BYTES = 4096;
const COALESCE_MS = 2;
/** Longest wait for output before the ring is looked at again. */
const OUTPUT_POLL_MS = 50;

export class LegacyDevices {
  readonly state: LegacyDeviceState;
  private readonly serial: Serial16550;
  private readonly i8042: I8042;
  private readonly tx: ByteRing;
  private readonly input: Buffer[] = [];
  private readonly output: RingPump;
  private closed = false;

  /**
   * `onOutput` receives the guest's console output; it returns false when its reader is full (a
   * Readable's push), and draining then pauses until resume(): the TX ring fills and the vCPU that
   * writes THR blocks on it, so an unread console costs no memory beyond the ring.
   */
  constructor(
    private readonly vm: VmFd,
    onOutput: (bytes: Buffer) => boolean,
  ) {
    const addon = vm.addon;
    this.tx = ByteRing.create(SERIAL_TX_RING_BYTES);
    const serialIrqFd = addon.eventfd(0, 0);
    vm.registerIrqfd(serialIrqFd, COM1_GSI);
    const kbdIrqFd = addon.eventfd(0, 0);
    try {
      vm.registerIrqfd(kbdIrqFd, I8042_GSI);
    } catch (e) {
      addon.close(kbdIrqFd);
      throw e;
    }
    this.state = {
      serial: Serial16550.createState(),
      serialTx: this.tx.sab,
      serialIrqFd,
      i8042: I8042.createState(),
      kbdIrqFd,
      post: PostCode.createState(),
      acpiSleep: AcpiSleep.createState(),
    };
    // The main thread only injects input; it never transmits, so its tx is never called.
    this.serial = new Serial16550(this.state.serial, {
      tx: (b) => void this.tx.tryPushByte(b),
      irq: () => addon.eventfdWrite(serialIrqFd, 1n),
    });
    // Host-side key injection; the vCPU workers' instances over the same state raise the same irqfd.
    this.i8042 = new I8042(this.state.i8042, {
      reset: () => {},
      irq: () => addon.eventfdWrite(kbdIrqFd, 1n),
    });
    // A guest writes one byte per trapped THR write: a burst gathers in the ring (coalesce) so the
    // stream gets a few large chunks instead of one per byte.
    this.output = new RingPump({ rings: [this.tx], waitOn: this.tx, sink: onOutput, pollMs: OUTPUT_POLL_MS, coalesce: { bytes: COALESCE_BYTES, ms: COALESCE_MS } });
  }

  /** The output's reader wants more (a Readable's _read). */
  resume(): void {
    this.output.resume();
  }

  /** Move what the guest has written so far to onOutput, as far as it takes it. */
  drain(): void {
    this.output.drain();
  }

  /** Console input: into the UART's RX FIFO (and its host-side queue); the rest waits for room. */
  sendToGuest(chunk: Buffer): void {
    if (this.closed) return;
    this.input.push(chunk);
    if (this.input.length === 1) void this.feedInput();
  }

  private async feedInput(): Promise<void> {
    while (!this.closed && this.input.length) {
      const head = this.input[0];
      const n = this.serial.receive(head);
      if (n === head.length) this.input.shift();
      else {
        this.input[0] = head.subarray(n);
        await this.serial.waitRxSpace(100);
      }
    }
  }

  /**
   * Put the Ctrl, Alt, Del make codes in the keyboard's output buffer and raise IRQ 1 (when the guest
   * has keyboard interrupts enabled). False when the buffer (16 bytes) has no room for all four.
   */
  sendCtrlAltDel(): boolean {
    if (this.closed) return false;
    return this.i8042.sendCtrlAltDel();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.output.close();
    try {
      this.vm.unregisterIrqfd(this.state.serialIrqFd, COM1_GSI);
    } catch {
      // the VM fd may already be gone; closing the eventfd is what matters
    }
    this.vm.addon.close(this.state.serialIrqFd);
    try {
      this.vm.unregisterIrqfd(this.state.kbdIrqFd, I8042_GSI);
    } catch {
      // as above
    }
    this.vm.addon.close(this.state.kbdIrqFd);
  }
}
