// Linux's vsock stack (vsock, vmw_vsock_virtio_transport in user-mode Linux) against
// `kindling vhost-user --device vsock=CID,uds=PATH`, kindling's virtio-vsock device and its
// Firecracker hybrid host side behind a vhost-user socket:
// - host-initiated: the exec agent (build/guests/kindling-agent, the default guest's) runs in UML on
//   AF_VSOCK port 10789; the host connects to the UDS, `CONNECT 10789\n` → `OK <port>\n`, and drives
//   it with src/agent/client.ts: a command's stdout, stderr and exit status, stdin, a file written and
//   read back (64 MiB, compared byte for byte), a signal;
// - guest-initiated: Python's AF_VSOCK socket in UML (the host's /usr/bin/python3 over hostfs)
//   connects to (CID 2, port 5678), which kindling turns into a connection to `<uds>_5678`: the
//   host's listener gets 4 MiB and their SHA-256 and its answer reaches the guest; a connect to port
//   5679, where nothing listens on `<uds>_5679`, is refused in the guest;
// - refusal: CONNECT to a guest port nobody listens on closes the host's connection without OK (as
//   Firecracker does).
import { createHash } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/agent/client.js';
import { ROOT, describeRun, kindlingArgv, runUml, umlHasModule, umlKindlingOrSkipNotice, umlScratch } from './helpers.js';

const VIRTIO_ID_VSOCK = 19;
const AGENT = join(ROOT, 'build', 'guests', 'kindling-agent');
const AGENT_PORT = 10789;
const CID = 3;

const canRun = umlKindlingOrSkipNotice('uml/vsock.test.ts', () => (umlHasModule('vmw_vsock_virtio_transport') ? undefined : "Debian's UML has no vmw_vsock_virtio_transport module"));

const HAS_PYTHON = existsSync('/usr/bin/python3');
if (canRun && !HAS_PYTHON) console.warn('\n!!! UML TEST SKIPPED (uml/vsock.test.ts guest-initiated): /usr/bin/python3 is absent (it is the guest-side AF_VSOCK client) !!!\n');

const scratch = umlScratch(afterEach);

/** A hybrid-vsock host connection to guest port `port`: resolves with the socket after `OK <n>\n`, or with the reply/close that refused it. */
function hybridConnect(uds: string, port: number): Promise<{ sock: net.Socket; ok: string } | { refused: string }> {
  return new Promise((res, rej) => {
    const s = net.connect(uds);
    let got = '';
    const onData = (b: Buffer): void => {
      got += b.toString('latin1');
      const nl = got.indexOf('\n');
      if (nl < 0) return;
      s.off('data', onData);
      s.off('close', onClose);
      const line = got.slice(0, nl);
      const rest = Buffer.from(got.slice(nl + 1), 'latin1');
      if (!line.startsWith('OK ')) return res({ refused: line });

      // Paused before the unshift: in flowing mode with no data listener yet, unshift would emit the
      // bytes after OK (the agent's HELLO, when they share a chunk) to nobody. The caller resumes.
      s.pause();
      if (rest.length) s.unshift(rest);
      res({ sock: s, ok: line });
    };
    const onClose = (): void => res({ refused: got === '' ? '(closed)' : got });
    s.on('data', onData);
    s.on('close', onClose);
    s.on('error', (e) => (got === '' ? res({ refused: `(${(e as NodeJS.ErrnoException).code})` }) : rej(e)));
    s.on('connect', () => s.write(`CONNECT ${port}\n`));
  });
}

describe.skipIf(!canRun)('Linux vsock in user-mode Linux against kindling vhost-user vsock', () => {
  it('host-initiated: the exec agent in UML runs commands, takes stdin, writes and reads files, over CONNECT/OK on the UDS', async () => {
    const dir = scratch.dir('uml-vsock');
    const socket = join(dir, 'vu.sock');
    const uds = join(dir, 'v.sock');
    const b = await scratch.backend(kindlingArgv(socket, `vsock=${CID},uds=${uds}`), socket);
    const results: Record<string, unknown> = {};
    let hostDone!: Promise<void>;
    const run = runUml({
      devices: [{ socket, virtioId: VIRTIO_ID_VSOCK }],
      modules: ['vmw_vsock_virtio_transport'],
      timeoutMs: 150_000,
      script: [
        `${AGENT} --vsock ${AGENT_PORT} & A=$!`,
        'mark agent',
        `i=0; while [ ! -e ${dir}/host-done ] && [ $i -lt 1000 ]; do sleep 0.1; i=$((i+1)); done`,
        'kill $A; wait $A',
        'echo guest-done',
      ].join('\n'),
      onMark: (name) => {
        if (name !== 'agent') return;
        hostDone = (async () => {
          try {
            // The agent may not be listening yet: retry refused connects for a while.
            let c: Awaited<ReturnType<typeof hybridConnect>> = { refused: '' };
            for (let i = 0; i < 100; i++) {
              c = await hybridConnect(uds, AGENT_PORT);
              if ('sock' in c) break;
              await new Promise((r) => setTimeout(r, 100));
            }
            if (!('sock' in c)) throw new Error(`agent never answered: ${c.refused}`);
            results.ok = c.ok;
            const client = new AgentClient(c.sock);
            c.sock.resume();
            await client.ready(10_000);
            const p = client.exec(['sh', '-c', 'read x; echo "out:$x:$(uname -s)"; echo err >&2; exit 7']);
            p.stdin.end('hello\n');
            const out: Buffer[] = [];
            const err: Buffer[] = [];
            p.stdout.on('data', (d: Buffer) => out.push(d));
            p.stderr.on('data', (d: Buffer) => err.push(d));
            results.status = await p.exited;
            results.stdout = Buffer.concat(out).toString();
            results.stderr = Buffer.concat(err).toString();
            const data = Buffer.alloc(64 << 20);
            for (let i = 0; i < data.length; i++) data[i] = (i * 131 + (i >> 12)) & 0xff;
            await client.writeFile(join(dir, 'in-guest.bin'), data, { mode: 0o640 });
            const back = await client.readFile(join(dir, 'in-guest.bin'));
            results.fileSame = back.equals(data);
            results.fileSha = createHash('sha256').update(back).digest('hex');
            const s = client.exec(['sleep', '30']);
            setTimeout(() => s.kill('SIGTERM'), 200);
            results.killed = await s.exited;
            client.close();
            results.refused = await hybridConnect(uds, 999);
          } catch (e) {
            results.error = (e as Error).stack ?? String(e);
          } finally {
            writeFileSync(join(dir, 'host-done'), '');
          }
        })();
      },
    });
    const r = await run;
    await hostDone;
    expect(r.status, describeRun(r) + `\nbackend: ${b.stderr()}`).toBe(0);
    expect(results.error).toBeUndefined();
    expect(results.ok).toMatch(/^OK [0-9]+$/);
    expect(results.stdout).toBe('out:hello:Linux\n');
    expect(results.stderr).toBe('err\n');
    expect(results.status).toEqual({ code: 7, signal: null });
    expect(results.fileSame).toBe(true);
    expect(results.refused).toHaveProperty('refused');
    expect(results.killed).toEqual({ code: null, signal: "SIGTERM" });
  }, 200_000);
  it.skipIf(!HAS_PYTHON)('guest-initiated: a connection to CID 2 port 5678 in UML reaches the host listener on <uds>_5678; port 5679 with no listener is refused', async () => {
    const dir = scratch.dir('uml-vsock-g2h');
    const socket = join(dir, 'vu.sock');
    const uds = join(dir, 'v.sock');
    const N = 4 << 20;
    const got: { bytes?: Buffer } = {};
    const srv = net.createServer((c) => {
      const parts: Buffer[] = [];
      c.on('data', (d: Buffer) => parts.push(d));
      c.on('end', () => {
        got.bytes = Buffer.concat(parts);
        const data = got.bytes.subarray(0, N);
        const sha = got.bytes.subarray(N).toString();
        c.end(`thanks ${data.length} ${createHash('sha256').update(data).digest('hex') === sha ? 'sha-ok' : 'sha-bad'}\n`);
      });
    });
    await new Promise<void>((r) => srv.listen(`${uds}_5678`, r));
    try {
      const b = await scratch.backend(kindlingArgv(socket, `vsock=${CID},uds=${uds}`), socket);
      const py = [
        'import socket, hashlib',
        `data = bytes((i * 7 + (i >> 10)) & 255 for i in range(${N}))`,
        's = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)',
        's.connect((2, 5678))',
        's.sendall(data + hashlib.sha256(data).hexdigest().encode())',
        's.shutdown(socket.SHUT_WR)',
        "r = b''",
        'while True:',
        '    d = s.recv(4096)',
        '    if not d: break',
        '    r += d',
        "print('reply:', r.decode().strip())",
        't = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)',
        'try:',
        '    t.connect((2, 5679))',
        "    print('5679 connected')",
        'except OSError as e:',
        "    print('5679 refused', e.errno)",
      ].join('\n');
      writeFileSync(join(dir, 'g.py'), py);
      const r = await runUml({
        devices: [{ socket, virtioId: VIRTIO_ID_VSOCK }],
        modules: ['vmw_vsock_virtio_transport'],
        memMiB: 256,
        timeoutMs: 150_000,
        script: `/usr/bin/python3 ${join(dir, 'g.py')}`,
      });
      expect(r.status, describeRun(r) + `\nbackend: ${b.stderr()}`).toBe(0);
      expect(r.output).toContain(`reply: thanks ${N} sha-ok`);
      expect(r.output).toMatch(/5679 refused (104|111)/);
      expect(got.bytes?.length).toBe(N + 64);
    } finally {
      srv.close();
    }
  }, 200_000);
});
