// The kindling command line: a thin layer over the VM class.
import { readFileSync } from 'node:fs';
import { errorLine, parseCommandLine, USAGE, type Command } from './cli-args.js';
import { DEFAULT_VCPUS, MAX_VCPUS, virtioDevicePlan } from '../main/config.js';
import type { VM, VMExit } from '../main/vm.js';
import { discardPrespawnedWorkers, prespawnIoWorkers, prespawnVcpuWorkers } from '../main/workers.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await dispatch(parseCommandLine(argv));
  } catch (e) {
    if (process.env.KINDLING_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    const { line, code } = errorLine(e);
    process.stderr.write(line + '\n');
    process.exit(code);
  }
}

async function dispatch(cmd: Command): Promise<void> {
  switch (cmd.kind) {
    case 'help':
      process.stdout.write(USAGE + '\n');
      return;
    case 'usage':
      process.stderr.write(USAGE + '\n');
      process.exit(2);
    case 'version':
      process.stdout.write(`kindling ${version()}\n`);
      return;
    case 'guest': {
      const { ensureDefaultGuest } = await import('../guest-image/index.js');
      const g = await ensureDefaultGuest({ progress: true, log: (l) => process.stderr.write(l + '\n') });
      process.stdout.write(`default guest ready: kernel ${g.kernel}, initrd ${g.initrd} (linux ${g.kernelVersion})\n`);
      return;
    }
    case 'run':
      return run(cmd);
    case 'vhost-user-help': {
      const { VHOST_USER_USAGE } = await import('./vhost-user.js');
      process.stdout.write(VHOST_USER_USAGE + '\n');
      return;
    }
    case 'vhost-user': {
      const { runVhostUser } = await import('./vhost-user.js');
      process.exit(await runVhostUser(cmd));
    }
  }
}

async function run({ config, defaultGuest, guestArgs }: Extract<Command, { kind: 'run' }>): Promise<void> {
  // The vCPU workers boot (~35 ms each, in parallel) while this thread loads the VMM's modules.
  const vcpus = config.vcpus ?? DEFAULT_VCPUS;
  if (vcpus >= 1 && vcpus <= MAX_VCPUS) {
    prespawnVcpuWorkers(vcpus);
    prespawnIoWorkers(virtioDevicePlan(config).map((d) => d.name));
  }
  const { VM } = await import('../main/vm.js');
  if (defaultGuest) {
    // Loaded only when needed: the builder is not on the path of `run --kernel`.
    const { ensureDefaultGuest, encodeGuestCommand } = await import('../guest-image/index.js');
    const g = await ensureDefaultGuest({ progress: true, log: (l) => process.stderr.write(l + '\n') });
    config.kernel = g.kernel;
    config.initrd = g.initrd;
    if (guestArgs.length) config.cmdlineExtra = [`kindling.cmd=${encodeGuestCommand(guestArgs)}`];
  }
  let vm: VM;
  try {
    vm = new VM(config); // a ConfigError here is a usage error (exit 2), see errorLine
  } catch (e) {
    discardPrespawnedWorkers();
    throw e;
  }
  // A host warning is a warn-level line: shown unless --log-level is error, fatal or silent.
  const level = config.logLevel ?? 'warn';
  vm.on('warning', (w: string) => {
    if (!['error', 'fatal', 'silent'].includes(level)) process.stderr.write(w + '\n');
  });
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

/**
 * Wire the terminal to the guest's console (COM1, or virtio-console with --console virtio, whose
 * output is shown next to COM1's); returns a function that restores the terminal.
 */
function attachConsole(vm: VM): () => void {
  const stdin = process.stdin;
  const tty = stdin.isTTY === true;
  const target = vm.console ?? vm.serial;
  vm.serial.on('data', (b: Buffer) => process.stdout.write(b));
  vm.console?.on('data', (b: Buffer) => process.stdout.write(b));
  let escape = false;
  const onData = (buf: Buffer): void => {
    if (!tty) {
      target.write(buf);
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
    if (out.length) target.write(Buffer.from(out));
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
