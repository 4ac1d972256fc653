// The syscall allowlists, one per thread role. Everything not listed is refused: killed in strict
// mode (SECCOMP_RET_KILL_PROCESS, logged by the kernel as an audit record of type 1326 naming the
// thread and the syscall), allowed but logged in log mode. Read with src/seccomp/bpf.ts (how a policy
// becomes BPF) and docs/security.md (why each entry is here, what is and is not confined).
//
// Roles:
//   vcpu        a vCPU worker (src/vcpu-worker/worker.ts), from just before its first KVM_RUN: KVM_RUN
//               and the three ioctls the fatal-exit diagnosis reads (GET_REGS, GET_SREGS, TRANSLATE),
//               eventfd writes (irqfds for the legacy devices), tgkill to its own process (kicking
//               another vCPU out of KVM_RUN; abort()), and the Node worker runtime below.
//   io:<kind>   a virtio device's I/O worker (src/io-worker/worker.ts), once its backend exists: the
//               runtime, uv_poll's FIONBIO, plus the device kind's own calls (DEVICE_SYSCALLS).
//   process     every thread of a process kindling owns and that runs device backends on its main
//               thread (`kindling vhost-user`), installed with TSYNC once the socket listens: the
//               runtime, Node's main-thread extras (tty queries for the log stream, thread creation for
//               libuv's pool: clone only with CLONE_THREAD, clone3 answered ENOSYS so glibc falls back
//               to the clone it can filter), accept4/recvmsg/sendmsg for the frontend, and the device
//               kinds' calls.
//   vmm         every thread of a process kindling owns that runs a VM (`kindling run`, `kindling
//               serve`; VMConfig.seccompThreads 'all'), installed with TSYNC by VM.start() once the VM
//               is built and before any worker installs its own role (so the workers carry both
//               filters, and theirs is the stricter): the process role's runtime and main-thread extras,
//               what the main thread still does to a running VM (KVM_GET_CLOCK / KVM_SET_CLOCK for
//               pause and resume, KVM_IRQFD / KVM_IOEVENTFD deassigns at teardown), the terminal's job
//               control (tcsetattr with TCSETSW, TIOCGPGRP / TIOCSPGRP), signals to this process only,
//               opening an existing file without creating or truncating it (vm.swapDisk, the API's
//               PATCH /drives), and everything its vCPU and I/O workers are allowed (their filters
//               stack on this one, so they still cannot open anything).
//
// The Node worker runtime (measured with `strace -f` on a worker that watches an eventfd, receives and
// posts messages, allocates until V8 collects, and exits; see docs/security.md): read/write on its
// eventfds and MessagePort wake-ups, epoll for its libuv loop, futex for Atomics and V8's locks,
// mmap/munmap/mprotect/madvise for V8's heap and code space, close and exit for the thread's end.
// open/openat are answered EACCES rather than killed: glibc's malloc asks once per process for
// /proc/sys/vm/overcommit_memory when an arena first shrinks (from whichever thread) and copes with a
// failed open; a refused open is still a refused open (tests check that no file appears).
//
// No role may execve, fork (clone without CLONE_THREAD), ptrace, mount, open files, create sockets other
// than AF_UNIX ones for vsock's Unix-socket host side, or issue an ioctl outside its list.
import type { ArgCondition, FilterPolicy, SeccompAction, SyscallRule } from './bpf.js';
import { KILL } from './bpf.js';
import type { SyscallName } from './syscalls-x86_64.js';

export type SeccompMode = 'strict' | 'log' | 'off';
export const SECCOMP_MODES: readonly SeccompMode[] = ['strict', 'log', 'off'];

export type ThreadRole =
  | { kind: 'vcpu' }
  | { kind: 'io'; device: string }
  /** unlinkDirFd: the directory fd(s) (opened before the filter) in which unlinkat is allowed, for removing the sockets on exit. */
  | {
      kind: 'process';
      devices: readonly string[];
      unlinkDirFd?: number | readonly number[];
      /** Child processes the device started before the filter (passt): signalled only these, and reaped. */
      childPids?: readonly number[];
    }
  /** The device kinds of the VM; unlinkDirFd and childPids as for 'process' (vsock UDS, API socket; passt). */
  | {
      kind: 'vmm';
      devices: readonly string[];
      unlinkDirFd?: number | readonly number[];
      childPids?: readonly number[];
    };

// errno values (asm-generic/errno-base.h, errno.h).
const EACCES = 13;
const ENOSYS = 38;
// <asm-generic/ioctls.h>
export const TCGETS = 0x5401;
export const TCSETS = 0x5402;
export const TCSETSW = 0x5403;
export const TIOCGPGRP = 0x540f;
export const TIOCSPGRP = 0x5410;
export const TIOCGWINSZ = 0x5413;
export const FIONBIO = 0x5421;
export const FIOCLEX = 0x5451;
// <linux/if_tun.h>: _IOW('T', 208, unsigned int)
export const TUNSETOFFLOAD = 0x400454d0;
// <asm-generic/fcntl.h>: open flags (__O_TMPFILE is the bit O_TMPFILE adds to O_DIRECTORY).
export const O_CREAT = 0o100;
export const O_TRUNC = 0o1000;
export const O_TMPFILE_BIT = 0o20000000;
// <linux/socket.h>, <linux/sched.h>
export const AF_UNIX = 1;
export const CLONE_THREAD = 0x00010000;

// <linux/kvm.h>: _IO(KVMIO, nr) and _IOR/_IOWR with the struct's size (asm-generic/ioctl.h:
// dir << 30 | size << 16 | type << 8 | nr; _IOC_READ = 2, _IOC_WRITE = 1). The sizes are x86_64's
// (the addon's structSizes agree: test/unit/seccomp.test.ts).
const KVMIO = 0xae;
const ioc = (dir: number, nr: number, size: number): number => ((dir << 30) | (size << 16) | (KVMIO << 8) | nr) >>> 0;
export const KVM_RUN = ioc(0, 0x80, 0);
export const KVM_GET_REGS = ioc(2, 0x81, 144); // struct kvm_regs
export const KVM_GET_SREGS = ioc(2, 0x83, 312); // struct kvm_sregs
export const KVM_TRANSLATE = ioc(3, 0x85, 24); // struct kvm_translation
export const KVM_IRQFD = ioc(1, 0x76, 32); // struct kvm_irqfd
export const KVM_IOEVENTFD = ioc(1, 0x79, 64); // struct kvm_ioeventfd
export const KVM_SET_CLOCK = ioc(1, 0x7b, 48); // struct kvm_clock_data
export const KVM_GET_CLOCK = ioc(2, 0x7c, 48);

const allow = (...names: SyscallName[]): SyscallRule[] => names.map((syscall) => ({ syscall }));
const when = (syscall: SyscallName, ...conds: ArgCondition[]): SyscallRule => ({ syscall, when: conds });
const refuse = (syscall: SyscallName, errno: number): SyscallRule => ({ syscall, action: { kind: 'errno', errno } });
const ioctls = (...cmds: number[]): SyscallRule => when('ioctl', { arg: 1, in: cmds });

/** What any Node worker thread needs once it is running (see the header). */
function nodeThreadRuntime(pid: number): SyscallRule[] {
  return [
    ...allow('read', 'write', 'readv', 'writev', 'close', 'lseek', 'fstat', 'newfstatat', 'fcntl', 'dup', 'dup3'),
    ...allow('epoll_wait', 'epoll_pwait', 'epoll_pwait2', 'epoll_ctl'),
    ...allow('futex', 'sched_yield', 'nanosleep', 'clock_nanosleep', 'clock_gettime', 'clock_getres', 'gettimeofday'),
    ...allow('mmap', 'munmap', 'mprotect', 'pkey_mprotect', 'madvise', 'mremap', 'brk'),
    ...allow('getpid', 'gettid', 'getrusage', 'getrandom', 'sched_getaffinity', 'uname'),
    ...allow('rt_sigprocmask', 'rt_sigreturn', 'sigaltstack', 'restart_syscall', 'exit', 'exit_group'),
    // Signals only to this process's own threads (a vCPU kick, abort()'s SIGABRT).
    when('tgkill', { arg: 0, in: [pid] }),
    refuse('open', EACCES),
    refuse('openat', EACCES),
  ];
}

/** Per device kind (src/devices/virtio/registry.ts keys): what its backend calls on its data path. */
export const DEVICE_SYSCALLS: Readonly<Record<string, readonly SyscallRule[]>> = {
  // preadv/pwritev straight into guest RAM, FLUSH, DISCARD/WRITE_ZEROES (fallocate).
  blk: allow('preadv', 'pwritev', 'preadv2', 'pwritev2', 'pread64', 'pwrite64', 'fdatasync', 'fsync', 'fallocate'),
  // The guest's bytes live in shared rings read by the main thread; the worker only signals eventfds.
  console: [],
  // crypto.randomFillSync: OpenSSL's getrandom (in the runtime).
  rng: [],
  // The Unix-socket host side (node:net in the worker): accept on the hybrid-vsock listener, connect to
  // `<uds>_<port>` for guest-initiated connections, socketpairs for the in-process bridge.
  vsock: [
    when('socket', { arg: 0, in: [AF_UNIX] }),
    when('socketpair', { arg: 0, in: [AF_UNIX] }),
    ...allow('connect', 'accept4', 'shutdown', 'getsockopt', 'setsockopt', 'getsockname', 'getpeername', 'sendmsg', 'recvmsg', 'sendto', 'recvfrom'),
    // new net.Socket({ fd }) asks libuv what the fd is (uv_guess_handle: isatty → TCGETS) before
    // making it non-blocking.
    ioctls(FIONBIO, FIOCLEX, TCGETS),
  ],
  // Frames with readv/writev straight on guest RAM (tap or passt's socket); TUNSETOFFLOAD when the
  // driver's receive offloads are known (activation, reset). passt itself is started and stopped by the
  // thread that prepared the device, before any filter.
  net: [...allow('readv', 'writev'), ioctls(TUNSETOFFLOAD)],
};

function deviceRules(kind: string): readonly SyscallRule[] {
  const rules = DEVICE_SYSCALLS[kind];
  if (rules === undefined) throw new Error(`seccomp: no syscall allowlist for device kind "${kind}" (src/seccomp/roles.ts DEVICE_SYSCALLS)`);
  return rules;
}

/** The rules of a role, before the mode picks the default action. */
export function roleRules(role: ThreadRole, pid: number): SyscallRule[] {
  const runtime = nodeThreadRuntime(pid);
  switch (role.kind) {
    case 'vcpu':
      return [...runtime, ioctls(KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS, KVM_TRANSLATE)];
    case 'io':
      return [...runtime, ioctls(FIONBIO, FIOCLEX), ...deviceRules(role.device)];
    case 'process':
      return processRules(runtime, role);
    case 'vmm':
      return [
        // vm.swapDisk (the API's PATCH /drives path_on_host) opens an existing image: open, never create,
        // truncate or make a temporary file. Before the runtime's blanket refusal, which would match first.
        when('openat', { arg: 2, bitsClear: O_CREAT | O_TRUNC | O_TMPFILE_BIT }),
        ...processRules(runtime, role),
        ioctls(KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS, KVM_TRANSLATE, KVM_GET_CLOCK, KVM_SET_CLOCK, KVM_IRQFD, KVM_IOEVENTFD),
        ioctls(TCSETSW, TIOCGPGRP, TIOCSPGRP),
        // Signals to this process only: its own pid (a signal re-raised at exit) and its process group (0).
        when('kill', { arg: 0, in: [pid, 0] }),
        // The workers add their own filters on top of this one (which can only narrow what is allowed).
        ...allow('seccomp'),
        // node:net in the vsock worker takes over the hybrid-vsock listener by fd and calls listen() on it
        // again (before its own filter, but under this one).
        ...allow('listen'),
      ];
  }
}

/** The process role's rules (shared with vmm): Node's main-thread extras, the devices' calls. */
function processRules(runtime: SyscallRule[], role: { devices: readonly string[]; unlinkDirFd?: number | readonly number[]; childPids?: readonly number[] }): SyscallRule[] {
  const devices = role.devices.flatMap((d) => deviceRules(d));
  const dirs = ([] as number[]).concat(role.unlinkDirFd ?? []);
  return [
    ...runtime,
    // Node's stdio: uv_guess_handle/isatty (TCGETS), the window size of a TTY stream, and at exit
    // ResetStdio's tcsetattr (TCSETS) restoring a terminal's modes.
    ioctls(FIONBIO, FIOCLEX, TCGETS, TCSETS, TIOCGWINSZ),
    ...(dirs.length ? [when('unlinkat', { arg: 0, in: dirs })] : []),
    // Threads for libuv's pool or V8's platform, never a new process.
    when('clone', { arg: 0, bitsSet: CLONE_THREAD }),
    refuse('clone3', ENOSYS),
    ...allow('set_robust_list', 'rseq', 'prctl', 'sched_setaffinity', 'rt_sigaction', 'pipe2', 'eventfd2', 'epoll_create1'),
    // The frontend connection: accepted on the listening socket, messages with SCM_RIGHTS fds.
    ...allow('accept4', 'recvmsg', 'sendmsg', 'shutdown', 'getsockopt'),
    // uv_guess_handle on a stdio socket (process.stdout/stderr created lazily): SO_TYPE, the family.
    ...allow('getsockname', 'getpeername'),
    // fs.lstatSync at exit (the hybrid-vsock UDS still there?): Node 20 asks with statx.
    ...allow('statx'),
    // A device's own children (passt): stopped with kill when they outlive their socket, reaped by
    // libuv's SIGCHLD handling (wait4). kill names only their pids.
    ...(role.childPids?.length ? [when('kill', { arg: 0, in: [...role.childPids] }), ...allow('wait4')] : []),
    ...devices,
  ];
}

/** The policy for a role in a mode ('off' has none). */
export function rolePolicy(role: ThreadRole, mode: Exclude<SeccompMode, 'off'>, pid: number): FilterPolicy {
  const otherwise: SeccompAction = mode === 'strict' ? KILL : { kind: 'log' };
  return { rules: roleRules(role, pid), otherwise };
}

/** A role's name for thread names and log lines (`vcpu`, `io:blk`, `process`). */
export function roleName(role: ThreadRole): string {
  return role.kind === 'io' ? `io:${role.device}` : role.kind;
}
