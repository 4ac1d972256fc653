// The kindling command line: a thin layer over the VM class.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, DEFAULT_CMDLINE, DEFAULT_MEM_MIB, type VMConfig } from './config.js';
import { VM, type VMExit } from './vm.js';

const USAGE = `usage:
  kindling run [--vcpus N] [--mem MiB] [--kernel PATH] [--initrd PATH] [--cmdline STR] [--disk PATH[,ro]]... [--log-level LEVEL] [-- CMD ARGS...]
  kindling guest            build the default guest (Debian cloud kernel + busybox initramfs) into the cache
  kindling --help | --version

run:
  --vcpus N        number of vCPUs (default 1)
  --mem MiB        guest RAM in MiB (default ${DEFAULT_MEM_MIB})
  --kernel PATH    bzImage, PVH ELF or 64-bit ELF kernel (default: the default guest, built on first use)
  --initrd PATH    initrd / initramfs
  --cmdline STR    kernel command line (default: "${DEFAULT_CMDLINE}")
  --disk PATH[,ro] raw disk image as a virtio-blk device (repeatable; the first is /dev/vda). Its size
                   must be a multiple of 512. A writable image is locked (flock) while the VM runs;
                   ,ro attaches it read-only, without a lock.
  --log-level L    VMM log level on stderr: fatal, error, warn (default), info, debug, trace, silent
  -- CMD ARGS      default guest: run CMD in the guest and exit with its status (no CMD: a shell);
                   other kernels: appended to the command line after "--" (arguments for init)

console: the terminal is attached to the guest's serial port (COM1). Ctrl-A x quits, Ctrl-A p
pauses/resumes, Ctrl-A h shows this help, Ctrl-A Ctrl-A sends Ctrl-A.
exit status: the guest's (debug-exit port 0xf4 or the default guest's command), 0 after poweroff,
reboot or Ctrl-A x, 1 on a guest crash or VMM error, 2 on a usage error.
cache: the default guest lives in $KINDLING_HOME/guest (default ~/.cache/kindling/guest).`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

class UsageError extends Error {}

function parseIntArg(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[0-9]+$/.test(v)) throw new UsageError(`--${name} needs a whole number (got "${v}")`);
  return Number(v);
}

/** `PATH[,ro]` (a trailing `,rw` is accepted too; any other comma is part of the path). */
function parseDiskArg(v: string): { path: string; readOnly: boolean } {
  const m = /^(.*),(ro|rw)$/.exec(v);
  const path = m ? m[1] : v;
  if (path === '') throw new UsageError(`--disk needs an image path (got "${v}")`);
  return { path, readOnly: m?.[2] === 'ro' };
}

function fail(message: string, code: number): never {
  process.stderr.write(`kindling: ${message}\n`);
  process.exit(code);
}

export async function main(argv: string[]): Promise<void> {
  try {
    await dispatch(argv);
  } catch (e) {
    if (e instanceof UsageError) fail(`${e.message} (see kindling --help)`, 2);
    const err = e as Error;
    if (process.env.KINDLING_DEBUG) process.stderr.write(`${err.stack}\n`);
    fail(err.message.split('\n')[0], 1);
  }
}

async function dispatch(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(USAGE + '\n');
    return;
  }
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    process.stdout.write(`kindling ${version()}\n`);
    return;
  }
  if (cmd === 'guest') {
    if (rest.length) throw new UsageError(`unexpected argument for guest: ${rest[0]}`);
    const { ensureDefaultGuest } = await import('./guest-image/index.js');
    const g = await ensureDefaultGuest({ progress: true, log: (l) => process.stderr.write(l + '\n') });
    process.stdout.write(`default guest ready: kernel ${g.kernel}, initrd ${g.initrd} (linux ${g.kernelVersion})\n`);
    return;
  }
  if (cmd === 'run') return run(rest);
  throw new UsageError(`unknown command "${cmd}"`);
}

async function run(args: string[]): Promise<void> {
  const dd = args.indexOf('--');
  const own = dd >= 0 ? args.slice(0, dd) : args;
  const guestArgs = dd >= 0 ? args.slice(dd + 1) : [];
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
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    throw new UsageError((e as Error).message.split('\n')[0]);
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const config: VMConfig = {
    kernel: values.kernel ?? '',
    initrd: values.initrd,
    cmdline: values.cmdline,
    vcpus: parseIntArg('vcpus', values.vcpus),
    memMiB: parseIntArg('mem', values.mem),
    logLevel: values['log-level'],
    disks: (values.disk ?? []).map(parseDiskArg),
  };
  if (values.kernel === undefined) {
    if (values.initrd !== undefined) throw new UsageError('--initrd needs --kernel (the default guest brings its own initramfs)');
    // Loaded only when needed: the builder is not on the path of `run --kernel`.
    const { ensureDefaultGuest, encodeGuestCommand } = await import('./guest-image/index.js');
    const g = await ensureDefaultGuest({ progress: true, log: (l) => process.stderr.write(l + '\n') });
    config.kernel = g.kernel;
    config.initrd = g.initrd;
    if (guestArgs.length) config.cmdlineExtra = [`kindling.cmd=${encodeGuestCommand(guestArgs)}`];
  } else if (guestArgs.length) {
    config.cmdlineExtra = ['--', ...guestArgs];
  }

  let vm: VM;
  try {
    vm = new VM(config);
  } catch (e) {
    if (e instanceof ConfigError) fail(e.message, 2);
    throw e;
  }
  vm.on('warning', (w: string) => process.stderr.write(w + '\n'));
  const detach = attachConsole(vm);
  let exit: VMExit;
  try {
    await vm.start();
    exit = await vm.wait();
  } finally {
    detach();
  }
  if (exit.detail) process.stderr.write(`kindling: ${exit.detail}\n`);
  if (process.env.KINDLING_TIMINGS) process.stderr.write(`kindling-timings ${JSON.stringify(vm.timings)}\n`);
  await new Promise<void>((r) => (process.stdout.writableNeedDrain ? process.stdout.once('drain', r) : r()));
  process.exit(exit.exitCode & 0xff);
}

const CTRL_A = 0x01;

/** Wire the terminal to the guest's serial console; returns a function that restores the terminal. */
function attachConsole(vm: VM): () => void {
  const stdin = process.stdin;
  const tty = stdin.isTTY === true;
  vm.serial.on('data', (b: Buffer) => process.stdout.write(b));
  let escape = false;
  const onData = (buf: Buffer): void => {
    if (!tty) {
      vm.serial.write(buf);
      return;
    }
    const out: number[] = [];
    for (const b of buf) {
      if (escape) {
        escape = false;
        const c = String.fromCharCode(b).toLowerCase();
        if (c === 'x') {
          process.stderr.write('\r\nkindling: terminated by Ctrl-A x\r\n');
          void vm.stop();
        } else if (c === 'p') {
          if (vm.state === 'running') void vm.pause().then(() => process.stderr.write('\r\nkindling: paused (Ctrl-A p resumes)\r\n'));
          else if (vm.state === 'paused') {
            vm.resume();
            process.stderr.write('\r\nkindling: resumed\r\n');
          }
        } else if (c === 'h') {
          process.stderr.write('\r\nCtrl-A x quit, Ctrl-A p pause/resume, Ctrl-A Ctrl-A send Ctrl-A\r\n');
        } else if (b === CTRL_A) out.push(CTRL_A);
        continue;
      }
      if (b === CTRL_A) escape = true;
      else out.push(b);
    }
    if (out.length) vm.serial.write(Buffer.from(out));
  };
  if (tty) stdin.setRawMode(true);
  stdin.on('data', onData);
  stdin.resume();
  return () => {
    stdin.off('data', onData);
    if (tty) stdin.setRawMode(false);
    stdin.pause();
  };
}
