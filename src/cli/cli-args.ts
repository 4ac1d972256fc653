// The kindling command line, parsed: argv → one Command or one UsageError line. Pure (no file
// system, no VM), so the fuzz suite can feed it any argv; src/cli/cli.ts acts on the result.
import { parseArgs } from 'node:util';
import { cliConfigMessage } from './flag-names.js';
import { parseVhostUserArgs, type VhostUserParse } from './vhost-user.js';
import { JailUsageError, parseJailArgs, type JailCommand } from '../jail/jail.js';
import { ConfigError, DEFAULT_CMDLINE, DEFAULT_MEM_MIB, oneLine, quoted, shown, type DiskConfig, type NetConfig, type VMConfig } from '../main/config.js';
import type { RateLimiterConfig, TokenBucketConfig } from '../devices/rate-limiter.js';
import { POLL_MAX_US_LIMIT } from '../devices/virtio/busy-poll.js';

/** --agent-timeout's default, in seconds. */
export const DEFAULT_AGENT_TIMEOUT_S = 30;
/** The longest --agent-timeout (what a Node timer can wait), in seconds. */
export const MAX_AGENT_TIMEOUT_S = 2147483;

export const USAGE = `usage:
  kindling run [--vcpus N] [--mem MiB] [--kernel PATH] [--initrd PATH] [--cmdline STR] [--disk PATH[,ro][,bw=…][,ops=…]]...
               [--console serial|virtio] [--no-rng|--rng bw=…,ops=…] [--vsock CID[,uds=PATH]] [--net tap=NAME|passt[,mac=MAC]]...
               [--log-level LEVEL] [--seccomp MODE] [--boot-timer] [--force]
               [--agent] [--agent-timeout SECONDS] [--console-log FILE] [-- CMD ARGS...]
  kindling guest            build the default guest (Debian cloud kernel + busybox initramfs) into the cache
  kindling jail --id ID --uid UID --gid GID [options] -- run|vhost-user ARGS...
                            run kindling confined (see kindling jail --help, docs/security.md)
  kindling --help | --version

run:
  --vcpus N        number of vCPUs (default 1)
  --mem MiB        guest RAM in MiB (default ${DEFAULT_MEM_MIB})
  --kernel PATH    bzImage, PVH ELF or 64-bit ELF kernel (default: the default guest, built on first use)
  --initrd PATH    initrd / initramfs
  --cmdline STR    kernel command line (default: "${DEFAULT_CMDLINE}")
  --disk PATH[,ro][,bw=SIZE/MS[+BURST]][,ops=SIZE/MS[+BURST]]
                   raw disk image as a virtio-blk device (repeatable; the first is /dev/vda). Its size
                   must be a non-zero multiple of 512. Locked with QEMU's OFD locks while the VM runs:
                   exclusive for read-write, shared for ,ro (read-only; refused while a writer has it).
                   bw= (bytes read and written) and ops= (requests): Firecracker's token buckets,
                   SIZE tokens refilled every MS ms, BURST extra once
  --console K      where the terminal is attached: serial (default; COM1) or virtio (a virtio-console,
                   hvc0 in Linux; COM1 output is still shown, for early boot)
  --no-rng         no virtio-rng device (by default the guest gets one, fed from the host CSPRNG)
  --rng bw=SIZE/MS[+BURST][,ops=SIZE/MS[+BURST]]
                   the virtio-rng device with Firecracker's rate limiter: bw= random bytes, ops= requests
                   (SIZE tokens refilled every MS milliseconds, BURST extra once)
  --vsock CID[,uds=PATH]
                   a virtio-vsock device with guest CID (3..4294967294); with uds=PATH, Firecracker's
                   hybrid vsock: clients of the Unix socket PATH (which must not exist) send
                   "CONNECT <port>\n", guest connections to host port P go to PATH_P
  --net tap=NAME[,mac=MAC][,poll-us=N][,rx-bw=|tx-bw=|rx-ops=|tx-ops=SIZE/MS[+BURST]]...
                   a virtio-net NIC on the tap NAME (repeatable; eth0 first), created and brought up
                   when it does not exist and kindling may (root or CAP_NET_ADMIN); checksum and TSO
                   offloads pass through to the host stack
  --net passt[,mac=MAC][,poll-us=N][,rx-bw=…]
                   a virtio-net NIC through passt (apt-get install passt): user-mode networking without
                   root or a tap, DHCP, DNS and NAT to the host's network. MAC default: a stable
                   locally administered address (02:4b:4e:…). rx-bw/tx-bw (bytes) and rx-ops/tx-ops
                   (frames): Firecracker's token buckets, SIZE tokens refilled every MS ms, BURST once.
                   poll-us=N: after delivering frames or sending a burst the device busy-polls the
                   transmit ring for up to N µs (adaptive; default 50, 0..1000, 0: never), so the
                   guest's answer needs no notification exit
  --log-level L    VMM log level on stderr: fatal, error, warn (default), info, debug, trace, silent
  --seccomp MODE   syscall filter on every thread, each vCPU and I/O worker with its own allowlist
                   and the whole process once the VM is built (docs/security.md): strict
                   (default; a syscall outside the thread's allowlist kills the process with SIGSYS
                   and the kernel log names the thread and the syscall), log (allowed, logged), off
  --boot-timer     Firecracker's boot timer: when the guest writes the byte 123 to 0xd0000000 (as
                   Firecracker's guests do from init), print "kindling: Guest-boot-time = N us M ms,
                   C CPU us D CPU ms" (since the VM started) on stderr. The virtio devices then
                   start at 0xd0001000, and there is room for one fewer
  --force          boot the default guest even on a KVM-PVM host, where it cannot finish booting
                   (earlyprintk=serial is added to its command line so its progress shows)
  -- CMD ARGS      default guest: run CMD in the guest and exit with its status (no CMD: a shell);
                   other kernels: appended to the command line after "--" (arguments for init)
  --agent          run CMD through the guest's exec agent (vsock port 10789) also with --kernel (the
                   guest must start kindling-agent); the default guest always does when it has one.
                   Through the agent, CMD's stdout and stderr are kindling's, kindling's stdin is
                   CMD's (EOF included), the exit status is CMD's (128+N if killed by signal N), and
                   the console (kernel log) is kept off stdout. Adds --vsock 3 if no --vsock is given.
  --agent-timeout SECONDS
                   how long to wait for the guest's agent to answer (default ${DEFAULT_AGENT_TIMEOUT_S} s);
                   then one line and exit 1
  --console-log FILE
                   with a command run through the agent: write the console (kernel log, COM1 and
                   virtio-console) to FILE (created or truncated); without it the console goes to
                   stderr at --log-level info/debug/trace and is discarded otherwise

console: the terminal is attached to the guest's serial port (COM1), or with --console virtio to its
virtio-console (output of both is shown). Ctrl-A x quits, Ctrl-A p
pauses/resumes, Ctrl-A h shows this help, Ctrl-A Ctrl-A sends Ctrl-A.
exit status: the guest's (debug-exit port 0xf4 or the default guest's command), 0 after poweroff,
reboot or Ctrl-A x, 1 on a guest crash or VMM error, 2 when what was given is unusable (a flag, a
file, an image, a locked disk), 128+N after signal N (SIGTERM, SIGHUP, SIGINT stop the VM cleanly;
a second signal exits at once).
cache: the default guest lives in $KINDLING_HOME/guest (default ~/.cache/kindling/guest).`;

/** A mistake in the command line itself (exit status 2). Its message is always one line. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export type Command =
  | { kind: 'help' }
  /** No arguments at all: the usage goes to stderr and the exit status is 2 (a usage error). */
  | { kind: 'usage' }
  | { kind: 'version' }
  | { kind: 'guest' }
  | VhostUserParse
  | JailCommand
  | { kind: 'jail-help' }
  | {
      kind: 'run';
      /** The VM config; `kernel` is '' when the default guest is to be used. */
      config: VMConfig;
      /** No --kernel: boot the default guest (built on first use) and run `guestArgs` in it. */
      defaultGuest: boolean;
      /** The words after `--`. */
      guestArgs: string[];
      /** --force: boot the default guest even where it cannot finish booting (KVM-PVM). */
      force: boolean;
      /** --agent: run `guestArgs` through the guest's exec agent even with --kernel. */
      agent?: true;
      /** --agent-timeout, in ms. */
      agentTimeoutMs?: number;
      /** --console-log FILE. */
      consoleLog?: string;
    };

function parseIntArg(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[0-9]+$/.test(v)) throw new UsageError(`--${name} needs a whole number (got ${quoted(v)})`);
  return Number(v);
}

/** --agent-timeout SECONDS (decimal, > 0, up to MAX_AGENT_TIMEOUT_S) → ms. */
export function parseAgentTimeout(v: string): number {
  const m = /^([0-9]{1,7})(\.[0-9]{1,3})?$/.exec(v);
  const s = m ? Number(v) : NaN;
  if (!m || !(s > 0) || s > MAX_AGENT_TIMEOUT_S) {
    throw new UsageError(`--agent-timeout needs a number of seconds above 0 and at most ${MAX_AGENT_TIMEOUT_S} (got ${quoted(v)})`);
  }
  return Math.max(1, Math.round(s * 1000));
}

/** `CID[,uds=PATH]` (everything after `uds=` is the path, commas included). */
export function parseVsockArg(v: string): { cid: number; udsPath?: string } {
  const m = /^([0-9]+)(?:,uds=([^]*))?$/.exec(v);
  if (!m) throw new UsageError(`--vsock needs CID[,uds=PATH] (got ${quoted(v)})`);
  if (m[2] === '') throw new UsageError(`--vsock uds= needs a socket path (got ${quoted(v)})`);
  return m[2] === undefined ? { cid: Number(m[1]) } : { cid: Number(m[1]), udsPath: m[2] };
}

/** `tap=NAME[,mac=MAC]` or `passt[,mac=MAC]` (--net, and vhost-user's --device net=); names and MACs are checked by resolveConfig / prepare. */
export function parseNetArg(v: string, flag: string): NetConfig {
  const parts = v.split(',');
  const head = parts[0];
  let mac: string | undefined;
  const tuning: { rxRate?: RateLimiterConfig; txRate?: RateLimiterConfig; pollUs?: number } = {};
  for (const opt of parts.slice(1)) {
    const p = /^poll-us=([^]*)$/.exec(opt);
    if (p && tuning.pollUs === undefined) {
      if (!/^[0-9]{1,4}$/.test(p[1]) || Number(p[1]) > POLL_MAX_US_LIMIT) throw new UsageError(`${flag} poll-us= must be a number of µs from 0 to ${POLL_MAX_US_LIMIT} (got ${quoted(opt)})`);
      tuning.pollUs = Number(p[1]);
      continue;
    }
    const r = /^(rx|tx)-(bw|ops)=([^]*)$/.exec(opt);
    const bucket = r ? parseBucket(r[3], `${flag} ${r[1]}-${r[2]}=`) : undefined;
    if (r && bucket) {
      const key = r[1] === 'rx' ? 'rxRate' : 'txRate';
      tuning[key] = { ...tuning[key], [r[2] === 'bw' ? 'bandwidth' : 'ops']: bucket };
    } else if (opt.startsWith('mac=') && mac === undefined) mac = opt.slice(4);
    else throw new UsageError(`${flag} takes ,mac=MAC, ,poll-us=N and ,rx-bw= / tx-bw= / rx-ops= / tx-ops=SIZE/MS[+BURST] after the backend (got ${quoted(v)})`);
  }
  const m = { ...(mac === undefined ? {} : { mac }), ...tuning };
  if (head === 'passt') return { passt: true, ...m };
  if (head.startsWith('tap=') && head.length > 4) return { tap: head.slice(4), ...m };
  throw new UsageError(`${flag} must be tap=NAME[,mac=MAC] or passt[,mac=MAC] (got ${quoted(v)})`);
}

/** `--rng bw=SIZE/MS[+BURST][,ops=SIZE/MS[+BURST]]`: the entropy device's rate limiter (at least one bucket). */
export function parseRngArg(v: string): RateLimiterConfig {
  const rate: RateLimiterConfig = {};
  for (const opt of v.split(',')) {
    const m = /^(bw|ops)=(.*)$/.exec(opt);
    const key = m?.[1] === 'bw' ? 'bandwidth' : 'ops';
    const bucket = m && rate[key] === undefined ? parseBucket(m[2], `--rng ${m[1]}=`) : undefined;
    if (!bucket) throw new UsageError(`--rng takes bw=SIZE/MS[+BURST] and/or ops=SIZE/MS[+BURST], each once (got ${quoted(v)})`);
    rate[key] = bucket;
  }
  return rate;
}

/** `SIZE/MS[+BURST]` (a token bucket of a --disk or --net option), or undefined when `v` is not one. */
function parseBucket(v: string, what: string): TokenBucketConfig | undefined {
  const r = /^([0-9]{1,15})\/([0-9]{1,9})(?:\+([0-9]{1,15}))?$/.exec(v);
  if (!r) return undefined;
  const bucket = { size: Number(r[1]), refillTimeMs: Number(r[2]), ...(r[3] !== undefined ? { oneTimeBurst: Number(r[3]) } : {}) };
  if (bucket.size < 1 || bucket.refillTimeMs < 1) throw new UsageError(`${what} needs SIZE ≥ 1 and MS ≥ 1 (got ${quoted(v)})`);
  return bucket;
}

/**
 * `PATH[,ro|,rw][,bw=SIZE/MS[+BURST]][,ops=SIZE/MS[+BURST]]` (also `blk=` of vhost-user's --device):
 * options are taken off the end, in any order, each at most once; any other comma is part of the path.
 * bw= limits the bytes read and written, ops= the requests (Firecracker's token buckets).
 */
export function parseDiskArg(v: string, flag = '--disk'): { path: string; readOnly: boolean; rate?: RateLimiterConfig } {
  let rest = v;
  let readOnly: boolean | undefined;
  const rate: RateLimiterConfig = {};
  for (;;) {
    const m = /,(ro|rw|(bw|ops)=([^,]*))$/.exec(rest);
    if (!m) break;
    const [, opt, name, value] = m;
    if (name === undefined) {
      if (readOnly !== undefined) break; // `img,rw,ro`: the path is `img,rw`
      readOnly = opt === 'ro';
    } else {
      const key = name === 'bw' ? 'bandwidth' : 'ops';
      if (rate[key] !== undefined) break;
      const bucket = parseBucket(value, `${flag} ${name}=`);
      if (!bucket) throw new UsageError(`${flag} ${name}= needs SIZE/MS[+BURST] (got ${quoted(opt)})`);
      rate[key] = bucket;
    }
    rest = rest.slice(0, m.index);
  }
  if (rest === '') throw new UsageError(`${flag} needs an image path (got ${quoted(v)})`);
  return { path: rest, readOnly: readOnly === true, ...(rate.bandwidth || rate.ops ? { rate } : {}) };
}

export function parseCommandLine(argv: readonly string[]): Command {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) return { kind: 'usage' };
  if (cmd === '--help' || cmd === '-h' || cmd === 'help') return { kind: 'help' };
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') return { kind: 'version' };
  if (cmd === 'guest') {
    if (rest.length) throw new UsageError(`unexpected argument for guest: ${shown(rest[0])}`);
    return { kind: 'guest' };
  }
  if (cmd === 'run') return parseRun(rest);
  if (cmd === 'vhost-user') return parseVhostUserArgs(rest);
  if (cmd === 'jail') {
    try {
      return parseJailArgs(rest);
    } catch (e) {
      if (e instanceof JailUsageError) throw new UsageError(e.message);
      throw e;
    }
  }
  throw new UsageError(`unknown command ${quoted(cmd)}`);
}

function parseRun(args: string[]): Command {
  const dd = args.indexOf('--');
  const own = dd >= 0 ? args.slice(0, dd) : args;
  const guestArgs = dd >= 0 ? args.slice(dd + 1) : [];
  // node:util would call `--mem -5` an ambiguous option; it is a number that is not allowed.
  for (let i = 0; i + 1 < own.length; i++) {
    if ((own[i] === '--mem' || own[i] === '--vcpus') && /^-[0-9.]/.test(own[i + 1])) parseIntArg(own[i].slice(2), own[i + 1]);
  }
  let values;
  try {
    ({ values } = parseArgs({
      args: own,
      strict: true,
      allowPositionals: false,
      options: {
        vcpus: { type: 'string' },
        mem: { type: 'string' },
        kernel: { type: 'string' },
        initrd: { type: 'string' },
        cmdline: { type: 'string' },
        disk: { type: 'string', multiple: true },
        'log-level': { type: 'string' },
        'no-rng': { type: 'boolean' },
        rng: { type: 'string' },
        console: { type: 'string' },
        vsock: { type: 'string' },
        net: { type: 'string', multiple: true },
        force: { type: 'boolean' },
        seccomp: { type: 'string' },
        'boot-timer': { type: 'boolean' },
        agent: { type: 'boolean' },
        'agent-timeout': { type: 'string' },
        'console-log': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    // node:util's messages quote the offending word as typed, control characters and all;
    // errorLine escapes them when the message is printed.
    throw new UsageError((e as Error).message);
  }
  if (values.help) return { kind: 'help' };
  if (values.kernel === undefined && values.initrd !== undefined) {
    throw new UsageError('--initrd needs --kernel (the default guest brings its own initramfs)');
  }
  const config: VMConfig = {
    kernel: values.kernel ?? '',
    initrd: values.initrd,
    cmdline: values.cmdline,
    vcpus: parseIntArg('vcpus', values.vcpus),
    memMiB: parseIntArg('mem', values.mem),
    logLevel: values['log-level'],
    disks: (values.disk ?? []).map((v) => parseDiskArg(v)),
  };
  if (values['no-rng'] && values.rng !== undefined) throw new UsageError('--no-rng and --rng contradict each other');
  if (values['no-rng']) config.rng = false;
  if (values.rng !== undefined) config.rng = { rate: parseRngArg(values.rng) };
  if (values.console !== undefined) {
    if (values.console !== 'serial' && values.console !== 'virtio') throw new UsageError(`--console must be serial or virtio (got ${quoted(values.console)})`);
    config.console = values.console;
  }
  if (values.vsock !== undefined) config.vsock = parseVsockArg(values.vsock);
  if (values.net !== undefined) config.net = values.net.map((v) => parseNetArg(v, '--net'));
  if (values.seccomp !== undefined) config.seccomp = values.seccomp as VMConfig['seccomp']; // checked by resolveConfig (exit 2)
  if (values['boot-timer']) config.bootTimer = true;
  const agent = values.agent === true;
  for (const f of ['agent', 'agent-timeout', 'console-log'] as const) {
    if (values[f] !== undefined && guestArgs.length === 0) throw new UsageError(`--${f} is for a command run through the guest agent: give it after --`);
  }
  const agentTimeoutMs = values['agent-timeout'] === undefined ? undefined : parseAgentTimeout(values['agent-timeout']);
  const consoleLog = values['console-log'];
  if (consoleLog === '') throw new UsageError('--console-log needs a file path');
  // Through the agent the words are the agent's command, not init's arguments.
  if (values.kernel !== undefined && guestArgs.length && !agent) config.cmdlineExtra = ['--', ...guestArgs];
  return {
    kind: 'run',
    config,
    defaultGuest: values.kernel === undefined,
    guestArgs,
    force: values.force === true,
    ...(agent ? { agent: true as const } : {}),
    ...(agentTimeoutMs !== undefined ? { agentTimeoutMs } : {}),
    ...(consoleLog !== undefined ? { consoleLog } : {}),
  };
}

/**
 * The default guest on a KVM-PVM host (src/kvm/system.ts detectPvm): its stock Debian kernel runs its
 * ring-0 code through KVM's instruction emulator and does not finish booting (it fails after ~110 s).
 * Refused at once with what to pass instead, unless --force, which boots it with earlyprintk=serial
 * so that its (slow) progress is visible. `helloKernel` is the path of the small test kernel to advise.
 */
export function defaultGuestOnPvm(o: { pvm: boolean; force: boolean; helloKernel: string }): { refuse?: ConfigError; cmdlineWords: string[] } {
  if (!o.pvm) return { cmdlineWords: [] };
  if (o.force) return { cmdlineWords: ['earlyprintk=serial'] };
  return {
    refuse: new ConfigError(
      `the default guest (a stock Debian kernel) cannot boot here: /dev/kvm is KVM-PVM (no hardware virtualization); ` +
        `pass a kernel built for it, e.g. --kernel ${oneLine(o.helloKernel)}, or --force to try anyway`,
      'kernel',
    ),
    cmdlineWords: [],
  };
}

/**
 * Is `e` an instance of the class named `name`, by instanceof or by the names of its constructors
 * (the same class loaded twice — dist/ and the bundle — is two classes to instanceof)?
 */
function isA(e: unknown, cls: abstract new (...args: never[]) => unknown, name: string): boolean {
  if (e instanceof cls) return true;
  for (let p: unknown = e === null || typeof e !== 'object' ? null : Object.getPrototypeOf(e); p; p = Object.getPrototypeOf(p)) {
    if ((p as { constructor?: { name?: unknown } }).constructor?.name === name) return true;
  }
  return false;
}

/** The one line (and exit status) the CLI prints for an error thrown while handling a command. */
export function errorLine(e: unknown): { line: string; code: number } {
  if (isA(e, UsageError, 'UsageError')) return { line: `kindling: ${oneLine((e as Error).message)} (see kindling --help)`, code: 2 };
  // ConfigError and its subclasses (kernel format, locked disk, …): what the user gave is unusable.
  if (isA(e, ConfigError, 'ConfigError')) return { line: `kindling: ${oneLine(cliConfigMessage(e as ConfigError))}`, code: 2 };
  // Anything else (a KVM error, a guest-image download failure…): its first line is the summary.
  const message = e instanceof Error ? e.message : String(e);
  return { line: `kindling: ${oneLine(message.split('\n')[0])}`, code: 1 };
}
