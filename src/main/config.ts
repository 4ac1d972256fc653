// VM configuration: what the API accepts, its defaults, and validation that turns every bad input
// into one clear line (ConfigError) before anything is created.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { totalmem } from 'node:os';
import { MiB } from '../arch/x86_64/layout.js';

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
   * Benchmark only: exits to this port are consumed by the addon's C loop (benchRunPioLoop) instead
   * of the JavaScript exit loop, so `npm run bench` can compare the two on the same guest.
   */
  benchCPioPort?: number;
}

export interface ResolvedConfig {
  kernel: string;
  initrd?: string;
  cmdline: string;
  vcpus: number;
  memBytes: number;
  logLevel: string;
  benchCPioPort?: number;
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
    if (code === 'ENOENT') throw new ConfigError(`${what} not found: ${path}`);
    if (code === 'EACCES') throw new ConfigError(`${what} is not readable: ${path} (permission denied)`);
    throw new ConfigError(`${what} cannot be read: ${path} (${code ?? (e as Error).message})`);
  }
  if (st.isDirectory()) throw new ConfigError(`${what} is a directory, not a file: ${path}`);
  try {
    const fd = openSync(path, 'r');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, 0);
    closeSync(fd);
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new ConfigError(`${what} is not readable: ${path} (${code === 'EACCES' ? 'permission denied' : code ?? (e as Error).message})`);
  }
  return st.size;
}

export function resolveConfig(config: VMConfig, limits: { maxVcpus?: number; hostMemBytes?: number } = {}): ResolvedConfig {
  if (typeof config !== 'object' || config === null) throw new ConfigError('VM config must be an object');
  const vcpus = config.vcpus ?? DEFAULT_VCPUS;
  const maxVcpus = limits.maxVcpus ?? MAX_VCPUS;
  if (!Number.isInteger(vcpus) || vcpus < 1) throw new ConfigError(`--vcpus must be a whole number ≥ 1 (got ${String(config.vcpus)})`);
  if (vcpus > maxVcpus) throw new ConfigError(`--vcpus ${vcpus} is more than kindling supports (${maxVcpus})`);

  const memMiB = config.memMiB ?? DEFAULT_MEM_MIB;
  if (!Number.isInteger(memMiB) || memMiB < MIN_MEM_MIB) {
    throw new ConfigError(`--mem must be a whole number of MiB ≥ ${MIN_MEM_MIB} (got ${String(config.memMiB)})`);
  }
  const hostMem = limits.hostMemBytes ?? totalmem();
  if (memMiB * MiB > hostMem) {
    throw new ConfigError(`--mem ${memMiB} MiB is more than this host's RAM (${Math.floor(hostMem / MiB)} MiB)`);
  }

  if (typeof config.kernel !== 'string' || config.kernel === '') throw new ConfigError('no kernel given (--kernel PATH)');
  const kernelSize = checkReadableFile(config.kernel, 'kernel');
  if (kernelSize === 0) throw new ConfigError(`kernel is empty: ${config.kernel}`);
  if (config.initrd !== undefined) checkReadableFile(config.initrd, 'initrd');

  if (config.cmdline !== undefined && typeof config.cmdline !== 'string') throw new ConfigError('--cmdline must be a string');
  const words = [config.cmdline ?? DEFAULT_CMDLINE, ...(config.cmdlineExtra ?? [])].filter((w) => w.length > 0);
  const cmdline = words.join(' ');
  if (/[\0\n\r]/.test(cmdline)) throw new ConfigError('--cmdline must not contain NUL or newline characters');

  const logLevel = config.logLevel ?? 'warn';
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError(`--log-level must be one of ${LOG_LEVELS.join(', ')} (got ${logLevel})`);

  return { kernel: config.kernel, initrd: config.initrd, cmdline, vcpus, memBytes: memMiB * MiB, logLevel, benchCPioPort: config.benchCPioPort };
}
