// Host client of the kindling exec agent (protocol: docs/agent-protocol.md, codec: ./protocol.ts).
//
// Works over any Duplex byte stream: a Unix socket to `kindling-agent --unix PATH` now, vm.vsock's
// connection to the guest's port AGENT_VSOCK_PORT later. One AgentClient multiplexes any number of
// processes and file transfers on one connection, each under its own operation id.
//
// Flow control: each process's stdout and stderr, and each read-file stream, is a Readable whose
// credit (WINDOW frames) is returned to the agent only as the consumer takes the data, so a reader
// that stops reading stops the guest process's output at the agent (at most OUTPUT_WINDOW bytes in
// flight per stream plus the Readable's own buffer). Stdin is a Writable that sends only within the
// credit the agent grants (STDIN_WINDOW) and waits for the connection's 'drain'.
import { once } from 'node:events';
import { constants as osConstants } from 'node:os';
import { type Duplex, Readable, Writable } from 'node:stream';
import {
  AGENT_CHUNK,
  AgentProtocolError,
  EXEC_F_CLEAR_ENV,
  EXEC_F_TTY,
  encodeExec,
  encodeFrame,
  encodeReadFile,
  encodeWriteFile,
  type Frame,
  FrameDecoder,
  T,
  u32s,
} from './protocol.js';

/** Output credit per stream (stdout, stderr, read-file data). */
export const OUTPUT_WINDOW = 256 * 1024;

export interface ExecOptions {
  /** Added to (overriding) the agent's environment; with clearEnv, the whole environment. */
  env?: Record<string, string>;
  clearEnv?: boolean;
  /** Working directory in the guest (default: the agent's, `/`). */
  cwd?: string;
  /** Data for stdin, then EOF; without it, write to `proc.stdin` (end() sends EOF). */
  stdin?: string | Uint8Array | Readable;
  /** Run on a new pseudo-terminal (stdout and stderr both arrive on stdout). */
  tty?: boolean | { rows: number; cols: number };
}

export interface ExitStatus {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  /** Signal name ('SIGKILL'), or null. */
  signal: NodeJS.Signals | null;
}

export interface ExecProcess {
  stdout: Readable;
  stderr: Readable;
  stdin: Writable;
  /** The guest pid, once started (rejects as `exited` does if the command could not be started). */
  pid: Promise<number>;
  exited: Promise<ExitStatus>;
  /** Send a signal (name or number; default SIGTERM). */
  kill(signal?: NodeJS.Signals | number): void;
  /** Terminal size of a TTY process. */
  resize(rows: number, cols: number): void;
}

export interface FileInfo {
  mode: number;
  size: number;
}

/** An error the agent reported (ERROR frame): `errno` is the guest's errno value. */
export class AgentError extends Error {
  override name = 'AgentError';
  constructor(message: string, readonly errno: number) {
    super(message);
  }
}

const SIGNAL_NUMBERS: Record<string, number> = osConstants.signals;
function signalName(n: number): NodeJS.Signals | null {
  for (const [k, v] of Object.entries(SIGNAL_NUMBERS)) if (v === n) return k as NodeJS.Signals;
  return null;
}
function signalNumber(s: NodeJS.Signals | number): number {
  if (typeof s === 'number') return s;
  const n = SIGNAL_NUMBERS[s];
  if (n === undefined) throw new TypeError(`unknown signal ${s}`);
  return n;
}

interface OpHandler {
  frame(f: Frame): void;
  fail(e: Error): void;
}

/** A Readable fed by agent frames; returns credit to the agent as its consumer reads. */
class CreditedReadable extends Readable {
  private owed = 0;
  private held = false;
  constructor(private grant: (n: number) => void) {
    super({ highWaterMark: OUTPUT_WINDOW });
  }
  deliver(data: Buffer): void {
    if (this.destroyed) {
      // Nobody will read this stream again: discard, but keep the process running (a destroyed
      // stdout must not stall the process on a full window, nor hold back its EXIT).
      this.grant(data.length);
      return;
    }
    this.owed += data.length;
    if (this.push(data)) this.repay();
    else this.held = true;
  }
  override _read(): void {
    if (this.held) {
      this.held = false;
      this.repay();
    }
  }
  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    const n = this.owed;
    this.owed = 0;
    if (n) this.grant(n);
    cb(err);
  }
  private repay(): void {
    if (this.owed >= AGENT_CHUNK || this.readableLength === 0) {
      const n = this.owed;
      this.owed = 0;
      if (n) this.grant(n);
    }
  }
}

export class AgentClient {
  private readonly decoder = new FrameDecoder();
  private readonly ops = new Map<number, OpHandler>();
  private nextId = 1;
  private closedError: Error | undefined;
  /** Resolves with the agent's protocol version and maximum payload when its HELLO arrives. */
  readonly hello: Promise<{ version: number; maxPayload: number }>;
  private helloResolve!: (v: { version: number; maxPayload: number }) => void;
  private helloReject!: (e: Error) => void;

  constructor(private readonly sock: Duplex) {
    this.hello = new Promise((res, rej) => {
      this.helloResolve = res;
      this.helloReject = rej;
    });
    this.hello.catch(() => {});
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', (e: Error) => this.shutdown(new AgentError(`agent connection: ${e.message}`, 0)));
    sock.on('close', () => this.shutdown(new AgentError('agent connection closed', 0)));
    sock.on('end', () => this.shutdown(new AgentError('agent connection closed', 0)));
  }

  /** Wait for the agent's HELLO, failing after `ms` (a guest that never starts the agent). */
  async ready(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new AgentError(`the guest agent did not answer within ${ms} ms`, 0)), ms);
    });
    try {
      await Promise.race([this.hello, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(d: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(d);
    } catch (e) {
      this.shutdown(e instanceof AgentProtocolError ? e : new AgentProtocolError(String(e)));
      this.sock.destroy();
      return;
    }
    for (const f of frames) {
      if (f.id === 0) {
        if (f.type === T.HELLO && f.payload.length >= 8) this.helloResolve({ version: f.payload.readUInt32LE(0), maxPayload: f.payload.readUInt32LE(4) });
        else if (f.type === T.ERROR) this.shutdown(errorOf(f));
        continue;
      }
      this.ops.get(f.id)?.frame(f);
    }
  }

  private shutdown(e: Error): void {
    if (this.closedError) return;
    this.closedError = e;
    this.helloReject(e);
    for (const op of [...this.ops.values()]) op.fail(e);
    this.ops.clear();
  }

  private send(type: number, id: number, payload?: Uint8Array): boolean {
    if (this.closedError || this.sock.destroyed) return true;
    return this.sock.write(encodeFrame(type, id, payload));
  }

  private async drain(): Promise<void> {
    if (this.closedError) throw this.closedError;
    await Promise.race([once(this.sock, 'drain'), once(this.sock, 'close')]);
    if (this.closedError) throw this.closedError;
  }

  private allocId(h: OpHandler): number {
    if (this.closedError) throw this.closedError;
    while (this.nextId === 0 || this.ops.has(this.nextId)) this.nextId = (this.nextId + 1) >>> 0;
    const id = this.nextId;
    this.nextId = (this.nextId + 1) >>> 0;
    this.ops.set(id, h);
    return id;
  }

  exec(argv: string[], opts: ExecOptions = {}): ExecProcess {
    let id = 0;
    let stdinCredit = 0;
    let creditWaiter: (() => void) | undefined;
    let done = false;
    let started = false;
    let pidRes!: (n: number) => void;
    let pidRej!: (e: Error) => void;
    let exitRes!: (s: ExitStatus) => void;
    let exitRej!: (e: Error) => void;
    const pid = new Promise<number>((res, rej) => ((pidRes = res), (pidRej = rej)));
    const exited = new Promise<ExitStatus>((res, rej) => ((exitRes = res), (exitRej = rej)));
    pid.catch(() => {});
    exited.catch(() => {}); // still rejects for whoever awaits it
    const stdout = new CreditedReadable((n) => this.send(T.WINDOW, id, u32s(n, 0)));
    const stderr = new CreditedReadable((n) => this.send(T.WINDOW, id, u32s(0, n)));
    const finish = (e?: Error): void => {
      if (done) return;
      done = true;
      this.ops.delete(id);
      creditWaiter?.();
      if (e) {
        pidRej(e);
        exitRej(e);
        destroyWith(stdout, e);
        destroyWith(stderr, e);
      }
    };
    const waitCredit = async (): Promise<void> => {
      while (stdinCredit === 0 && !done) await new Promise<void>((res) => (creditWaiter = res));
      creditWaiter = undefined;
    };
    const stdin = new Writable({
      highWaterMark: AGENT_CHUNK,
      write: (chunk: Buffer, _enc, cb) => {
        void (async () => {
          let off = 0;
          while (off < chunk.length) {
            await waitCredit();
            if (done) return cb(); // the process is gone: input is dropped, as for a closed pipe
            const n = Math.min(chunk.length - off, stdinCredit, AGENT_CHUNK);
            stdinCredit -= n;
            const ok = this.send(T.STDIN, id, chunk.subarray(off, off + n));
            off += n;
            if (!ok) await this.drain();
          }
          cb();
        })().catch((e: Error) => cb(done ? undefined : e));
      },
      final: (cb) => {
        if (!done) this.send(T.STDIN, id);
        cb();
      },
    });
    stdin.on('error', () => {});
    id = this.allocId({
      frame: (f) => {
        switch (f.type) {
          case T.STARTED:
            started = true;
            pidRes(f.payload.readUInt32LE(0));
            break;
          case T.STDOUT:
            stdout.deliver(f.payload);
            break;
          case T.STDERR:
            stderr.deliver(f.payload);
            break;
          case T.STDIN_WINDOW:
            stdinCredit += f.payload.readUInt32LE(0);
            creditWaiter?.();
            break;
          case T.EXIT: {
            const kind = f.payload.readUInt32LE(0);
            const val = f.payload.readUInt32LE(4);
            finish();
            stdout.push(null);
            stderr.push(null);
            exitRes(kind === 1 ? { code: null, signal: signalName(val) } : { code: val, signal: null });
            break;
          }
          case T.ERROR:
            // Before STARTED: the process could not be started. After it: a refused request such as
            // an invalid signal number, which does not end the process.
            if (!started) finish(errorOf(f));
            break;
        }
      },
      fail: (e) => finish(e),
    });
    const tty = opts.tty;
    const env = Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`);
    this.send(
      T.EXEC,
      id,
      encodeExec({
        argv,
        env,
        cwd: opts.cwd ?? '',
        flags: (tty ? EXEC_F_TTY : 0) | (opts.clearEnv ? EXEC_F_CLEAR_ENV : 0),
        rows: typeof tty === 'object' ? tty.rows : tty ? 24 : 0,
        cols: typeof tty === 'object' ? tty.cols : tty ? 80 : 0,
        window: OUTPUT_WINDOW,
      }),
    );
    const input = opts.stdin;
    if (input instanceof Readable) input.pipe(stdin);
    else if (input !== undefined) stdin.end(typeof input === 'string' ? Buffer.from(input) : input);
    return {
      stdout,
      stderr,
      stdin,
      pid,
      exited,
      kill: (signal = 'SIGTERM') => {
        if (!done) this.send(T.SIGNAL, id, u32s(signalNumber(signal)));
      },
      resize: (rows, cols) => {
        if (done) return;
        const b = Buffer.alloc(4);
        b.writeUInt16LE(rows, 0);
        b.writeUInt16LE(cols, 2);
        this.send(T.RESIZE, id, b);
      },
    };
  }

  /** Create or truncate `path` in the guest with `mode` (default 0644) and write `data` to it. */
  async writeFile(path: string, data: string | Uint8Array | AsyncIterable<Uint8Array>, opts: { mode?: number } = {}): Promise<void> {
    let failed: Error | undefined;
    let settle!: { res: () => void; rej: (e: Error) => void };
    const result = new Promise<void>((res, rej) => (settle = { res, rej }));
    result.catch(() => {});
    const id = this.allocId({
      frame: (f) => {
        this.ops.delete(id);
        if (f.type === T.DONE) settle.res();
        else settle.rej((failed = f.type === T.ERROR ? errorOf(f) : new AgentProtocolError(`unexpected frame ${f.type} for writeFile`)));
      },
      fail: (e) => {
        failed = e;
        settle.rej(e);
      },
    });
    this.send(T.WRITE_FILE, id, encodeWriteFile(path, opts.mode ?? 0o644));
    const sendChunk = async (b: Uint8Array): Promise<void> => {
      for (let off = 0; off < b.length && !failed; off += AGENT_CHUNK) {
        if (!this.send(T.WRITE_DATA, id, b.subarray(off, off + AGENT_CHUNK))) await this.drain();
      }
    };
    if (typeof data === 'string') await sendChunk(Buffer.from(data));
    else if (data instanceof Uint8Array) await sendChunk(data);
    else for await (const c of data) {
      if (failed) break;
      await sendChunk(typeof c === 'string' ? Buffer.from(c) : c);
    }
    if (!failed) this.send(T.WRITE_DATA, id);
    return result;
  }

  /** Stream a guest file: `info` resolves with its mode and size once opened. */
  readFileStream(path: string): { stream: Readable; info: Promise<FileInfo> } {
    let id = 0;
    let infoRes!: (i: FileInfo) => void;
    let infoRej!: (e: Error) => void;
    const info = new Promise<FileInfo>((res, rej) => ((infoRes = res), (infoRej = rej)));
    info.catch(() => {});
    const stream = new CreditedReadable((n) => this.send(T.WINDOW, id, u32s(n, 0)));
    const fail = (e: Error): void => {
      this.ops.delete(id);
      infoRej(e);
      destroyWith(stream, e);
    };
    id = this.allocId({
      frame: (f) => {
        if (f.type === T.FILE_INFO) infoRes({ mode: f.payload.readUInt32LE(0), size: f.payload.readUInt32LE(4) + f.payload.readUInt32LE(8) * 2 ** 32 });
        else if (f.type === T.FILE_DATA) {
          if (f.payload.length) stream.deliver(f.payload);
          else {
            this.ops.delete(id);
            stream.push(null);
          }
        } else if (f.type === T.ERROR) fail(errorOf(f));
      },
      fail,
    });
    this.send(T.READ_FILE, id, encodeReadFile(path, OUTPUT_WINDOW));
    return { stream, info };
  }

  /** A whole guest file as a Buffer. */
  async readFile(path: string): Promise<Buffer> {
    const { stream } = this.readFileStream(path);
    const parts: Buffer[] = [];
    for await (const c of stream) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }
}

/** Destroy with the error only when someone listens for it (an unheard 'error' would crash the process). */
function destroyWith(r: Readable, e: Error): void {
  if (r.listenerCount('error') > 0) r.destroy(e);
  else r.destroy();
}

function errorOf(f: Frame): AgentError {
  const errno = f.payload.length >= 4 ? f.payload.readInt32LE(0) : 0;
  return new AgentError(`guest agent: ${f.payload.subarray(4).toString('utf8')}`, errno);
}

/** The shell's exit status for a process: its code, or 128 + the signal number when killed. */
export function shellStatus(s: ExitStatus): number {
  if (s.code !== null) return s.code;
  const n = s.signal ? SIGNAL_NUMBERS[s.signal] : undefined;
  return 128 + (n ?? 0);
}

export interface AttachedStreams {
  stdin?: Readable;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/**
 * Run `argv` with its stdio attached to host streams, as `kindling run -- CMD` does: stdout to
 * `stdout`, stderr to `stderr`, `stdin` to the command (its end is the command's EOF; without it the
 * command gets EOF at once). Resolves with shellStatus() once the command's output has been written.
 */
export async function runAttached(client: AgentClient, argv: string[], io: AttachedStreams, opts: Omit<ExecOptions, 'stdin'> = {}): Promise<number> {
  const p = client.exec(argv, { ...opts, stdin: io.stdin ?? '' });
  const copied = (r: Readable, w: NodeJS.WritableStream): Promise<void> =>
    new Promise((res, rej) => {
      r.on('error', rej);
      r.on('end', res);
      r.pipe(w, { end: false });
    });
  const [status] = await Promise.all([p.exited, copied(p.stdout, io.stdout), copied(p.stderr, io.stderr)]);
  io.stdin?.unpipe(p.stdin);
  return shellStatus(status);
}
