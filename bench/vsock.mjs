#!/usr/bin/env node
// npm run bench:vsock — virtio-vsock through Linux's own vsock driver: kindling's vsock device served by
// `kindling vhost-user --device vsock=3,uds=PATH` to a user-mode-Linux guest (vmw_vsock_virtio_transport
// over vhost-user; test/uml/helpers.ts boots it) running the exec agent (build/guests/kindling-agent)
// on vsock port 10789. No /dev/kvm is needed; on a KVM host the same device runs in an I/O worker.
// Each round is a fresh backend and a fresh UML boot, and measures on the host, through Firecracker's
// hybrid path (CONNECT 10789 on the UDS) and src/agent/client.ts (dist/):
//   connect: net.connect(UDS) → the agent's first byte (HELLO) after `OK <port>` (ms);
//   exec:    vm.exec('true')-equivalent round trip, start frame → exit status (ms, median of --execs);
//   h2g:     --mib MiB into `cat > /dev/null`'s stdin in the guest, until its exit status (MB/s);
//   g2h:     `head -c <mib> MiB /dev/zero` in the guest, its stdout drained on the host (MB/s);
// beside each stream: the backend process's CPU time (utime+stime of all its threads, /proc/PID/stat).
// The floor, strictly interleaved with each round: the same bytes between two ends of a host Unix
// socket in this process (MB/s). No peer VMM: Debian has no vhost-user-vsock backend (vhost-device-vsock
// is not packaged) and QEMU's vhost-vsock needs /dev/vhost-vsock in a KVM guest.
// Reported per round, then min/median/max, and the per-round ratio kindling/floor.
// Options: --rounds N (default 5), --mib M (MiB per stream, default 64), --execs N (exec round trips per
// round, default 30), --help
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT, benchArgs, fmt, loadUmlHarness, median, printStat, printStreamStats } from './lib.mjs';

const USAGE = 'usage: node bench/vsock.mjs [--rounds N: rounds (default 5)] [--mib M: MiB per stream (default 64)] [--execs N: exec round trips per round (default 30)]';
const { rounds: ROUNDS, mib: MIB, execs: EXECS } = benchArgs('vsock', USAGE, { rounds: 5, mib: 64, execs: 30 });
const BYTES = MIB * 1024 * 1024;
const AGENT_PORT = 10789;

const dir = mkdtempSync(join(tmpdir(), 'kindling-bench-vsock-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

const H = await loadUmlHarness();
const missing = H.umlMissing() ?? (H.umlHasModule('vmw_vsock_virtio_transport') ? undefined : 'no vmw_vsock_virtio_transport module in UML');
if (missing) {
  console.error(`bench:vsock: cannot run: ${missing}`);
  process.exit(1);
}
const build = spawnSync(process.execPath, [join(ROOT, 'scripts', 'build.mjs'), 'ts'], { stdio: 'inherit' });
if (build.status !== 0) process.exit(1);
const { AgentClient } = await import(pathToFileURL(join(ROOT, 'dist', 'agent', 'client.js')).href);
const AGENT = join(ROOT, 'build', 'guests', 'kindling-agent');

const chunk = Buffer.alloc(256 * 1024, 0x5a);
/** Write `bytes` to a writable in chunks, respecting backpressure, then end it. */
async function pump(w, bytes) {
  for (let left = bytes; left > 0; ) {
    const n = Math.min(left, chunk.length);
    left -= n;
    if (!w.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await new Promise((r) => w.once('drain', r));
  }
  w.end();
}

/** The floor: BYTES through a host Unix socket in this process; MB/s. */
async function floor() {
  const path = join(dir, `floor-${Date.now()}.sock`);
  const srv = net.createServer();
  await new Promise((r) => srv.listen(path, r));
  const got = new Promise((res) => srv.once('connection', (s) => {
    let n = 0;
    s.on('data', (d) => (n += d.length));
    s.on('end', () => res(n));
  }));
  const c = net.connect(path);
  await new Promise((r) => c.once('connect', r));
  const t0 = performance.now();
  await pump(c, BYTES);
  const n = await got;
  const ms = performance.now() - t0;
  c.destroy();
  srv.close();
  if (n !== BYTES) throw new Error(`floor: ${n} of ${BYTES} bytes`);
  return BYTES / 1e6 / (ms / 1000);
}

function hybridConnect(uds, port) {
  return new Promise((res, rej) => {
    const s = net.connect(uds);
    let got = '';
    const onData = (b) => {
      got += b.toString('latin1');
      const nl = got.indexOf('\n');
      if (nl < 0) return;
      s.off('data', onData);
      if (!got.startsWith('OK ')) return rej(new Error(`refused: ${got}`));
      const rest = Buffer.from(got.slice(nl + 1), 'latin1');
      // Paused before the unshift: in flowing mode with no data listener yet, unshift would emit the
      // bytes after OK (the agent's HELLO, when they share a chunk) to nobody. The caller resumes.
      s.pause();
      if (rest.length) s.unshift(rest);
      res(s);
    };
    s.on('data', onData);
    s.on('error', rej);
    s.on('close', () => rej(new Error(`closed: ${got}`)));
    s.on('connect', () => s.write(`CONNECT ${port}\n`));
  });
}

async function kindlingRound(round) {
  const socket = join(dir, `vu-${round}.sock`);
  const uds = join(dir, `v-${round}.sock`);
  const done = join(dir, `done-${round}`);
  const b = await H.startBackend(H.kindlingArgv(socket, `vsock=3,uds=${uds}`), socket);
  const res = {};
  let host;
  try {
    const r = await H.runUml({
      devices: [{ socket, virtioId: 19 }],
      modules: ['vmw_vsock_virtio_transport'],
      memMiB: 256,
      timeoutMs: 300_000,
      script: [`${AGENT} --vsock ${AGENT_PORT} & A=$!`, 'mark agent', `i=0; while [ ! -e ${done} ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done`, 'kill $A; wait $A; true'].join('\n'),
      onMark: (name) => {
        if (name !== 'agent') return;
        host = (async () => {
          try {
            let sock;
            let t0 = 0;
            for (let i = 0; i < 100 && !sock; i++) {
              t0 = performance.now();
              sock = await hybridConnect(uds, AGENT_PORT).catch(() => new Promise((r) => setTimeout(() => r(undefined), 100)));
            }
            if (!sock) throw new Error('the agent never answered');
            const client = new AgentClient(sock);
            sock.resume();
            await client.ready(10_000);
            res.connectMs = performance.now() - t0;
            const execMs = [];
            for (let i = 0; i < EXECS; i++) {
              const e0 = performance.now();
              const st = await client.exec(['true']).exited;
              if (st.code !== 0) throw new Error(`true exited ${JSON.stringify(st)}`);
              execMs.push(performance.now() - e0);
            }
            res.execMs = median(execMs);
            let c0 = b.cpuSeconds();
            let w0 = performance.now();
            const sink = client.exec(['sh', '-c', 'cat > /dev/null']);
            sink.stdout.resume();
            sink.stderr.resume();
            await pump(sink.stdin, BYTES);
            const st = await sink.exited;
            if (st.code !== 0) throw new Error(`cat exited ${JSON.stringify(st)}`);
            res.h2g = BYTES / 1e6 / ((performance.now() - w0) / 1000);
            res.h2gCpu = b.cpuSeconds() - c0;
            c0 = b.cpuSeconds();
            w0 = performance.now();
            const src = client.exec(['head', '-c', String(BYTES), '/dev/zero']);
            src.stdin.end();
            src.stderr.resume();
            let n = 0;
            src.stdout.on('data', (d) => (n += d.length));
            await new Promise((r) => src.stdout.once('end', r));
            await src.exited;
            if (n !== BYTES) throw new Error(`g2h: ${n} of ${BYTES} bytes`);
            res.g2h = BYTES / 1e6 / ((performance.now() - w0) / 1000);
            res.g2hCpu = b.cpuSeconds() - c0;
            client.close();
          } catch (e) {
            res.error = e.message;
          } finally {
            spawnSync('touch', [done]);
          }
        })();
      },
    });
    await host;
    if (res.error || r.status !== 0) throw new Error(`round ${round}: ${res.error ?? H.describeRun(r)}`);
  } finally {
    await b.kill();
  }
  return res;
}

const rows = [];
for (let round = 1; round <= ROUNDS; round++) {
  const f = await floor();
  const k = await kindlingRound(round);
  rows.push({ f, ...k });
  console.log(
    `round ${round}: connect ${fmt(k.connectMs)} ms, exec('true') ${fmt(k.execMs, 2)} ms; h2g ${fmt(k.h2g)} MB/s (backend CPU ${fmt(k.h2gCpu, 2)} s), g2h ${fmt(k.g2h)} MB/s (CPU ${fmt(k.g2hCpu, 2)} s); floor ${fmt(f)} MB/s; ratios h2g ${fmt(k.h2g / f, 3)}, g2h ${fmt(k.g2h / f, 3)}`,
  );
}
console.log(`\n${ROUNDS} rounds, ${MIB} MiB per stream, ${EXECS} execs per round`);
printStat('connect→HELLO ms', rows.map((r) => r.connectMs));
printStat("exec('true') ms", rows.map((r) => r.execMs), 2);
printStreamStats(rows);
