// seccomp: the filter compiler against its own policy semantics (a cBPF interpreter runs the emitted
// bytes), the tables it is built from against the system headers, and the real kernel: a thread with a
// role's filter (installed by src/seccomp/install.ts through the addon, exactly as the workers do)
// attempts forbidden syscalls in a child process and is refused — killed by SIGSYS in strict mode,
// EACCES for opens — while its allowed work goes on, and /proc shows Seccomp: 2 and NoNewPrivs: 1 on
// the filtered thread only (library mode: the host application's threads are never touched).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AUDIT_ARCH_X86_64,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  X32_SYSCALL_BIT,
  compileFilter,
  decide,
  type ArgCondition,
  type FilterPolicy,
  type SeccompAction,
  type SyscallRule,
} from '../../src/seccomp/bpf.js';
import { DEVICE_SYSCALLS, KVM_GET_CLOCK, KVM_GET_REGS, KVM_GET_SREGS, KVM_IOEVENTFD, KVM_IRQFD, KVM_RUN, KVM_SET_CLOCK, KVM_TRANSLATE, rolePolicy, type ThreadRole } from '../../src/seccomp/roles.js';
import { SYSCALLS_X86_64, type SyscallName } from '../../src/seccomp/syscalls-x86_64.js';
import { loadAddon } from '../../src/kvm/addon.js';
import { runs } from '../fuzz/budget.js';
import { lazyTempDir } from '../fuzz/tmp.js';
import { runFilter } from './bpf-interpreter.js';

const ROOT = join(import.meta.dirname, '..', '..');
const HEADER = '/usr/include/x86_64-linux-gnu/asm/unistd_64.h';

describe('seccomp tables', () => {
  it.skipIf(!existsSync(HEADER))('the syscall table is asm/unistd_64.h', () => {
    const fromHeader = new Map<string, number>();
    for (const m of readFileSync(HEADER, 'utf8').matchAll(/^#define __NR_(\w+) (\d+)$/gm)) fromHeader.set(m[1], Number(m[2]));
    expect(new Map(Object.entries(SYSCALLS_X86_64))).toEqual(fromHeader);
  });

  it('the KVM ioctl numbers are <linux/kvm.h>\'s, with the addon\'s struct sizes', () => {
    const sizes = loadAddon().structSizes;
    expect(KVM_RUN).toBe(0xae80);
    expect(KVM_IRQFD).toBe((0x4000ae76 | (sizes['sizeof.kvm_irqfd'] << 16)) >>> 0);
    expect(KVM_IOEVENTFD).toBe((0x4000ae79 | (sizes['sizeof.kvm_ioeventfd'] << 16)) >>> 0);
    expect(KVM_SET_CLOCK).toBe((0x4000ae7b | (sizes['sizeof.kvm_clock_data'] << 16)) >>> 0);
    expect(KVM_GET_CLOCK).toBe((0x8000ae7c | (sizes['sizeof.kvm_clock_data'] << 16)) >>> 0);
    expect(KVM_GET_REGS).toBe((0x8000ae81 | (sizes['sizeof.kvm_regs'] << 16)) >>> 0);
    expect(KVM_GET_SREGS).toBe((0x8000ae83 | (sizes['sizeof.kvm_sregs'] << 16)) >>> 0);
    expect(KVM_TRANSLATE).toBe((0xc000ae85 | (sizes['sizeof.kvm_translation'] << 16)) >>> 0);
  });
});

// ---- the compiler against the model -----------------------------------------------------------------

const NAMES: SyscallName[] = ['read', 'write', 'ioctl', 'socket', 'clone', 'tgkill', 'openat', 'futex', 'execve', 'mmap'];
const VALUE_POOL = [0, 1, 2, 0x5421, 0xae80, 0x7fffffff, 0x80000000, 0xffffffff, 0x10000];
const u32 = fc.oneof(fc.constantFrom(...VALUE_POOL), fc.integer({ min: 0, max: 0xffffffff }));
const action: fc.Arbitrary<SeccompAction> = fc.oneof(
  fc.constant<SeccompAction>({ kind: 'allow' }),
  fc.constant<SeccompAction>({ kind: 'kill' }),
  fc.constant<SeccompAction>({ kind: 'log' }),
  fc.constant<SeccompAction>({ kind: 'trap' }),
  fc.integer({ min: 1, max: 4095 }).map<SeccompAction>((errno) => ({ kind: 'errno', errno })),
);
const condition: fc.Arbitrary<ArgCondition> = fc.oneof(
  fc.record({ arg: fc.integer({ min: 0, max: 5 }), in: fc.array(u32, { minLength: 1, maxLength: 6 }) }),
  fc.record({ arg: fc.integer({ min: 0, max: 5 }), bitsSet: u32.filter((v) => v !== 0) }),
  fc.record({ arg: fc.integer({ min: 0, max: 5 }), bitsClear: u32.filter((v) => v !== 0) }),
);
const rule: fc.Arbitrary<SyscallRule> = fc.record(
  { syscall: fc.constantFrom(...NAMES), when: fc.array(condition, { maxLength: 3 }), action },
  { requiredKeys: ['syscall'] },
);
const policy: fc.Arbitrary<FilterPolicy> = fc.record({ rules: fc.array(rule, { maxLength: 12 }), otherwise: action });

/** A syscall as the kernel hands it to the filter: mostly one the policy names, with argument values it tests. */
function syscallFor(p: FilterPolicy): fc.Arbitrary<{ arch: number; nr: number; args: bigint[] }> {
  const named = p.rules.map((r) => SYSCALLS_X86_64[r.syscall]);
  const nr = fc.oneof(
    { weight: 4, arbitrary: named.length ? fc.constantFrom(...named) : fc.integer({ min: 0, max: 400 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 400 }).map((n) => (n | X32_SYSCALL_BIT) >>> 0) },
  );
  const usedValues = p.rules.flatMap((r) => (r.when ?? []).flatMap((c) => ('in' in c ? c.in : 'bitsSet' in c ? [c.bitsSet, c.bitsSet | 0x100, 0] : [c.bitsClear, ~c.bitsClear >>> 0, 0, c.bitsClear & -c.bitsClear])));
  const low = usedValues.length ? fc.oneof(fc.constantFrom(...usedValues), u32) : u32;
  const arg = fc.tuple(low, fc.oneof(fc.constant(0), u32)).map(([lo, hi]) => (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0));
  const arch = fc.oneof({ weight: 9, arbitrary: fc.constant(AUDIT_ARCH_X86_64) }, { weight: 1, arbitrary: fc.constantFrom(0x40000003, 0xc00000b7, 0) });
  return fc.record({ arch, nr, args: fc.array(arg, { minLength: 6, maxLength: 6 }) });
}

describe('seccomp filter compiler', () => {
  it('the emitted BPF decides every syscall as the policy says (arch, x32, argument low words, rule order)', () => {
    fc.assert(
      fc.property(
        policy.chain((p) => fc.tuple(fc.constant(p), fc.array(syscallFor(p), { minLength: 1, maxLength: 20 }))),
        ([p, calls]) => {
          const prog = compileFilter(p);
          for (const d of calls) expect(runFilter(prog, d)).toBe(decide(p, d));
        },
      ),
      { numRuns: runs(300) },
    );
  });

  it('every role compiles in both modes, and its filter allows exactly its rules', () => {
    const roles: ThreadRole[] = [
      { kind: 'vcpu' },
      ...Object.keys(DEVICE_SYSCALLS).map((device): ThreadRole => ({ kind: 'io', device })),
      { kind: 'process', devices: Object.keys(DEVICE_SYSCALLS) },
      { kind: 'vmm', devices: Object.keys(DEVICE_SYSCALLS), unlinkDirFd: [7, 8], childPids: [99] },
    ];
    for (const role of roles) {
      for (const mode of ['strict', 'log'] as const) {
        const p = rolePolicy(role, mode, 4242);
        const prog = compileFilter(p);
        fc.assert(
          fc.property(syscallFor(p), (d) => {
            expect(runFilter(prog, d)).toBe(decide(p, d));
          }),
          { numRuns: runs(200) },
        );
      }
    }
    const vcpu = compileFilter(rolePolicy({ kind: 'vcpu' }, 'strict', 4242));
    const call = (name: SyscallName, ...args: number[]): number => runFilter(vcpu, { arch: AUDIT_ARCH_X86_64, nr: SYSCALLS_X86_64[name], args: [...args, 0, 0, 0, 0, 0, 0].slice(0, 6).map(BigInt) });
    expect(call('ioctl', 9, KVM_RUN)).toBe(SECCOMP_RET_ALLOW);
    expect(call('ioctl', 9, 0x5401)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(call('execve')).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(call('socket', 1, 1)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(call('tgkill', 4242, 7, 34)).toBe(SECCOMP_RET_ALLOW);
    expect(call('tgkill', 1, 1, 9)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(() => rolePolicy({ kind: 'io', device: 'no-such-device' }, 'strict', 1)).toThrow(/no syscall allowlist for device kind "no-such-device"/);
  });

  it('vmm (every thread of run/serve): allows whatever a vCPU or I/O worker of the VM may do, since their filters stack on it', () => {
    const devices = Object.keys(DEVICE_SYSCALLS);
    const vmm = rolePolicy({ kind: 'vmm', devices }, 'strict', 4242);
    const workers: ThreadRole[] = [{ kind: 'vcpu' }, ...devices.map((device): ThreadRole => ({ kind: 'io', device }))];
    for (const w of workers) {
      const p = rolePolicy(w, 'strict', 4242);
      fc.assert(
        fc.property(syscallFor(p), (d) => {
          const own = decide(p, d);
          // What the worker's own filter lets through, the process filter must not kill (the kernel takes the stricter answer).
          if (own !== SECCOMP_RET_KILL_PROCESS) expect(decide(vmm, d), `${w.kind} nr ${d.nr}`).not.toBe(SECCOMP_RET_KILL_PROCESS);
        }),
        { numRuns: runs(500) },
      );
    }
  });

  it('vmm: opens existing files only, signals only this process, removes files only in the given directories', () => {
    const prog = compileFilter(rolePolicy({ kind: 'vmm', devices: ['blk'], unlinkDirFd: [7], childPids: [99] }, 'strict', 4242));
    const call = (name: SyscallName, ...args: number[]): number => runFilter(prog, { arch: AUDIT_ARCH_X86_64, nr: SYSCALLS_X86_64[name], args: [...args, 0, 0, 0, 0, 0, 0].slice(0, 6).map(BigInt) });
    const EACCES = (SECCOMP_RET_ERRNO | 13) >>> 0;
    expect(call('openat', -100, 0, 0o2000002 /* O_RDWR|O_CLOEXEC */)).toBe(SECCOMP_RET_ALLOW);
    expect(call('openat', -100, 0, 0o101 /* O_WRONLY|O_CREAT */)).toBe(EACCES);
    expect(call('openat', -100, 0, 0o1001 /* O_WRONLY|O_TRUNC */)).toBe(EACCES);
    expect(call('openat', -100, 0, 0o20200002 /* O_TMPFILE|O_RDWR */)).toBe(EACCES);
    expect(call('ioctl', 9, KVM_GET_CLOCK)).toBe(SECCOMP_RET_ALLOW);
    expect(call('ioctl', 9, KVM_IRQFD)).toBe(SECCOMP_RET_ALLOW);
    expect(call('ioctl', 9, KVM_RUN)).toBe(SECCOMP_RET_ALLOW);
    expect(call('ioctl', 9, 0xae41 /* KVM_CREATE_VCPU */)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(call('kill', 4242, 15)).toBe(SECCOMP_RET_ALLOW);
    expect(call('kill', 0, 20)).toBe(SECCOMP_RET_ALLOW);
    expect(call('kill', 99, 15)).toBe(SECCOMP_RET_ALLOW);
    expect(call('kill', 1, 9)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(call('unlinkat', 7, 0, 0)).toBe(SECCOMP_RET_ALLOW);
    expect(call('unlinkat', -100, 0, 0)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(call('unlink', 0)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(call('execve')).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(call('socket', 2, 1)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(call('ptrace', 0x4206, 1)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(call('clone', 0x11 /* SIGCHLD: fork */)).toBe(SECCOMP_RET_KILL_PROCESS);
  });

  it('refuses what cBPF cannot express', () => {
    expect(() => compileFilter({ rules: [{ syscall: 'ioctl', when: [{ arg: 6, in: [1] }] }], otherwise: { kind: 'kill' } })).toThrow(/argument index 6/);
    expect(() => compileFilter({ rules: [{ syscall: 'ioctl', when: [{ arg: 1, in: [] }] }], otherwise: { kind: 'kill' } })).toThrow(/empty value set/);
    const many = Array.from({ length: 300 }, (_, i) => i);
    expect(() => compileFilter({ rules: [{ syscall: 'ioctl', when: [{ arg: 1, in: many }] }], otherwise: { kind: 'kill' } })).toThrow(/8-bit forward offset/);
  });
});

// ---- the real kernel ---------------------------------------------------------------------------------

const DIST_INSTALL = join(ROOT, 'dist', 'seccomp', 'install.js');
const ADDON = join(ROOT, 'native', 'build', 'Release', 'kindling.node');
const haveDist = existsSync(DIST_INSTALL);
if (!haveDist) console.warn('SKIP seccomp kernel tests: dist/ is not built (npm test builds it first: `node scripts/build.mjs ts`)');

// A child process: its worker installs the role's filter, reports its tid, waits until the main thread
// has read /proc, then runs one probe and reports the result. Forbidden syscalls in strict mode kill
// the child with SIGSYS before it can report.
const CHILD = `
import { Worker } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
const [role, mode, probe, scratch] = JSON.parse(process.argv[2]);
const addon = createRequire(import.meta.url)(${JSON.stringify(ADDON)});
const status = (tid) => Object.fromEntries(readFileSync('/proc/self/task/' + tid + '/status', 'utf8').split('\\n').filter((l) => /^(Seccomp|NoNewPrivs):/.test(l)).map((l) => l.split(/:\\s+/)));
const w = new Worker(\`
  const { parentPort, workerData } = require('node:worker_threads');
  const fs = require('node:fs');
  const addon = require(workerData.addon);
  (async () => {
    const { installSeccomp } = await import(workerData.install);
    // Like a device's eventfds: made before the filter (eventfd2 is not on any worker's list).
    const efd = addon.eventfd(0, 0);
    installSeccomp(addon, workerData.role, workerData.mode, 'kl-test');
    parentPort.postMessage({ tid: addon.gettid() });
    parentPort.once('message', () => {
      const sys = (nr, a0 = 0, a1 = 0, a2 = 0) => addon.probeSyscall(nr, a0, a1, a2);
      let result;
      switch (workerData.probe) {
        case 'work': { addon.eventfdWrite(efd, 5n); result = String(addon.eventfdRead(efd)); break; }
        case 'execve': result = sys(59); break;
        case 'open-new': try { fs.openSync(workerData.scratch, 'w'); result = 'opened'; } catch (e) { result = e.code; } break;
        case 'socket-inet': result = sys(41, 2, 1, 0); break;
        case 'socket-unix': { const fd = sys(41, 1, 1, 0); result = fd >= 0 ? 'fd' : fd; break; }
        case 'ptrace': result = sys(101, 0x4206 /* PTRACE_SEIZE */, 1, 0); break;
        case 'ioctl-tty': result = sys(16, 0, 0x5401, 0); break;
        case 'ioctl-fionbio': result = sys(16, efd, 0x5421, 0); break;
        case 'fork': result = sys(57); break;
      }
      parentPort.postMessage({ result });
    });
  })();
\`, { eval: true, workerData: { addon: ${JSON.stringify(ADDON)}, install: ${JSON.stringify(pathToFileURL(DIST_INSTALL).href)}, role, mode, probe, scratch } });
w.on('message', (m) => {
  if (m.tid !== undefined) {
    const main = status(addon.gettid());
    console.log(JSON.stringify({ worker: status(m.tid), main, comm: readFileSync('/proc/self/task/' + m.tid + '/comm', 'utf8').trim() }));
    w.postMessage('go');
  } else {
    console.log(JSON.stringify(m));
    process.exit(0);
  }
});
w.on('error', (e) => { console.log(JSON.stringify({ error: String(e) })); process.exit(3); });
`;

interface ChildRun {
  pid: number;
  signal: NodeJS.Signals | null;
  status: number | null;
  lines: Record<string, unknown>[];
  stderr: string;
}

describe.skipIf(!haveDist)('seccomp in the kernel (one child process per probe)', () => {
  const dir = lazyTempDir('kindling-seccomp-');
  const script = (): string => {
    const path = join(dir(), 'child.mjs');
    if (!existsSync(path)) writeFileSync(path, CHILD);
    return path;
  };

  function probe(role: ThreadRole, mode: 'strict' | 'log', what: string): ChildRun {
    const scratch = join(dir(), `new-file-${what}`);
    const r = spawnSync(process.execPath, [script(), JSON.stringify([role, mode, what, scratch])], { encoding: 'utf8', timeout: 30_000 });
    const lines = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    return { pid: r.pid ?? -1, signal: r.signal, status: r.status, lines, stderr: r.stderr };
  }

  const vcpu: ThreadRole = { kind: 'vcpu' };
  const blk: ThreadRole = { kind: 'io', device: 'blk' };
  const vsock: ThreadRole = { kind: 'io', device: 'vsock' };

  // The kernel's audit record (type 1326) says which thread and which syscall; dmesg needs CAP_SYSLOG
  // or kernel.dmesg_restrict=0. Without auditd the records go through printk's rate limit (10 per 5 s),
  // so this runs before the other kills and tries once more after the limit's interval.
  const dmesg = spawnSync('dmesg', [], { encoding: 'utf8' });
  it.skipIf(dmesg.status !== 0)('the kernel log names the killed thread and the syscall', async () => {
    for (let attempt = 0; ; attempt++) {
      const r = probe(vcpu, 'strict', 'execve');
      expect(r.signal).toBe('SIGSYS');
      const log = spawnSync('dmesg', [], { encoding: 'utf8' }).stdout;
      const line = log.split('\n').find((l) => l.includes('type=1326') && l.includes(`pid=${r.pid} `));
      if (line === undefined && attempt === 0) {
        await new Promise((res) => setTimeout(res, 6000));
        continue;
      }
      expect(line).toMatch(/comm="kl-test".* sig=31 arch=c000003e syscall=59 /);
      return;
    }
  }, 30_000);

  it('a filtered worker keeps working; /proc shows Seccomp 2 and NoNewPrivs 1 on it and nothing on the host thread', () => {
    for (const role of [vcpu, blk]) {
      const r = probe(role, 'strict', 'work');
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.lines[0]).toEqual({ worker: { Seccomp: '2', NoNewPrivs: '1' }, main: { Seccomp: '0', NoNewPrivs: '0' }, comm: 'kl-test' });
      expect(r.lines[1]).toEqual({ result: '5' });
    }
  });

  it.each([
    ['vcpu', vcpu, 'execve'],
    ['vcpu', vcpu, 'socket-unix'],
    ['vcpu', vcpu, 'ptrace'],
    ['vcpu', vcpu, 'ioctl-tty'],
    ['vcpu', vcpu, 'ioctl-fionbio'],
    ['vcpu', vcpu, 'fork'],
    ['io:blk', blk, 'execve'],
    ['io:blk', blk, 'socket-inet'],
    ['io:blk', blk, 'ptrace'],
    ['io:blk', blk, 'ioctl-tty'],
    ['io:vsock', vsock, 'socket-inet'],
    ['io:vsock', vsock, 'fork'],
  ])('strict %s: %s kills the process with SIGSYS', (_name, role, what) => {
    const r = probe(role, 'strict', what);
    expect(r.lines).toHaveLength(1); // the /proc line, never a result
    expect(r.signal).toBe('SIGSYS');
  });

  it('strict: opening a new file fails with EACCES from every role and creates nothing', () => {
    for (const role of [vcpu, blk, vsock]) {
      const r = probe(role, 'strict', 'open-new');
      expect(r.lines[1]).toEqual({ result: 'EACCES' });
      expect(existsSync(join(dir(), 'new-file-open-new'))).toBe(false);
    }
  });

  it('what a role needs is allowed: AF_UNIX sockets for vsock, FIONBIO for I/O workers', () => {
    expect(probe(vsock, 'strict', 'socket-unix').lines[1]).toEqual({ result: 'fd' });
    // FIONBIO with a NULL argument: EFAULT, i.e. the kernel ran it.
    expect(probe(blk, 'strict', 'ioctl-fionbio').lines[1]).toEqual({ result: -14 });
  });

  it('log mode lets a forbidden syscall through (for building allowlists)', () => {
    const r = probe(blk, 'log', 'execve');
    expect(r.status).toBe(0);
    expect(r.lines[1]).toEqual({ result: -14 }); // execve(NULL, …): EFAULT, i.e. it ran
  });
});
