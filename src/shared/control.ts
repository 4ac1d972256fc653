// The VM control block: one small SharedArrayBuffer shared by the main thread and every vCPU worker.
// It carries the run state (what the vCPUs should be doing), the first recorded exit (which vCPU
// ended the VM and why), and each vCPU's kick handle so any thread can kick any vCPU.

/** Run-state words (CTRL_RUN_STATE). */
export const RUN_STATE_RUNNING = 0;
export const RUN_STATE_PAUSED = 1;
export const RUN_STATE_STOPPING = 2;

/** Why the VM ended (CTRL_EXIT_REASON); 0 means "not ended yet". */
export const ExitReasonCode = {
  none: 0,
  /** the guest wrote its status to the debug-exit port */
  exit: 1,
  /** ACPI/system-event poweroff */
  poweroff: 2,
  /** i8042 reset, system-event reset */
  reboot: 3,
  /** KVM_EXIT_SHUTDOWN: a triple fault */
  'triple-fault': 4,
  /** KVM_EXIT_INTERNAL_ERROR, FAIL_ENTRY, a failed ioctl, a crash system event */
  error: 5,
  /** stopped from the host (vm.stop(), Ctrl-A x) */
  stopped: 6,
} as const;
export type ExitReason = Exclude<keyof typeof ExitReasonCode, 'none'>;

export function exitReasonName(code: number): ExitReason | undefined {
  for (const [k, v] of Object.entries(ExitReasonCode)) if (v === code && k !== 'none') return k as ExitReason;
  return undefined;
}

// Int32 word indices.
export const CTRL_RUN_STATE = 0;
/** Bumped on every run-state change; vCPUs park with Atomics.wait on it. */
export const CTRL_RUN_SEQ = 1;
export const CTRL_EXIT_REASON = 2;
export const CTRL_EXIT_CODE = 3;
/** vCPU index that recorded the exit. */
export const CTRL_EXIT_VCPU = 4;
/** Number of vCPUs currently parked (paused). */
export const CTRL_PARKED = 5;
/** Number of vCPU workers that have entered their run loop. */
export const CTRL_STARTED = 6;
export const CTRL_HEADER_WORDS = 8;
/** Per-vCPU kick handle (addon handle + 1; 0 = not registered yet). */
export function ctrlKickSlot(vcpu: number): number {
  return CTRL_HEADER_WORDS + vcpu;
}

export function createControlBlock(vcpus: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer((CTRL_HEADER_WORDS + vcpus) * 4));
}

/**
 * Record the VM's end once: the first caller wins (compare-and-swap on the reason word) and the run
 * state moves to STOPPING. Returns true if this call recorded the exit.
 */
export function recordExit(ctrl: Int32Array, reason: ExitReason, exitCode: number, vcpu: number): boolean {
  if (Atomics.compareExchange(ctrl, CTRL_EXIT_REASON, 0, ExitReasonCode[reason]) !== 0) return false;
  Atomics.store(ctrl, CTRL_EXIT_CODE, exitCode | 0);
  Atomics.store(ctrl, CTRL_EXIT_VCPU, vcpu);
  setRunState(ctrl, RUN_STATE_STOPPING);
  return true;
}

export function setRunState(ctrl: Int32Array, state: number): void {
  Atomics.store(ctrl, CTRL_RUN_STATE, state);
  Atomics.add(ctrl, CTRL_RUN_SEQ, 1);
  Atomics.notify(ctrl, CTRL_RUN_SEQ);
}
