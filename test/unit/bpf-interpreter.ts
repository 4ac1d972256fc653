// A classic-BPF interpreter for the instructions seccomp filters use (Documentation/networking/
// filter.rst; the kernel's checks in seccomp_check_filter / bpf_check_classic): LD|W|ABS on struct
// seccomp_data, JEQ/JGE/JSET with a constant, JA, RET with a constant. The seccomp tests run the bytes
// src/seccomp/bpf.ts emits through it and compare with the policy's own decision. It refuses what
// the kernel would: loads outside seccomp_data or unaligned, jumps past the end, a program that can
// fall off its end, other opcodes.
export interface SeccompData {
  nr: number;
  arch: number;
  ip?: bigint;
  args: readonly bigint[];
}

const SECCOMP_DATA_SIZE = 64;

function dataWord(d: SeccompData, off: number): number {
  if (off < 0 || off + 4 > SECCOMP_DATA_SIZE || off % 4 !== 0) throw new Error(`bpf: load at ${off} outside struct seccomp_data`);
  if (off === 0) return d.nr >>> 0;
  if (off === 4) return d.arch >>> 0;
  const u64 = off < 16 ? (d.ip ?? 0n) : (d.args[(off - 16) >> 3] ?? 0n);
  const half = (off % 8) === 0 ? BigInt.asUintN(32, u64) : BigInt.asUintN(32, u64 >> 32n);
  return Number(half);
}

/** Run a filter (struct sock_filter bytes, little-endian) on one syscall; the RET value. */
export function runFilter(program: Uint8Array, d: SeccompData): number {
  const n = program.length / 8;
  if (!Number.isInteger(n) || n < 1 || n > 4096) throw new Error(`bpf: ${program.length} bytes is not 1..4096 instructions`);
  const dv = new DataView(program.buffer, program.byteOffset, program.byteLength);
  let acc = 0;
  let pc = 0;
  for (let steps = 0; steps <= n; steps++) {
    if (pc >= n) throw new Error('bpf: fell off the end of the program');
    const code = dv.getUint16(pc * 8, true);
    const jt = dv.getUint8(pc * 8 + 2);
    const jf = dv.getUint8(pc * 8 + 3);
    const k = dv.getUint32(pc * 8 + 4, true);
    const jump = (cond: boolean): void => {
      const to = pc + 1 + (cond ? jt : jf);
      if (to >= n) throw new Error(`bpf: jump from ${pc} past the end`);
      pc = to;
    };
    switch (code) {
      case 0x20:
        acc = dataWord(d, k);
        pc++;
        break;
      case 0x15:
        jump(acc === k);
        break;
      case 0x35:
        jump(acc >= k);
        break;
      case 0x45:
        jump(((acc & k) >>> 0) !== 0);
        break;
      case 0x05: {
        const to = pc + 1 + k;
        if (to >= n) throw new Error(`bpf: ja from ${pc} past the end`);
        pc = to;
        break;
      }
      case 0x06:
        return k;
      default:
        throw new Error(`bpf: opcode 0x${code.toString(16)} at ${pc} is not used by seccomp filters here`);
    }
  }
  throw new Error('bpf: program did not terminate');
}
