// Decoding the exit a vCPU reports in its mmap'ed struct kvm_run.
//
// Hot path (every exit, ~100k/s): KvmRunView's getters read single fields straight from the DataView
// and allocate nothing — no objects, no BigInts (u64 fields that are addresses are returned as exact
// numbers while below 2^53). decodeExit() builds a typed object and is meant for the rare exits.
import {
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_MMIO,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_RUN_DATA_MAX,
  KVM_RUN_OFFSETS as O,
} from './structs.js';

export {
  KVM_EXIT_UNKNOWN,
  KVM_EXIT_EXCEPTION,
  KVM_EXIT_IO,
  KVM_EXIT_HYPERCALL,
  KVM_EXIT_DEBUG,
  KVM_EXIT_HLT,
  KVM_EXIT_MMIO,
  KVM_EXIT_IRQ_WINDOW_OPEN,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_INTR,
  KVM_EXIT_SET_TPR,
  KVM_EXIT_TPR_ACCESS,
  KVM_EXIT_NMI,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_EXIT_X86_RDMSR,
  KVM_EXIT_X86_WRMSR,
  KVM_EXIT_X86_BUS_LOCK,
  KVM_EXIT_NOTIFY,
  KVM_EXIT_MEMORY_FAULT,
  KVM_EXIT_IO_IN,
  KVM_EXIT_IO_OUT,
  KVM_SYSTEM_EVENT_SHUTDOWN,
  KVM_SYSTEM_EVENT_RESET,
  KVM_SYSTEM_EVENT_CRASH,
  KVM_INTERNAL_ERROR_EMULATION,
  KVM_INTERNAL_ERROR_SIMUL_EX,
  KVM_INTERNAL_ERROR_DELIVERY_EV,
  KVM_RUN_OFFSETS,
  kvmExitReasonName,
} from './structs.js';

export type VcpuExit =
  | { kind: 'io'; direction: 'in' | 'out'; port: number; size: 1 | 2 | 4; count: number; dataOffset: number }
  | { kind: 'mmio'; isWrite: boolean; addr: number; len: number }
  | { kind: 'hlt' }
  | { kind: 'shutdown' }
  | { kind: 'fail-entry'; reason: bigint; cpu: number }
  | { kind: 'internal-error'; suberror: number; data: bigint[] }
  | { kind: 'system-event'; type: number; data: bigint[] }
  | { kind: 'intr' }
  | { kind: 'other'; reason: number };

const TWO_32 = 4294967296;

/** u64 at `off` as a number (exact below 2^53; addresses and offsets in kvm_run always are). */
function u64n(v: DataView, off: number): number {
  return v.getUint32(off, true) + v.getUint32(off + 4, true) * TWO_32;
}

function u64Array(v: DataView, off: number, n: number): bigint[] {
  const count = Math.min(n >>> 0, KVM_RUN_DATA_MAX);
  const out = new Array<bigint>(count);
  for (let i = 0; i < count; i++) out[i] = v.getBigUint64(off + 8 * i, true);
  return out;
}

// Shared immutable results for the field-less exits.
const HLT: VcpuExit = Object.freeze({ kind: 'hlt' });
const SHUTDOWN: VcpuExit = Object.freeze({ kind: 'shutdown' });
const INTR: VcpuExit = Object.freeze({ kind: 'intr' });

/** Decode kvm_run's exit into a typed object. `view` must start at the beginning of kvm_run. */
export function decodeExit(view: DataView): VcpuExit {
  const reason = view.getUint32(O.exitReason, true);
  switch (reason) {
    case KVM_EXIT_IO:
      return {
        kind: 'io',
        direction: view.getUint8(O.ioDirection) === KVM_EXIT_IO_OUT ? 'out' : 'in',
        port: view.getUint16(O.ioPort, true),
        size: view.getUint8(O.ioSize) as 1 | 2 | 4,
        count: view.getUint32(O.ioCount, true),
        dataOffset: u64n(view, O.ioDataOffset),
      };
    case KVM_EXIT_MMIO:
      return {
        kind: 'mmio',
        isWrite: view.getUint8(O.mmioIsWrite) !== 0,
        addr: u64n(view, O.mmioPhysAddr),
        len: view.getUint32(O.mmioLen, true),
      };
    case KVM_EXIT_HLT:
      return HLT;
    case KVM_EXIT_SHUTDOWN:
      return SHUTDOWN;
    case KVM_EXIT_INTR:
      return INTR;
    case KVM_EXIT_FAIL_ENTRY:
      return { kind: 'fail-entry', reason: view.getBigUint64(O.failEntryReason, true), cpu: view.getUint32(O.failEntryCpu, true) };
    case KVM_EXIT_INTERNAL_ERROR:
      return {
        kind: 'internal-error',
        suberror: view.getUint32(O.internalSuberror, true),
        data: u64Array(view, O.internalData, view.getUint32(O.internalNdata, true)),
      };
    case KVM_EXIT_SYSTEM_EVENT:
      // (Kernels before 5.18 had no ndata and a single u64 `flags` there; kindling needs a newer KVM.)
      return {
        kind: 'system-event',
        type: view.getUint32(O.systemEventType, true),
        data: u64Array(view, O.systemEventData, view.getUint32(O.systemEventNdata, true)),
      };
    default:
      return { kind: 'other', reason };
  }
}

/**
 * Allocation-free accessors over one vCPU's kvm_run. Read only the getters that match exitReason
 * (the union members overlap). Setters exist for the fields userspace may write.
 */
export class KvmRunView {
  readonly view: DataView;

  constructor(view: DataView) {
    this.view = view;
  }

  get exitReason(): number {
    return this.view.getUint32(O.exitReason, true);
  }

  get immediateExit(): number {
    return this.view.getUint8(O.immediateExit);
  }
  set immediateExit(v: number) {
    this.view.setUint8(O.immediateExit, v & 0xff);
  }

  get requestInterruptWindow(): number {
    return this.view.getUint8(O.requestInterruptWindow);
  }
  set requestInterruptWindow(v: number) {
    this.view.setUint8(O.requestInterruptWindow, v & 0xff);
  }

  get readyForInterruptInjection(): number {
    return this.view.getUint8(O.readyForInterruptInjection);
  }

  get ifFlag(): number {
    return this.view.getUint8(O.ifFlag);
  }

  // ---- KVM_EXIT_IO ----
  /** KVM_EXIT_IO_IN (0) or KVM_EXIT_IO_OUT (1) */
  get ioDirection(): number {
    return this.view.getUint8(O.ioDirection);
  }
  get ioIsOut(): boolean {
    return this.view.getUint8(O.ioDirection) === KVM_EXIT_IO_OUT;
  }
  /** access width in bytes: 1, 2 or 4 */
  get ioSize(): number {
    return this.view.getUint8(O.ioSize);
  }
  get ioPort(): number {
    return this.view.getUint16(O.ioPort, true);
  }
  /** number of `ioSize` items (> 1 for rep ins/outs) */
  get ioCount(): number {
    return this.view.getUint32(O.ioCount, true);
  }
  /** byte offset of the data from the start of kvm_run */
  get ioDataOffset(): number {
    return u64n(this.view, O.ioDataOffset);
  }

  // ---- KVM_EXIT_MMIO ----
  get mmioAddr(): number {
    return u64n(this.view, O.mmioPhysAddr);
  }
  get mmioLen(): number {
    return this.view.getUint32(O.mmioLen, true);
  }
  get mmioIsWrite(): boolean {
    return this.view.getUint8(O.mmioIsWrite) !== 0;
  }
  /** byte offset of mmio.data[8] from the start of kvm_run (the data to write, or where to put the read value) */
  get mmioDataOffset(): number {
    return O.mmioData;
  }

  // ---- KVM_EXIT_EXCEPTION ----
  get exceptionVector(): number {
    return this.view.getUint32(O.exException, true);
  }
  get exceptionErrorCode(): number {
    return this.view.getUint32(O.exErrorCode, true);
  }

  // ---- KVM_EXIT_FAIL_ENTRY / KVM_EXIT_INTERNAL_ERROR / KVM_EXIT_SYSTEM_EVENT ----
  get failEntryReason(): bigint {
    return this.view.getBigUint64(O.failEntryReason, true);
  }
  get failEntryCpu(): number {
    return this.view.getUint32(O.failEntryCpu, true);
  }
  get internalSuberror(): number {
    return this.view.getUint32(O.internalSuberror, true);
  }
  get internalNdata(): number {
    return this.view.getUint32(O.internalNdata, true);
  }
  get systemEventType(): number {
    return this.view.getUint32(O.systemEventType, true);
  }
  get systemEventNdata(): number {
    return this.view.getUint32(O.systemEventNdata, true);
  }
  /** internal.data[i] / system_event.data[i] (both at offset 40) */
  dataU64(i: number): bigint {
    return this.view.getBigUint64(O.internalData + 8 * i, true);
  }

  /** The typed (allocating) decode of the current exit. */
  decode(): VcpuExit {
    return decodeExit(this.view);
  }
}
