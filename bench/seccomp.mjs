#!/usr/bin/env node
// What kindling's seccomp filters cost. Two measurements, each strictly interleaved (off, strict, off,
// strict, …) in fresh worker threads, reporting min/median/max and the per-round ratio strict/off, with
// CPU time (the worker thread's own, /proc/thread-self/schedstat) beside wall time:
//
//   1. syscall round trip: N × (eventfdWrite + eventfdRead) on one eventfd in a worker whose filter is
//      the io:blk role (the allowlist walk a data-path syscall takes; write and read are early in it);
//   2. a data-path syscall late in the allowlist: N × preadv of 4 KiB from a (cached) file into a
//      SharedArrayBuffer (preadv is compared after every runtime syscall in the io:blk filter).
//
// Usage: node bench/seccomp.mjs [--rounds N (default 7)] [--n N (syscall loop iterations per run, default 200000)] [--help]
import { Worker } from 'node:worker_threads';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT, benchArgs, median, fmt } from './lib.mjs';

const USAGE = 'usage: node bench/seccomp.mjs [--rounds N: interleaved off/strict rounds (default 7)] [--n N: loop iterations per run (default 200000)]';
const { rounds: ROUNDS, n: N } = benchArgs('seccomp', USAGE, { rounds: 7, n: 200000 });
const ADDON = join(ROOT, 'native', 'build', 'Release', 'kindling.node');
const INSTALL = pathToFileURL(join(ROOT, 'dist', 'seccomp', 'install.js')).href;
const dir = mkdtempSync(join(tmpdir(), 'kindling-bench-seccomp-'));
const file = join(dir, 'data');
writeFileSync(file, Buffer.alloc(1 << 20, 7));

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const addon = require(workerData.addon);
(async () => {
  const { installSeccomp } = await import(workerData.install);
  const efd = addon.eventfd(0, 0);
  const fd = fs.openSync(workerData.file, 'r');
  const sab = new SharedArrayBuffer(4096);
  // This thread's CPU time in ns (schedstat's first field), opened before the filter forbids opens.
  const sched = fs.openSync('/proc/thread-self/schedstat', 'r');
  const cpuNs = () => { const b = Buffer.alloc(128); const n = fs.readSync(sched, b, 0, 128, 0); return Number(b.toString('latin1', 0, n).split(' ')[0]); };
  installSeccomp(addon, { kind: 'io', device: 'blk' }, workerData.mode);
  const c0 = cpuNs(); const t0 = performance.now();
  if (workerData.kind === 'eventfd') {
    for (let i = 0; i < workerData.n; i++) { addon.eventfdWrite(efd, 1n); addon.eventfdRead(efd); }
  } else {
    const iov = [[sab, 0, 4096]];
    for (let i = 0; i < workerData.n; i++) addon.preadv(fd, iov, BigInt((i & 255) * 4096));
  }
  const t1 = performance.now(); const c1 = cpuNs();
  parentPort.postMessage({ wallMs: t1 - t0, cpuMs: (c1 - c0) / 1e6 });
})();
`;

function one(kind, mode) {
  return new Promise((res, rej) => {
    const w = new Worker(WORKER, { eval: true, workerData: { addon: ADDON, install: INSTALL, file, kind, mode, n: N } });
    w.once('message', (m) => {
      res(m);
      void w.terminate();
    });
    w.once('error', rej);
  });
}

const perCall = (ms, calls) => (ms * 1e6) / calls; // ns
try {
  for (const kind of ['eventfd', 'preadv']) {
    const calls = kind === 'eventfd' ? 2 * N : N;
    const r = { off: [], strict: [], offCpu: [], strictCpu: [], ratio: [] };
    for (let i = 0; i < ROUNDS; i++) {
      const off = await one(kind, 'off');
      const strict = await one(kind, 'strict');
      r.off.push(perCall(off.wallMs, calls));
      r.strict.push(perCall(strict.wallMs, calls));
      r.offCpu.push(perCall(off.cpuMs, calls));
      r.strictCpu.push(perCall(strict.cpuMs, calls));
      r.ratio.push(strict.wallMs / off.wallMs);
    }
    const mmm = (xs) => `${fmt(Math.min(...xs))}/${fmt(median(xs))}/${fmt(Math.max(...xs))}`;
    console.log(`${kind} (${calls} syscalls per run, ${ROUNDS} interleaved rounds), ns per syscall min/median/max:`);
    console.log(`  off     wall ${mmm(r.off)}  cpu ${mmm(r.offCpu)}`);
    console.log(`  strict  wall ${mmm(r.strict)}  cpu ${mmm(r.strictCpu)}`);
    console.log(`  strict/off per round: ${r.ratio.map((x) => x.toFixed(3)).join(' ')} (median ${median(r.ratio).toFixed(3)})`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
