// A seccomp filter compiler: a policy (per-syscall rules over argument values, and one action for
// everything else) → a classic-BPF program as the kernel runs it (Documentation/userspace-api/
// seccomp_filter.rst; the instruction set is Documentation/networking/filter.rst's cBPF). The addon
// only loads the bytes (native/seccomp.cc); every policy decision is here and in the role modules.
//
// The program sees struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
// (offsets 0, 4, 8, 16 + 8·i) and runs as:
//
//     ld  arch             ; anything but AUDIT_ARCH_X86_64 (i386 via int 0x80) is killed
//     jeq AUDIT_ARCH_X86_64 ? +1 : kill
//     ld  nr
//     jge X32_SYSCALL_BIT ? kill            ; x32 numbers (bit 30) would alias x86_64 ones
//     for each syscall with rules, by number:
//       jeq nr ? body : next syscall
//       body: each rule's conditions in turn; all hold → ret the rule's action; one fails → next rule;
//             no rule matched → ret the policy's default
//     ret default
//
// Conditions compare the LOW 32 BITS of an argument (`ld [16 + 8·i]` on little-endian x86_64): every
// argument filtered here is an int or unsigned int in the kernel (ioctl's cmd, socket's domain,
// tgkill's tgid, clone's flags word), so the kernel ignores the high half too and a filter comparing
// it would only be easier to fool into refusing. Jumps are 8-bit forward offsets in cBPF, so each
// syscall's body is emitted next to its own compare; a body over 255 instructions is refused.
import { SYSCALLS_X86_64, type SyscallName } from './syscalls-x86_64.js';

// <linux/seccomp.h> return values (the high 16 bits are the action; ERRNO carries errno in the low 16).
export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_KILL_THREAD = 0x00000000;
export const SECCOMP_RET_TRAP = 0x00030000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_LOG = 0x7ffc0000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
/** <linux/audit.h>: EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE. */
export const AUDIT_ARCH_X86_64 = 0xc000003e;
/** <asm/unistd.h>: x32 syscalls are the x86_64 numbers with this bit set. */
export const X32_SYSCALL_BIT = 0x40000000;

// cBPF opcodes used (<linux/bpf_common.h>).
export const BPF_LD_W_ABS = 0x20; // BPF_LD | BPF_W | BPF_ABS
export const BPF_JMP_JEQ_K = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
export const BPF_JMP_JGE_K = 0x35; // BPF_JMP | BPF_JGE | BPF_K
export const BPF_JMP_JSET_K = 0x45; // BPF_JMP | BPF_JSET | BPF_K
export const BPF_RET_K = 0x06; // BPF_RET | BPF_K
/** struct seccomp_data offsets. */
export const OFF_NR = 0;
export const OFF_ARCH = 4;
export const argOffset = (i: number): number => 16 + 8 * i;

/** What the kernel does with a syscall. `errno` fails it with that error; `kill` is SECCOMP_RET_KILL_PROCESS. */
export type SeccompAction = { kind: 'allow' } | { kind: 'errno'; errno: number } | { kind: 'kill' } | { kind: 'log' } | { kind: 'trap' };

export const ALLOW: SeccompAction = { kind: 'allow' };
export const KILL: SeccompAction = { kind: 'kill' };

/** A condition on the low 32 bits of argument `arg`: one of `in`, all bits of `bitsSet` set, or all bits of `bitsClear` clear. */
export type ArgCondition = { arg: number; in: readonly number[] } | { arg: number; bitsSet: number } | { arg: number; bitsClear: number };

export interface SyscallRule {
  syscall: SyscallName;
  /** All must hold (none: always). */
  when?: readonly ArgCondition[];
  /** Default: allow. */
  action?: SeccompAction;
}

export interface FilterPolicy {
  /** Rules are tried in order within a syscall; syscalls without a rule get `otherwise`. */
  rules: readonly SyscallRule[];
  otherwise: SeccompAction;
}

export function actionValue(a: SeccompAction): number {
  switch (a.kind) {
    case 'allow':
      return SECCOMP_RET_ALLOW;
    case 'kill':
      return SECCOMP_RET_KILL_PROCESS;
    case 'log':
      return SECCOMP_RET_LOG;
    case 'trap':
      return SECCOMP_RET_TRAP;
    case 'errno':
      if (!Number.isInteger(a.errno) || a.errno < 1 || a.errno > 4095) throw new RangeError(`seccomp: errno ${a.errno} out of range 1..4095`);
      return (SECCOMP_RET_ERRNO | a.errno) >>> 0;
  }
}

interface Insn {
  code: number;
  k: number;
  /** Jump targets as labels (resolved to offsets) or already-relative numbers. */
  jt: string | number;
  jf: string | number;
}

/** A tiny assembler: instructions with label targets, resolved to 8-bit forward offsets. */
class Assembler {
  readonly insns: Insn[] = [];
  private readonly labels = new Map<string, number>();
  private n = 0;
  fresh(): string {
    return `L${this.n++}`;
  }
  label(name: string): void {
    if (this.labels.has(name)) throw new Error(`seccomp: label ${name} defined twice`);
    this.labels.set(name, this.insns.length);
  }
  ld(offset: number): void {
    this.insns.push({ code: BPF_LD_W_ABS, k: offset, jt: 0, jf: 0 });
  }
  jump(code: number, k: number, jt: string | number, jf: string | number): void {
    this.insns.push({ code, k: k >>> 0, jt, jf });
  }
  ret(value: number): void {
    this.insns.push({ code: BPF_RET_K, k: value >>> 0, jt: 0, jf: 0 });
  }
  assemble(): Uint8Array {
    const out = new Uint8Array(this.insns.length * 8);
    const dv = new DataView(out.buffer);
    this.insns.forEach((insn, i) => {
      const rel = (t: string | number): number => {
        if (typeof t === 'number') return t;
        const at = this.labels.get(t);
        if (at === undefined) throw new Error(`seccomp: undefined label ${t}`);
        const off = at - (i + 1);
        if (off < 0 || off > 255) throw new RangeError(`seccomp: jump from ${i} to ${at} does not fit cBPF's 8-bit forward offset`);
        return off;
      };
      dv.setUint16(i * 8, insn.code, true);
      dv.setUint8(i * 8 + 2, rel(insn.jt));
      dv.setUint8(i * 8 + 3, rel(insn.jf));
      dv.setUint32(i * 8 + 4, insn.k, true);
    });
    return out;
  }
}

/** Compile a policy into struct sock_filter bytes (8 per instruction, little-endian) for seccompInstall. */
export function compileFilter(policy: FilterPolicy): Uint8Array {
  const bySyscall = new Map<number, SyscallRule[]>();
  for (const r of policy.rules) {
    const nr = SYSCALLS_X86_64[r.syscall];
    if (nr === undefined) throw new Error(`seccomp: unknown syscall ${String(r.syscall)}`);
    for (const c of r.when ?? []) {
      if (!Number.isInteger(c.arg) || c.arg < 0 || c.arg > 5) throw new RangeError(`seccomp: ${r.syscall}: argument index ${c.arg} out of range 0..5`);
      if ('in' in c && c.in.length === 0) throw new RangeError(`seccomp: ${r.syscall}: empty value set for argument ${c.arg}`);
      if ('bitsSet' in c && (c.bitsSet >>> 0) === 0) throw new RangeError(`seccomp: ${r.syscall}: empty bit mask for argument ${c.arg}`);
      if ('bitsClear' in c && (c.bitsClear >>> 0) === 0) throw new RangeError(`seccomp: ${r.syscall}: empty bit mask for argument ${c.arg}`);
    }
    const list = bySyscall.get(nr) ?? [];
    list.push(r);
    bySyscall.set(nr, list);
  }
  const deflt = actionValue(policy.otherwise);
  const a = new Assembler();
  a.ld(OFF_ARCH);
  a.jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0);
  a.ret(SECCOMP_RET_KILL_PROCESS);
  a.ld(OFF_NR);
  a.jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1);
  a.ret(SECCOMP_RET_KILL_PROCESS);
  for (const nr of [...bySyscall.keys()].sort((x, y) => x - y)) {
    const next = a.fresh();
    const rules = bySyscall.get(nr)!;
    a.jump(BPF_JMP_JEQ_K, nr, 0, next);
    // The accumulator holds nr here; a rule with conditions reloads arguments, so every later compare
    // in this body works on what it loaded itself.
    for (const rule of rules) {
      const fail = a.fresh();
      for (const c of rule.when ?? []) {
        a.ld(argOffset(c.arg));
        if ('in' in c) {
          // Equal to one value: jump to pass; the last compare falls to fail.
          const pass = a.fresh();
          c.in.forEach((v, i) => a.jump(BPF_JMP_JEQ_K, v, pass, i === c.in.length - 1 ? fail : 0));
          a.label(pass);
        } else if ('bitsSet' in c) {
          // JSET is "any of these bits": test each bit alone, every one must be set.
          for (let bit = 1; bit !== 0; bit = (bit << 1) >>> 0) {
            if (((c.bitsSet >>> 0) & bit) !== 0) a.jump(BPF_JMP_JSET_K, bit, 0, fail);
            if (bit === 0x80000000) break;
          }
        } else {
          // Any of the bits set fails.
          a.jump(BPF_JMP_JSET_K, c.bitsClear >>> 0, fail, 0);
        }
      }
      a.ret(actionValue(rule.action ?? ALLOW));
      a.label(fail);
    }
    a.ret(deflt);
    a.label(next);
  }
  a.ret(deflt);
  const bytes = a.assemble();
  if (bytes.length / 8 > 4096) throw new RangeError(`seccomp: ${bytes.length / 8} instructions exceed BPF_MAXINSNS (4096)`);
  return bytes;
}

/** The policy's decision for one syscall, straight from its definition (the model compileFilter is tested against). */
export function decide(policy: FilterPolicy, data: { arch: number; nr: number; args: readonly bigint[] }): number {
  if (data.arch >>> 0 !== AUDIT_ARCH_X86_64) return SECCOMP_RET_KILL_PROCESS;
  if (data.nr >>> 0 >= X32_SYSCALL_BIT) return SECCOMP_RET_KILL_PROCESS;
  const low = (i: number): number => Number(BigInt.asUintN(32, data.args[i] ?? 0n));
  const rules = policy.rules.filter((r) => SYSCALLS_X86_64[r.syscall] === data.nr >>> 0);
  for (const r of rules) {
    const ok = (r.when ?? []).every((c) =>
      'in' in c ? c.in.some((v) => v >>> 0 === low(c.arg)) : 'bitsSet' in c ? ((low(c.arg) & c.bitsSet) >>> 0) === c.bitsSet >>> 0 : ((low(c.arg) & c.bitsClear) >>> 0) === 0,
    );
    if (ok) return actionValue(r.action ?? ALLOW);
  }
  return actionValue(policy.otherwise);
}
