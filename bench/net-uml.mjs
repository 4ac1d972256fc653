#!/usr/bin/env node
// npm run bench:net-uml — virtio-net through Linux's own virtio_net driver: kindling's net device served by
// `kindling vhost-user --device net=tap=kbn0` to a user-mode-Linux guest (virtio_uml; test/uml/helpers.ts
// boots it), all inside a network namespace this benchmark creates and deletes (no frame leaves it).
// No /dev/kvm is needed; on a KVM host the same device runs in an I/O worker. Each round is a fresh
// namespace, backend and UML boot, and measures on the host side of the tap (10.79.0.1; the guest is
// 10.79.0.2), with the host's /usr/bin/python3 at both ends (the guest runs it over hostfs):
//   ping:  round-trip time of `ping -c 20 -i 0.05` host → guest (ms, average);
//   g2h:   --mib MiB over one TCP connection guest → host listener (MB/s, host's accept to EOF);
//   h2g:   --mib MiB host → a listener in the guest (MB/s, host's connect to the guest's close);
// beside each stream: the backend process's CPU time (all threads, /proc/PID/stat).
// The floor, strictly interleaved with each round: the same TCP transfer over the namespace's loopback
// (MB/s). No peer VMM: Debian packages no vhost-user-net backend (QEMU's vhost-net needs a KVM guest).
// Reported per round, then min/median/max and the per-round ratio kindling/floor.
// Options: --rounds N (default 5), --mib M (default 64), --help
// (npm run bench:net is the KVM benchmark: net.elf under kindling next to QEMU microvm, bench/net.mjs.)
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs, fmt, loadUmlHarness, printStat, printStreamStats } from './lib.mjs';

const USAGE = 'usage: node bench/net-uml.mjs [--rounds N] [--mib M]';
const { rounds: ROUNDS, mib: MIB } = benchArgs('net-uml', USAGE, { rounds: 5, mib: 64 });
const BYTES = MIB * 1024 * 1024;
const PY = '/usr/bin/python3';

const dir = mkdtempSync(join(tmpdir(), 'kindling-bench-netuml-'));
const namespaces = [];
const cleanup = () => {
  for (const ns of namespaces.splice(0)) spawnSync('ip', ['netns', 'del', ns]);
  rmSync(dir, { recursive: true, force: true });
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

const H = await loadUmlHarness();
const missing =
  H.umlMissing() ??
  (H.umlHasModule('virtio_net') ? undefined : 'no virtio_net module in UML') ??
  (process.getuid?.() === 0 ? undefined : 'network namespaces need root') ??
  (H.which('ip') && H.which('ping') ? undefined : 'iproute2 and iputils-ping are needed');
if (missing) {
  console.error(`bench:net-uml: cannot run: ${missing}`);
  process.exit(1);
}
const build = spawnSync(process.execPath, [join(H.ROOT, 'scripts', 'build.mjs'), 'ts'], { stdio: 'inherit' });
if (build.status !== 0) process.exit(1);

// Receiver: accept one connection, count bytes to EOF, print "<bytes> <seconds from accept>".
const RECV = (addr, port) =>
  `import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(("${addr}",${port}));s.listen(1);print("READY",flush=True)\nc,_=s.accept();t=time.time();n=0\nwhile True:\n  b=c.recv(1<<20)\n  if not b: break\n  n+=len(b)\nprint(n,time.time()-t,flush=True)\nc.close()`;
// Sender: connect, send BYTES, shut down, wait for the peer's close; print the seconds from connect.
const SEND = (addr, port) =>
  `import socket,time\nfor i in range(200):\n  try:\n    c=socket.create_connection(("${addr}",${port}));break\n  except OSError: time.sleep(0.05)\nt=time.time();b=bytes(1<<20);n=${BYTES}\nwhile n>0:\n  k=min(n,len(b));c.sendall(b[:k]);n-=k\nc.shutdown(socket.SHUT_WR)\nwhile c.recv(65536): pass\nprint(time.time()-t,flush=True)`;

const nsExec = (ns, argv, opts = {}) => spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
function collect(p) {
  let out = '';
  p.stdout.on('data', (b) => (out += b));
  p.stderr.on('data', (b) => (out += b));
  return { text: () => out, done: new Promise((r) => p.on('close', () => r(out))) };
}
function newNs(tag) {
  const ns = `kindling-bench-netuml-${process.pid}-${tag}`;
  const r = spawnSync('ip', ['netns', 'add', ns], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip netns add: ${r.stderr}`);
  namespaces.push(ns);
  spawnSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  return ns;
}
function delNs(ns) {
  spawnSync('ip', ['netns', 'del', ns]);
  namespaces.splice(namespaces.indexOf(ns), 1);
}

/** The floor: BYTES over the loopback of a fresh namespace, python at both ends; MB/s. */
async function floor(round) {
  const ns = newNs(`floor${round}`);
  try {
    const rx = nsExec(ns, [PY, '-c', RECV('127.0.0.1', 9100)]);
    const rc = collect(rx);
    while (!rc.text().includes('READY')) await new Promise((r) => setTimeout(r, 10));
    const tx = collect(nsExec(ns, [PY, '-c', SEND('127.0.0.1', 9100)]));
    const [n, secs] = (await rc.done).split('\n')[1].trim().split(' ').map(Number);
    await tx.done;
    if (n !== BYTES) throw new Error(`floor: ${n} of ${BYTES} bytes`);
    return BYTES / 1e6 / secs;
  } finally {
    delNs(ns);
  }
}

async function kindlingRound(round) {
  const ns = newNs(`r${round}`);
  const socket = join(dir, `vu-${round}.sock`);
  const done = join(dir, `done-${round}`);
  const b = await H.startBackend(['ip', 'netns', 'exec', ns, ...H.kindlingArgv(socket, 'net=tap=kbn0')], socket);
  const res = {};
  let host;
  try {
    spawnSync('ip', ['netns', 'exec', ns, 'ip', 'addr', 'add', '10.79.0.1/24', 'dev', 'kbn0']);
    const r = await H.runUml({
      devices: [{ socket, virtioId: 1 }],
      modules: ['virtio_net'],
      memMiB: 256,
      timeoutMs: 300_000,
      script: [
        'ip link set eth0 up',
        'ip addr add 10.79.0.2/24 dev eth0',
        `(${PY} -c '${RECV('10.79.0.2', 9001)}' > /tmp/h2g.out 2>&1 &)`,
        'mark up',
        `i=0; while [ ! -e ${done}.g2h ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done`,
        `${PY} -c '${SEND('10.79.0.1', 9000)}'`,
        `i=0; while [ ! -e ${done} ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done`,
      ].join('\n'),
      onMark: (name) => {
        if (name !== 'up') return;
        host = (async () => {
          try {
            const p = spawnSync('ip', ['netns', 'exec', ns, 'ping', '-c', '20', '-i', '0.05', '-W', '2', '10.79.0.2'], { encoding: 'utf8' });
            const m = /= [0-9.]+\/([0-9.]+)\//.exec(p.stdout);
            if (!m) throw new Error(`ping: ${p.stdout}${p.stderr}`);
            res.pingMs = Number(m[1]);
            // host → guest
            let c0 = b.cpuSeconds();
            const tx = collect(nsExec(ns, [PY, '-c', SEND('10.79.0.2', 9001)]));
            const secs = Number((await tx.done).trim());
            if (!(secs > 0)) throw new Error(`h2g sender: ${tx.text()}`);
            res.h2g = BYTES / 1e6 / secs;
            res.h2gCpu = b.cpuSeconds() - c0;
            // guest → host
            const rx = nsExec(ns, [PY, '-c', RECV('10.79.0.1', 9000)]);
            const rc = collect(rx);
            while (!rc.text().includes('READY')) await new Promise((r2) => setTimeout(r2, 10));
            c0 = b.cpuSeconds();
            spawnSync('touch', [`${done}.g2h`]);
            const [n, s2] = (await rc.done).split('\n')[1].trim().split(' ').map(Number);
            if (n !== BYTES) throw new Error(`g2h: ${n} of ${BYTES} bytes`);
            res.g2h = BYTES / 1e6 / s2;
            res.g2hCpu = b.cpuSeconds() - c0;
          } catch (e) {
            res.error = e.message;
          } finally {
            spawnSync('touch', [`${done}.g2h`, done]);
          }
        })();
      },
    });
    await host;
    if (res.error || r.status !== 0) throw new Error(`round ${round}: ${res.error ?? H.describeRun(r)}`);
  } finally {
    await b.kill();
    delNs(ns);
  }
  return res;
}

const rows = [];
for (let round = 1; round <= ROUNDS; round++) {
  const f = await floor(round);
  const k = await kindlingRound(round);
  rows.push({ f, ...k });
  console.log(
    `round ${round}: ping ${fmt(k.pingMs, 3)} ms; h2g ${fmt(k.h2g)} MB/s (backend CPU ${fmt(k.h2gCpu, 2)} s), g2h ${fmt(k.g2h)} MB/s (CPU ${fmt(k.g2hCpu, 2)} s); floor ${fmt(f)} MB/s; ratios h2g ${fmt(k.h2g / f, 3)}, g2h ${fmt(k.g2h / f, 3)}`,
  );
}
console.log(`\n${ROUNDS} rounds, ${MIB} MiB per stream`);
printStat('ping rtt ms', rows.map((r) => r.pingMs), 3);
printStreamStats(rows);
