#!/usr/bin/env node
// npm run bench:smp — SMP and creation-rate figures (not a timed test):
//   time from process start to "cpus: N" for smp.elf with N = 1, 2, 4, 8 vCPUs (median of --runs),
//   kindling vs QEMU microvm (-smp N) in the same run;
//   creation rate: VMs created and run to "hello from guest" per second, in one kindling process
//   with 1 and 8 concurrent creators, vs QEMU microvm processes started 1 and 8 at a time.
// Options: --runs N (default 10), --seconds S per creation-rate measurement (default 5, may be
// fractional), --help
import { join } from 'node:path';
import { GUESTS, KINDLING, QEMU_MICROVM, benchArgs, fmt, median, timedRun, which } from './lib.mjs';

const USAGE = 'usage: node bench/smp.mjs [--runs N: runs per vCPU count (default 10)] [--seconds S: per creation-rate measurement, > 0, may be fractional (default 5)]';
const { runs: RUNS, seconds: SECONDS } = benchArgs('smp', USAGE, { runs: 10, seconds: { type: 'number', default: 5 } });
const smp = join(GUESTS, 'smp.elf');
const hello = join(GUESTS, 'hello.elf');
const qemu = which('qemu-system-x86_64');

console.log(`# kindling bench:smp — ${new Date().toISOString()} — ${RUNS} runs per point`);
console.log('\n| vCPUs | kindling start→"cpus: N" ms (ok) | QEMU microvm ms (ok) | ratio |');
console.log('|---|---|---|---|');
for (const n of [1, 2, 4, 8]) {
  const k = [];
  const q = [];
  for (let i = 0; i < RUNS; i++) {
    k.push(await timedRun(['node', KINDLING, 'run', '--kernel', smp, '--vcpus', String(n), '--mem', '128'], [`cpus: ${n}`]));
    if (qemu) q.push(await timedRun([...QEMU_MICROVM, '-smp', String(n), '-m', '128', '-kernel', smp], [`cpus: ${n}`]));
  }
  const kt = k.filter((r) => r.marks[`cpus: ${n}`] !== undefined).map((r) => r.marks[`cpus: ${n}`]);
  const qt = q.filter((r) => r.marks[`cpus: ${n}`] !== undefined).map((r) => r.marks[`cpus: ${n}`]);
  console.log(
    `| ${n} | ${fmt(median(kt))} (${kt.length}/${k.length}) | ${qemu ? `${fmt(median(qt))} (${qt.length}/${q.length})` : 'n/a'} | ${qemu ? fmt(median(kt) / median(qt), 2) : ''} |`,
  );
}

const { VM } = await import('../dist/main/index.js');
async function kindlingRate(creators) {
  let done = 0;
  let failed = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: creators }, async () => {
      while (performance.now() < deadline) {
        const vm = new VM({ kernel: hello, memMiB: 32, logLevel: 'silent' });
        let out = '';
        vm.serial.on('data', (b) => (out += b));
        await vm.start();
        const exit = await vm.wait();
        if (exit.exitCode === 0 && out.includes('hello from guest')) done++;
        else failed++;
      }
    }),
  );
  return { rate: done / ((performance.now() - t0) / 1000), done, failed };
}
async function qemuRate(creators) {
  let done = 0;
  let failed = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: creators }, async () => {
      while (performance.now() < deadline) {
        const r = await timedRun([...QEMU_MICROVM, '-m', '32', '-kernel', hello], ['hello from guest']);
        if (r.marks['hello from guest'] !== undefined) done++;
        else failed++;
      }
    }),
  );
  return { rate: done / ((performance.now() - t0) / 1000), done, failed };
}
console.log(`\n| creators | kindling VMs/s, one process (done/failed) | QEMU microvm VMs/s, one process per VM (done/failed) | ratio |`);
console.log('|---|---|---|---|');
for (const c of [1, 8]) {
  const k = await kindlingRate(c);
  const q = qemu ? await qemuRate(c) : undefined;
  console.log(
    `| ${c} | ${fmt(k.rate)} (${k.done}/${k.failed}) | ${q ? `${fmt(q.rate)} (${q.done}/${q.failed})` : 'n/a'} | ${q ? fmt(k.rate / q.rate, 2) : ''} |`,
  );
}
