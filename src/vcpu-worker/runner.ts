// One vCPU's run loop (in the role of Firecracker's Vcpu::run_emulation): park while the VM is paused,
// enter KVM_RUN, handle the exit that reached userspace (port I/O and MMIO on this vCPU's buses, HLT,
// kicks), turn a fatal exit into the VM's end, and stop once the control block says the VM is
// stopping. It touches no worker_threads API and no addon: KVM_RUN, the kvm_run page, the buses and
// the callbacks are given to it, so unit tests drive it with synthetic exits (the vCPU worker,
// src/vcpu-worker/worker.ts, wires the real ones).
//
// Hot path: an exit costs no allocation. kvm_run fields are read through KvmRunView, and every access
// is split into device accesses by the bus itself (AddressBus.readInto/writeFrom, straight from and
// into kvm_run).
import { KvmRunView, KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_MMIO, decodeExit, type VcpuExit } from '../kvm/exits.js';
import { EAGAIN, EINTR } from '../kvm/structs.js';
import { CTRL_PARKED, CTRL_RUN_SEQ, CTRL_RUN_STATE, CTRL_STARTED, RUN_STATE_PAUSED, RUN_STATE_RUNNING, ctrlKickSlot, recordExit, type ExitReason } from '../shared/control.js';
import type { MmioBus, PioBus } from '../devices/bus.js';
import type { Buses } from './buses.js';
import type { FatalExit } from './diagnose.js';
import type { VcpuMessage } from './protocol.js';

/** kvm_run.mmio.data is 8 bytes; KVM never reports a longer (or an empty) MMIO access. */
const MMIO_DATA_MAX = 8;

export interface VcpuRunnerOptions {
  /**
   * KVM_RUN once. Returns 0 when kvm_run holds an exit to handle, -EINTR or -EAGAIN when a kick (or a
   * signal) ended it with nothing to handle; throws on any other failure (the loop ends the VM).
   */
  run: () => number;
  /** The vCPU's kvm_run mapping (KVM_EXIT_IO data included: its offset is relative to this view). */
  runView: DataView;
  buses: Buses;
  /** The VM control block (src/shared/control.ts). */
  control: Int32Array;
  vcpuId: number;
  /** Messages to the main thread ('started' from here; the caller sends 'ended' with run()'s outcome). */
  post: (msg: VcpuMessage) => void;
  /** End the VM from this vCPU (see vmEnder). */
  endVm: (reason: ExitReason, exitCode: number) => void;
  /**
   * How an exit the loop does not handle itself ends the VM (shutdown, internal error, …; the worker
   * uses describeFatalExit), or undefined to keep running.
   */
  fatal: (exit: VcpuExit, runView: DataView) => FatalExit | undefined;
  /**
   * Block while the VM is paused until CTRL_RUN_SEQ moves on from `seq`. Default: Atomics.wait. (A
   * test substitutes the main thread's resume, since nothing else can run while this thread waits.)
   */
  park?: (control: Int32Array, seq: number) => void;
}

/** How a run loop ended. */
export interface VcpuRunOutcome {
  /** KVM_RUN calls that returned an exit (not counting kicks that returned -EINTR/-EAGAIN). */
  exits: number;
  /** One-line description of a fatal exit or a failure, if there was one. */
  detail?: string;
}

function atomicsPark(control: Int32Array, seq: number): void {
  Atomics.wait(control, CTRL_RUN_SEQ, seq);
}

/**
 * endVm for vCPU `vcpuId`: record the VM's end (the first recorder wins) and kick every other vCPU
 * out of KVM_RUN through its handle in the control block.
 */
export function vmEnder(control: Int32Array, vcpuId: number, vcpuCount: number, kick: (handle: number) => void): (reason: ExitReason, exitCode: number) => void {
  return (reason, exitCode) => {
    recordExit(control, reason, exitCode, vcpuId);
    for (let i = 0; i < vcpuCount; i++) {
      if (i === vcpuId) continue;
      const h = Atomics.load(control, ctrlKickSlot(i)) - 1;
      if (h >= 0) kick(h);
    }
  };
}

export class VcpuRunner {
  private readonly kvmRun: KvmRunView;
  private readonly view: DataView;
  /** view.byteLength, read once (the mapping never changes size). */
  private readonly runBytes: number;
  private readonly pio: PioBus;
  private readonly mmio: MmioBus;
  private readonly ctrl: Int32Array;
  private readonly opts: VcpuRunnerOptions;
  private readonly park: (control: Int32Array, seq: number) => void;

  constructor(opts: VcpuRunnerOptions) {
    this.opts = opts;
    this.view = opts.runView;
    this.runBytes = opts.runView.byteLength;
    this.kvmRun = new KvmRunView(opts.runView);
    this.pio = opts.buses.pio;
    this.mmio = opts.buses.mmio;
    this.ctrl = opts.control;
    this.park = opts.park ?? atomicsPark;
  }

  /**
   * Run until the VM is stopping (or this vCPU failed, which ends the VM). Counts itself in
   * CTRL_STARTED first, and posts 'started' the first time it is allowed to run.
   */
  run(): VcpuRunOutcome {
    const { run, post, endVm, vcpuId } = this.opts;
    const kvmRun = this.kvmRun;
    const ctrl = this.ctrl;
    let exits = 0;
    let detail: string | undefined;
    let first = true;
    Atomics.add(ctrl, CTRL_STARTED, 1);
    try {
      // The running case inline (one load per exit); waitRunnable parks or says the VM is stopping.
      while (Atomics.load(ctrl, CTRL_RUN_STATE) === RUN_STATE_RUNNING || this.waitRunnable()) {
        if (first) {
          first = false;
          post({ type: 'started', vcpuId, firstRunEpochMs: performance.timeOrigin + performance.now() });
        }
        const r = run();
        if (r === -EINTR || r === -EAGAIN) continue;
        exits++;
        const reason = kvmRun.exitReason;
        if (reason === KVM_EXIT_IO) this.handleIo();
        else if (reason === KVM_EXIT_MMIO) this.handleMmio();
        else if (reason === KVM_EXIT_INTR || reason === KVM_EXIT_HLT) continue;
        else {
          const fatal = this.opts.fatal(decodeExit(this.view), this.view);
          if (fatal) {
            if (fatal.message) detail = fatal.message;
            endVm(fatal.reason, fatal.exitCode);
          }
        }
      }
    } catch (e) {
      detail = `vCPU ${vcpuId}: ${(e as Error).message}`;
      endVm('error', 1);
    }
    return detail === undefined ? { exits } : { exits, detail };
  }

  /** Park while paused (counted in CTRL_PARKED); true to run, false when the VM is stopping. */
  private waitRunnable(): boolean {
    const ctrl = this.ctrl;
    for (;;) {
      const seq = Atomics.load(ctrl, CTRL_RUN_SEQ);
      const state = Atomics.load(ctrl, CTRL_RUN_STATE);
      if (state === RUN_STATE_RUNNING) return true;
      if (state !== RUN_STATE_PAUSED) return false;
      Atomics.add(ctrl, CTRL_PARKED, 1);
      Atomics.notify(ctrl, CTRL_PARKED);
      this.park(ctrl, seq);
      Atomics.sub(ctrl, CTRL_PARKED, 1);
      Atomics.notify(ctrl, CTRL_PARKED);
    }
  }

  /**
   * KVM_EXIT_IO: `count` items (rep ins/outs) of `size` bytes at the data offset, one bus access each.
   * kvm_run is trusted no further than its mapping: a size other than 1/2/4, a count of 0, or data
   * that does not lie wholly inside the mapping is refused before any access (the error ends the VM
   * with this one line as its detail), so nothing outside the run buffer is ever read or written.
   */
  private handleIo(): void {
    const k = this.kvmRun;
    const pio = this.pio;
    const view = this.view;
    const size = k.ioSize;
    const port = k.ioPort;
    const count = k.ioCount;
    let off = k.ioDataOffset;
    const runBytes = this.runBytes;
    if ((size !== 1 && size !== 2 && size !== 4) || count === 0 || off > runBytes || count * size > runBytes - off) {
      throw new Error(`refused KVM_EXIT_IO on port 0x${port.toString(16)}: size ${size}, count ${count}, data offset ${off} (kvm_run mapping is ${runBytes} bytes)`);
    }
    if (k.ioIsOut) for (let i = 0; i < count; i++, off += size) pio.writeFrom(port, size, view, off);
    else for (let i = 0; i < count; i++, off += size) pio.readInto(port, size, view, off);
  }

  /**
   * KVM_EXIT_MMIO: one access of mmio.len bytes (the bus splits 8 and odd lengths) through
   * kvm_run.mmio.data. A length of 0 or above 8 (the size of mmio.data) is refused like a bad
   * KVM_EXIT_IO.
   */
  private handleMmio(): void {
    const k = this.kvmRun;
    const len = k.mmioLen;
    if (len === 0 || len > MMIO_DATA_MAX) {
      throw new Error(`refused KVM_EXIT_MMIO at 0x${k.mmioAddr.toString(16)}: length ${len} (mmio.data holds ${MMIO_DATA_MAX} bytes)`);
    }
    if (k.mmioIsWrite) this.mmio.writeFrom(k.mmioAddr, len, this.view, k.mmioDataOffset);
    else this.mmio.readInto(k.mmioAddr, len, this.view, k.mmioDataOffset);
  }
}
