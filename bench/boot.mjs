#!/usr/bin/env node
// npm run bench:boot — boot-path figures (not a timed test). Medians over repeated runs of:
//   process start → first KVM_RUN, → "hello from guest", → exit, and peak RSS, for `kindling run`
//   and for QEMU microvm booting the same hello.elf in the same run (when qemu-system-x86_64 exists);
//   PIO exits/s of pioloop.elf's ring-3 `out` loop handled by kindling's JavaScript exit loop vs the
//   addon's plain C loop, and under QEMU.
// Options: --runs N (default 10), --pio N (outs per pioloop run, default 50000), --pio-runs N (default 5), --help
import { join } from 'node:path';
import { GUESTS, KINDLING, QEMU_MICROVM, benchArgs, fmt, median, timedRun, which } from './lib.mjs';

const USAGE =
  'usage: node bench/boot.mjs [--runs N: boots per VMM (default 10)] [--pio N: outs per pioloop run (default 50000)] ' +
  '[--pio-runs N: pioloop runs per exit loop (default 5)]';
const { runs: RUNS, pio: PIO, 'pio-runs': PIO_RUNS } = benchArgs('boot', USAGE, { runs: 10, pio: 50000, 'pio-runs': 5 });
const hello = join(GUESTS, 'hello.elf');
const pioloop = join(GUESTS, 'pioloop.elf');
const qemu = which('qemu-system-x86_64');

async function kindlingBoot() {
  const r = await timedRun(['node', KINDLING, 'run', '--kernel', hello, '--mem', '64', '--cmdline', 'exit=0'], ['hello from guest'], {
    env: { ...process.env, KINDLING_TIMINGS: '1' },
  });
  const m = /kindling-timings (\{.*\})/.exec(r.stderr);
  const t = m ? JSON.parse(m[1]) : {};
  // firstRun is an epoch timestamp (ms) taken in the child's vCPU worker.
  return { ...r, firstRunMs: t.firstRun !== undefined ? t.firstRun - r.spawnEpoch : NaN };
}

async function qemuBoot() {
  return timedRun([...QEMU_MICROVM, '-m', '64', '-kernel', hello, '-append', 'exit=0'], ['hello from guest']);
}

function summarize(name, runs, extra = {}) {
  const ok = runs.filter((r) => r.marks['hello from guest'] !== undefined);
  return {
    name,
    ok: `${ok.length}/${runs.length}`,
    hello: median(ok.map((r) => r.marks['hello from guest'])),
    exit: median(ok.map((r) => r.exitMs)),
    rssMiB: median(ok.map((r) => r.rssKiB / 1024)),
    ...extra,
  };
}

console.log(`# kindling bench:boot — ${new Date().toISOString()} — ${RUNS} runs each, interleaved`);
const kRuns = [];
const qRuns = [];
for (let i = 0; i < RUNS; i++) {
  kRuns.push(await kindlingBoot());
  if (qemu) qRuns.push(await qemuBoot());
}
const k = summarize('kindling', kRuns, { firstRun: median(kRuns.map((r) => r.firstRunMs).filter(Number.isFinite)) });
console.log('\n| VMM (hello.elf, 64 MiB, 1 vCPU) | ok | start→first KVM_RUN ms | start→"hello from guest" ms | start→exit ms | peak RSS MiB |');
console.log('|---|---|---|---|---|---|');
console.log(`| kindling | ${k.ok} | ${fmt(k.firstRun)} | ${fmt(k.hello)} | ${fmt(k.exit)} | ${fmt(k.rssMiB)} |`);
if (qemu) {
  const q = summarize('qemu', qRuns);
  console.log(`| QEMU microvm | ${q.ok} | n/a | ${fmt(q.hello)} | ${fmt(q.exit)} | ${fmt(q.rssMiB)} |`);
  console.log(`| ratio kindling/QEMU | | | ${fmt(k.hello / q.hello, 2)} | ${fmt(k.exit / q.exit, 2)} | ${fmt(k.rssMiB / q.rssMiB, 2)} |`);
} else {
  console.log('(qemu-system-x86_64 not installed: no QEMU column; apt-get install qemu-system-x86)');
}

// ---- PIO exit throughput -----------------------------------------------------------------------
const { VM } = await import('../dist/main/index.js');
async function pioRun(cPort) {
  const vm = new VM({ kernel: pioloop, memMiB: 32, cmdline: `pio.count=${PIO}`, logLevel: 'silent', rng: false }, { benchCPioPort: cPort });
  let out = '';
  let tStart = NaN;
  let tDone = NaN;
  vm.serial.on('data', (b) => {
    out += b.toString('latin1');
    const now = performance.now();
    if (Number.isNaN(tStart) && out.includes('pioloop start')) tStart = now;
    if (Number.isNaN(tDone) && out.includes('pioloop done')) tDone = now;
  });
  await vm.start();
  const exit = await vm.wait();
  if (exit.exitCode !== 0 || Number.isNaN(tDone)) throw new Error(`pioloop failed: ${JSON.stringify(exit)} ${out}`);
  return PIO / ((tDone - tStart) / 1000);
}
async function qemuPio() {
  const r = await timedRun([...QEMU_MICROVM, '-m', '32', '-kernel', pioloop, '-append', `pio.count=${PIO}`], ['pioloop start', 'pioloop done'], { timeoutMs: 300_000 });
  return PIO / ((r.marks['pioloop done'] - r.marks['pioloop start']) / 1000);
}
const js = [];
const c = [];
const q = [];
for (let i = 0; i < PIO_RUNS; i++) {
  js.push(await pioRun(undefined));
  c.push(await pioRun(0x80));
  if (qemu) q.push(await qemuPio());
}
console.log(`\n| PIO exits/s (pioloop.elf, ${PIO} ring-3 outs to port 0x80, median of ${PIO_RUNS}) | exits/s |`);
console.log('|---|---|');
console.log(`| kindling, exit handled in JavaScript (vCPU worker loop) | ${fmt(median(js), 0)} |`);
console.log(`| kindling, exit handled in the addon's C loop | ${fmt(median(c), 0)} |`);
console.log(`| ratio JS/C | ${fmt(median(js) / median(c), 3)} |`);
if (qemu) {
  console.log(`| QEMU microvm | ${fmt(median(q), 0)} |`);
  console.log(`| ratio kindling JS/QEMU | ${fmt(median(js) / median(q), 3)} |`);
}
