// The CLI's names for VMConfig options. The library's ConfigErrors speak VMConfig (`memMiB must be a
// whole number of MiB ≥ 16 (got 1)`); the command line prints the same error with the flag the user
// typed (`--mem must be a whole number of MiB ≥ 16 (got 1)`). Only a message that starts with its
// option's name (ConfigError.phrase set) is reworded; any other message (e.g. "kernel not found:
// PATH", which names the file) is printed as it is.
import type { ConfigError } from '../main/config-error.js';

/** VMConfig key → the flag that sets it. */
export const FLAG_NAMES: Readonly<Record<string, string>> = {
  memMiB: '--mem',
  vcpus: '--vcpus',
  kernel: '--kernel',
  initrd: '--initrd',
  cmdline: '--cmdline',
  logLevel: '--log-level',
  disks: '--disk',
  rng: '--no-rng',
  console: '--console',
  vsock: '--vsock',
  net: '--net',
  seccomp: '--seccomp',
  bootTimer: '--boot-timer',
  'vsock.cid': '--vsock CID',
  'vsock.udsPath': '--vsock socket',
};

/**
 * The flag for a VMConfig key path: 'memMiB' → '--mem', 'disks[1]' / 'disks[1].path' → '--disk #2'
 * (the second --disk); a key without a flag (cmdlineExtra) is returned as it is.
 */
export function flagName(option: string): string {
  const disk = /^disks\[(\d+)\](?:\.[\w.]+)?$/.exec(option);
  if (disk) return `--disk #${Number(disk[1]) + 1}`;
  const nic = /^net\[(\d+)\](?:\.[\w.]+)?$/.exec(option);
  if (nic) return `--net #${Number(nic[1]) + 1}`;
  return FLAG_NAMES[option] ?? option;
}

/** A ConfigError's message in the CLI's wording (flag names instead of VMConfig names). */
export function cliConfigMessage(e: ConfigError): string {
  if (e.phrase === undefined || e.option === '' || !e.message.startsWith(e.option)) return e.message;
  return `${flagName(e.option)} ${e.phrase}`;
}
