// The kindling exec-agent wire protocol (docs/agent-protocol.md; the agent is guest/agent/agent.c).
//
// A connection carries frames both ways. Frame = 12-byte header, then `len` payload bytes; all
// integers little-endian:
//   u32 len (<= AGENT_MAX_PAYLOAD) | u8 type | u8 reserved[3] (zero) | u32 id
// `id` names an operation (a process or a file transfer) chosen by the client, non-zero; id 0 is the
// connection itself (HELLO, connection-level ERROR). FrameDecoder is the host half of the parser whose
// C half is parse_frame() in agent.c; the two are compared by a differential property
// (test/unit/agent-codec.test.ts, through the agent's --selftest-parse mode).

export const AGENT_VERSION = 1;
/** The vsock port the default guest's agent listens on. */
export const AGENT_VSOCK_PORT = 10789;
export const FRAME_HEADER = 12;
export const AGENT_MAX_PAYLOAD = 1 << 20;
/** Data frames the client sends are at most this long (the agent reads at most this much per frame). */
export const AGENT_CHUNK = 65536;

export const T = {
  // client → agent
  EXEC: 0x10,
  STDIN: 0x11,
  SIGNAL: 0x12,
  WINDOW: 0x13,
  RESIZE: 0x14,
  WRITE_FILE: 0x20,
  WRITE_DATA: 0x21,
  READ_FILE: 0x22,
  // agent → client
  HELLO: 0x01,
  STARTED: 0x30,
  STDOUT: 0x31,
  STDERR: 0x32,
  STDIN_WINDOW: 0x33,
  EXIT: 0x34,
  FILE_INFO: 0x35,
  FILE_DATA: 0x36,
  DONE: 0x37,
  ERROR: 0x3f,
} as const;

export const EXEC_F_TTY = 1;
export const EXEC_F_CLEAR_ENV = 2;
const EXEC_F_KNOWN = EXEC_F_TTY | EXEC_F_CLEAR_ENV;

export interface Frame {
  type: number;
  id: number;
  payload: Buffer;
}

/** The one error the codec throws: the byte stream is not a valid frame sequence. */
export class AgentProtocolError extends Error {
  override name = 'AgentProtocolError';
  /** The complete frames that came before the bad bytes in the push() that threw. */
  frames: Frame[] = [];
}

export function encodeFrame(type: number, id: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  if (payload.length > AGENT_MAX_PAYLOAD) throw new RangeError(`agent frame payload too long (${payload.length} bytes, max ${AGENT_MAX_PAYLOAD})`);
  const b = Buffer.allocUnsafe(FRAME_HEADER + payload.length);
  b.writeUInt32LE(payload.length, 0);
  b[4] = type & 0xff;
  b[5] = b[6] = b[7] = 0;
  b.writeUInt32LE(id >>> 0, 8);
  b.set(payload, FRAME_HEADER);
  return b;
}

/**
 * Incremental frame parser: push() bytes in any chunking, get complete frames back. A bad header
 * (len > AGENT_MAX_PAYLOAD or a non-zero reserved byte) throws AgentProtocolError, and every later
 * push() throws it again (the stream cannot be resynchronised). Holds at most one partial frame.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private have = 0;
  private failed: AgentProtocolError | undefined;

  /** Bytes held that do not yet form a complete frame. */
  get pending(): number {
    return this.have;
  }

  push(chunk: Uint8Array): Frame[] {
    if (this.failed) {
      this.failed.frames = [];
      throw this.failed;
    }
    if (chunk.length) {
      this.chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
      this.have += chunk.length;
    }
    const out: Frame[] = [];
    for (;;) {
      if (this.have < FRAME_HEADER) break;
      const head = this.peek(FRAME_HEADER);
      const len = head.readUInt32LE(0);
      if (len > AGENT_MAX_PAYLOAD) this.fail(`frame length ${len} exceeds ${AGENT_MAX_PAYLOAD}`, out);
      if (head[5] !== 0 || head[6] !== 0 || head[7] !== 0) this.fail('non-zero reserved header bytes', out);
      if (this.have - FRAME_HEADER < len) break;
      const all = this.take(FRAME_HEADER + len);
      out.push({ type: all[4], id: all.readUInt32LE(8), payload: all.subarray(FRAME_HEADER) });
    }
    return out;
  }

  private fail(why: string, before: Frame[]): never {
    this.failed = new AgentProtocolError(`agent protocol error: ${why}`);
    this.failed.frames = before;
    this.chunks = [];
    this.have = 0;
    throw this.failed;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0].subarray(0, n);
  }

  private take(n: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks);
      out = all.subarray(0, n);
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.have -= n;
    return out;
  }
}

export interface ExecRequest {
  argv: string[];
  env: string[];
  cwd: string;
  flags: number;
  rows: number;
  cols: number;
  /** Initial output credit for each of stdout and stderr. */
  window: number;
}

function cstr(s: string, what: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.includes(0)) throw new TypeError(`${what} contains a NUL byte`);
  return Buffer.concat([b, Buffer.alloc(1)]);
}

/** EXEC payload: u32 flags, u16 rows, u16 cols, u32 window, u32 argc, u32 envc, then NUL-terminated cwd, argv…, env… */
export function encodeExec(r: ExecRequest): Buffer {
  if (r.argv.length === 0 || r.argv[0] === '') throw new TypeError('exec: argv[0] must be a non-empty string');
  for (const e of r.env) if (!e.includes('=')) throw new TypeError(`exec: environment entry without '=': ${JSON.stringify(e)}`);
  const head = Buffer.alloc(20);
  head.writeUInt32LE(r.flags >>> 0, 0);
  head.writeUInt16LE(r.rows & 0xffff, 4);
  head.writeUInt16LE(r.cols & 0xffff, 6);
  head.writeUInt32LE(r.window >>> 0, 8);
  head.writeUInt32LE(r.argv.length, 12);
  head.writeUInt32LE(r.env.length, 16);
  return Buffer.concat([head, cstr(r.cwd, 'exec: cwd'), ...r.argv.map((a) => cstr(a, 'exec: an argument')), ...r.env.map((e) => cstr(e, 'exec: an environment entry'))]);
}

/** The agent's parse_exec() in TypeScript (the differential property checks they agree); undefined = malformed. */
export function decodeExec(p: Buffer): ExecRequest | undefined {
  if (p.length < 20) return undefined;
  const flags = p.readUInt32LE(0);
  const argc = p.readUInt32LE(12);
  const envc = p.readUInt32LE(16);
  if (flags & ~EXEC_F_KNOWN) return undefined;
  if (argc === 0) return undefined;
  const left = p.length - 20;
  if (argc + envc + 1 > left) return undefined;
  const strs: string[] = [];
  let s = 20;
  for (let i = 0; i < 1 + argc + envc; i++) {
    const z = p.indexOf(0, s);
    if (z < 0) return undefined;
    const str = p.subarray(s, z);
    if (i > argc && !str.includes(0x3d)) return undefined;
    strs.push(str.toString('utf8'));
    s = z + 1;
  }
  if (s !== p.length) return undefined;
  if (strs[1] === '') return undefined;
  return { flags, rows: p.readUInt16LE(4), cols: p.readUInt16LE(6), window: p.readUInt32LE(8), cwd: strs[0], argv: strs.slice(1, 1 + argc), env: strs.slice(1 + argc) };
}

export function u32s(...v: number[]): Buffer {
  const b = Buffer.alloc(4 * v.length);
  v.forEach((x, i) => b.writeUInt32LE(x >>> 0, 4 * i));
  return b;
}

/** WRITE_FILE payload: u32 mode, u32 flags (0), NUL-terminated path. */
export function encodeWriteFile(path: string, mode: number): Buffer {
  if (path === '') throw new TypeError('writeFile: empty path');
  return Buffer.concat([u32s(mode & 0o7777, 0), cstr(path, 'writeFile: path')]);
}

/** READ_FILE payload: u32 initial window, NUL-terminated path. */
export function encodeReadFile(path: string, window: number): Buffer {
  if (path === '') throw new TypeError('readFile: empty path');
  return Buffer.concat([u32s(window), cstr(path, 'readFile: path')]);
}
