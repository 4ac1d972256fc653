// The agent frame codec (src/agent/protocol.ts) and, differentially, the agent's own C parser
// (parse_frame/parse_exec in guest/agent/agent.c, driven through `kindling-agent --selftest-parse`).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AGENT_MAX_PAYLOAD,
  AgentProtocolError,
  decodeExec,
  encodeExec,
  encodeFrame,
  type Frame,
  FrameDecoder,
  FRAME_HEADER,
  T,
} from '../../src/agent/protocol.js';
import { runs } from '../fuzz/budget.js';
import { agentSkipReason, type AgentHarness, buildAgent, startAgent } from './agent-harness.js';

type Outcome = { frames: Frame[]; error: boolean; rest: number };

function decodeAll(bytes: Uint8Array, chunks: number[]): Outcome {
  const d = new FrameDecoder();
  const frames: Frame[] = [];
  let off = 0;
  let i = 0;
  try {
    while (off < bytes.length) {
      const n = Math.max(1, chunks.length ? chunks[i++ % chunks.length] : bytes.length);
      frames.push(...d.push(bytes.subarray(off, off + n)));
      off += n;
    }
    frames.push(...d.push(new Uint8Array(0)));
  } catch (e) {
    if (!(e instanceof AgentProtocolError)) throw e;
    return { frames: [...frames, ...e.frames], error: true, rest: 0 };
  }
  return { frames, error: false, rest: d.pending };
}

const arbExecReq = fc.record({
  argv: fc.array(fc.string({ minLength: 1, maxLength: 8 }).filter((s) => !s.includes('\0')), { minLength: 1, maxLength: 4 }),
  env: fc.array(fc.tuple(fc.stringMatching(/^[A-Z_]{1,5}$/), fc.string({ maxLength: 6 }).filter((s) => !s.includes('\0'))).map(([k, v]) => `${k}=${v}`), { maxLength: 3 }),
  cwd: fc.string({ maxLength: 8 }).filter((s) => !s.includes('\0')),
  flags: fc.integer({ min: 0, max: 3 }),
  rows: fc.integer({ min: 0, max: 0xffff }),
  cols: fc.integer({ min: 0, max: 0xffff }),
  window: fc.nat(),
});

/** A byte segment of a frame stream: valid frames, EXEC frames (valid or damaged), bad headers, raw bytes. */
const arbSegment: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.record({ type: fc.integer({ min: 0, max: 255 }), id: fc.nat(), payload: fc.uint8Array({ maxLength: 40 }) }).map((f) => encodeFrame(f.type, f.id, f.payload)),
  fc.record({ req: arbExecReq, cut: fc.nat(), flip: fc.option(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }))), id: fc.nat() }).map(({ req, cut, flip, id }) => {
    const p = Buffer.from(encodeExec(req));
    const q = cut % 4 === 0 ? p.subarray(0, cut % (p.length + 1)) : p;
    if (flip) q[flip[0] % Math.max(1, q.length)] = flip[1];
    return encodeFrame(T.EXEC, id, q);
  }),
  // Hand-built EXEC payloads: entries without '=', empty argv[0], trailing bytes after the last NUL,
  // and counts that mostly match the strings (so the entries themselves get checked) but may be off.
  fc
    .record({
      flags: fc.constantFrom(0, 1, 2, 3, 4),
      argv: fc.array(fc.constantFrom('', 'a', 'sh', 'K=V', '/tmp'), { minLength: 1, maxLength: 3 }),
      env: fc.array(fc.constantFrom('K=V', 'noeq', '=x', '', 'A=', 'a'), { maxLength: 3 }),
      skew: fc.constantFrom(0, 0, 0, 0, 1, -1, 2),
      tail: fc.constantFrom('', '', 'x', 'ab'),
      id: fc.nat(),
    })
    .map(({ flags, argv, env, skew, tail, id }) => {
      const head = Buffer.alloc(20);
      head.writeUInt32LE(flags, 0);
      head.writeUInt32LE(argv.length, 12);
      head.writeUInt32LE(Math.max(0, env.length + skew), 16);
      return encodeFrame(T.EXEC, id, Buffer.concat([head, ...[...argv, ...env].map((x) => Buffer.from(x + '\0')), Buffer.from(tail)]));
    }),
  fc.record({ len: fc.constantFrom(AGENT_MAX_PAYLOAD, AGENT_MAX_PAYLOAD + 1, 0xffffffff), rsv: fc.integer({ min: 0, max: 7 }) }).map(({ len, rsv }) => {
    const b = Buffer.alloc(FRAME_HEADER);
    b.writeUInt32LE(len, 0);
    b[4] = T.STDIN;
    b[5 + (rsv % 3)] = rsv >= 4 ? 1 : 0;
    return b;
  }),
  fc.uint8Array({ maxLength: 30 }),
);
const arbStream = fc.array(arbSegment, { maxLength: 8 }).map((s) => Buffer.concat(s));

describe('agent frame codec (TypeScript)', () => {
  it('property: any bytes in any chunking decode as in one piece; only AgentProtocolError is thrown', () => {
    fc.assert(
      fc.property(fc.oneof(arbStream, fc.uint8Array({ maxLength: 200 })), fc.array(fc.integer({ min: 1, max: 40 }), { maxLength: 6 }), (bytes, chunks) => {
        const whole = decodeAll(bytes, []);
        const parts = decodeAll(bytes, chunks);
        expect(parts.error).toBe(whole.error);
        expect(parts.rest).toBe(whole.rest);
        expect(parts.frames.map((f) => [f.type, f.id, Buffer.from(f.payload).toString('hex')])).toEqual(whole.frames.map((f) => [f.type, f.id, Buffer.from(f.payload).toString('hex')]));
      }),
      { numRuns: runs(500) },
    );
  });

  it('property: every frame sequence round-trips through encode and chunked decode', () => {
    const arbFrame = fc.record({ type: fc.integer({ min: 0, max: 255 }), id: fc.nat(), payload: fc.uint8Array({ maxLength: 300 }) });
    fc.assert(
      fc.property(fc.array(arbFrame, { maxLength: 10 }), fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 5 }), (frames, chunks) => {
        const bytes = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.id, f.payload)));
        const out = decodeAll(bytes, chunks);
        expect(out.error).toBe(false);
        expect(out.rest).toBe(0);
        expect(out.frames.map((f) => ({ type: f.type, id: f.id, payload: new Uint8Array(f.payload) }))).toEqual(frames.map((f) => ({ ...f, payload: new Uint8Array(f.payload) })));
      }),
      { numRuns: runs(300) },
    );
  });

  it('property: EXEC payloads round-trip; damaged ones never throw', () => {
    fc.assert(
      fc.property(arbExecReq, fc.uint8Array({ maxLength: 60 }), (req, junk) => {
        expect(decodeExec(encodeExec(req))).toEqual(req);
        const r = decodeExec(Buffer.from(junk));
        if (r) expect(encodeExec(r)).toEqual(Buffer.from(junk));
      }),
      { numRuns: runs(300) },
    );
  });

  it('boundaries: a payload of exactly AGENT_MAX_PAYLOAD is accepted, one more is refused', () => {
    const ok = Buffer.alloc(FRAME_HEADER);
    ok.writeUInt32LE(AGENT_MAX_PAYLOAD, 0);
    expect(decodeAll(ok, []).error).toBe(false);
    const bad = Buffer.from(ok);
    bad.writeUInt32LE(AGENT_MAX_PAYLOAD + 1, 0);
    expect(decodeAll(bad, []).error).toBe(true);
    const d = new FrameDecoder();
    expect(() => d.push(bad)).toThrow(AgentProtocolError);
    expect(() => d.push(encodeFrame(1, 1))).toThrow(AgentProtocolError);
    expect(() => encodeFrame(1, 1, Buffer.alloc(AGENT_MAX_PAYLOAD + 1))).toThrow(RangeError);
  });
});

const skip = agentSkipReason();
if (skip) console.warn(`SKIPPING the agent C-parser properties (test/unit/agent-codec.test.ts): ${skip}`);

describe.skipIf(skip !== '')('agent C parser (differential, --selftest-parse)', () => {
  let dir = '';
  let bin = '';
  let h: AgentHarness | undefined;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kindling-agent-codec-'));
    const b = buildAgent(dir);
    if (!b.bin) throw new Error(b.why);
    bin = b.bin;
    const r = await startAgent();
    if (typeof r === 'string') throw new Error(r);
    h = r;
  });
  afterAll(async () => {
    await h?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function model(bytes: Buffer): string {
    const out = decodeAll(bytes, []);
    const lines: string[] = [];
    for (const f of out.frames) {
      lines.push(`frame ${f.type} ${f.id} ${f.payload.length}`);
      if (f.type === T.EXEC) {
        const r = decodeExec(Buffer.from(f.payload));
        lines.push(r ? `exec ${r.flags} ${r.rows} ${r.cols} ${r.window} ${r.argv.length} ${r.env.length}` : 'exec bad');
      }
    }
    lines.push(out.error ? 'error' : `rest ${out.rest}`);
    return lines.join('\n') + '\n';
  }

  it('property: the agent parses every byte stream, in any chunking, exactly as the TypeScript codec does', () => {
    fc.assert(
      fc.property(arbStream, fc.integer({ min: 1, max: 255 }), (bytes, chunk) => {
        const r = spawnSync(bin, ['--selftest-parse'], { input: Buffer.concat([Buffer.from([chunk]), bytes]), encoding: 'utf8' });
        expect(r.status).toBe(0);
        expect(r.stdout).toBe(model(bytes));
      }),
      { numRuns: runs(150) },
    );
  });

  it('property: a live agent fed arbitrary frames survives and serves the next connection', async () => {
    await fc.assert(
      fc.asyncProperty(arbStream, async (bytes) => {
        const s = await h!.rawConnect();
        s.on('error', () => {});
        s.on('data', () => {});
        s.write(bytes);
        await new Promise((r) => setTimeout(r, 5));
        s.destroy();
        expect(h!.proc.exitCode).toBe(null);
      }),
      { numRuns: runs(40) },
    );
    const { client } = await h!.connect();
    const p = client.exec(['echo', 'alive']);
    const out: Buffer[] = [];
    for await (const c of p.stdout) out.push(c as Buffer);
    expect(Buffer.concat(out).toString()).toBe('alive\n');
    expect(await p.exited).toEqual({ code: 0, signal: null });
    client.close();
  });
});
