#!/usr/bin/env node
// npm run bench:net — virtio-net under KVM: the polled test guest build/guests/net.elf (test/guests/net.c:
// ARP, ICMP echo, UDP echo on port 7, UDP discard with counters on port 9) under kindling (`kindling run
// --net tap=ktap0`, kindling creates the tap) and under QEMU microvm (virtio-net-device on a tap this
// benchmark creates with `ip tuntap`, userspace tap backend: no vhost-net, like kindling), same guest
// binary, same command line, same kind of tap, same host-side clients. Each peer has its own network
// namespace (kindling-bench-net-<pid>-k / -q: both guests are 10.0.2.15, the host side 10.0.2.1/24),
// created here and deleted at the end, on error and on SIGINT/SIGTERM: no frame leaves them.
// Every round boots one fresh VM per peer (not kept across rounds), the two peers strictly interleaved
// and alternating which goes first; per VM it first warms up: --cold N (default 2000) 64-byte echoes, one
// in flight, right after boot, reported as "rr cold" (ARP, caches and, for kindling, its I/O worker's JIT:
// V8 runs the device code in its baseline tier for the first few thousand frames, what a short-lived VM
// sees), then --warm N (default 10000) more and a 0.5 s stream blast (the batched receive path), so what
// follows is steady state (measured: kindling's device thread took 48 µs of CPU per round trip in the
// first 5000 after boot, 33–36 µs after 10000–30000); then it measures:
//   rr:     --rr N (default 5000) 64-byte UDP datagrams to port 7, one in flight (udp-echo-client.mjs with SIZE)
//           → round trips/s and µs per round trip;
//   pps:    --pps N (default 20000) datagrams of 1..1472 bytes, 32 in flight
//           (test/kvm/fixtures/udp-echo-client.mjs, every echo checked byte for byte) → echoes/s;
//   stream: 1472-byte datagrams to discard port 9 as fast as one Node socket sends them for --blast S
//           seconds (default 2; bench/udp-blast.mjs) → MB/s = the guest's own byte count (STAT
//           dbytes after − before) / send time, and loss % = 1 − guest-counted / sent datagrams.
// Beside each phase: the VMM process's CPU time (utime+stime of all its threads, /proc/PID/stat; `ip
// netns exec` execs, so the spawned child's pid is node's or qemu's — checked through /proc/PID/exe)
// over the phase's wall time (the client process's whole life), and the part of it outside the vCPU
// thread(s) (kindling's `vcpu0`, QEMU's `CPU 0/KVM`, named by `-name …,debug-threads=on`): net.elf polls its rings, so its vCPU spins at one
// core whatever the load, and the rest is the device side (tap I/O, virtqueues, event loop). The
// stream also reports the sender's own CPU time (udp-blast.mjs's process.cpuUsage over its send loop):
// on a 2-core host the spinning vCPU holds one core and the sender shares the other with the device
// thread, so the stream rate follows how much of that core the sender gets.
// Reported per round, then min/median/max per peer and the per-round ratio kindling/QEMU (the median
// of the ratios; > 1 is better for kindling on rates, < 1 on µs and CPU). Times come from the clients
// (node, process.execPath, no wrapper): they include the host client's own cost, the same for both.
// Needs root, /dev/kvm, /dev/net/tun, iproute2 and a built tree (dist/, build/guests/net.elf); without
// qemu-system-x86_64 it runs kindling alone and says so.
// --counters drives kindling through its Firecracker API instead (`kindling --api-sock`, the same
// guest, tap and command line; PUT /metrics, FlushMetrics after each phase) and prints per phase the
// NIC's counters from the net_eth0 metrics group: frames each way, tap events and kicks per queue,
// transmit passes started by busy-polling (tx_busy_poll_count) and receive-ring dry spells
// (no_rx_avail_buffer), to tell why a round was slow.
// Options: --rounds N (default 5), --rr N, --pps N, --blast S, --cold N, --warm N (0: none), --counters, --help
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GUESTS, KINDLING, ROOT, apiRequest, benchArgs, fmt, median, printStat, which } from './lib.mjs';

const USAGE = 'usage: node bench/net.mjs [--rounds N] [--rr N] [--pps N] [--blast SECONDS] [--cold N] [--warm N] [--counters]';
const { rounds: ROUNDS, rr: RR, pps: PPS, blast: BLAST_S, cold: COLD, warm: WARM, counters: COUNTERS } = benchArgs('net', USAGE, {
  rounds: 5,
  rr: 5000,
  pps: 20000,
  blast: 2,
  cold: 2000,
  warm: { type: 'integer', default: 10000, min: 0 },
  counters: { type: 'boolean', default: false },
});

const NET = join(GUESTS, 'net.elf');
const ECHO = join(ROOT, 'test', 'kvm', 'fixtures', 'udp-echo-client.mjs');
const BLAST = join(ROOT, 'bench', 'udp-blast.mjs');
const IP = '10.0.2.15';
const HOST_IP = '10.0.2.1/24';
const CMDLINE = `net.ip=${IP} net.count=0`;
const RR_SIZE = 64;
const STREAM_SIZE = 1472;
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

const cannot =
  (process.getuid?.() === 0 ? undefined : 'network namespaces and taps need root') ??
  (existsSync('/dev/kvm') ? undefined : '/dev/kvm is absent') ??
  (existsSync('/dev/net/tun') ? undefined : '/dev/net/tun is absent') ??
  (which('ip') ? undefined : 'iproute2 (ip) is not installed') ??
  (existsSync(NET) ? undefined : `${NET} is not built (npm run build:guests)`) ??
  (existsSync(join(ROOT, 'dist', 'cli', 'cli.js')) ? undefined : 'dist/ is not built (npm run build:ts)');
if (cannot) {
  console.error(`bench:net: cannot run: ${cannot}`);
  process.exit(2);
}
const QEMU = which('qemu-system-x86_64');
if (!QEMU) console.error('\n!!! bench:net: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86): KINDLING ALONE, NO PEER, NO RATIOS !!!\n');

// ---- namespaces and processes, all torn down on exit ----
const namespaces = [];
const children = new Set();
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const ns of namespaces.splice(0)) spawnSync('ip', ['netns', 'del', ns]);
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => process.exit(130));

function inNs(ns, argv, timeout = 120_000) {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', timeout });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}
function ipIn(ns, ...args) {
  const r = inNs(ns, ['ip', ...args]);
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')} in ${ns}: ${r.stderr.trim()}`);
}
function netns(tag) {
  const ns = `kindling-bench-net-${process.pid}-${tag}`;
  const r = spawnSync('ip', ['netns', 'add', ns], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip netns add ${ns}: ${r.stderr.trim()}`);
  namespaces.push(ns);
  ipIn(ns, 'link', 'set', 'lo', 'up');
  return ns;
}

/** utime+stime of every thread of `pid`, in seconds: the whole process and the vCPU threads alone. */
function vmmCpu(pid, vcpuName) {
  const ticks = (path) => {
    const s = readFileSync(path, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  };
  const all = ticks(`/proc/${pid}/stat`);
  let vcpu = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (vcpuName.test(readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim())) vcpu += ticks(`/proc/${pid}/task/${t}/stat`);
    } catch {
      // a thread that ended between readdir and read
    }
  }
  return { all: all / CLK_TCK, vcpu: vcpu / CLK_TCK };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Start a VMM in `ns` (then `configure()`, for an API-driven one); resolves once the guest says its address is up. */
async function startVmm(ns, argv, exe, configure) {
  const p = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(p);
  let out = '';
  p.stdout.on('data', (b) => (out += b.toString('latin1')));
  p.stderr.on('data', (b) => (out += b.toString('latin1')));
  const exited = new Promise((r) => p.on('exit', (code, sig) => r(code ?? sig)));
  const t0 = performance.now();
  if (configure) await configure(() => out);
  while (!out.includes(`net: ip ${IP} up`)) {
    if (p.exitCode !== null || p.signalCode !== null || performance.now() - t0 > 30_000) {
      p.kill('SIGKILL');
      throw new Error(`${argv[0]} in ${ns}: no "net: ip ${IP} up" (exit ${p.exitCode ?? p.signalCode}): ${out.slice(-600)}`);
    }
    await sleep(10);
  }
  // `ip netns exec` execs the command: the child's pid is the VMM's own.
  const real = readlinkSync(`/proc/${p.pid}/exe`);
  if (real !== realpathSync(exe)) throw new Error(`pid ${p.pid} is ${real}, not ${exe}: ip netns exec did not exec the VMM`);
  return {
    pid: p.pid,
    out: () => out,
    async stop() {
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      children.delete(p);
    },
  };
}

/**
 * kindling through its Firecracker API (--counters): the same VM as `kindling run` below, plus a
 * metrics file; counters() flushes it and returns the net_eth0 group (deltas since the last flush).
 */
async function startKindlingApi(ns) {
  const dir = mkdtempSync(join(tmpdir(), 'kindling-bench-net-'));
  const sock = join(dir, 'api.sock');
  const metrics = join(dir, 'metrics');
  const put = async (path, body) => {
    const r = await apiRequest(sock, 'PUT', path, body);
    if (r.status !== 204) throw new Error(`PUT ${path}: ${r.status} ${r.text}`);
  };
  const vm = await startVmm(ns, [process.execPath, KINDLING, '--api-sock', sock], process.execPath, async (out) => {
    for (let i = 0; !existsSync(sock); i++) {
      if (i > 1000) throw new Error(`kindling --api-sock: no socket after 10 s: ${out().slice(-400)}`);
      await sleep(10);
    }
    await put('/boot-source', { kernel_image_path: NET, boot_args: CMDLINE });
    await put('/machine-config', { vcpu_count: 1, mem_size_mib: 64 });
    await put('/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'ktap0' });
    await put('/metrics', { metrics_path: metrics });
    await put('/actions', { action_type: 'InstanceStart' });
  });
  const stop = vm.stop;
  return {
    ...vm,
    async counters() {
      await put('/actions', { action_type: 'FlushMetrics' });
      const lines = readFileSync(metrics, 'utf8').trimEnd().split('\n');
      return JSON.parse(lines[lines.length - 1]).net_eth0;
    },
    async stop() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const PEERS = {
  kindling: {
    vcpu: /^vcpu\d+$/,
    async start(ns) {
      const vm = COUNTERS
        ? await startKindlingApi(ns)
        : await startVmm(ns, [process.execPath, KINDLING, 'run', '--kernel', NET, '--mem', '64', '--net', 'tap=ktap0', '--cmdline', CMDLINE], process.execPath);
      ipIn(ns, 'addr', 'add', HOST_IP, 'dev', 'ktap0');
      return vm;
    },
    async after(ns) {
      // kindling deletes the tap it created when it exits; the next round creates it again.
      for (let i = 0; i < 200 && inNs(ns, ['ip', 'link', 'show', 'ktap0']).status === 0; i++) await sleep(10);
      if (inNs(ns, ['ip', 'link', 'show', 'ktap0']).status === 0) throw new Error('ktap0 outlived kindling');
    },
  },
  QEMU: {
    vcpu: /^CPU \d+\/KVM$/,
    prepared: false,
    async start(ns) {
      if (!this.prepared) {
        ipIn(ns, 'tuntap', 'add', 'qtap0', 'mode', 'tap');
        ipIn(ns, 'addr', 'add', HOST_IP, 'dev', 'qtap0');
        ipIn(ns, 'link', 'set', 'qtap0', 'up');
        this.prepared = true;
      }
      return startVmm(ns, [
        QEMU, '-name', 'kindling-bench,debug-threads=on', '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=off', '-accel', 'kvm', '-cpu', 'host,-arch-capabilities',
        '-m', '64', '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio',
        '-global', 'virtio-mmio.force-legacy=false',
        '-netdev', 'tap,id=n0,ifname=qtap0,script=no,downscript=no', '-device', 'virtio-net-device,netdev=n0',
        '-kernel', NET, '-append', CMDLINE,
      ], QEMU);
    },
    async after() {},
  },
};

/** Run a host-side client (node) in `ns` and its one JSON line; the VMM's CPU time across it. */
function phase(ns, vm, vcpuName, argv) {
  const c0 = vmmCpu(vm.pid, vcpuName);
  const w0 = performance.now();
  const r = inNs(ns, [process.execPath, ...argv]);
  const wall = (performance.now() - w0) / 1000;
  const c1 = vmmCpu(vm.pid, vcpuName);
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: exit ${r.status} ${r.error?.message ?? ''} ${r.stderr}${r.stdout}; VMM: ${vm.out().slice(-400)}`);
  const j = JSON.parse(r.stdout.trim().split('\n').pop());
  return { j, wall, cpu: c1.all - c0.all, dev: c1.all - c0.all - (c1.vcpu - c0.vcpu) };
}

const field = (line, k) => Number(new RegExp(`\\b${k}=(\\d+)`).exec(line)?.[1]);

async function measure(name, ns) {
  const peer = PEERS[name];
  const vm = await peer.start(ns);
  try {
    const cold = phase(ns, vm, peer.vcpu, [ECHO, IP, String(COLD), '1', String(RR_SIZE)]);
    if (cold.j.bad) throw new Error(`${name}: ${cold.j.bad} corrupted echoes right after boot`);
    if (WARM > 0) {
      const warm = phase(ns, vm, peer.vcpu, [ECHO, IP, String(WARM), '1', String(RR_SIZE)]);
      if (warm.j.bad || warm.j.lost) throw new Error(`${name}: warm-up: ${warm.j.bad} corrupted, ${warm.j.lost} lost echoes`);
      phase(ns, vm, peer.vcpu, [BLAST, IP, '0.5', String(STREAM_SIZE)]);
    }
    const counters = {};
    await vm.counters?.(); // from here on, each flush holds one phase
    const rr = phase(ns, vm, peer.vcpu, [ECHO, IP, String(RR), '1', String(RR_SIZE)]);
    if (vm.counters) counters.rr = await vm.counters();
    const pps = phase(ns, vm, peer.vcpu, [ECHO, IP, String(PPS), '32']);
    if (vm.counters) counters.pps = await vm.counters();
    const st = phase(ns, vm, peer.vcpu, [BLAST, IP, String(BLAST_S), String(STREAM_SIZE)]);
    if (vm.counters) counters.stream = await vm.counters();
    const got = field(st.j.after, 'discarded') - field(st.j.before, 'discarded');
    const gotBytes = field(st.j.after, 'dbytes') - field(st.j.before, 'dbytes');
    const bad = field(st.j.after, 'badcsum');
    const res = {
      coldUs: (cold.j.ms * 1000) / COLD,
      rrPerS: (RR / rr.j.ms) * 1000,
      rrUs: (rr.j.ms * 1000) / RR,
      rrIssues: rr.j.bad + rr.j.lost + rr.j.retries,
      rrCpu: rr.cpu, rrDev: rr.dev, rrWall: rr.wall,
      pps: (PPS / pps.j.ms) * 1000,
      ppsIssues: pps.j.bad + pps.j.lost + pps.j.retries,
      ppsCpu: pps.cpu, ppsDev: pps.dev, ppsWall: pps.wall,
      mbps: gotBytes / 1e6 / (st.j.ms / 1000),
      sentMbps: st.j.sentBytes / 1e6 / (st.j.ms / 1000),
      lossPct: 100 * (1 - got / st.j.sent),
      stCpu: st.cpu, stDev: st.dev, stWall: st.wall,
      stSender: st.j.cpuMs / 1000,
      badcsum: bad,
      ...(vm.counters ? { counters } : {}),
    };
    if (rr.j.bad || pps.j.bad || bad) throw new Error(`${name}: corrupted echoes (rr bad ${rr.j.bad}, pps bad ${pps.j.bad}, badcsum ${bad})`);
    return res;
  } finally {
    await vm.stop();
    await peer.after(ns);
  }
}

const line = (name, r) =>
  `  ${name.padEnd(8)} rr cold ${fmt(r.coldUs, 1)} µs; rr ${fmt(r.rrPerS, 0)}/s (${fmt(r.rrUs, 1)} µs; CPU ${fmt(r.rrCpu, 2)} s, device side ${fmt(r.rrDev, 2)} s, over ${fmt(r.rrWall, 2)} s${r.rrIssues ? `; ${r.rrIssues} lost/retried` : ''})` +
  `; pps ${fmt(r.pps, 0)}/s (CPU ${fmt(r.ppsCpu, 2)} s, device ${fmt(r.ppsDev, 2)} s, over ${fmt(r.ppsWall, 2)} s${r.ppsIssues ? `; ${r.ppsIssues} lost/retried` : ''})` +
  `; stream ${fmt(r.mbps)} MB/s of ${fmt(r.sentMbps)} sent, loss ${fmt(r.lossPct, 1)} % (CPU ${fmt(r.stCpu, 2)} s, device ${fmt(r.stDev, 2)} s, sender ${fmt(r.stSender, 2)} s, over ${fmt(r.stWall, 2)} s)`;

const nsOf = { kindling: netns('k') };
if (QEMU) nsOf.QEMU = netns('q');
const order = QEMU ? ['kindling', 'QEMU'] : ['kindling'];
console.log(`# kindling bench:net — ${new Date().toISOString()} — ${ROUNDS} rounds; rr cold ${COLD} after boot, warm-up ${WARM} + 0.5 s blast; rr ${RR} × ${RR_SIZE} B, window 1; pps ${PPS} × 1..1472 B, window 32; stream ${STREAM_SIZE} B datagrams for ${BLAST_S} s; net.elf, fresh VM per peer per round${QEMU ? ', kindling and QEMU microvm interleaved' : ', KINDLING ONLY'}`);
const rows = [];
for (let round = 1; round <= ROUNDS; round++) {
  const seq = round % 2 ? order : [...order].reverse();
  const row = {};
  for (const name of seq) row[name] = await measure(name, nsOf[name]);
  rows.push(row);
  console.log(`round ${round} (${seq.join(' first, then ')}):`);
  for (const name of seq) console.log(line(name, row[name]));
  if (row.kindling.counters) {
    const c = (k, p) => row.kindling.counters[p][k];
    const d = (p) =>
      `${p} rx ${c('rx_packets_count', p)} (tap events ${c('rx_tap_event_count', p)}, kicks ${c('rx_queue_event_count', p)}, ring dry ${c('no_rx_avail_buffer', p)}), ` +
      `tx ${c('tx_packets_count', p)} (kicks ${c('tx_queue_event_count', p)}, busy-polled passes ${c('tx_busy_poll_count', p)})`;
    console.log(`  kindling NIC counters: ${['rr', 'pps', 'stream'].map(d).join('; ')}`);
  }
  if (QEMU) console.log(`  ratio kindling/QEMU: rr ${fmt(row.kindling.rrPerS / row.QEMU.rrPerS, 3)}, pps ${fmt(row.kindling.pps / row.QEMU.pps, 3)}, stream ${fmt(row.kindling.mbps / row.QEMU.mbps, 3)}`);
}

const METRICS = [
  ['rr cold µs/round trip', 'coldUs', 1, false],
  ['rr round trips/s', 'rrPerS', 0, true],
  ['rr µs/round trip', 'rrUs', 1, false],
  ['rr VMM CPU s', 'rrCpu', 2, false],
  ['rr VMM CPU s, no vCPU', 'rrDev', 2, false],
  ['rr wall s', 'rrWall', 2, false],
  ['pps echoes/s', 'pps', 0, true],
  ['pps VMM CPU s', 'ppsCpu', 2, false],
  ['pps VMM CPU s, no vCPU', 'ppsDev', 2, false],
  ['pps wall s', 'ppsWall', 2, false],
  ['stream MB/s (guest)', 'mbps', 1, true],
  ['stream MB/s sent', 'sentMbps', 1, false],
  ['stream loss %', 'lossPct', 1, false],
  ['stream VMM CPU s', 'stCpu', 2, false],
  ['stream CPU s, no vCPU', 'stDev', 2, false],
  ['stream sender CPU s', 'stSender', 2, false],
  ['stream wall s', 'stWall', 2, false],
];
console.log(`\nsummary over ${ROUNDS} rounds (min / median / max; ratio = median of per-round kindling/QEMU)`);
for (const [label, key, digits, ratio] of METRICS) {
  for (const name of order) printStat(`${name} ${label}`.padEnd(34), rows.map((r) => r[name][key]), digits);
  if (QEMU && (ratio || key.endsWith('Dev') || key === 'rrUs')) printStat(`ratio k/Q ${label}`.padEnd(34), rows.map((r) => r.kindling[key] / r.QEMU[key]), 3);
}
if (QEMU) console.log(`\nmedian ratios kindling/QEMU: rr ${fmt(median(rows.map((r) => r.kindling.rrPerS / r.QEMU.rrPerS)), 3)}, pps ${fmt(median(rows.map((r) => r.kindling.pps / r.QEMU.pps)), 3)}, stream ${fmt(median(rows.map((r) => r.kindling.mbps / r.QEMU.mbps)), 3)}`);
