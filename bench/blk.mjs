#!/usr/bin/env node
// npm run bench:blk — virtio-blk figures from blk.elf's ring-3 loops (not a timed test):
//   sequential read MB/s (64 KiB requests, blk.bench=seq, qd 1),
//   4 KiB random-read IOPS (blk.bench=rand, qd 1 and 8),
//   one MMIO register read round trip (blk.bench=mmio: a guest loop reading ConfigGeneration),
// each the median of --runs runs, kindling next to QEMU microvm (virtio-blk-device on the same file,
// same guest binary, same run) when qemu-system-x86_64 is installed, with ratios (kindling / QEMU;
// > 1 is better for kindling on throughput rows, < 1 on latency rows). Times are taken on the host
// between the guest's "blk bench start" and "blk bench done" lines.
// Options: --runs N (default 5), --mib M (image size and seq span, default 64), --passes P (seq passes,
// default 4), --ops N (random reads, default 20000), --mmio-ops N (MMIO reads, default 100000), --help
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GUESTS, KINDLING, QEMU_MICROVM, benchArgs, fmt, median, timedRun, which } from './lib.mjs';

const USAGE =
  'usage: node bench/blk.mjs [--runs N: runs per row (default 5)] [--mib M: image MiB and seq span (default 64)] ' +
  '[--passes P: seq passes (default 4)] [--ops N: random 4 KiB reads (default 20000)] [--mmio-ops N: MMIO register reads (default 100000)]';
const { runs: RUNS, mib: MIB, passes: PASSES, ops: OPS, 'mmio-ops': MMIO_OPS } = benchArgs('blk', USAGE, { runs: 5, mib: 64, passes: 4, ops: 20000, 'mmio-ops': 100000 });
const blk = join(GUESTS, 'blk.elf');
const qemu = which('qemu-system-x86_64');

const dir = mkdtempSync(join(tmpdir(), 'kindling-bench-blk-'));
const img = join(dir, 'bench.img');
writeFileSync(img, randomBytes(MIB << 20));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const START = 'blk bench start';
const DONE = 'blk bench done';

function kindlingArgv(append) {
  return ['node', KINDLING, 'run', '--kernel', blk, '--mem', '64', '--disk', img, '--cmdline', append];
}
function qemuArgv(append) {
  return [
    ...QEMU_MICROVM, '-m', '64', '-global', 'virtio-mmio.force-legacy=false',
    '-drive', `id=d0,file=${img},format=raw,if=none`, '-device', 'virtio-blk-device,drive=d0',
    '-kernel', blk, '-append', append,
  ];
}

/** One run: seconds between the two marker lines and the guest's byte/op counts, or undefined. */
async function once(argv) {
  const r = await timedRun(argv, [START, DONE], { timeoutMs: 300_000 });
  const m = /blk bench done bytes=(\d+) ops=(\d+)/.exec(r.stdout);
  if (r.marks[START] === undefined || r.marks[DONE] === undefined || !m) {
    process.stderr.write(`run failed (${argv[0]}): ${r.stdout.slice(-300)} ${r.stderr.slice(-300)}\n`);
    return undefined;
  }
  return { s: (r.marks[DONE] - r.marks[START]) / 1000, bytes: Number(m[1]), ops: Number(m[2]) };
}

const rows = [
  { name: `sequential read, 64 KiB requests (${MIB} MiB × ${PASSES})`, unit: 'MB/s', append: `blk.bench=seq blk.mib=${MIB} blk.passes=${PASSES}`, metric: (r) => r.bytes / r.s / 1e6, digits: 0 },
  { name: '4 KiB random read, qd 1', unit: 'IOPS', append: `blk.bench=rand blk.ops=${OPS} blk.qd=1`, metric: (r) => r.ops / r.s, digits: 0 },
  { name: '4 KiB random read, qd 8', unit: 'IOPS', append: `blk.bench=rand blk.ops=${OPS} blk.qd=8`, metric: (r) => r.ops / r.s, digits: 0 },
  { name: 'MMIO register read round trip (ConfigGeneration)', unit: 'µs', append: `blk.bench=mmio blk.ops=${MMIO_OPS}`, metric: (r) => (r.s / r.ops) * 1e6, digits: 2 },
];

console.log(`# kindling bench:blk — ${new Date().toISOString()} — median of ${RUNS} runs, ${MIB} MiB random image, blk.elf ring-3 loops`);
console.log(`\n| workload | kindling (ok) | QEMU microvm (ok) | kindling / QEMU |`);
console.log('|---|---|---|---|');
for (const row of rows) {
  // Interleave the two VMMs run by run so drift (page cache, CPU frequency) hits both alike.
  const k = [];
  const q = [];
  for (let i = 0; i < RUNS; i++) {
    const a = await once(kindlingArgv(row.append));
    if (a) k.push(row.metric(a));
    if (qemu) {
      const b = await once(qemuArgv(row.append));
      if (b) q.push(row.metric(b));
    }
  }
  const km = median(k);
  const qm = median(q);
  console.log(
    `| ${row.name} | ${fmt(km, row.digits)} ${row.unit} (${k.length}/${RUNS}) | ${qemu ? `${fmt(qm, row.digits)} ${row.unit} (${q.length}/${RUNS})` : 'n/a (QEMU not installed)'} | ${qemu ? fmt(km / qm, 2) : ''} |`,
  );
}
