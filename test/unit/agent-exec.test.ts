// The exec agent (guest/agent/agent.c) and its host client (src/agent/client.ts) end to end over a
// Unix socket: the agent is an ordinary Linux program, so it runs on the test host as in a guest.
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentError, type AgentClient, runAttached, shellStatus } from '../../src/agent/client.js';
import { encodeFrame, T } from '../../src/agent/protocol.js';
import { type AgentHarness, agentSkipReason, collect, startAgent } from './agent-harness.js';

let h: AgentHarness | undefined;
let client: AgentClient;
let socket: Socket;
const skip = agentSkipReason();
if (skip) console.warn(`SKIPPING the exec agent tests (test/unit/agent-exec.test.ts): ${skip}`);

beforeAll(async () => {
  if (skip) return;
  const r = await startAgent();
  if (typeof r === 'string') throw new Error(r);
  h = r;
  ({ client, socket } = await h.connect());
});
afterAll(async () => {
  await h?.stop();
});

async function run(argv: string[], opts: Parameters<AgentClient['exec']>[1] = {}) {
  const p = client.exec(argv, opts);
  const [out, err, st] = await Promise.all([collect(p.stdout), collect(p.stderr), p.exited]);
  return { out: out.toString(), err: err.toString(), ...st };
}

describe.skipIf(skip !== '')('kindling-agent over a Unix socket', () => {
  it('separates stdout and stderr and reports the exit code', async () => {
    const r = await run(['sh', '-c', 'echo out; echo err >&2; echo out2; exit 7']);
    expect(r).toEqual({ out: 'out\nout2\n', err: 'err\n', code: 7, signal: null });
    expect(await run(['true'])).toMatchObject({ code: 0, out: '', err: '' });
    expect(await run(['false'])).toMatchObject({ code: 1 });
  });

  it('passes stdin data and EOF (cat, wc -c)', async () => {
    expect(await run(['cat'], { stdin: 'hello\nworld' })).toMatchObject({ out: 'hello\nworld', code: 0 });
    const big = Buffer.alloc(3 * 1024 * 1024 + 17, 'x');
    expect((await run(['wc', '-c'], { stdin: big })).out.trim()).toBe(String(big.length));
    const p = client.exec(['cat']);
    const out = collect(p.stdout);
    p.stdin.write('a');
    p.stdin.write('b');
    p.stdin.end('c');
    expect((await out).toString()).toBe('abc');
    expect(await p.exited).toEqual({ code: 0, signal: null });
  });

  it('a process killed by a signal reports the signal name', async () => {
    const p = client.exec(['sleep', '100']);
    await p.pid;
    p.kill('SIGKILL');
    expect(await p.exited).toEqual({ code: null, signal: 'SIGKILL' });
    const q = client.exec(['sh', '-c', 'kill -TERM $$']);
    expect(await q.exited).toEqual({ code: null, signal: 'SIGTERM' });
  });

  it('a command that does not exist exits 127 with "CMD: not found"', async () => {
    const r = await run(['no-such-command-xyz', 'arg']);
    expect(r).toEqual({ out: '', err: 'no-such-command-xyz: not found\n', code: 127, signal: null });
    const r2 = await run(['/nonexistent/path/cmd']);
    expect(r2).toMatchObject({ code: 127, err: '/nonexistent/path/cmd: not found\n' });
    const r3 = await run(['/etc/passwd']);
    expect(r3.code).toBe(126);
    expect(r3.err).toMatch(/^\/etc\/passwd: Permission denied\n$/);
  });

  it('a TTY process sees a terminal; a pipe process does not', async () => {
    const t = await run(['sh', '-c', 'test -t 0 && test -t 1 && tty && stty size; echo e >&2'], { tty: { rows: 33, cols: 101 } });
    expect(t.code).toBe(0);
    expect(t.out).toMatch(/^\/dev\/pts\/\d+\r\n33 101\r\ne\r\n$/);
    expect(t.err).toBe('');
    const np = await run(['sh', '-c', 'test -t 0 || echo notty']);
    expect(np.out).toBe('notty\n');
    // stdin EOF on a terminal: the VEOF character ends cat's read
    const c = await run(['cat'], { tty: true, stdin: 'typed\n' });
    expect(c.code).toBe(0);
    expect(c.out).toContain('typed');
  });

  it('env (added or replacing) and cwd', async () => {
    const r = await run(['sh', '-c', 'echo "$FOO|$AGENT_BASE|$(pwd)"'], { env: { FOO: 'bar baz' }, cwd: '/tmp' });
    expect(r.out).toBe('bar baz|base|/tmp\n');
    const c = await run(['/usr/bin/env'], { env: { ONLY: '1' }, clearEnv: true });
    expect(c.out).toBe('ONLY=1\n');
    const bad = await run(['true'], { cwd: '/nonexistent-dir' });
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/cannot change directory to \/nonexistent-dir/);
  });

  it('runs several processes at once, on one connection and on several', async () => {
    const t0 = Date.now();
    const procs = Array.from({ length: 8 }, (_, i) => run(['sh', '-c', `sleep 0.3; echo ${i}; exit ${i}`]));
    const second = await h!.connect();
    const other = second.client.exec(['sh', '-c', 'sleep 0.3; echo other']);
    const rs = await Promise.all(procs);
    rs.forEach((r, i) => expect(r).toMatchObject({ out: `${i}\n`, code: i }));
    expect((await collect(other.stdout)).toString()).toBe('other\n');
    expect(Date.now() - t0).toBeLessThan(2500);
    second.client.close();
  });

  it('writes and reads back a 64 MiB file (sha256 equal, mode kept, test RSS bounded)', async () => {
    const path = join(h!.dir, 'big.bin');
    const total = 64 * 1024 * 1024;
    const block = createHash('sha512').update('seed').digest();
    const inHash = createHash('sha256');
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    let maxQueued = 0;
    const b = Buffer.alloc(1 << 20);
    for (let i = 0; i < b.length; i += block.length) block.copy(b, i);
    async function* gen() {
      // one buffer, refilled: writeFile has copied each chunk into frames before asking for the next
      for (let off = 0; off < total; off += 1 << 20) {
        b.writeUInt32LE(off, 0);
        inHash.update(b);
        peak = Math.max(peak, process.memoryUsage().rss);
        yield b;
      }
    }
    const write = socket.write;
    socket.write = function (this: Socket, ...args: Parameters<Socket['write']>) {
      const r = write.apply(this, args);
      maxQueued = Math.max(maxQueued, this.writableLength);
      return r;
    } as Socket['write'];
    try {
      await client.writeFile(path, gen(), { mode: 0o640 });
    } finally {
      socket.write = write;
    }
    expect(statSync(path).size).toBe(total);
    expect(statSync(path).mode & 0o777).toBe(0o640);
    const { stream, info } = client.readFileStream(path);
    const outHash = createHash('sha256');
    let n = 0;
    let maxBuffered = 0;
    for await (const c of stream) {
      outHash.update(c as Buffer);
      n += (c as Buffer).length;
      peak = Math.max(peak, process.memoryUsage().rss);
      maxBuffered = Math.max(maxBuffered, stream.readableLength);
    }
    expect(await info).toEqual({ mode: 0o640, size: total });
    expect(n).toBe(total);
    expect(outHash.digest('hex')).toBe(inHash.digest('hex'));
    // Bounded buffering on the host: writeFile waits for 'drain', so the socket's queue holds at most
    // one frame beyond its high-water mark; the read stream at most its window and one frame.
    expect(maxQueued).toBeGreaterThan(0);
    expect(maxQueued).toBeLessThanOrEqual(socket.writableHighWaterMark + 65536 + 12);
    expect(maxBuffered).toBeLessThanOrEqual(256 * 1024 + 65536);
    // RSS also moves with garbage not yet collected, so this bound is loose: it fails if the file were held.
    expect(peak - rss0).toBeLessThan(128 * 1024 * 1024);
    // the agent's own peak memory stays small too (it streams: nothing is held per file)
    const hwm = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${h!.proc.pid}/status`, 'utf8'))![1]) * 1024;
    console.log(`64 MiB write+read: socket queue max ${maxQueued} B, read buffer max ${maxBuffered} B, test RSS +${((peak - rss0) / 2 ** 20).toFixed(1)} MiB, agent peak RSS ${(hwm / 2 ** 20).toFixed(1)} MiB`);
    expect(hwm).toBeLessThan(16 * 1024 * 1024);
    // small files, modes, errors
    await client.writeFile(join(h!.dir, 'x.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    expect((await run([join(h!.dir, 'x.sh')])).out).toBe('hi\n');
    expect((await client.readFile(join(h!.dir, 'x.sh'))).toString()).toBe('#!/bin/sh\necho hi\n');
    await client.writeFile(join(h!.dir, 'empty'), Buffer.alloc(0));
    expect(readFileSync(join(h!.dir, 'empty')).length).toBe(0);
    await expect(client.readFile(join(h!.dir, 'missing'))).rejects.toThrow(/No such file/);
    await expect(client.writeFile('/nonexistent-dir/f', 'x')).rejects.toBeInstanceOf(AgentError);
    await expect(client.readFile(h!.dir)).rejects.toThrow(/directory/);
  }, 120_000);

  it('a slow reader stops the process at the agent: memory stays flat', async () => {
    // yes(1) writes as fast as it can; nobody reads stdout for a while.
    const p = client.exec(['yes', 'flood-flood-flood']);
    await p.pid;
    await new Promise((r) => setTimeout(r, 300));
    const agentRss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${h!.proc.pid}/status`, 'utf8'))![1]) * 1024;
    const rss1 = agentRss();
    const buffered1 = p.stdout.readableLength;
    await new Promise((r) => setTimeout(r, 700));
    expect(agentRss() - rss1).toBeLessThan(2 * 1024 * 1024);
    expect(p.stdout.readableLength).toBe(buffered1);
    expect(buffered1).toBeLessThanOrEqual(2 * 256 * 1024);
    // then read slowly: data flows, still bounded
    let got = 0;
    for await (const c of p.stdout) {
      got += (c as Buffer).length;
      if (got > 8 * 1024 * 1024) break;
    }
    expect(agentRss() - rss1).toBeLessThan(2 * 1024 * 1024);
    p.kill('SIGKILL');
    expect((await p.exited).signal).toBe('SIGKILL');
  }, 30_000);

  it('a slow writer of stdin is held by the agent’s window, not buffered without bound', async () => {
    // sleep never reads stdin: after the pipe (64 KiB) and the agent's window fill, writes stall.
    const p = client.exec(['sh', '-c', 'sleep 0.8; head -c 1000 >/dev/null; exit 3']);
    let written = 0;
    const chunk = Buffer.alloc(16384);
    const stalled = new Promise<void>((res) => {
      const more = (): void => {
        while (p.stdin.write(chunk)) written += chunk.length;
        written += chunk.length;
        if (written > 64 * 1024 * 1024) return res();
        const t = setTimeout(res, 300);
        p.stdin.once('drain', () => (clearTimeout(t), more()));
      };
      more();
    });
    await stalled;
    expect(written).toBeLessThan(1024 * 1024);
    expect(await p.exited).toEqual({ code: 3, signal: null });
    p.stdin.destroy();
  });

  it('garbage frames close only that connection; the agent keeps serving', async () => {
    const keep = client.exec(['sh', '-c', 'read x; echo got $x']);
    await keep.pid;
    for (const bad of [
      Buffer.from('GET / HTTP/1.1\r\n\r\n'),
      encodeFrame(0x77, 1),
      Buffer.concat([encodeFrame(T.EXEC, 5, Buffer.from('short'))]),
      (() => { const b = encodeFrame(T.STDIN, 1, Buffer.from('x')); b[6] = 1; return b; })(),
      (() => { const b = Buffer.alloc(12); b.writeUInt32LE(0xffffffff, 0); return b; })(),
      encodeFrame(T.SIGNAL, 3, Buffer.alloc(3)),
    ]) {
      const s = await h!.rawConnect();
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      s.write(bad);
      await new Promise((r) => s.once('close', r));
      const all = Buffer.concat(got);
      // HELLO, then an ERROR for the connection (id 0), then the agent closed it
      expect(all[4]).toBe(T.HELLO);
      expect(all.subarray(all.readUInt32LE(0) + 12).toString()).toMatch(/protocol error/);
    }
    // STDIN beyond the window the agent granted (65536) is a protocol error
    {
      const s = await h!.rawConnect();
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      const { encodeExec } = await import('../../src/agent/protocol.js');
      s.write(encodeFrame(T.EXEC, 9, encodeExec({ argv: ['sleep', '100'], env: [], cwd: '', flags: 0, rows: 0, cols: 0, window: 0 })));
      s.write(encodeFrame(T.STDIN, 9, Buffer.alloc(65537)));
      await new Promise((r) => s.once('close', r));
      expect(Buffer.concat(got).toString('latin1')).toMatch(/protocol error: STDIN beyond the granted window/);
    }
    // more than 64 operations on one connection: the 65th gets an ERROR of its own, the rest run
    {
      const c = await h!.connect();
      const many = Array.from({ length: 64 }, () => c.client.exec(['sleep', '100']));
      await Promise.all(many.map((p) => p.pid));
      const extra = c.client.exec(['true']);
      await expect(extra.exited).rejects.toThrow(/too many operations/);
      for (const p of many) p.kill('SIGKILL');
      for (const p of many) expect((await p.exited).signal).toBe('SIGKILL');
      c.client.close();
    }
    // a process on a connection that closes is killed
    const s2 = await h!.connect();
    const orphan = s2.client.exec(['sleep', '100']);
    const opid = await orphan.pid;
    s2.client.close();
    await new Promise((r) => setTimeout(r, 200));
    expect(() => process.kill(opid, 0)).toThrow();
    keep.stdin.end('ok\n');
    expect((await collect(keep.stdout)).toString()).toBe('got ok\n');
    expect((await keep.exited).code).toBe(0);
    expect(h!.proc.exitCode).toBe(null);
  });

  it('runAttached: stdio to host streams, stdin EOF, status 128+signal when killed (kindling run -- CMD)', async () => {
    const sink = (): { w: PassThrough; text: Promise<string> } => {
      const w = new PassThrough();
      return { w, text: collect(w).then((b) => b.toString()) };
    };
    const o = sink();
    const e = sink();
    const code = await runAttached(client, ['sh', '-c', 'tr a-z A-Z; echo oops >&2; exit 5'], { stdin: Readable.from([Buffer.from('abc\n'), Buffer.from('def\n')]), stdout: o.w, stderr: e.w });
    o.w.end();
    e.w.end();
    expect(code).toBe(5);
    expect(await o.text).toBe('ABC\nDEF\n');
    expect(await e.text).toBe('oops\n');
    const o2 = sink();
    expect(await runAttached(client, ['sh', '-c', 'kill -KILL $$'], { stdout: o2.w, stderr: o2.w })).toBe(137);
    expect(await runAttached(client, ['cat'], { stdout: o2.w, stderr: o2.w })).toBe(0); // no stdin: EOF at once
    expect(await runAttached(client, ['no-such-cmd-q'], { stdout: o2.w, stderr: o2.w })).toBe(127);
    o2.w.end();
    expect(await o2.text).toBe('no-such-cmd-q: not found\n');
    expect(shellStatus({ code: null, signal: 'SIGTERM' })).toBe(143);
  });

  it('exec("true") round trip latency (median of 200)', async () => {
    const ts: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t0 = process.hrtime.bigint();
      const p = client.exec(['true']);
      p.stdout.resume();
      p.stderr.resume();
      await p.exited;
      ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    ts.sort((a, b) => a - b);
    const line = `agent exec('true') round trip over a Unix socket: median ${ts[100].toFixed(3)} ms, min ${ts[0].toFixed(3)} ms, max ${ts[199].toFixed(3)} ms (200 runs)`;
    console.log(line);
    writeFileSync(join(h!.dir, 'latency.txt'), line);
    expect(ts[100]).toBeLessThan(100);
  });
});
