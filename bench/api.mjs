#!/usr/bin/env node
// npm run bench:api — process start → Firecracker-API socket accepting, wall and CPU time, and (with
// /dev/kvm) PUT /actions InstanceStart → the guest's first serial output.
//
// Variants, strictly interleaved per round, each a fresh process spawned directly (node …):
//   node      `node -e` that binds a Unix socket with node:net and nothing else (Node's own floor)
//   node:http the same with an empty node:http server (what a framework-free API server would cost)
//   fastify   the same with an empty fastify app (only when fastify is installed: it is not a
//             dependency; `npm install --no-save fastify` to compare — kindling chose node:http)
//   kindling  `node bin/kindling.js --api-sock PATH` (node:http + the API's schemas and controller)
// Wall: from spawn() to the first successful connect() on the socket (the bench retries connect
// every 0.2 ms). CPU: the process's on-CPU time at that moment, summed over all its threads from
// /proc/PID/task/*/schedstat (nanoseconds), read right after the connect succeeded (the process is
// then idle in its event loop). Firecracker's spec budget is ≤ 8 CPU ms for its (Rust) process start
// to API ready; Node alone costs more than that, which the `node` row shows.
// Options: --rounds N (interleaved rounds, default 15), --help
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { GUESTS, KINDLING, ROOT, apiRequest, benchArgs, fmt, median } from './lib.mjs';

const USAGE = 'usage: node bench/api.mjs [--rounds N: interleaved rounds per variant and InstanceStart boots (default 15)]';
const { rounds: ROUNDS } = benchArgs('api', USAGE, { rounds: 15 });
const dir = mkdtempSync(join(tmpdir(), 'kindling-bench-api-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const NODE_NET = `require('node:net').createServer().listen(process.argv[1])`;
const NODE_HTTP = `require('node:http').createServer((q, s) => s.end()).listen(process.argv[1])`;
const NODE_FASTIFY = `require('fastify')().listen({ path: process.argv[1] })`;
let hasFastify = true;
try {
  createRequire(join(ROOT, 'package.json')).resolve('fastify');
} catch {
  hasFastify = false;
}
const variants = {
  node: (sock) => [process.execPath, ['-e', NODE_NET, sock]],
  'node:http': (sock) => [process.execPath, ['-e', NODE_HTTP, sock]],
  ...(hasFastify ? { fastify: (sock) => [process.execPath, ['-e', NODE_FASTIFY, sock], { cwd: ROOT }] } : {}),
  kindling: (sock) => [process.execPath, [KINDLING, '--api-sock', sock]],
};

function cpuNs(pid) {
  let total = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended
    }
  }
  return total;
}

function tryConnect(sock) {
  return new Promise((resolve) => {
    const s = connect(sock);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

let n = 0;
async function once(name) {
  const sock = join(dir, `b${++n}.sock`);
  const [cmd, args, opts] = variants[name](sock);
  const t0 = performance.now();
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], ...opts });
  const exited = new Promise((r) => child.once('exit', r));
  for (;;) {
    if (existsSync(sock) && (await tryConnect(sock))) break;
    if (performance.now() - t0 > 20_000) throw new Error(`${name}: socket not accepting after 20 s`);
    await new Promise((r) => setTimeout(r, 0.2));
  }
  const wall = performance.now() - t0;
  const cpu = cpuNs(child.pid) / 1e6;
  child.kill('SIGTERM');
  await exited;
  return { wall, cpu };
}

const api = async (sock, method, path, body) => (await apiRequest(sock, method, path, body)).status;

/** InstanceStart → first byte of guest serial output on the process's stdout (hello.elf). */
async function bootOnce() {
  const sock = join(dir, `k${++n}.sock`);
  const child = spawn(process.execPath, [KINDLING, '--api-sock', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((r) => child.once('exit', r));
  while (!existsSync(sock) || !(await tryConnect(sock))) await new Promise((r) => setTimeout(r, 1));
  await api(sock, 'PUT', '/boot-source', { kernel_image_path: join(GUESTS, 'hello.elf') });
  await api(sock, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 32 });
  let first;
  child.stdout.once('data', () => (first = performance.now()));
  const t0 = performance.now();
  const status = await api(sock, 'PUT', '/actions', { action_type: 'InstanceStart' });
  if (status !== 204) throw new Error(`InstanceStart answered ${status}`);
  await exited;
  return first - t0;
}

const spread = (xs) => `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}`;

const results = Object.fromEntries(Object.keys(variants).map((k) => [k, { wall: [], cpu: [] }]));
for (let r = 0; r < ROUNDS; r++) {
  for (const name of Object.keys(variants)) {
    const { wall, cpu } = await once(name);
    results[name].wall.push(wall);
    results[name].cpu.push(cpu);
  }
}
console.log(`process start → API socket accepting, ${ROUNDS} interleaved rounds (median, min–max)`);
console.log('variant      wall ms               CPU ms');
for (const [name, { wall, cpu }] of Object.entries(results)) {
  console.log(`${name.padEnd(12)} ${fmt(median(wall)).padStart(6)} (${spread(wall)})`.padEnd(34) + `${fmt(median(cpu)).padStart(6)} (${spread(cpu)})`);
}
const k = results.kindling;
const h = results['node:http'];
console.log(`kindling − node:http: ${fmt(median(k.wall) - median(h.wall))} wall ms, ${fmt(median(k.cpu) - median(h.cpu))} CPU ms (the CLI, schemas, controller)`);
if (!hasFastify) console.log('fastify: not installed (not a dependency); `npm install --no-save fastify` adds its row');
if (existsSync('/dev/kvm') && existsSync(join(GUESTS, 'hello.elf'))) {
  const boots = [];
  for (let r = 0; r < ROUNDS; r++) boots.push(await bootOnce());
  console.log(`InstanceStart → first guest output (hello.elf): median ${fmt(median(boots))} ms (${spread(boots)})`);
} else {
  console.log('InstanceStart → first guest output: SKIPPED (no /dev/kvm or build/guests/hello.elf)');
}
