// The CLI's termination signals. SIGTERM, SIGHUP and SIGINT stop the VM cleanly (VM.stop(): vCPUs
// kicked out of KVM_RUN, I/O workers finish their batch, images closed and so unlocked) and the
// process exits with 128 + the signal's number after one line on stderr (`kindling: stopped by
// SIGTERM`), as a shell reports a process killed by that signal. Before a VM exists (config, the
// default guest being built) there is nothing to stop: the process exits at once, same status and
// line. A second signal while the VM is stopping forces an immediate exit (128 + that signal).
//
// SIGINT: with the terminal in raw mode Ctrl-C is a byte for the guest (the terminal sends no
// signal), so a SIGINT that arrives is always someone asking kindling to stop (kill -INT, Ctrl-C
// while stdin is a pipe or the default guest is still being built).
import { constants } from 'node:os';

export const STOP_SIGNALS = ['SIGTERM', 'SIGHUP', 'SIGINT'] as const;
export type StopSignal = (typeof STOP_SIGNALS)[number];

/** 128 + the signal's number (SIGHUP 129, SIGINT 130, SIGTERM 143). */
export function signalExitCode(sig: StopSignal): number {
  return 128 + constants.signals[sig];
}

export interface SignalStopIo {
  write(line: string): void;
  exit(code: number): void;
}

export class SignalStop {
  /** The first signal received, if any. */
  received?: StopSignal;
  private stopper?: () => Promise<unknown>;
  private readonly io: SignalStopIo;

  constructor(io: SignalStopIo) {
    this.io = io;
  }

  /** The exit status for the first signal (undefined if none came). */
  get exitCode(): number | undefined {
    return this.received === undefined ? undefined : signalExitCode(this.received);
  }

  /**
   * From now on a signal stops via `stop` (VM.stop); its caller exits with exitCode when the VM has
   * ended. A signal that came before is acted on now.
   */
  setStopper(stop: (() => Promise<unknown>) | undefined): void {
    this.stopper = stop;
    if (stop && this.received !== undefined) void stop();
  }

  handle(sig: StopSignal): void {
    if (this.received !== undefined) {
      // Second signal: do not wait for anything.
      this.io.write(`kindling: ${sig} again: exiting without waiting for the VM to stop`);
      this.io.exit(signalExitCode(sig));
      return;
    }
    this.received = sig;
    this.io.write(`kindling: stopped by ${sig}`);
    if (this.stopper) void this.stopper();
    else this.io.exit(signalExitCode(sig));
  }

  /** Handle STOP_SIGNALS on `proc`; returns the function that removes the handlers. */
  install(proc: Pick<NodeJS.Process, 'on' | 'off'>): () => void {
    const handlers = STOP_SIGNALS.map((s) => [s, () => this.handle(s)] as const);
    for (const [s, h] of handlers) proc.on(s, h);
    return () => {
      for (const [s, h] of handlers) proc.off(s, h);
    };
  }
}
