#!/usr/bin/env node
// Eventfd → JS wake-up latency in an I/O worker (the choice between uv_poll and epoll for virtio
// queue kicks). Ping-pong between the main thread and a worker: the main thread, in the addon's C loop
// (benchEventfdPingPong), writes eventfd A and blocks reading eventfd B; the worker is woken by A
// through the wiring under test, and its handler writes B. Figures are µs per round trip: the median
// of RUNS runs of ROUNDS round trips after WARMUP, each run in a fresh worker, both unpinned and with
// the whole process on one CPU (`taskset -c 0`, which measures CPU cost incl. context switches).
//
// Wirings:
//   C ↔ C              the worker blocks in the addon's C echo loop (benchEventfdEcho): the floor
//   epollWait (drain)  JS loop: epollWait(ep, tokens, -1, counts) drains A natively, then eventfdWrite(B)
//   epollWait + read   JS loop: epollWait(ep, tokens, -1), eventfdRead(A), eventfdWrite(B)
//   watchEventfd       uv_poll on the worker's own loop, A drained natively, callback writes B
//   watchFd + read     uv_poll on the worker's own loop, callback does eventfdRead(A), eventfdWrite(B)
//
// Options: --rounds N (default 20000), --warmup N (2000, may be 0), --runs N (5), --only unpinned|pinned
// (default both), --help; --child is internal (the measuring child process this script spawns)
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { benchArgs } from './lib.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ADDON = join(ROOT, 'native', 'build', 'Release', 'kindling.node');
const SELF = fileURLToPath(import.meta.url);

const USAGE =
  'usage: node bench/eventfd-wakeup.mjs [--rounds N: timed round trips per run (default 20000)] ' +
  '[--warmup N: untimed round trips first, may be 0 (default 2000)] [--runs N: runs per wiring (default 5)] ' +
  '[--only unpinned|pinned (default both)] [--child: internal, the measuring child]';
const {
  rounds: ROUNDS,
  warmup: WARMUP,
  runs: RUNS,
  only: ONLY,
  child: CHILD,
} = benchArgs('eventfd-wakeup', USAGE, {
  rounds: 20000,
  warmup: { type: 'integer', default: 2000, min: 0 },
  runs: 5,
  only: { type: 'string', choices: ['unpinned', 'pinned'] },
  child: { type: 'boolean' },
});

const MODES = [
  ['c', 'C ↔ C (addon C echo loop in the worker)'],
  ['epoll-drain', '(c) epollWait in a JS loop, eventfd drained natively'],
  ['epoll-read', '(c′) epollWait in a JS loop + eventfdRead'],
  ['uv-drain', '(b) watchEventfd (uv_poll, drained natively)'],
  ['uv-read', '(b′) watchFd (uv_poll) + eventfdRead'],
];

const workerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const a = require(workerData.addon);
const { mode, A, B, total } = workerData;
if (mode === 'c') {
  parentPort.postMessage('ready');
  a.benchEventfdEcho(A, B, total);
  parentPort.postMessage('done');
} else if (mode === 'epoll-drain' || mode === 'epoll-read') {
  const ep = a.epollCreate();
  const drain = mode === 'epoll-drain';
  a.epollAdd(ep, A, 1, drain);
  const tokens = new Int32Array(8);
  const counts = drain ? new BigUint64Array(8) : undefined;
  parentPort.postMessage('ready');
  let served = 0;
  while (served < total) {
    const n = a.epollWait(ep, tokens, -1, counts);
    for (let i = 0; i < n; i++) {
      const c = drain ? counts[i] : a.eventfdRead(A);
      if (c === 0n) continue;
      served += Number(c);
      a.eventfdWrite(B, c);
    }
  }
  a.close(ep);
  parentPort.postMessage('done');
} else {
  const drain = mode === 'uv-drain';
  let served = 0;
  let id;
  const onKick = drain
    ? (fd, c) => { served += Number(c); a.eventfdWrite(B, c); if (served >= total) finish(); }
    : (fd) => { const c = a.eventfdRead(fd); if (c === 0n) return; served += Number(c); a.eventfdWrite(B, c); if (served >= total) finish(); };
  function finish() { a.unwatch(id); parentPort.postMessage('done'); }
  id = drain ? a.watchEventfd(A, onKick) : a.watchFd(A, onKick);
  parentPort.postMessage('ready');
}
`;

function median(xs) {
  const s = [...xs].sort((x, y) => x - y);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

function once(w, what) {
  return new Promise((res, rej) => {
    const onMsg = (m) => {
      if (m === what) {
        w.off('message', onMsg);
        w.off('error', rej);
        res();
      }
    };
    w.on('message', onMsg);
    w.once('error', rej);
  });
}

// One run in a fresh worker: µs per round trip.
async function runOnce(a, mode) {
  const A = a.eventfd(0, 0);
  const B = a.eventfd(0, 0);
  const w = new Worker(workerSource, { eval: true, workerData: { addon: ADDON, mode, A, B, total: WARMUP + ROUNDS } });
  await once(w, 'ready');
  const done = once(w, 'done');
  a.benchEventfdPingPong(A, B, WARMUP);
  const ns = a.benchEventfdPingPong(A, B, ROUNDS);
  await done;
  await w.terminate();
  a.close(A);
  a.close(B);
  return ns / ROUNDS / 1000;
}

async function child() {
  const a = createRequire(import.meta.url)(ADDON);
  const out = {};
  for (const [mode] of MODES) {
    const xs = [];
    for (let i = 0; i < RUNS; i++) xs.push(await runOnce(a, mode));
    out[mode] = xs;
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

function spawnChild(pinned) {
  const args = [SELF, '--child', '--rounds', String(ROUNDS), '--warmup', String(WARMUP), '--runs', String(RUNS)];
  const cmd = pinned ? 'taskset' : process.execPath;
  const argv = pinned ? ['-c', '0', process.execPath, ...args] : args;
  const r = spawnSync(cmd, argv, { encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0) {
    console.error(`eventfd-wakeup: ${pinned ? 'pinned' : 'unpinned'} run failed (status ${r.status}, signal ${r.signal})\n${r.stderr}`);
    return undefined;
  }
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

function cell(xs) {
  if (!xs) return 'n/a';
  return `${median(xs).toFixed(1)} (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`;
}

async function main() {
  if (CHILD) return child();
  const unpinned = ONLY === 'pinned' ? undefined : spawnChild(false);
  const pinned = ONLY === 'unpinned' ? undefined : spawnChild(true);
  const cpus = (await import('node:os')).cpus();
  console.log(`eventfd wake-up RTT, µs per round trip: median (min–max) of ${RUNS} runs × ${ROUNDS} round trips after ${WARMUP} warm-up`);
  console.log(`node ${process.version}, ${cpus.length} CPU(s) ${cpus[0]?.model ?? ''}\n`);
  console.log('| wiring (worker side) | unpinned | pinned (`taskset -c 0`) |');
  console.log('|---|---|---|');
  for (const [mode, label] of MODES) console.log(`| ${label} | ${cell(unpinned?.[mode])} | ${cell(pinned?.[mode])} |`);
}

await main();
