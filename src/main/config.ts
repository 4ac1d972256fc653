// VM configuration: what the API accepts, its defaults, and validation that turns every bad input
// into one clear line (ConfigError) before anything is created.
import { closeSync, constants as fsConstants, openSync, readSync, statSync } from 'node:fs';
import { totalmem } from 'node:os';
import { MiB } from '../arch/x86_64/layout.js';
import { MAX_VIRTIO_DEVICES } from './resources.js';

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
   * seeding. Default true (`--no-rng` / `rng: false` to omit it).
   */
  rng?: boolean;
  /**
   * Where the guest console is: 'serial' (default; COM1 is vm.serial) or 'virtio' (a virtio-console
   * device, hvc0 in Linux, is vm.console; COM1 stays for early boot output).
   */
  console?: ConsoleKind;
}

export type ConsoleKind = 'serial' | 'virtio';

export interface DiskConfig {
  path: string;
  /** Attach read-only (VIRTIO_BLK_F_RO; writes answer IOERR). */
  readOnly?: boolean;
}

export interface ResolvedConfig {
  kernel: string;
  initrd?: string;
  cmdline: string;
  vcpus: number;
  memBytes: number;
  logLevel: string;
  disks: Array<{ path: string; readOnly: boolean }>;
  rng: boolean;
  console: ConsoleKind;
}

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

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

function checkReadableFile(path: string, what: string): number {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT') throw new ConfigError(`${what} not found: ${shown(path)}`);
    if (code === 'EACCES') throw new ConfigError(`${what} is not readable: ${shown(path)} (permission denied)`);
    throw new ConfigError(`${what} cannot be read: ${shown(path)} (${code ?? shown((e as Error).message)})`);
  }
  if (st.isDirectory()) throw new ConfigError(`${what} is a directory, not a file: ${shown(path)}`);
  try {
    const fd = openSync(path, 'r');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, 0);
    closeSync(fd);
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new ConfigError(`${what} is not readable: ${shown(path)} (${code === 'EACCES' ? 'permission denied' : code ?? shown((e as Error).message)})`);
  }
  return st.size;
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

function checkDisk(d: unknown, i: number): { path: string; readOnly: boolean } {
  if (typeof d !== 'object' || d === null) throw new ConfigError(`--disk ${i + 1}: must be { path, readOnly? }`);
  const { path, readOnly } = d as { path?: unknown; readOnly?: unknown };
  if (typeof path !== 'string' || path === '') throw new ConfigError(`--disk ${i + 1}: no image path given`);
  if (readOnly !== undefined && typeof readOnly !== 'boolean') throw new ConfigError(`--disk ${shown(path)}: readOnly must be true or false`);
  const ro = readOnly === true;
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new ConfigError(`disk image not found: ${shown(path)}`);
    if (code === 'EACCES') throw new ConfigError(`disk image is not readable: ${shown(path)} (permission denied)`);
    throw new ConfigError(`disk image cannot be read: ${shown(path)} (${code ?? shown((e as Error).message)})`);
  }
  if (st.isDirectory()) throw new ConfigError(`disk image is a directory, not a file: ${shown(path)}`);
  if (!st.isFile() && !st.isBlockDevice()) throw new ConfigError(`disk image is neither a regular file nor a block device: ${shown(path)}`);
  try {
    closeSync(openSync(path, ro ? fsConstants.O_RDONLY : fsConstants.O_RDWR));
  } catch (e) {
    const code = (e as { code?: string }).code;
    const why = code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'EROFS' ? 'read-only file system' : code ?? shown((e as Error).message);
    if (ro) throw new ConfigError(`disk image is not readable: ${shown(path)} (${why})`);
    throw new ConfigError(`disk image is not writable: ${shown(path)} (${why}; append ,ro to attach it read-only)`);
  }
  // A block device's size is checked when it is opened (stat reports 0 for it).
  if (st.isFile() && st.size % 512 !== 0) {
    throw new ConfigError(`disk image size ${st.size} bytes is not a multiple of 512: ${shown(path)}`);
  }
  return { path, readOnly: ro };
}

/** One virtio device a config places: its registry kind, its name (I/O worker, logs, stats) and options. */
export type VirtioDevicePlan =
  | { kind: 'blk'; name: string; options: { path: string; readOnly: boolean } }
  | { kind: 'console'; name: string; options: Record<string, never> }
  | { kind: 'rng'; name: string; options: Record<string, never> };

/**
 * The virtio devices a config places, in placement order: disks first (the first is /dev/vda), then
 * virtio-console, then virtio-rng. The one source of that order and of the device names: the VM
 * places devices and names their I/O workers from it, and the CLI prespawns the I/O workers from it
 * before the config is resolved (so it also takes an unresolved config).
 */
export function virtioDevicePlan(config: Pick<VMConfig, 'disks' | 'rng' | 'console'>): VirtioDevicePlan[] {
  const disks = Array.isArray(config.disks) ? config.disks : [];
  const plan: VirtioDevicePlan[] = disks.map((d, i) => ({ kind: 'blk', name: `virtio-blk${i}`, options: { path: d.path, readOnly: d.readOnly === true } }));
  if (config.console === 'virtio') plan.push({ kind: 'console', name: 'virtio-console', options: {} });
  if (config.rng !== false) plan.push({ kind: 'rng', name: 'virtio-rng', options: {} });
  return plan;
}

export function resolveConfig(config: VMConfig, limits: { maxVcpus?: number; hostMemBytes?: number } = {}): ResolvedConfig {
  if (typeof config !== 'object' || config === null) throw new ConfigError('VM config must be an object');
  const vcpus = config.vcpus ?? DEFAULT_VCPUS;
  const maxVcpus = limits.maxVcpus ?? MAX_VCPUS;
  if (!Number.isInteger(vcpus) || vcpus < 1) throw new ConfigError(`--vcpus must be a whole number ≥ 1 (got ${shown(config.vcpus)})`);
  if (vcpus > maxVcpus) throw new ConfigError(`--vcpus ${vcpus} is more than kindling supports (${maxVcpus})`);

  const memMiB = config.memMiB ?? DEFAULT_MEM_MIB;
  if (!Number.isInteger(memMiB) || memMiB < MIN_MEM_MIB) {
    throw new ConfigError(`--mem must be a whole number of MiB ≥ ${MIN_MEM_MIB} (got ${shown(config.memMiB)})`);
  }
  const hostMem = limits.hostMemBytes ?? totalmem();
  if (memMiB * MiB > hostMem) {
    throw new ConfigError(`--mem ${memMiB} MiB is more than this host's RAM (${Math.floor(hostMem / MiB)} MiB)`);
  }

  if (typeof config.kernel !== 'string' || config.kernel === '') throw new ConfigError('no kernel given (--kernel PATH)');
  const kernelSize = checkReadableFile(config.kernel, 'kernel');
  if (kernelSize === 0) throw new ConfigError(`kernel is empty: ${shown(config.kernel)}`);
  if (config.initrd !== undefined) checkReadableFile(config.initrd, 'initrd');

  if (config.disks !== undefined && !Array.isArray(config.disks)) throw new ConfigError('disks must be an array of { path, readOnly? }');
  const disks = (config.disks ?? []).map((d, i) => checkDisk(d, i));
  if (config.rng !== undefined && typeof config.rng !== 'boolean') throw new ConfigError(`rng must be true or false (got ${shown(config.rng)})`);
  const rng = config.rng ?? true;
  const consoleKind = config.console ?? 'serial';
  if (consoleKind !== 'serial' && consoleKind !== 'virtio') throw new ConfigError(`--console must be serial or virtio (got ${shown(consoleKind)})`);
  const others = (rng ? 1 : 0) + (consoleKind === 'virtio' ? 1 : 0);
  if (disks.length + others > MAX_VIRTIO_DEVICES) {
    const other = [rng ? 'virtio-rng' : '', consoleKind === 'virtio' ? 'virtio-console' : ''].filter((x) => x).join(' and ');
    throw new ConfigError(others ? `at most ${MAX_VIRTIO_DEVICES} disks and other virtio devices in all (got ${disks.length} disks and ${other}; --no-rng frees one)` : `at most ${MAX_VIRTIO_DEVICES} disks (got ${disks.length})`);
  }

  if (config.cmdline !== undefined && typeof config.cmdline !== 'string') throw new ConfigError('--cmdline must be a string');
  // Extra words go after the user's words, or after init's arguments when the user's line has a `--`.
  const user = config.cmdline ?? DEFAULT_CMDLINE;
  const extra = config.cmdlineExtra ?? [];
  const extraDd = extra.indexOf('--');
  const before = extraDd >= 0 ? extra.slice(0, extraDd) : extra;
  const after = extraDd >= 0 ? extra.slice(extraDd) : [];
  // With a `--` already in the user's command line, extra words after it belong to init as well.
  const init = dashDashAt(user) >= 0 ? after.slice(1) : after;
  const cmdline = [withDeviceWords(user, before), ...init].filter((w) => w.length > 0).join(' ');
  if (/[\0\n\r]/.test(cmdline)) throw new ConfigError('--cmdline must not contain NUL or newline characters');

  const logLevel = config.logLevel ?? 'warn';
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(', ')} (got ${shown(logLevel)})`);

  return { kernel: config.kernel, initrd: config.initrd, cmdline, vcpus, memBytes: memMiB * MiB, logLevel, disks, rng, console: consoleKind };
}
