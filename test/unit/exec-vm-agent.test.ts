// vm.exec()/writeFile()/readFile()'s host half (src/main/exec.ts) without KVM: VmAgent over a fake
// vm.vsock whose connect() refuses as a guest whose driver or agent is not up yet does, then reaches
// the real exec agent (guest/agent/agent.c, built by test/unit/agent-harness.ts) on a Unix socket.
// Checked: the agent wait retries refusals and silent connects until the deadline and then fails
// with one line; a stopped VM or a VM without vsock fails at once; stdout/stderr/stdin EOF/exit
// codes/127/signals/timeoutMs through the handle; a lost connection is replaced; files both ways.
import { createHash } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_VSOCK_PORT } from '../../src/agent/protocol.js';
import type { VsockApi, VsockListener } from '../../src/devices/virtio/vsock/bridge.js';
import { AgentUnavailableError, connectAgent, VmAgent } from '../../src/main/exec.js';
import { type AgentHarness, agentSkipReason, collect, startAgent } from './agent-harness.js';

const skip = agentSkipReason();
if (skip) console.warn(`SKIPPING vm.exec's agent tests (test/unit/exec-vm-agent.test.ts): ${skip}`);
let h: AgentHarness | undefined;

beforeAll(async () => {
  if (skip) return;
  const r = await startAgent();
  if (typeof r === 'string') throw new Error(r);
  h = r;
});
afterAll(async () => {
  for (const s of opened) s.destroy();
  await h?.stop();
});

const opened: net.Socket[] = [];

/** vm.vsock as a guest that refuses `refusals` connects, then (mode 'agent') reaches the agent. */
class FakeVsock implements VsockApi {
  attempts = 0;
  ports: number[] = [];
  constructor(
    private refusals: number,
    private mode: 'agent' | 'silent' | 'hang' = 'agent',
  ) {}
  connect(port: number): Promise<net.Socket> {
    this.attempts++;
    this.ports.push(port);
    if (this.refusals > 0) {
      this.refusals--;
      return Promise.reject(new Error(`vsock: guest port ${port} refused the connection`));
    }
    if (this.mode === 'hang') return new Promise(() => {});
    if (this.mode === 'silent') {
      // Accepted, but nothing there ever speaks (not the agent): a socket to a server that says nothing.
      return new Promise((res, rej) => {
        const srv = net.createServer((c) => opened.push(c));
        srv.listen(0, '127.0.0.1', () => {
          const s = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
          opened.push(s);
          s.once('connect', () => {
            srv.close();
            res(s);
          });
          s.once('error', rej);
        });
      });
    }
    return new Promise((res, rej) => {
      const s = net.connect(h!.sock);
      opened.push(s);
      s.once('connect', () => res(s));
      s.once('error', rej);
    });
  }
  listen(): VsockListener {
    throw new Error('not used');
  }
}

async function outcome(p: ReturnType<VmAgent['exec']>) {
  const [out, err, st] = await Promise.all([collect(p.stdout), collect(p.stderr), p.exited]);
  return { out: out.toString(), err: err.toString(), ...st };
}

describe.skipIf(skip !== '')('vm.exec over vm.vsock (fake vsock, real agent)', () => {
  it('retries refused connects (driver or agent not up yet) until the agent answers, on port 10789', async () => {
    const v = new FakeVsock(4);
    const a = new VmAgent(v, () => undefined);
    const r = await outcome(a.exec('sh', { args: ['-c', 'echo out; echo err >&2; exit 3'] }));
    expect(r).toEqual({ out: 'out\n', err: 'err\n', code: 3, signal: null });
    expect(v.attempts).toBe(5);
    expect(new Set(v.ports)).toEqual(new Set([AGENT_VSOCK_PORT]));
    // one connection serves later calls
    expect((await outcome(a.exec(['echo', 'again']))).out).toBe('again\n');
    expect(v.attempts).toBe(5);
    a.close();
  });

  it('gives up after the agent timeout with one line naming the port and the last refusal', async () => {
    const v = new FakeVsock(1e9);
    const t0 = Date.now();
    const a = new VmAgent(v, () => undefined);
    const p = a.exec('true', { agentTimeoutMs: 400 });
    const e = await p.exited.then(
      () => undefined,
      (x: Error) => x,
    );
    const took = Date.now() - t0;
    expect(e).toBeInstanceOf(AgentUnavailableError);
    expect(e!.message).toBe(`the guest agent did not answer on vsock port ${AGENT_VSOCK_PORT} within 400 ms (last attempt: vsock: guest port ${AGENT_VSOCK_PORT} refused the connection)`);
    expect(took).toBeGreaterThanOrEqual(390);
    expect(took).toBeLessThan(3000);
    expect(v.attempts).toBeGreaterThan(2); // retried, backing off (20 ms doubling to 250 ms)
    expect(v.attempts).toBeLessThan(20);
    await expect(p.pid).rejects.toThrow(/did not answer/);
    expect(p.stdout.destroyed).toBe(true);
  });

  it('a connect that never completes or a peer that never says HELLO also ends at the deadline', async () => {
    for (const mode of ['hang', 'silent'] as const) {
      const t0 = Date.now();
      await expect(connectAgent(new FakeVsock(0, mode), { timeoutMs: 300 })).rejects.toThrow(/did not answer on vsock port 10789 within 300 ms/);
      expect(Date.now() - t0).toBeLessThan(3000);
    }
  });

  it('a stopped VM or a VM without vsock fails at once', async () => {
    let stopped: string | undefined;
    const v = new FakeVsock(1e9);
    const a = new VmAgent(v, () => stopped);
    const p = a.exec('true', { agentTimeoutMs: 20_000 });
    setTimeout(() => (stopped = 'the VM has stopped'), 50);
    const t0 = Date.now();
    await expect(p.exited).rejects.toThrow('the guest agent cannot be reached: the VM has stopped');
    expect(Date.now() - t0).toBeLessThan(2000);
    await expect(new VmAgent(undefined, () => undefined).readFile('/etc/hostname')).rejects.toThrow(/has no vsock device/);
    a.close();
    await expect(a.writeFile('/x', 'y')).rejects.toThrow(/VM has stopped/);
    expect(() => a.exec('')).toThrow(/non-empty/);
  });

  it('stdin through the handle (EOF on end()), 127 with the shell message, kill() before the pid, timeoutMs', async () => {
    const a = new VmAgent(new FakeVsock(2), () => undefined);
    const cat = a.exec('cat');
    const out = collect(cat.stdout);
    cat.stdin.write('abc');
    cat.stdin.end('def');
    expect((await out).toString()).toBe('abcdef');
    expect(await cat.exited).toEqual({ code: 0, signal: null });
    expect(await outcome(a.exec('no-such-command-kindling', { stdin: '' }))).toEqual({ out: '', err: 'no-such-command-kindling: not found\n', code: 127, signal: null });
    const sl = a.exec('sleep', { args: ['100'] });
    sl.kill('SIGTERM'); // queued: the process does not exist yet
    expect(await outcome(sl)).toMatchObject({ code: null, signal: 'SIGTERM' });
    const t0 = Date.now();
    expect(await outcome(a.exec(['sleep', '100'], { timeoutMs: 200 }))).toMatchObject({ code: null, signal: 'SIGKILL' });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(await outcome(a.exec(['sh', '-c', 'echo $FOO; pwd'], { env: { FOO: 'bar' }, cwd: '/tmp', stdin: '' }))).toMatchObject({ out: 'bar\n/tmp\n', code: 0 });
    a.close();
  });

  it('a lost connection fails its processes, and the next call connects again', async () => {
    const v = new FakeVsock(0);
    const a = new VmAgent(v, () => undefined);
    const sl = a.exec(['sleep', '100']);
    await sl.pid;
    const client = await a.client();
    client.close();
    await expect(sl.exited).rejects.toThrow(/agent connection closed/);
    expect((await outcome(a.exec(['echo', 'back'], { stdin: '' }))).out).toBe('back\n');
    expect(v.attempts).toBe(2);
    a.close();
  });

  it('writeFile/readFile move 8 MiB both ways, byte for byte, with the mode', async () => {
    const a = new VmAgent(new FakeVsock(1), () => undefined);
    const data = Buffer.alloc(8 * 1024 * 1024 + 3);
    for (let i = 0; i + 4 <= data.length; i += 4096) data.writeUInt32LE((i * 2654435761) >>> 0, i);
    const path = join(h!.dir, 'big.bin');
    await a.writeFile(path, data, { mode: 0o600 });
    const back = await a.readFile(path);
    expect(createHash('sha256').update(back).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    const { info, stream } = await a.readFileStream(path);
    expect(await info).toEqual({ mode: 0o600, size: data.length });
    stream.destroy();
    await expect(a.readFile(join(h!.dir, 'missing'))).rejects.toThrow(/guest agent/);
    a.close();
  });
});
