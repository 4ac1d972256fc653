// Test harness for the exec agent: builds guest/agent/agent.c with gcc (static, as the guest build
// does) into a temp dir, starts it on a Unix socket there, connects AgentClients, and removes
// everything afterwards. Without gcc or a static libc the agent tests skip with one loud line.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentClient } from '../../src/agent/client.js';

export const AGENT_SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../guest/agent/agent.c');

export interface AgentHarness {
  dir: string;
  bin: string;
  sock: string;
  proc: ChildProcess;
  stderr: () => string;
  connect(): Promise<{ client: AgentClient; socket: Socket }>;
  rawConnect(): Promise<Socket>;
  stop(): Promise<void>;
}

/** Why the agent cannot be built here (no gcc, no static libc), or '' — decided before tests are collected. */
export function agentSkipReason(): string {
  const r = spawnSync('gcc', ['-print-file-name=libc.a'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return 'gcc is not installed';
  const libc = r.stdout.trim();
  if (!libc.startsWith('/') || !existsSync(libc)) return 'no static libc (libc.a; Debian: libc6-dev)';
  return '';
}

/** Build the agent; returns the binary path or a reason it cannot be built. */
export function buildAgent(dir: string): { bin?: string; why?: string } {
  const bin = join(dir, 'kindling-agent');
  const r = spawnSync('gcc', ['-static', '-Os', '-s', '-Wall', '-Wextra', '-Werror', '-o', bin, AGENT_SRC], { encoding: 'utf8' });
  if (r.error) return { why: `gcc not runnable: ${r.error.message}` };
  if (r.status !== 0) return { why: `gcc failed: ${r.stderr.trim().split('\n').slice(0, 5).join(' | ')}` };
  return { bin };
}

function waitFor(path: string, ms: number): Promise<void> {
  const t0 = Date.now();
  return new Promise((res, rej) => {
    const tick = (): void => {
      if (existsSync(path)) return res();
      if (Date.now() - t0 > ms) return rej(new Error(`agent socket ${path} did not appear`));
      setTimeout(tick, 10);
    };
    tick();
  });
}

export async function startAgent(): Promise<AgentHarness | string> {
  const dir = mkdtempSync(join(tmpdir(), 'kindling-agent-'));
  const b = buildAgent(dir);
  if (!b.bin) {
    rmSync(dir, { recursive: true, force: true });
    return b.why ?? 'agent build failed';
  }
  const bin = b.bin;
  const sock = join(dir, 'agent.sock');
  const proc = spawn(bin, ['--unix', sock], { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: '/usr/bin:/bin', HOME: '/root', AGENT_BASE: 'base' } });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  await waitFor(sock, 5000);
  const sockets: Socket[] = [];
  const rawConnect = (): Promise<Socket> =>
    new Promise((res, rej) => {
      const s = connect(sock);
      sockets.push(s);
      s.once('connect', () => res(s));
      s.once('error', rej);
    });
  return {
    dir,
    bin,
    sock,
    proc,
    stderr: () => err,
    rawConnect,
    async connect() {
      const socket = await rawConnect();
      const client = new AgentClient(socket);
      await client.ready(5000);
      return { client, socket };
    },
    async stop() {
      for (const s of sockets) s.destroy();
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await new Promise((r) => proc.once('exit', r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function collect(r: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(typeof c === 'string' ? Buffer.from(c) : c);
  return Buffer.concat(parts);
}
