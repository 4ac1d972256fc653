// Turning a fatal vCPU exit into the VM's end reason and one clear line: what happened, on which
// vCPU, at which RIP, and the instruction bytes there.
import type { KvmAddon } from '../kvm/addon.js';
import type { VcpuExit } from '../kvm/exits.js';
import {
  KVM_INTERNAL_ERROR_DELIVERY_EV,
  KVM_INTERNAL_ERROR_EMULATION,
  KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES,
  KVM_INTERNAL_ERROR_SIMUL_EX,
  KVM_SYSTEM_EVENT_CRASH,
  KVM_SYSTEM_EVENT_RESET,
  KVM_SYSTEM_EVENT_SHUTDOWN,
  decodeRegs,
  decodeSregs,
} from '../kvm/structs.js';
import { EFER_LMA } from '../arch/x86_64/regs.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { ExitReason } from '../shared/control.js';

export interface FatalExit {
  reason: ExitReason;
  exitCode: number;
  /** one-line description for the user (absent for orderly ends such as poweroff) */
  message?: string;
}

export interface DiagnoseContext {
  addon: KvmAddon;
  vcpuFd: number;
  vcpuId: number;
  mem: GuestMemory;
}

// kvm_run.internal for KVM_INTERNAL_ERROR_EMULATION carries struct emulation_failure:
// suberror u32 @32, ndata u32 @36, flags u64 @40, insn_size u8 @48, insn_bytes[15] @49.
const EMULATION_FLAG_INSTRUCTION_BYTES = KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES;

function hexBytes(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(' ');
}

/** "RIP 0x… (bytes: 0f 0b …)" read from guest memory through the vCPU's own page tables. */
export function describeRip(ctx: DiagnoseContext, insn?: Uint8Array): string {
  try {
    const regs = decodeRegs(ctx.addon.getRegs(ctx.vcpuFd));
    const sregs = decodeSregs(ctx.addon.getSregs(ctx.vcpuFd));
    const longMode = (sregs.efer & EFER_LMA) !== 0n && sregs.cs.l === 1;
    const linear = longMode ? regs.rip : (sregs.cs.base + regs.rip) & 0xffff_ffffn;
    let bytes = insn;
    if (!bytes || bytes.length === 0) {
      const t = ctx.addon.translate(ctx.vcpuFd, linear);
      if (t.valid && t.physical <= BigInt(Number.MAX_SAFE_INTEGER)) {
        const phys = Number(t.physical);
        const want = Math.min(15, 4096 - (phys % 4096));
        if (ctx.mem.isRam(phys, want)) bytes = ctx.mem.readBytes(phys, want);
      }
    }
    const cs = `cs=0x${sregs.cs.selector.toString(16)}`;
    return `RIP 0x${regs.rip.toString(16)} (${cs}, ${bytes && bytes.length ? 'bytes: ' + hexBytes(bytes) : 'instruction bytes unreadable'})`;
  } catch (e) {
    return `RIP unknown (${(e as Error).message})`;
  }
}

function describeExitKind(exit: VcpuExit): string {
  return exit.kind === 'other' ? `reason ${exit.reason}` : exit.kind;
}

export function describeFatalExit(exit: VcpuExit, ctx: DiagnoseContext, run: DataView): FatalExit | undefined {
  const who = `vCPU ${ctx.vcpuId}`;
  switch (exit.kind) {
    case 'shutdown':
      return { reason: 'triple-fault', exitCode: 1, message: `guest triple fault (KVM_EXIT_SHUTDOWN) on ${who} at ${describeRip(ctx)}` };
    case 'internal-error': {
      let insn: Uint8Array | undefined;
      let what = `suberror ${exit.suberror}`;
      if (exit.suberror === KVM_INTERNAL_ERROR_EMULATION) {
        what = 'emulation failure';
        const ndata = run.getUint32(36, true);
        const flags = ndata >= 1 ? run.getBigUint64(40, true) : 0n;
        if (flags & EMULATION_FLAG_INSTRUCTION_BYTES) {
          const n = Math.min(run.getUint8(48), 15);
          insn = new Uint8Array(run.buffer.slice(run.byteOffset + 49, run.byteOffset + 49 + n));
        }
      } else if (exit.suberror === KVM_INTERNAL_ERROR_SIMUL_EX) what = 'exception while delivering an exception';
      else if (exit.suberror === KVM_INTERNAL_ERROR_DELIVERY_EV) what = 'event delivery failure';
      return { reason: 'error', exitCode: 1, message: `KVM internal error (${what}) on ${who} at ${describeRip(ctx, insn)}` };
    }
    case 'fail-entry':
      return {
        reason: 'error',
        exitCode: 1,
        message: `KVM_EXIT_FAIL_ENTRY on ${who} (hardware entry failure reason 0x${exit.reason.toString(16)}, cpu ${exit.cpu}) at ${describeRip(ctx)}`,
      };
    case 'system-event':
      if (exit.type === KVM_SYSTEM_EVENT_SHUTDOWN) return { reason: 'poweroff', exitCode: 0 };
      if (exit.type === KVM_SYSTEM_EVENT_RESET) return { reason: 'reboot', exitCode: 0 };
      if (exit.type === KVM_SYSTEM_EVENT_CRASH) return { reason: 'error', exitCode: 1, message: `guest reported a crash (KVM_SYSTEM_EVENT_CRASH) on ${who}` };
      return undefined; // wakeup/suspend and future events: keep running
    case 'hlt':
    case 'intr':
    case 'io':
    case 'mmio':
      return undefined;
    default:
      return { reason: 'error', exitCode: 1, message: `unexpected KVM exit (${describeExitKind(exit)}) on ${who} at ${describeRip(ctx)}` };
  }
}
