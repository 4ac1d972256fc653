// vm.exec(), vm.writeFile(), vm.readFile(): commands and files in the guest through its exec agent
// (guest/agent/agent.c, protocol docs/agent-protocol.md, client src/agent/client.ts) on vsock port
// AGENT_VSOCK_PORT (10789), reached in-process with vm.vsock.connect() — no socket files.
//
// Agent wait. The guest starts its agent some time after boot, and until its vsock driver is up a
// connect is refused (the host side closes the bridge's socket: "refused"); after that, until the
// agent listens, the guest answers RST (also "refused"). So connectAgent() retries — 20 ms, doubling
// to 250 ms between attempts — until the agent's HELLO arrives or the deadline passes
// (`agentTimeoutMs`, default DEFAULT_AGENT_TIMEOUT_MS), then fails with one AgentUnavailableError
// line naming the port, the time waited and the last refusal. A VM that stops meanwhile fails it at
// once. One AgentClient (one vsock connection, any number of processes and transfers on it) serves
// every call of a VM; a closed connection is replaced on the next call.
//
// vm.exec(cmd, opts) returns its handle at once, before the agent answers: stdout and stderr are
// Readables, stdin a Writable (ending it is the command's EOF; without opts.stdin and without
// end(), the command waits for input as a spawned child does), `pid` and `exited` are promises
// (`exited`: `{ code, signal }`, code null when killed; rejects when the agent cannot be reached, the
// command cannot be started, or the connection is lost), kill(signal) is queued until the process
// exists. `timeoutMs` is child_process's `timeout`: once the command has run that long it is sent
// `killSignal` (default SIGKILL), and `exited` shows that signal. Back-pressure is end to end: an
// unread stdout stops the guest process (the agent's output credit is returned only as data is read).
import type net from 'node:net';
import { PassThrough, Readable, type Writable } from 'node:stream';
import { AgentClient, type AttachedStreams, type ExecOptions, type ExitStatus, type FileInfo, runAttached } from '../agent/client.js';
import { AGENT_VSOCK_PORT } from '../agent/protocol.js';
import type { VsockApi } from '../devices/virtio/vsock/bridge.js';

/** How long vm.exec()/writeFile()/readFile() and `kindling run -- CMD` wait for the guest's agent by default. */
export const DEFAULT_AGENT_TIMEOUT_MS = 30_000;
const RETRY_FIRST_MS = 20;
const RETRY_MAX_MS = 250;

/** The guest's agent could not be reached (no vsock device, the VM stopped, or no answer in time). */
export class AgentUnavailableError extends Error {
  override name = 'AgentUnavailableError';
}

export interface AgentWaitOptions {
  /** Vsock port of the agent (default AGENT_VSOCK_PORT, 10789). */
  port?: number;
  /** Give up after this long (default DEFAULT_AGENT_TIMEOUT_MS). */
  timeoutMs?: number;
}

export interface VmExecOptions extends ExecOptions, Pick<AgentWaitOptions, 'port'> {
  /** Arguments after `cmd` (appended to it when `cmd` is an argv array). */
  args?: string[];
  /** Kill the command with `killSignal` once it has run this long (ms). */
  timeoutMs?: number;
  /** The signal `timeoutMs` sends (default SIGKILL). */
  killSignal?: NodeJS.Signals | number;
  /** How long to wait for the guest's agent (default DEFAULT_AGENT_TIMEOUT_MS). */
  agentTimeoutMs?: number;
}

export interface VmExecProcess {
  stdout: Readable;
  stderr: Readable;
  stdin: Writable;
  /** The guest pid once started. */
  pid: Promise<number>;
  /** `{ code, signal }` when the command has ended and all its output was delivered to stdout/stderr. */
  exited: Promise<ExitStatus>;
  /** Send a signal (default SIGTERM); before the process exists it is sent as soon as it does. */
  kill(signal?: NodeJS.Signals | number): void;
  /** Terminal size of a `tty` command. */
  resize(rows: number, cols: number): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

/** `p`, or a rejection after `ms`; a value that arrives too late is handed to `late` (to be closed). */
function within<T>(p: Promise<T>, ms: number, late: (v: T) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    let over = false;
    const t = setTimeout(() => {
      over = true;
      reject(new Error('no answer'));
    }, ms);
    p.then(
      (v) => {
        clearTimeout(t);
        if (over) late(v);
        else resolve(v);
      },
      (e: Error) => {
        clearTimeout(t);
        if (!over) reject(e);
      },
    );
  });
}

/**
 * Connect to the agent on `vsock`, retrying refused and unanswered connects until its HELLO arrives
 * or `timeoutMs` has passed. `stopped()` returns why to give up at once (the VM stopped), or undefined.
 */
export async function connectAgent(
  vsock: VsockApi,
  o: AgentWaitOptions & { stopped?: () => string | undefined } = {},
): Promise<{ client: AgentClient; socket: net.Socket }> {
  const port = o.port ?? AGENT_VSOCK_PORT;
  const timeoutMs = o.timeoutMs ?? DEFAULT_AGENT_TIMEOUT_MS;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new RangeError(`agent timeout must be a positive number of ms (got ${timeoutMs})`);
  const deadline = Date.now() + timeoutMs;
  let last = '';
  let delay = RETRY_FIRST_MS;
  for (;;) {
    const why = o.stopped?.();
    if (why) throw new AgentUnavailableError(`the guest agent cannot be reached: ${why}`);
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new AgentUnavailableError(`the guest agent did not answer on vsock port ${port} within ${seconds(timeoutMs)}${last ? ` (last attempt: ${last})` : ''}`);
    }
    let socket: net.Socket | undefined;
    try {
      socket = await within(vsock.connect(port), left, (s) => s.destroy());
      const client = new AgentClient(socket);
      await client.ready(Math.max(1, deadline - Date.now()));
      return { client, socket };
    } catch (e) {
      socket?.destroy();
      last = (e as Error).message;
    }
    await sleep(Math.max(0, Math.min(delay, deadline - Date.now())));
    delay = Math.min(delay * 2, RETRY_MAX_MS);
  }
}

/** Destroy with the error only when someone listens for it (an unheard 'error' would crash the process). */
function destroyWith(s: Readable | Writable, e: Error): void {
  if (s.listenerCount('error') > 0) s.destroy(e);
  else s.destroy();
}

/** One VM's way to its agent: a shared connection, made on first use. */
export class VmAgent {
  private conn: Promise<{ client: AgentClient; socket: net.Socket }> | undefined;
  private closed = false;

  constructor(
    private readonly vsock: VsockApi | undefined,
    /** Why the agent can no longer be reached (the VM stopped), or undefined. */
    private readonly stopped: () => string | undefined,
  ) {}

  /** The agent's client, connecting (and waiting for the agent) if there is no live connection. */
  client(o: AgentWaitOptions = {}): Promise<AgentClient> {
    if (!this.vsock) return Promise.reject(new AgentUnavailableError('the VM has no vsock device, so no guest agent (configure vsock: { cid })'));
    if (this.closed) return Promise.reject(new AgentUnavailableError('the guest agent cannot be reached: the VM has stopped'));
    if (!this.conn) {
      const conn = connectAgent(this.vsock, { ...o, stopped: this.stopped });
      this.conn = conn;
      conn.then(
        ({ socket }) => {
          if (this.closed) socket.destroy();
          socket.once('close', () => {
            if (this.conn === conn) this.conn = undefined;
          });
        },
        () => {
          if (this.conn === conn) this.conn = undefined;
        },
      );
    }
    return this.conn.then((c) => c.client);
  }

  exec(cmd: string | string[], opts: VmExecOptions = {}): VmExecProcess {
    const argv = [...(typeof cmd === 'string' ? [cmd] : cmd), ...(opts.args ?? [])];
    if (argv.length === 0 || typeof argv[0] !== 'string' || argv[0] === '') throw new TypeError('vm.exec: the command must be a non-empty string');
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const stdin = new PassThrough();
    stdin.on('error', () => {});
    const given = opts.stdin;
    if (given instanceof Readable) given.pipe(stdin);
    else if (given !== undefined) stdin.end(typeof given === 'string' ? Buffer.from(given) : given);
    let pidRes!: (n: number) => void;
    let pidRej!: (e: Error) => void;
    let exitRes!: (s: ExitStatus) => void;
    let exitRej!: (e: Error) => void;
    const pid = new Promise<number>((res, rej) => ((pidRes = res), (pidRej = rej)));
    const exited = new Promise<ExitStatus>((res, rej) => ((exitRes = res), (exitRej = rej)));
    pid.catch(() => {});
    exited.catch(() => {}); // still rejects for whoever awaits it
    let proc: ReturnType<AgentClient['exec']> | undefined;
    let over = false;
    const early: Array<(p: NonNullable<typeof proc>) => void> = [];
    const fail = (e: Error): void => {
      if (over) return;
      over = true;
      pidRej(e);
      exitRej(e);
      // Unpiped first: pipe()'s own 'error' listener on a destination is not someone listening.
      proc?.stdout.unpipe(stdout);
      proc?.stderr.unpipe(stderr);
      destroyWith(stdout, e);
      destroyWith(stderr, e);
      stdin.destroy();
    };
    const { args: _a, timeoutMs, killSignal, agentTimeoutMs, port, stdin: _s, ...execOpts } = opts;
    this.client({ port, timeoutMs: agentTimeoutMs }).then(
      (client) => {
        if (over) return;
        let p: NonNullable<typeof proc>;
        try {
          p = client.exec(argv, { ...execOpts, stdin: stdin });
        } catch (e) {
          return fail(e as Error);
        }
        proc = p;
        p.stdout.pipe(stdout);
        p.stderr.pipe(stderr);
        let timer: NodeJS.Timeout | undefined;
        p.pid.then((n) => {
          pidRes(n);
          if (timeoutMs !== undefined && timeoutMs > 0) timer = setTimeout(() => p.kill(killSignal ?? 'SIGKILL'), timeoutMs);
        }, () => {});
        p.exited.then(
          (st) => {
            clearTimeout(timer);
            over = true;
            // Resolved once the output has been handed on (the agent sends EXIT after both streams' EOF).
            let ends = 2;
            const done = (): void => {
              if (--ends === 0) exitRes(st);
            };
            for (const s of [stdout, stderr]) {
              if (s.writableFinished || s.destroyed) done();
              else s.once('finish', done).once('close', done);
            }
          },
          (e: Error) => {
            clearTimeout(timer);
            fail(e);
          },
        );
        for (const f of early.splice(0)) f(p);
      },
      (e: Error) => fail(e),
    );
    const later = (f: (p: NonNullable<typeof proc>) => void): void => {
      if (over) return;
      if (proc) f(proc);
      else early.push(f);
    };
    return {
      stdout,
      stderr,
      stdin,
      pid,
      exited,
      kill: (signal = 'SIGTERM') => later((p) => p.kill(signal)),
      resize: (rows, cols) => later((p) => p.resize(rows, cols)),
    };
  }

  async writeFile(path: string, data: string | Uint8Array | AsyncIterable<Uint8Array>, opts: { mode?: number } & AgentWaitOptions = {}): Promise<void> {
    const c = await this.client(opts);
    await c.writeFile(path, data, { mode: opts.mode });
  }

  async readFile(path: string, opts: AgentWaitOptions = {}): Promise<Buffer> {
    const c = await this.client(opts);
    return c.readFile(path);
  }

  /** A guest file as a stream, with its mode and size. */
  async readFileStream(path: string, opts: AgentWaitOptions = {}): Promise<{ stream: Readable; info: Promise<FileInfo> }> {
    const c = await this.client(opts);
    return c.readFileStream(path);
  }

  /** The VM stopped: close the connection (its operations fail) and make no new one. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const conn = this.conn;
    this.conn = undefined;
    conn?.then(({ socket }) => socket.destroy(), () => {});
  }
}

/** What runCommand needs of a VM (VM itself; a fake in the unit tests). */
export interface AgentVm {
  agentClient(o: AgentWaitOptions): Promise<AgentClient>;
  wait(): Promise<{ reason: string; exitCode: number; detail?: string }>;
}

function vmEnd(e: { reason: string; detail?: string }): string {
  return e.detail ? `${e.reason}: ${e.detail}` : e.reason;
}

/**
 * `kindling run -- CMD` through the agent: wait for it (`agentTimeoutMs`), run `argv` attached to
 * `io` (runAttached: stdout, stderr, stdin with its EOF), and give the shell's status for it
 * (128+N when killed by signal N), or one line saying why the command could not be run to its end
 * (the agent never answered, the VM ended first, the connection was lost).
 */
export async function runCommand(
  vm: AgentVm,
  argv: string[],
  io: AttachedStreams,
  o: AgentWaitOptions = {},
): Promise<{ status: number } | { error: string }> {
  const ended = vm.wait().then((exit) => ({ exit }));
  const c = await Promise.race([
    vm.agentClient(o).then(
      (client) => ({ client }),
      (e: Error) => ({ error: e.message }),
    ),
    ended,
  ]);
  if ('exit' in c) return { error: `the guest ended (${vmEnd(c.exit)}) before its agent answered` };
  if ('error' in c) return c;
  const r = await Promise.race([
    runAttached(c.client, argv, io).then(
      (status) => ({ status }),
      (e: Error) => ({ error: `the guest agent's connection was lost while the command ran (${e.message})` }),
    ),
    ended,
  ]);
  if ('exit' in r) return { error: `the guest ended (${vmEnd(r.exit)}) while the command ran` };
  return r;
}
