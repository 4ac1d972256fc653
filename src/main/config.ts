// VM configuration: what the API accepts, its defaults, and validation that turns every bad input
// into one clear line (ConfigError) before anything is created.
//
// Messages are in library terms (VMConfig names: `memMiB must be …`); each ConfigError's `option`
// is the VMConfig key path it is about, and src/cli/flag-names.ts turns it into the CLI's wording.
//
// The kernel and initrd are opened once, non-blocking, checked on that fd (regular file, size
// against guest RAM and 2 GiB) and read from it here (src/main/user-files.ts), so resolveConfig()
// refuses a FIFO, /dev/zero, a directory or a too-large file at once. The kernel image is then
// checked as loadKernel() will load it (checkKernelLoad: its format, that it fits RAM, the command
// line with the device words against the kernel's own limit, where the initrd goes) before the
// initrd is read. The bytes read are handed to the VM (takeConfigFiles) so nothing is reopened.
import { closeSync, constants as fsConstants, lstatSync, openSync, readSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { totalmem } from 'node:os';
import { CMDLINE_MAX_SIZE, MiB } from '../arch/x86_64/layout.js';
import { ramRegions } from '../arch/x86_64/memory-map.js';
import { checkKernelLoad, CmdlineError, KernelFormatError, KernelLoadError, type KernelKind } from '../loader/index.js';
import { ConfigError } from './config-error.js';
import { maxVirtioDevices, virtioMmioCmdlineWord } from './resources.js';
import { checkUserFileSize, closeUserFile, fileKind, MAX_USER_FILE_BYTES, openUserFile, readUserFile, sizeText, type UserFile } from './user-files.js';

import { SECCOMP_MODES, type SeccompMode } from '../seccomp/roles.js';
import { parseMac, validTapName } from '../devices/virtio/net/names.js';
import { POLL_MAX_US_LIMIT } from '../devices/virtio/busy-poll.js';
import { validTokenBucket, type RateLimiterConfig } from '../devices/rate-limiter.js';

export { ConfigError } from './config-error.js';

export interface VMConfig {
  /** Path to the guest kernel (bzImage, PVH ELF or 64-bit ELF vmlinux). */
  kernel: string;
  /** Path to an initrd/initramfs. */
  initrd?: string;
  /** Kernel command line; replaces DEFAULT_CMDLINE when given (like QEMU's -append). */
  cmdline?: string;
  /** Extra words appended after the command line (e.g. the default guest's kindling.cmd=). */
  cmdlineExtra?: string[];
  /** Number of vCPUs (default 1). */
  vcpus?: number;
  /** Guest RAM in MiB (default 256). */
  memMiB?: number;
  /** pino log level for VMM logs on stderr (default 'warn'). */
  logLevel?: string;
  /**
   * Raw disk images, each a virtio-blk device (the first is /dev/vda). The size must be a multiple
   * of 512 bytes. A writable image is locked (flock LOCK_EX) while the VM runs, so a second VM cannot
   * attach it; a read-only image takes no lock (any number of VMs may share it read-only, and a
   * writer elsewhere is not prevented). kindling never changes an image except by guest writes.
   */
  disks?: DiskConfig[];
  /**
   * A virtio-rng device (entropy from the host CSPRNG) for the guest's /dev/hwrng and early CRNG
   * seeding. Default true (`--no-rng` / `rng: false` to omit it); `{ rate }` has one with
   * Firecracker's entropy rate limiter (`bandwidth` counts the random bytes given, `ops` the
   * requests; `--rng bw=…,ops=…`, API `PUT /entropy` rate_limiter).
   */
  rng?: boolean | { rate?: RateLimiterConfig };
  /**
   * Where the guest console is: 'serial' (default; COM1 is vm.serial) or 'virtio' (a virtio-console
   * device, hvc0 in Linux, is vm.console; COM1 stays for early boot output).
   */
  console?: ConsoleKind;
  /**
   * A virtio-vsock device (AF_VSOCK in the guest) with guest CID `cid` (3..4294967294, unique per VM
   * in a process). With `udsPath`, Firecracker's hybrid vsock: kindling listens on that Unix socket
   * (which must not exist yet) for `CONNECT <port>\n`, and guest connections to host port P go to
   * `<udsPath>_P`. vm.vsock connects and listens in-process without socket files.
   */
  vsock?: VsockConfig;
  /**
   * virtio-net NICs, in order (eth0 first in Linux): `{ tap: NAME }` attaches the tap NAME (created
   * and brought up when it does not exist and kindling may: root or CAP_NET_ADMIN; checksum and TSO
   * offloads pass through), `{ passt: true }` starts Debian's passt for rootless user-mode networking
   * (DHCP, DNS, NAT). `mac` is the guest's address (default: a stable locally administered one).
   */
  net?: NetConfig[];
  /**
   * The syscall filter on kindling's own threads (src/seccomp/roles.ts, docs/security.md): every vCPU
   * worker and every I/O worker gets its role's allowlist before it runs guest-driven code. 'strict'
   * (default): anything else kills the process (SIGSYS; the kernel's audit record names the thread and
   * the syscall); 'log': allowed but logged by the kernel, for building allowlists; 'off': no filter.
   * The threads of the application that created the VM are never filtered.
   */
  seccomp?: SeccompMode;
  /**
   * Which threads `seccomp` filters. 'kindling' (default, for a library inside someone else's process):
   * only kindling's vCPU and I/O workers. 'all' (what the CLI's `run` and `serve` use, for a process
   * kindling owns): also every other thread of the process, the main thread included, with one filter
   * installed by start() once the VM is built (role vmm in src/seccomp/roles.ts, TSYNC); threads started
   * later inherit it. After that the process can open existing files (vm.swapDisk) but not create or
   * truncate any (EACCES), and cannot start programs or create sockets other than AF_UNIX ones; only
   * one VM can be started in such a process.
   */
  seccompThreads?: SeccompThreads;
  /**
   * Firecracker's boot timer (`--boot-timer`): a pseudo-device in the first MMIO window (0xd000_0000,
   * where Firecracker's guests write it) that, when the guest writes the byte 123 at its offset 0, logs
   * `Guest-boot-time = … us … ms, … CPU us … CPU ms` (wall and process CPU time since start() began, at
   * info level) and emits 'boot-time'. The virtio devices then start one window later (their GSIs do
   * not move), and a VM has room for one virtio device fewer. Default false.
   */
  bootTimer?: boolean;
}

export type NetConfig = ({ tap: string; passt?: undefined } | { passt: true; tap?: undefined }) & {
  mac?: string;
  /** Firecracker's rate limiters (bytes and operations token buckets) for frames to / from the guest. */
  rxRate?: RateLimiterConfig;
  txRate?: RateLimiterConfig;
  /**
   * The longest window in µs (integer 0..1000, default 50) for which the device busy-polls the
   * transmit ring after it delivered frames or sent a burst, so the guest's answer needs no kick
   * (adaptive, as QEMU's poll-max-ns: src/devices/virtio/busy-poll.ts). 0: never poll.
   */
  pollUs?: number;
};

export interface VsockConfig {
  cid: number;
  udsPath?: string;
}

export type ConsoleKind = 'serial' | 'virtio';

export interface DiskConfig {
  path: string;
  /** Attach read-only (VIRTIO_BLK_F_RO; writes answer IOERR). */
  readOnly?: boolean;
  /**
   * Firecracker's rate limiter for the disk: `bandwidth` (bytes read and written) and `ops`
   * (requests) token buckets of `size` tokens refilled every `refillTimeMs` ms, `oneTimeBurst` extra
   * once. A throttled queue is resumed by a timer. vm.setDiskRateLimiter changes it at run time.
   */
  rate?: RateLimiterConfig;
}

export interface ResolvedConfig {
  kernel: string;
  initrd?: string;
  cmdline: string;
  vcpus: number;
  memBytes: number;
  logLevel: string;
  disks: Array<{ path: string; readOnly: boolean; rate?: RateLimiterConfig }>;
  rng: boolean;
  /** The entropy device's rate limiter (rng: { rate }). */
  rngRate?: RateLimiterConfig;
  console: ConsoleKind;
  vsock?: { cid: number; udsPath?: string };
  net: NetConfig[];
  seccomp: SeccompMode;
  seccompThreads: SeccompThreads;
  bootTimer: boolean;
}

export type SeccompThreads = 'kindling' | 'all';

export const DEFAULT_VCPUS = 1;
export const DEFAULT_MEM_MIB = 256;
export const MIN_MEM_MIB = 16;
/**
 * kindling's upper bound for vCPUs: xAPIC ids are 8 bits, 0xff is broadcast, and the IOAPIC takes the
 * id after the last vCPU. The host's KVM_CAP_MAX_VCPUS may allow fewer; start() refuses more than that.
 */
export const MAX_VCPUS = 254;
export const DEFAULT_CMDLINE = 'console=ttyS0 reboot=k panic=-1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

const UNPRINTABLE = /[\p{Cc}\u2028\u2029]/u;
const EVERY_UNPRINTABLE = new RegExp(UNPRINTABLE.source, 'gu');
const ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\0': '\\0' };

/** `text` with every control character and Unicode line separator written as an escape (`\n`, `\u001b`). */
export function oneLine(text: string): string {
  return text.replace(EVERY_UNPRINTABLE, (c) => ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** `text` in double quotes, escaped as by oneLine (quotes and backslashes too). */
export function quoted(text: string): string {
  return `"${oneLine(text.replace(/["\\]/g, '\\$&'))}"`;
}

/**
 * A user-supplied value as it appears in an error message: on one line whatever it contains.
 * Strings with control characters (newline, ESC, NUL…) or Unicode line separators are shown
 * double-quoted with escapes; anything that is not a string, number, boolean or null/undefined is
 * named by its type.
 */
export function shown(value: unknown): string {
  if (typeof value === 'string') return UNPRINTABLE.test(value) ? quoted(value) : value;
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value);
  if (typeof value === 'bigint') return `${value}n`;
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

/** Byte offset of the first `--` word of a kernel command line (outside double quotes), or -1. */
export function dashDashAt(cmdline: string): number {
  let quoted = false;
  let start = -1;
  for (let i = 0; i <= cmdline.length; i++) {
    const c = i < cmdline.length ? cmdline[i] : ' ';
    if (c === '"') quoted = !quoted;
    const space = !quoted && /\s/.test(c);
    if (start < 0 && !space) start = i;
    else if (start >= 0 && space) {
      if (cmdline.slice(start, i) === '--') return start;
      start = -1;
    }
  }
  return -1;
}

/**
 * The kernel command line with `words` inserted after the user's words and before the first `--`
 * outside double quotes (the words after it are init's arguments): the device announcements, and the
 * extra words of VMConfig.cmdlineExtra that precede its own `--`.
 */
export function withDeviceWords(cmdline: string, words: readonly string[]): string {
  const dd = dashDashAt(cmdline);
  if (dd < 0) return [cmdline, ...words].filter((w) => w.length > 0).join(' ');
  return [cmdline.slice(0, dd).trimEnd(), ...words, cmdline.slice(dd)].filter((w) => w.length > 0).join(' ');
}

function checkDisk(d: unknown, i: number): { path: string; readOnly: boolean; rate?: RateLimiterConfig } {
  const option = `disks[${i}]`;
  if (typeof d !== 'object' || d === null) throw ConfigError.about(option, 'must be { path, readOnly?, rate? }');
  const { path, readOnly, rate, ...rest } = d as { path?: unknown; readOnly?: unknown; rate?: unknown };
  if (Object.keys(rest).length) throw ConfigError.about(option, `has unknown field ${shown(Object.keys(rest)[0])} (path, readOnly, rate)`);
  const limit = rate === undefined ? undefined : checkRateLimiter(rate, `${option}.rate`);
  if (typeof path !== 'string' || path === '') throw ConfigError.about(`${option}.path`, 'is missing or empty: no image path given');
  if (readOnly !== undefined && typeof readOnly !== 'boolean') {
    throw ConfigError.about(`${option}.readOnly`, `must be true or false (got ${shown(readOnly)}) for ${shown(path)}`);
  }
  const ro = readOnly === true;
  const p = shown(path);
  const at = `${option}.path`;
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new ConfigError(`disk image not found: ${p}`, at);
    if (code === 'EACCES') throw new ConfigError(`disk image is not readable: ${p} (permission denied)`, at);
    throw new ConfigError(`disk image cannot be read: ${p} (${code ?? shown((e as Error).message)})`, at);
  }
  // Early checks only (stat does not block on a FIFO): the device opens the image itself, checks
  // that fd again and locks it (src/devices/virtio/block/image.ts).
  if (!st.isFile() && !st.isBlockDevice()) throw new ConfigError(`disk image is ${fileKind(st)}, not a regular file or block device: ${p}`, at);
  try {
    closeSync(openSync(path, (ro ? fsConstants.O_RDONLY : fsConstants.O_RDWR) | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY));
  } catch (e) {
    const code = (e as { code?: string }).code;
    const why = code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EROFS' ? 'read-only file system' : code ?? shown((e as Error).message);
    if (ro) throw new ConfigError(`disk image is not readable: ${p} (${why})`, at);
    throw new ConfigError(`disk image is not writable: ${p} (${why}; append ,ro to attach it read-only)`, at);
  }
  // A block device's size is checked when it is opened (stat reports 0 for it).
  // An empty file is refused (a zero-sector disk is of no use to a guest, and /proc files such
  // as /proc/self/mem are "regular" files of size 0).
  if (st.isFile() && st.size === 0) throw new ConfigError(`disk image is empty (0 bytes): ${p}`, at);
  if (st.isFile() && st.size % 512 !== 0) {
    throw new ConfigError(`disk image size ${st.size} bytes is not a multiple of 512: ${p}`, at);
  }
  return { path, readOnly: ro, ...(limit ? { rate: limit } : {}) };
}

/** Largest guest CID (0xffffffff is VMADDR_CID_ANY); 0..2 are reserved (hypervisor, local, host). */
const VSOCK_MAX_CID = 0xfffffffe;
/** sun_path holds 108 bytes with its NUL. */
const UDS_PATH_MAX = 107;

/**
 * config.vsock: the CID's range, and that udsPath can become kindling's socket without touching
 * anything the user has there (it must not exist; its directory must). That the CID is unique among
 * this process's VMs and that the path can be bound is checked when the device is placed.
 */
function checkVsock(v: unknown): ResolvedConfig['vsock'] {
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null) throw ConfigError.about('vsock', 'must be { cid, udsPath? }');
  const { cid, udsPath } = v as { cid?: unknown; udsPath?: unknown };
  if (typeof cid !== 'number' || !Number.isInteger(cid) || cid < 3 || cid > VSOCK_MAX_CID) {
    throw ConfigError.about('vsock.cid', `must be a whole number in 3..${VSOCK_MAX_CID} (got ${shown(cid)})`);
  }
  if (udsPath === undefined) return { cid };
  if (typeof udsPath !== 'string' || udsPath === '' || udsPath.includes('\0')) throw ConfigError.about('vsock.udsPath', `must be a path (got ${shown(udsPath)})`);
  if (Buffer.byteLength(udsPath) > UDS_PATH_MAX) throw ConfigError.about('vsock.udsPath', `${shown(udsPath)} is longer than a Unix socket path may be (${UDS_PATH_MAX} bytes)`);
  let exists = true;
  try {
    lstatSync(udsPath);
  } catch {
    exists = false;
  }
  if (exists) throw ConfigError.about('vsock.udsPath', `${shown(udsPath)} already exists (remove it first, as with Firecracker)`);
  const dir = dirname(udsPath);
  let isDir = false;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) throw ConfigError.about('vsock.udsPath', `${shown(udsPath)} is in a directory that does not exist`);
  return { cid, udsPath };
}

/** A { bandwidth?, ops? } rate limiter of the config at `option` (a copy with only the known fields). */
export function checkRateLimiter(v: unknown, option: string): RateLimiterConfig {
  if (typeof v !== 'object' || v === null) throw ConfigError.about(option, 'must be { bandwidth?, ops? } token buckets');
  const { bandwidth, ops, ...more } = v as Record<string, unknown>;
  if (Object.keys(more).length) throw ConfigError.about(option, `has unknown field ${shown(Object.keys(more)[0])} (bandwidth, ops)`);
  const out: RateLimiterConfig = {};
  for (const [bk, b] of [['bandwidth', bandwidth], ['ops', ops]] as const) {
    if (b === undefined) continue;
    const why = typeof b === 'object' && b !== null ? validTokenBucket(b as RateLimiterConfig['ops'] & object) : 'must be { size, refillTimeMs, oneTimeBurst? }';
    if (why) throw ConfigError.about(`${option}.${bk}`, why);
    const t = b as { size: number; refillTimeMs: number; oneTimeBurst?: number };
    out[bk] = { size: t.size, refillTimeMs: t.refillTimeMs, ...(t.oneTimeBurst !== undefined ? { oneTimeBurst: t.oneTimeBurst } : {}) };
  }
  return out;
}

/** config.net: each NIC exactly one backend, a valid tap name, a unicast MAC; taps unique. */
function checkNet(v: unknown): NetConfig[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw ConfigError.about('net', 'must be an array of { tap, mac? } or { passt: true, mac? }');
  const taps = new Set<string>();
  return v.map((n: unknown, i): NetConfig => {
    const o = `net[${i}]`;
    if (typeof n !== 'object' || n === null) throw ConfigError.about(o, 'must be { tap, mac? } or { passt: true, mac? }');
    const { tap, passt, mac, rxRate, txRate, pollUs, ...rest } = n as Record<string, unknown>;
    const extra = Object.keys(rest);
    if (extra.length) throw ConfigError.about(o, `has unknown field ${shown(extra[0])} (tap, passt, mac, rxRate, txRate, pollUs)`);
    const tuning: Pick<NetConfig, 'rxRate' | 'txRate' | 'pollUs'> = {};
    if (pollUs !== undefined) {
      if (typeof pollUs !== 'number' || !Number.isInteger(pollUs) || pollUs < 0 || pollUs > POLL_MAX_US_LIMIT) throw ConfigError.about(`${o}.pollUs`, `must be an integer number of µs from 0 to ${POLL_MAX_US_LIMIT} (got ${shown(pollUs)})`);
      tuning.pollUs = pollUs;
    }
    if (rxRate !== undefined) tuning.rxRate = checkRateLimiter(rxRate, `${o}.rxRate`);
    if (txRate !== undefined) tuning.txRate = checkRateLimiter(txRate, `${o}.txRate`);
    if ((tap === undefined) === (passt === undefined)) throw ConfigError.about(o, 'needs exactly one of tap: NAME or passt: true');
    if (mac !== undefined && (typeof mac !== 'string' || !parseMac(mac))) throw ConfigError.about(`${o}.mac`, `must be a unicast MAC address like 02:00:00:00:00:01 (got ${shown(mac)})`);
    const m = mac === undefined ? {} : { mac: mac as string };
    if (passt !== undefined) {
      if (passt !== true) throw ConfigError.about(`${o}.passt`, `must be true (got ${shown(passt)})`);
      return { passt: true, ...m, ...tuning };
    }
    if (typeof tap !== 'string' || !validTapName(tap)) throw ConfigError.about(`${o}.tap`, `must be an interface name of 1 to 15 letters, digits or _.:+- (got ${shown(tap)})`);
    if (taps.has(tap)) throw ConfigError.about(`${o}.tap`, `${shown(tap)} is already used by another NIC of this VM`);
    taps.add(tap);
    return { tap, ...m, ...tuning };
  });
}

/** One virtio device a config places: its registry kind, its name (I/O worker, logs, stats) and options. */
export type VirtioDevicePlan =
  | { kind: 'blk'; name: string; options: { path: string; readOnly: boolean; rate?: RateLimiterConfig } }
  | { kind: 'console'; name: string; options: Record<string, never> }
  | { kind: 'rng'; name: string; options: { rate?: RateLimiterConfig } }
  | { kind: 'vsock'; name: string; options: { cid: number; udsPath?: string } }
  | { kind: 'net'; name: string; options: NetConfig & { option: string } };

/**
 * The virtio devices a config places, in placement order: disks first (the first is /dev/vda), then
 * NICs, then virtio-console, then virtio-rng, then virtio-vsock. The one source of that order and of the device names: the VM
 * places devices and names their I/O workers from it, and the CLI prespawns the I/O workers from it
 * before the config is resolved (so it also takes an unresolved config).
 */
export function virtioDevicePlan(config: Pick<VMConfig, 'disks' | 'rng' | 'console' | 'vsock' | 'net'> & { rngRate?: RateLimiterConfig }): VirtioDevicePlan[] {
  const disks = Array.isArray(config.disks) ? config.disks : [];
  const plan: VirtioDevicePlan[] = disks.map((d, i) => ({ kind: 'blk', name: `virtio-blk${i}`, options: { path: d.path, readOnly: d.readOnly === true, ...(d.rate ? { rate: d.rate } : {}) } }));
  const nets = Array.isArray(config.net) ? config.net : [];
  nets.forEach((n, i) => plan.push({ kind: 'net', name: `virtio-net${i}`, options: { ...n, option: `net[${i}]` } }));
  if (config.console === 'virtio') plan.push({ kind: 'console', name: 'virtio-console', options: {} });
  if (config.rng !== false) {
    const rate = typeof config.rng === 'object' && config.rng !== null ? config.rng.rate : config.rngRate;
    plan.push({ kind: 'rng', name: 'virtio-rng', options: rate ? { rate } : {} });
  }
  if (config.vsock) plan.push({ kind: 'vsock', name: 'virtio-vsock', options: { cid: config.vsock.cid, udsPath: config.vsock.udsPath } });
  return plan;
}

/** What resolveConfig() read and checked, for the VM to load without opening the files again. */
export interface ConfigFiles {
  kernel: Buffer;
  kernelKind: KernelKind;
  initrd?: Buffer;
}

const resolvedFiles = new WeakMap<ResolvedConfig, ConfigFiles>();

/**
 * The kernel and initrd bytes resolveConfig() read for `config` (checked regular files, read from
 * the descriptor that was checked). Hands them over once: a second call, or a config that did not
 * come from resolveConfig(), throws.
 */
export function takeConfigFiles(config: ResolvedConfig): ConfigFiles {
  const files = resolvedFiles.get(config);
  if (!files) throw new Error('internal: the kernel of this config was already loaded, or the config did not come from resolveConfig()');
  resolvedFiles.delete(config);
  return files;
}

/** The loader's error `e` again, naming the file it is about (its class and option are kept). */
function naming(e: KernelFormatError | KernelLoadError | CmdlineError, kernel: string, initrd: string | undefined): Error {
  if (e instanceof CmdlineError) {
    return /too long/.test(e.message) ? new CmdlineError(`${e.message} (for kernel ${shown(kernel)})`, e.option) : e;
  }
  const file = e.option === 'initrd' && initrd !== undefined ? `initrd ${shown(initrd)}` : `kernel ${shown(kernel)}`;
  const named = e instanceof KernelFormatError ? new KernelFormatError(`${file}: ${e.message}`, e.option) : new KernelLoadError(`${file}: ${e.message}`, e.option);
  named.cause = e;
  return named;
}

export function resolveConfig(config: VMConfig, limits: { maxVcpus?: number; hostMemBytes?: number } = {}): ResolvedConfig {
  if (typeof config !== 'object' || config === null) throw new ConfigError('VM config must be an object');
  const vcpus = config.vcpus ?? DEFAULT_VCPUS;
  const maxVcpus = limits.maxVcpus ?? MAX_VCPUS;
  if (!Number.isInteger(vcpus) || vcpus < 1) throw ConfigError.about('vcpus', `must be a whole number ≥ 1 (got ${shown(config.vcpus)})`);
  if (vcpus > maxVcpus) throw ConfigError.about('vcpus', `${vcpus} is more than kindling supports (${maxVcpus})`);

  const memMiB = config.memMiB ?? DEFAULT_MEM_MIB;
  if (!Number.isInteger(memMiB) || memMiB < MIN_MEM_MIB) {
    throw ConfigError.about('memMiB', `must be a whole number of MiB ≥ ${MIN_MEM_MIB} (got ${shown(config.memMiB)})`);
  }
  const hostMem = limits.hostMemBytes ?? totalmem();
  if (memMiB * MiB > hostMem) {
    throw ConfigError.about('memMiB', `${memMiB} is more than this host's RAM (${Math.floor(hostMem / MiB)} MiB)`);
  }
  const memBytes = memMiB * MiB;

  if (typeof config.kernel !== 'string' || config.kernel === '') throw ConfigError.about('kernel', 'is required: the path to a bzImage or ELF kernel');
  if (config.initrd !== undefined && (typeof config.initrd !== 'string' || config.initrd === '')) {
    throw ConfigError.about('initrd', `must be the path to an initrd (got ${shown(config.initrd)})`);
  }

  if (config.disks !== undefined && !Array.isArray(config.disks)) throw ConfigError.about('disks', 'must be an array of { path, readOnly? }');
  const disks = (config.disks ?? []).map((d, i) => checkDisk(d, i));
  let rngRate: RateLimiterConfig | undefined;
  if (typeof config.rng === 'object' && config.rng !== null && !Array.isArray(config.rng)) {
    const extra = Object.keys(config.rng).filter((k) => k !== 'rate');
    if (extra.length) throw ConfigError.about('rng', `takes only { rate } (got ${shown(extra[0])})`);
    if (config.rng.rate !== undefined) rngRate = checkRateLimiter(config.rng.rate, 'rng.rate');
  } else if (config.rng !== undefined && typeof config.rng !== 'boolean') throw ConfigError.about('rng', `must be true, false or { rate } (got ${shown(config.rng)})`);
  const rng = config.rng !== false;
  const consoleKind = config.console ?? 'serial';
  if (consoleKind !== 'serial' && consoleKind !== 'virtio') throw ConfigError.about('console', `must be serial or virtio (got ${shown(consoleKind)})`);
  const vsock = checkVsock(config.vsock);
  const net = checkNet(config.net);
  const others = (rng ? 1 : 0) + (consoleKind === 'virtio' ? 1 : 0) + (vsock ? 1 : 0) + net.length;
  if (config.bootTimer !== undefined && typeof config.bootTimer !== 'boolean') throw ConfigError.about('bootTimer', `must be true or false (got ${shown(config.bootTimer)})`);
  const bootTimer = config.bootTimer === true;
  const maxDevices = maxVirtioDevices({ bootTimer });
  if (disks.length + others > maxDevices) {
    const other = [rng ? 'virtio-rng' : '', consoleKind === 'virtio' ? 'virtio-console' : '', vsock ? 'virtio-vsock' : '', net.length ? `${net.length} NICs` : ''].filter((x) => x).join(' and ');
    throw new ConfigError(
      others
        ? `at most ${maxDevices} disks and other virtio devices in all (got ${disks.length} disks and ${other}; leaving out virtio-rng frees one)`
        : `at most ${maxDevices} disks (got ${disks.length})${bootTimer ? '; the boot timer takes one MMIO window' : ''}`,
      'disks',
    );
  }

  if (config.cmdline !== undefined && typeof config.cmdline !== 'string') throw ConfigError.about('cmdline', `must be a string (got ${shown(config.cmdline)})`);
  const extraIn: unknown = config.cmdlineExtra ?? [];
  if (!Array.isArray(extraIn) || !extraIn.every((w) => typeof w === 'string')) throw ConfigError.about('cmdlineExtra', 'must be an array of strings');
  // Extra words go after the user's words, or after init's arguments when the user's line has a `--`.
  const user = config.cmdline ?? DEFAULT_CMDLINE;
  const extra = extraIn as string[];
  // No kernel takes more than the loader's command-line slot: refuse a longer line before any work
  // on it (a UTF-16 length over the limit is a UTF-8 length over it). The kernel's own limit
  // (cmdline_size) is checked below, with the device words, once the kernel has been read.
  const chars = user.length + extra.reduce((n, w) => n + w.length + 1, 0);
  if (chars > CMDLINE_MAX_SIZE - 1) {
    const bytes = Buffer.byteLength(user) + extra.reduce((n, w) => n + Buffer.byteLength(w) + 1, 0);
    throw new CmdlineError(`kernel command line is too long: ${bytes} bytes, the limit is ${CMDLINE_MAX_SIZE - 1} for any kernel`);
  }
  const extraDd = extra.indexOf('--');
  const before = extraDd >= 0 ? extra.slice(0, extraDd) : extra;
  const after = extraDd >= 0 ? extra.slice(extraDd) : [];
  // With a `--` already in the user's command line, extra words after it belong to init as well.
  const init = dashDashAt(user) >= 0 ? after.slice(1) : after;
  const cmdline = [withDeviceWords(user, before), ...init].filter((w) => w.length > 0).join(' ');
  if (/[\0\n\r]/.test(cmdline)) throw ConfigError.about('cmdline', 'must not contain NUL or newline characters');

  const logLevel = config.logLevel ?? 'warn';
  if (!LOG_LEVELS.includes(logLevel)) throw ConfigError.about('logLevel', `must be one of ${LOG_LEVELS.join(', ')} (got ${shown(logLevel)})`);

  const seccompThreads = config.seccompThreads ?? 'kindling';
  if (seccompThreads !== 'kindling' && seccompThreads !== 'all') throw ConfigError.about('seccompThreads', `must be kindling or all (got ${shown(seccompThreads)})`);
  const seccomp = config.seccomp ?? 'strict';
  if (!SECCOMP_MODES.includes(seccomp)) throw ConfigError.about('seccomp', `must be one of ${SECCOMP_MODES.join(', ')} (got ${shown(seccomp)})`);

  const resolved: ResolvedConfig = { kernel: config.kernel, initrd: config.initrd, cmdline, vcpus, memBytes, logLevel, disks, rng, ...(rngRate ? { rngRate } : {}), console: consoleKind, ...(vsock ? { vsock } : {}), net, seccomp, seccompThreads, bootTimer };
  resolvedFiles.set(resolved, readKernelFiles(resolved));
  return resolved;
}

/**
 * Open the kernel and initrd (checked regular files), compare their sizes with guest RAM, read the
 * kernel and check it as loadKernel() will load it (with this config's device words on the command
 * line and the initrd's size), and only then read the initrd. Every fd is closed before returning.
 */
/** The file starts with the ELF magic (read from its checked fd; nothing else is read). */
function isElfFile(f: UserFile): boolean {
  const magic = Buffer.alloc(4);
  return readSync(f.fd, magic, 0, 4, 0) === 4 && magic.readUInt32BE(0) === 0x7f454c46;
}

function readKernelFiles(cfg: ResolvedConfig): ConfigFiles {
  const low = ramRegions(cfg.memBytes)[0].size;
  const ram = cfg.memBytes > low ? `the guest's ${sizeText(low)} of RAM below the 32-bit MMIO hole` : `the guest's RAM (${sizeText(cfg.memBytes)})`;
  const opened: UserFile[] = [];
  try {
    const kernelFile = openUserFile(cfg.kernel, 'kernel');
    opened.push(kernelFile);
    const initrdFile = cfg.initrd !== undefined ? openUserFile(cfg.initrd, 'initrd') : undefined;
    if (initrdFile) opened.push(initrdFile);
    if (kernelFile.size === 0) throw new ConfigError(`kernel is empty: ${shown(cfg.kernel)}`, 'kernel');
    // A bzImage is loaded whole, so it must fit in RAM. An ELF's file may be far larger than what it
    // loads (an unstripped vmlinux carries its debug info), so only its segments are checked, by
    // checkKernelLoad, against RAM; the file itself is bounded by MAX_USER_FILE_BYTES.
    if (!isElfFile(kernelFile)) checkUserFileSize(kernelFile, low, ram);
    else checkUserFileSize(kernelFile, MAX_USER_FILE_BYTES, `the ${sizeText(MAX_USER_FILE_BYTES + 1)} kindling reads`);
    if (initrdFile) checkUserFileSize(initrdFile, low, ram);
    const kernel = readUserFile(kernelFile);
    const words = virtioDevicePlan(cfg).map((_, i) => virtioMmioCmdlineWord(i, { bootTimer: cfg.bootTimer }));
    let kernelKind: KernelKind;
    try {
      kernelKind = checkKernelLoad(kernel, { cmdline: withDeviceWords(cfg.cmdline, words), initrdSize: initrdFile?.size ?? 0, memBytes: cfg.memBytes }).kind;
    } catch (e) {
      if (e instanceof KernelFormatError || e instanceof KernelLoadError || e instanceof CmdlineError) throw naming(e, cfg.kernel, cfg.initrd);
      throw e;
    }
    const initrd = initrdFile ? readUserFile(initrdFile) : undefined;
    return { kernel, kernelKind, ...(initrd ? { initrd } : {}) };
  } finally {
    for (const f of opened) closeUserFile(f);
  }
}
