// The kindling command line: a thin layer over the VM class. Behaves like a Unix tool: one line on
// stderr for an error, exit 2 for what the user gave, 1 for the VMM or guest failing, 128+N after
// signal N (./signals.ts); the terminal is put in raw mode only when this process owns it
// (./terminal.ts), and never can a terminal access stop the process.
import { closeSync, constants as fsConstants, createWriteStream, existsSync, fstatSync, openSync, readFileSync, type WriteStream } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defaultGuestOnPvm, errorLine, parseCommandLine, USAGE, UsageError, type Command } from './cli-args.js';
import { oneLine, quoted } from '../main/config.js';
import { SignalStop } from './signals.js';
import { isServeArgv, serveMain } from './serve.js';
import { consoleMode, neverStopOnTerminalAccess, probeTerminal } from './terminal.js';
import { detectPvm } from '../kvm/system.js';
import { DEFAULT_VCPUS, MAX_VCPUS, virtioDevicePlan } from '../main/config.js';
import type { VM, VMExit } from '../main/vm.js';
import { discardPrespawnedWorkers, prespawnIoWorkers, prespawnVcpuWorkers } from '../main/workers.js';
import { bootTimeLine, type BootTime } from '../devices/legacy/boot-timer.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** Termination signals, from the first moment: config and the default-guest build included. */
const signals = new SignalStop({
  write: (line) => process.stderr.write(line + '\n'),
  exit: (code) => process.exit(code),
});

export async function main(argv: string[]): Promise<void> {
  signals.install(process);
  // `kindling serve` and Firecracker's own flags (--api-sock, --config-file, …): src/cli/serve.ts.
  if (isServeArgv(argv)) process.exit(await serveMain(argv, signals));
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
    case 'jail-help': {
      const { JAIL_USAGE } = await import('../jail/jail.js');
      process.stdout.write(JAIL_USAGE + '\n');
      return;
    }
    case 'jail': {
      const { runJail } = await import('../jail/jail.js');
      // A stop signal is passed on to the jailed kindling (which stops its VM); the jail is then removed.
      const code = await runJail(cmd, (forward) => signals.setStopper(forward && (async () => forward('SIGTERM'))));
      process.exit(signals.exitCode ?? code);
    }
    case 'vhost-user': {
      const { runVhostUser } = await import('./vhost-user.js');
      // A stop signal ends the serving loop (socket removed, image released), then exits 128+N.
      const code = await runVhostUser(cmd, (stop) => signals.setStopper(stop && (async () => stop())));
      process.exit(signals.exitCode ?? code);
    }
  }
}

/** The small test kernel to suggest where the default guest cannot boot (build/guests, `make -C test/guests`). */
function helloKernel(): string {
  const built = fileURLToPath(new URL('../../build/guests/hello.elf', import.meta.url));
  return existsSync(built) ? built : `${built} (build it with: make -C test/guests)`;
}

/** The vsock CID `kindling run -- CMD` gives the guest for its agent when --vsock is not given. */
const AGENT_DEFAULT_CID = 3;
/** What the default guest's init runs when the command goes through the agent: nothing, until stopped. */
const IDLE_GUEST_COMMAND = ['sh', '-c', 'while :; do sleep 3600; done'];

async function run(cmd: Extract<Command, { kind: 'run' }>): Promise<void> {
  const { config, defaultGuest, guestArgs, force } = cmd;
  // The default guest on KVM-PVM: refused at once (not a boot that fails after ~110 s), unless --force.
  const pvmPlan = defaultGuest ? defaultGuestOnPvm({ pvm: detectPvm(), force, helloKernel: helloKernel() }) : { cmdlineWords: [] };
  if (pvmPlan.refuse) throw pvmPlan.refuse;
  // A command may go through the exec agent (--agent, or the default guest if it has one): it needs vsock.
  const agentPossible = guestArgs.length > 0 && (cmd.agent === true || defaultGuest);
  if (agentPossible && !config.vsock) config.vsock = { cid: AGENT_DEFAULT_CID };
  let agentMode = agentPossible && cmd.agent === true;
  const consoleLog = cmd.consoleLog === undefined ? undefined : openConsoleLog(cmd.consoleLog);
  // The vCPU workers boot (~35 ms each, in parallel) while this thread loads the VMM's modules.
  const vcpus = config.vcpus ?? DEFAULT_VCPUS;
  if (vcpus >= 1 && vcpus <= MAX_VCPUS) {
    prespawnVcpuWorkers(vcpus);
    prespawnIoWorkers(virtioDevicePlan(config).map((d) => d.name));
  }
  const { VM } = await import('../main/vm.js');
  if (defaultGuest) {
    // Loaded only when needed: the builder is not on the path of `run --kernel`.
    const { ensureDefaultGuest, encodeGuestCommand, readGuestManifest } = await import('../guest-image/index.js');
    const g = await ensureDefaultGuest({ progress: true, log: (l) => process.stderr.write(l + '\n') });
    config.kernel = g.kernel;
    config.initrd = g.initrd;
    // A default guest built before the agent existed runs the command from its command line, as before.
    if (agentPossible && readGuestManifest(g.dir)?.agent !== undefined) agentMode = true;
    const initCommand = agentMode ? IDLE_GUEST_COMMAND : guestArgs;
    const extra = [...pvmPlan.cmdlineWords, ...(initCommand.length ? [`kindling.cmd=${encodeGuestCommand(initCommand)}`] : [])];
    if (extra.length) config.cmdlineExtra = extra;
  }
  let vm: VM;
  try {
    // kindling owns this process: every thread is filtered once the VM is built (docs/security.md).
    vm = new VM({ ...config, seccompThreads: 'all' }); // a ConfigError here is a usage error (exit 2), see errorLine
  } catch (e) {
    discardPrespawnedWorkers();
    throw e;
  }
  // A host warning is a warn-level line: shown unless --log-level is error, fatal or silent.
  const level = config.logLevel ?? 'warn';
  vm.on('warning', (w: string) => {
    if (!['error', 'fatal', 'silent'].includes(level)) process.stderr.write(w + '\n');
  });
  // The boot timer's line is what --boot-timer asked for: shown at every level but silent.
  vm.on('boot-time', (t: BootTime) => {
    if (level !== 'silent') process.stderr.write(`kindling: ${bootTimeLine(t)}\n`);
  });
  if (agentMode) return runAgentCommand(vm, guestArgs, { level, consoleLog, agentTimeoutMs: cmd.agentTimeoutMs });
  consoleLog?.end();
  const detach = attachConsole(vm, level);
  // From here a signal stops the VM (and this function exits with 128+N once it has ended).
  signals.setStopper(() => vm.stop());
  let exit: VMExit;
  try {
    try {
      await vm.start();
    } catch (e) {
      if (signals.exitCode === undefined) throw e;
    }
    exit = await vm.wait();
  } finally {
    detach();
  }
  if (exit.detail && signals.exitCode === undefined) process.stderr.write(`kindling: ${exit.detail}\n`);
  if (process.env.KINDLING_TIMINGS) process.stderr.write(`kindling-timings ${JSON.stringify(vm.timings)}\n`);
  await new Promise<void>((r) => (process.stdout.writableNeedDrain ? process.stdout.once('drain', r) : r()));
  process.exit(signals.exitCode ?? exit.exitCode & 0xff);
}

/** --console-log FILE, opened (created or truncated, 0644) before anything boots: a bad path is exit 2. */
function openConsoleLog(path: string): WriteStream {
  let fd: number;
  try {
    // Non-blocking: a FIFO nobody reads is refused (ENXIO) instead of hanging the start.
    fd = openSync(path, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_NONBLOCK, 0o644);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'its directory does not exist' : code === 'ENXIO' ? 'a FIFO that nobody has open for reading' : (e as Error).message;
    throw new UsageError(`--console-log ${quoted(path)}: ${why}`);
  }
  const st = fstatSync(fd);
  if (!st.isFile() && !st.isFIFO() && !st.isCharacterDevice()) {
    closeSync(fd);
    throw new UsageError(`--console-log ${quoted(path)} is not a file`);
  }
  const w = createWriteStream('', { fd });
  w.on('error', (e) => process.stderr.write(`kindling: --console-log: ${e.message}\n`));
  return w;
}

/**
 * `kindling run -- CMD` through the guest's exec agent: the console goes to --console-log, or to
 * stderr at a verbose log level, else nowhere (it never reaches stdout); stdout/stderr/stdin are the
 * command's (stdin not read while another process group owns the terminal: the command gets EOF);
 * the exit status is the command's. The agent that never answers, or a VM that ends first: one line, 1.
 */
async function runAgentCommand(vm: VM, argv: string[], o: { level: string; consoleLog?: WriteStream; agentTimeoutMs?: number }): Promise<void> {
  const { runCommand } = await import('../main/exec.js');
  const verbose = ['info', 'debug', 'trace'].includes(o.level);
  const sink = (b: Buffer): void => {
    if (o.consoleLog) o.consoleLog.write(b);
    else if (verbose) process.stderr.write(b);
  };
  vm.serial.on('data', sink);
  vm.console?.on('data', sink);
  neverStopOnTerminalAccess();
  const stdinMode = consoleMode(probeTerminal(process.stdin.isTTY === true));
  // A reader that went away (`| head`): the command is stopped with the VM, exit as a shell would (SIGPIPE).
  let brokenPipe = false;
  process.stdout.on('error', () => {
    brokenPipe = true;
    void vm.stop();
  });
  signals.setStopper(() => vm.stop());
  let outcome: { status: number } | { error: string } = { error: 'the VM did not start' };
  try {
    await vm.start();
    outcome = await runCommand(vm, argv, { stdin: stdinMode === 'background' ? undefined : process.stdin, stdout: process.stdout, stderr: process.stderr }, { timeoutMs: o.agentTimeoutMs });
  } catch (e) {
    if (signals.exitCode === undefined) throw e;
  }
  await vm.stop();
  process.stdin.pause();
  if (o.consoleLog) await new Promise<void>((r) => o.consoleLog!.end(r));
  if (process.env.KINDLING_TIMINGS) process.stderr.write(`kindling-timings ${JSON.stringify(vm.timings)}\n`);
  if (signals.exitCode !== undefined) process.exit(signals.exitCode);
  if (brokenPipe) process.exit(141);
  if ('error' in outcome) {
    process.stderr.write(`kindling: ${oneLine(outcome.error)}\n`);
    process.exit(1);
  }
  await new Promise<void>((r) => (process.stdout.writableNeedDrain ? process.stdout.once('drain', r) : r()));
  process.exit(outcome.status & 0xff);
}

const CTRL_A = 0x01;

/**
 * Wire the terminal to the guest's console (COM1, or virtio-console with --console virtio, whose
 * output is shown next to COM1's); returns a function that restores the terminal.
 */
function attachConsole(vm: VM, level: string): () => void {
  const stdin = process.stdin;
  // No terminal access may stop this process (SIGTTOU/SIGTTIN ignored), and the terminal is only
  // switched to raw mode and read when this process is in its foreground group.
  neverStopOnTerminalAccess();
  const mode = consoleMode(probeTerminal(stdin.isTTY === true));
  const tty = mode === 'raw';
  const target = vm.console ?? vm.serial;
  vm.serial.on('data', (b: Buffer) => process.stdout.write(b));
  vm.console?.on('data', (b: Buffer) => process.stdout.write(b));
  if (mode === 'background') {
    // Another process group owns the terminal (e.g. `timeout` started kindling): output only.
    if (['info', 'debug', 'trace'].includes(level)) process.stderr.write('kindling: stdin is a terminal owned by another process group (kindling runs in the background): console input is not read\n');
    return () => {};
  }
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
