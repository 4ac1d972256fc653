#!/usr/bin/env node
// npm run bench:vhost-user — vhost-user-blk read throughput: kindling against qemu-storage-daemon,
// both serving the same raw image to the same user-mode-Linux guest (Linux's virtio_blk driver over
// vhost-user; test/uml/helpers.ts boots it). Rounds are strictly interleaved (kindling, qsd, kindling,
// qsd, …), each a fresh backend process and a fresh UML boot, and each round does, inside the guest:
//   seq:  dd if=/dev/vda of=/dev/null bs=1M iflag=direct over the whole image (MB/s, timed in the
//         guest with date +%s%N around dd);
//   rand: uml-tool randread /dev/vda 4096 OPS SEED — OPS 4 KiB O_DIRECT reads at uniform random
//         4 KiB-aligned offsets, queue depth 1, timed in the guest with CLOCK_MONOTONIC (IOPS); both
//         backends of a round read the same offsets (same SEED), each round another seed.
// Beside each figure: the backend process's CPU time (utime+stime of all its threads, from
// /proc/PID/stat, read on the host when the guest prints its marks before and after the phase) and
// the phase's host wall time between those marks. The backends are spawned directly (node
// bin/kindling.js, qemu-storage-daemon), never through a wrapper interpreter. Reported per round,
// then min/median/max per backend and the per-round ratio kindling/qsd (> 1: kindling faster).
// The image is written once with random bytes and read once on the host first, so both backends
// read from the host's page cache (qsd with cache.direct=off, its default).
// The image is 2 GiB by default: a 256 MiB dd lasted 0.1-0.2 s, which on this shared 2-core host
// measured scheduling noise (qsd alone ranged 491-2221 MB/s over three rounds) and kindling's one-time
// warm-up (V8 compiling the request path, ~60 ms of TurboFan work on helper threads, seen with
// --trace-opt: a fixed ~0.04 s of CPU more than qsd per backend process) rather than read throughput.
// Options: --rounds N (default 5), --mib M (image MiB, default 2048), --ops N (random reads, default 20000),
// --help
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, benchArgs, fmt, loadUmlHarness, median } from './lib.mjs';

const USAGE = 'usage: node bench/vhost-user.mjs [--rounds N: interleaved rounds (default 5)] [--mib M: image MiB (default 2048)] [--ops N: random 4 KiB reads (default 20000)]';
const { rounds: ROUNDS, mib: MIB, ops: OPS } = benchArgs('vhost-user', USAGE, { rounds: 5, mib: 2048, ops: 20000 });

const dir = mkdtempSync(join(tmpdir(), 'kindling-bench-vhost-user-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

const H = await loadUmlHarness();

const missing = H.umlMissing();
if (missing) {
  console.error(`bench:vhost-user: cannot run: ${missing}`);
  process.exit(1);
}
const tool = H.umlTool();
const backends = [];
if (H.kindlingHasVhostUser()) backends.push({ name: 'kindling', argv: (s, img) => H.kindlingArgv(s, `blk=${img},ro`) });
else console.warn('!!! bench:vhost-user: `kindling vhost-user` is not in this build (dist/): measuring qemu-storage-daemon alone !!!');
if (H.which('qemu-storage-daemon')) backends.push({ name: 'qsd', argv: (s, img) => H.qsdArgv(s, img, false) });
else console.warn('!!! bench:vhost-user: qemu-storage-daemon is not installed (apt-get install qemu-system-common): no peer !!!');
if (backends.length === 0) process.exit(1);

const img = join(dir, 'bench.img');
{
  const fd = openSync(img, 'w');
  for (let i = 0; i < MIB; i++) writeSync(fd, randomBytes(1 << 20));
  closeSync(fd);
  // Into the page cache, 1 MiB at a time (readFileSync refuses files over 2 GiB).
  const rfd = openSync(img, 'r');
  const buf = Buffer.alloc(1 << 20);
  while (readSync(rfd, buf) > 0);
  closeSync(rfd);
}

const script = (seed) => [
  'set -e',
  'bytes=$(( $(cat /sys/block/vda/size) * 512 ))',
  'mark seq-start',
  't0=$(date +%s%N)',
  'dd if=/dev/vda of=/dev/null bs=1M iflag=direct status=none',
  't1=$(date +%s%N)',
  'mark seq-end',
  'echo "seq bytes=$bytes ns=$((t1 - t0))"',
  'mark rand-start',
  `"$UMLTOOL" randread /dev/vda 4096 ${OPS} ${seed}`,
  'mark rand-end',
].join('\n');

/** One backend, one UML boot: { seqMBs, randIops, seqCpu, randCpu, seqWall, randWall, bootMs } or throws. */
async function round(backend, seed) {
  const socket = join(dir, `${backend.name}.sock`);
  rmSync(socket, { force: true });
  const b = await H.startBackend(backend.argv(socket, img), socket);
  const at = {};
  try {
    const r = await H.runUml({
      devices: [{ socket, virtioId: H.VIRTIO_ID.blk }],
      modules: ['virtio_blk'],
      script: script(seed),
      timeoutMs: 600_000,
      onMark: (name, ms) => (at[name] = { ms, cpu: b.cpuSeconds() }),
    });
    const seq = /seq bytes=(\d+) ns=(\d+)/.exec(r.output);
    const rand = /randread ops=(\d+) bytes=\d+ ns=(\d+)/.exec(r.output);
    if (r.status !== 0 || !seq || !rand) throw new Error(`${backend.name}: guest run failed: ${H.describeRun(r)}\nbackend stderr: ${b.stderr().slice(-1000)}`);
    const span = (a, z) => ({ cpu: at[z].cpu - at[a].cpu, wall: (at[z].ms - at[a].ms) / 1000 });
    const s = span('seq-start', 'seq-end');
    const q = span('rand-start', 'rand-end');
    return {
      seqMBs: Number(seq[1]) / 1e6 / (Number(seq[2]) / 1e9),
      randIops: Number(rand[1]) / (Number(rand[2]) / 1e9),
      seqCpu: s.cpu, seqWall: s.wall, randCpu: q.cpu, randWall: q.wall, bootMs: r.bootToInitMs,
    };
  } finally {
    await b.kill();
  }
}

const cpus = spawnSync('nproc', { encoding: 'utf8' }).stdout.trim();
console.log(`bench:vhost-user: ${MIB} MiB image, ${ROUNDS} interleaved rounds of ${backends.map((b) => b.name).join(', ')}; ` +
  `UML ${H.umlVersion()} guest, seq dd bs=1M iflag=direct, rand ${OPS} x 4 KiB O_DIRECT qd1; host ${cpus} CPUs`);
console.log('round  backend    seq MB/s  cpu s / wall s   rand IOPS  cpu s / wall s   boot-to-init ms');
const results = Object.fromEntries(backends.map((b) => [b.name, []]));
for (let i = 0; i < ROUNDS; i++) {
  const seed = 0x1000 + i;
  for (const backend of backends) {
    const x = await round(backend, seed);
    results[backend.name].push(x);
    console.log(`${String(i + 1).padStart(5)}  ${backend.name.padEnd(9)} ${fmt(x.seqMBs).padStart(9)}  ${fmt(x.seqCpu, 2).padStart(6)} / ${fmt(x.seqWall, 2).padEnd(6)} ` +
      `${fmt(x.randIops, 0).padStart(11)}  ${fmt(x.randCpu, 2).padStart(6)} / ${fmt(x.randWall, 2).padEnd(6)} ${fmt(x.bootMs, 0).padStart(9)}`);
  }
}

const spread = (xs, d = 1) => `${fmt(Math.min(...xs), d)} / ${fmt(median(xs), d)} / ${fmt(Math.max(...xs), d)}`;
console.log('\nmin / median / max');
for (const b of backends) {
  const r = results[b.name];
  console.log(`${b.name.padEnd(9)} seq ${spread(r.map((x) => x.seqMBs))} MB/s, cpu ${spread(r.map((x) => x.seqCpu), 2)} s; ` +
    `rand ${spread(r.map((x) => x.randIops), 0)} IOPS, cpu ${spread(r.map((x) => x.randCpu), 2)} s; boot-to-init ${spread(r.map((x) => x.bootMs), 0)} ms`);
}
if (results.kindling && results.qsd) {
  const ratio = (f) => results.kindling.map((k, i) => f(k) / f(results.qsd[i]));
  const seqR = ratio((x) => x.seqMBs);
  const randR = ratio((x) => x.randIops);
  const cpuSeqR = ratio((x) => x.seqCpu);
  const cpuRandR = ratio((x) => x.randCpu);
  const list = (xs) => xs.map((x) => fmt(x, 2)).join(' ');
  console.log(`\nkindling / qsd per round (> 1: kindling faster; CPU ratio < 1: kindling cheaper)`);
  console.log(`seq  throughput ${list(seqR)}  (median ${fmt(median(seqR), 2)}x)   backend CPU ${list(cpuSeqR)}  (median ${fmt(median(cpuSeqR), 2)}x)`);
  console.log(`rand IOPS       ${list(randR)}  (median ${fmt(median(randR), 2)}x)   backend CPU ${list(cpuRandR)}  (median ${fmt(median(cpuRandR), 2)}x)`);
  console.log(`target >= 1.0x: seq ${median(seqR) >= 1 ? 'met' : 'NOT met'}, rand ${median(randR) >= 1 ? 'met' : 'NOT met'}`);
}
