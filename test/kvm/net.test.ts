// virtio-net end to end under KVM with the test guest net.elf (test/guests/net.c: ARP, ICMP echo, UDP
// echo on port 7, counters on discard port 9) behind a tap. Every test creates its own network
// namespace (`ip netns add kindling-knet-<pid>-<n>`, deleted afterwards) and runs `kindling run` in it
// with `ip netns exec`, so the tap and every frame stay inside it. The host side (the tap, 10.0.2.1/24)
// pings the guest (10.0.2.15) and sends 10 000 UDP datagrams of every size 1..1472 bytes
// (test/kvm/fixtures/udp-echo-client.mjs); every echo must come back byte for byte, and the guest must
// have dropped nothing and seen no bad checksum (no offloads negotiated: the device hands over complete
// checksums). The same guest, tap and client under QEMU microvm are the cross-check, and QEMU is also
// the vhost-user-net frontend of `kindling vhost-user --device net=tap=…` (kindling's device in another
// VMM). A tx ops limit (Firecracker's token bucket) holds the echo rate within 10 % of the limit, set
// from the command line and, through the Firecracker API's PATCH /network-interfaces, on a running VM.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ip, testNamespaces } from '../netns.js';
import { api } from '../unit/api-http.js';
import { ROOT, guest, kvmOrSkipNotice, waitFor } from './helpers.js';

const kvm = kvmOrSkipNotice('net.test.ts');
const NET = guest('net.elf');
const KINDLING = join(ROOT, 'bin', 'kindling.js');
const CLIENT = join(ROOT, 'test', 'kvm', 'fixtures', 'udp-echo-client.mjs');
const QEMU = '/usr/bin/qemu-system-x86_64';
const IP = '10.0.2.15';

const missing = (): string | undefined => {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  if (!existsSync('/usr/sbin/ip') && !existsSync('/sbin/ip') && !existsSync('/usr/bin/ip')) return 'iproute2 (ip) is not installed';
  if (!existsSync('/usr/bin/ping') && !existsSync('/bin/ping')) return 'iputils-ping is not installed';
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun is absent';
  return undefined;
};
const why = kvm ? missing() : undefined;
if (why) console.warn(`\n!!! KVM TESTS SKIPPED (net.test.ts): ${why} !!!\n`);
const canRun = kvm && !why;
if (canRun && !existsSync(QEMU)) console.warn('\n!!! KVM TEST SKIPPED (net.test.ts QEMU cross-check): qemu-system-x86_64 is not installed (apt-get install qemu-system-x86) !!!\n');

// Hooks run in reverse order of registration: the VMMs are killed before their namespaces go.
const { netns } = testNamespaces(afterEach, 'kindling-knet');
const children: ChildProcess[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function inNs(ns: string, argv: string[], timeout = 30_000): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', timeout });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A VMM (kindling or QEMU) started in the namespace; its output collected. */
function start(ns: string, argv: string[]): { p: ChildProcess; out: () => string; exited: Promise<number | null> } {
  const p = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(p);
  let out = '';
  p.stdout!.on('data', (b: Buffer) => (out += b.toString('latin1')));
  p.stderr!.on('data', (b: Buffer) => (out += b.toString('latin1')));
  const exited = new Promise<number | null>((res) => p.on('exit', (code) => res(code)));
  return { p, out: () => out, exited };
}

const kindlingRun = (net: string, cmdline = ''): string[] => [process.execPath, KINDLING, 'run', '--kernel', NET, '--mem', '64', '--net', net, '--cmdline', `net.ip=${IP} ${cmdline}`];

interface EchoResult {
  sent: number;
  bad: number;
  lost: number;
  retries: number;
  ms: number;
  stat: string | null;
}

function udpEcho(ns: string, count: number, window = 1): EchoResult {
  const r = inNs(ns, [process.execPath, CLIENT, IP, String(count), String(window)], 120_000);
  if (r.status !== 0) throw new Error(`udp-echo-client: ${r.stderr}${r.stdout}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as EchoResult;
}

/** ping, then 10 000 UDP datagrams of 1..1472 bytes, against whichever VMM serves the tap `tap`. */
function pingAndEcho(ns: string, out: () => string): EchoResult {
  const ping = inNs(ns, ['ping', '-c', '3', '-i', '0.2', '-W', '2', IP]);
  expect(ping.stdout, ping.stderr).toMatch(/3 packets transmitted, 3 received, 0% packet loss/);
  const echo = udpEcho(ns, 10_000);
  expect(echo, out()).toMatchObject({ sent: 10_000, bad: 0, lost: 0 });
  expect(echo.stat).toMatch(/ echoed=10000 .* dropped=0 badcsum=0$/);
  return echo;
}

describe.skipIf(!canRun)('virtio-net with net.elf behind a tap (KVM)', () => {
  it('kindling creates the tap; ARP, ping and 10 000 UDP echoes of 1..1472 bytes come back byte for byte; the tap goes with kindling', async () => {
    const ns = netns();
    const vm = start(ns, kindlingRun('tap=ktap0', 'net.count=5000'));
    await waitFor(vm.out, `net: ip ${IP} up`, 30_000);
    expect(vm.out()).toMatch(/net: mac 02:4b:4e:[0-9a-f:]{8} mtu 1500 status 1 device at 0x/);
    ip(ns, 'addr', 'add', '10.0.2.1/24', 'dev', 'ktap0');
    pingAndEcho(ns, vm.out);
    await waitFor(vm.out, 'net: udp echoed 10000 bytes='); // the console may trail the packets
    expect(vm.out()).toContain('net: arp reply to 10.0.2.1');
    expect(vm.out()).toMatch(/net: icmp echo from 10\.0\.2\.1 seq 1 len 64/);
    vm.p.kill('SIGTERM');
    await vm.exited;
    expect(inNs(ns, ['ip', 'link', 'show', 'ktap0']).status).not.toBe(0); // kindling's tap is gone
  }, 120_000);

  it('a tap the caller made (ip tuntap) with mac=: the guest has that MAC, net.exit ends the VM with status 0, the tap stays', async () => {
    const ns = netns();
    ip(ns, 'tuntap', 'add', 'utap0', 'mode', 'tap');
    ip(ns, 'addr', 'add', '10.0.2.1/24', 'dev', 'utap0');
    ip(ns, 'link', 'set', 'utap0', 'up');
    const vm = start(ns, kindlingRun('tap=utap0,mac=02:00:00:00:00:2a', 'net.exit=200 net.count=0'));
    await waitFor(vm.out, `net: ip ${IP} up`, 30_000);
    expect(vm.out()).toContain('net: mac 02:00:00:00:00:2a mtu 1500 status 1');
    const echo = udpEcho(ns, 200, 8);
    expect(echo).toMatchObject({ bad: 0, lost: 0 });
    expect(await vm.exited, vm.out()).toBe(0);
    expect(vm.out()).toContain('net: done echoed=200 dropped=0 badcsum=0');
    expect(inNs(ns, ['ip', 'link', 'show', 'utap0']).status).toBe(0);
  }, 60_000);

  it('tx-ops=100/100 (1000 frames/s): 16 datagrams in flight are echoed at the limit, within 10 %', async () => {
    const ns = netns();
    const vm = start(ns, kindlingRun('tap=ktap1,tx-ops=100/100', 'net.count=0'));
    await waitFor(vm.out, `net: ip ${IP} up`, 30_000);
    ip(ns, 'addr', 'add', '10.0.2.1/24', 'dev', 'ktap1');
    udpEcho(ns, 100, 1); // ARP and the bucket's initial 100 tokens out of the way
    const echo = udpEcho(ns, 3000, 16);
    expect(echo).toMatchObject({ bad: 0, lost: 0 });
    const rate = (echo.sent / echo.ms) * 1000;
    expect(rate, `${rate.toFixed(0)} echoes/s`).toBeGreaterThan(900);
    expect(rate, `${rate.toFixed(0)} echoes/s`).toBeLessThan(1100);
  }, 60_000);

  it('PATCH /network-interfaces on the running VM (the Firecracker API): a tx ops limit takes hold within 10 %, and lifting it frees the rate again', async () => {
    // The reconfiguration is a message to the NIC's I/O worker, which blocks in its own epoll set
    // (src/io-worker/epoll-loop.ts): it must still receive it, and the limiter's resume timer must fire.
    const ns = netns();
    const dir = mkdtempSync(join(tmpdir(), 'kindling-knet-api-'));
    dirs.push(dir);
    const sock = join(dir, 'fc.sock');
    const vm = start(ns, [process.execPath, KINDLING, '--api-sock', sock]);
    for (let i = 0; i < 500 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 10));
    const put = async (path: string, body: unknown, method = 'PUT'): Promise<void> => {
      const r = await api(sock, method, path, body);
      expect(r.status, `${method} ${path}: ${r.text}`).toBe(204);
    };
    await put('/boot-source', { kernel_image_path: NET, boot_args: `net.ip=${IP} net.count=0` });
    await put('/machine-config', { vcpu_count: 1, mem_size_mib: 64 });
    await put('/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'atap0' });
    const metrics = join(dir, 'fc.metrics');
    await put('/metrics', { metrics_path: metrics });
    await put('/actions', { action_type: 'InstanceStart' });
    await waitFor(vm.out, `net: ip ${IP} up`, 30_000);
    ip(ns, 'addr', 'add', '10.0.2.1/24', 'dev', 'atap0');
    const rateOf = (e: EchoResult): number => (e.sent / e.ms) * 1000;
    udpEcho(ns, 200, 1); // ARP
    const free = udpEcho(ns, 2000, 16);
    const flush = (): Promise<void> => put('/actions', { action_type: 'FlushMetrics' });
    await flush();
    await put('/network-interfaces/eth0', { iface_id: 'eth0', tx_rate_limiter: { ops: { size: 100, refill_time: 100 } } }, 'PATCH');
    udpEcho(ns, 100, 1); // the bucket's initial 100 tokens
    const limited = udpEcho(ns, 3000, 16);
    await flush();
    await put('/network-interfaces/eth0', { iface_id: 'eth0', tx_rate_limiter: { ops: { size: 0, refill_time: 0 } } }, 'PATCH');
    const again = udpEcho(ns, 2000, 16);
    for (const e of [free, limited, again]) expect(e, vm.out()).toMatchObject({ bad: 0, lost: 0 });
    const rates = [free, limited, again].map((e) => rateOf(e).toFixed(0)).join(', ');
    expect(rateOf(limited), `echoes/s free, limited, lifted: ${rates}`).toBeGreaterThan(900);
    expect(rateOf(limited), `echoes/s free, limited, lifted: ${rates}`).toBeLessThan(1100);
    expect(rateOf(free), rates).toBeGreaterThan(2000);
    expect(rateOf(again), rates).toBeGreaterThan(2000);
    // The metrics file (Firecracker's net_<iface_id> group, deltas per line): the free phase's echoes
    // went both ways, some of them found by busy-polling the transmit ring; the limited phase's were
    // throttled; nothing failed.
    type Net = Record<string, number>;
    const lines = readFileSync(metrics, 'utf8').trimEnd().split('\n').map((l) => (JSON.parse(l) as { net_eth0: Net; net: Net }));
    const [first, second] = lines;
    const all = `metrics lines: ${JSON.stringify(lines.map((l) => l.net_eth0))}`;
    expect(first.net_eth0.rx_packets_count, all).toBeGreaterThanOrEqual(2200);
    expect(first.net_eth0.tx_packets_count, all).toBeGreaterThanOrEqual(2200);
    expect(first.net_eth0.rx_bytes_count, all).toBeGreaterThan(2200 * 42);
    expect(first.net_eth0.tx_busy_poll_count, all).toBeGreaterThan(0);
    expect(first.net_eth0.rx_tap_event_count, all).toBeGreaterThan(0);
    expect(first.net_eth0.tx_rate_limiter_throttled, all).toBe(0);
    expect(second.net_eth0.tx_packets_count, all).toBeGreaterThanOrEqual(3100);
    expect(second.net_eth0.tx_rate_limiter_throttled, all).toBeGreaterThan(100);
    expect(first.net, all).toEqual(first.net_eth0);
    for (const l of lines) expect(l.net_eth0, all).toMatchObject({ rx_fails: 0, tx_malformed_frames: 0, tap_write_fails: 0, event_fails: 0 });
  }, 90_000);

  it.skipIf(!existsSync(QEMU))('QEMU microvm as the vhost-user-net frontend of `kindling vhost-user --device net=tap=…`: the same ping and echoes through kindling\'s tap', async () => {
    // QEMU 7.2's vhost-user-net negotiates protocol features but leaves VHOST_USER_F_PROTOCOL_FEATURES
    // out of SET_FEATURES, then enables its rings with SET_VRING_ENABLE (src/vhost-user/backend.ts has(-1)).
    const ns = netns();
    const dir = mkdtempSync(join(tmpdir(), 'kindling-knet-vu-'));
    dirs.push(dir);
    const sock = join(dir, 'net.sock');
    const backend = start(ns, [process.execPath, KINDLING, 'vhost-user', '--socket', sock, '--device', 'net=tap=vtap0']);
    await waitFor(backend.out, 'listening on', 15_000);
    const qemu = start(ns, [
      QEMU, '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=off', '-accel', 'kvm', '-cpu', 'host,-arch-capabilities',
      '-m', '64', '-object', 'memory-backend-memfd,id=mem,size=64M,share=on', '-machine', 'memory-backend=mem',
      '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-global', 'virtio-mmio.force-legacy=false',
      '-chardev', `socket,id=c,path=${sock}`, '-netdev', 'vhost-user,id=n0,chardev=c', '-device', 'virtio-net-device,netdev=n0',
      '-kernel', NET, '-append', `net.ip=${IP} net.count=5000`,
    ]);
    await waitFor(qemu.out, `net: ip ${IP} up`, 30_000);
    ip(ns, 'addr', 'add', '10.0.2.1/24', 'dev', 'vtap0');
    pingAndEcho(ns, qemu.out);
    await waitFor(qemu.out, 'net: udp echoed 10000 bytes=');
    expect(backend.out()).not.toMatch(/error|refused|SET_VRING_ENABLE/i);
    qemu.p.kill('SIGTERM');
    await qemu.exited;
    expect(await backend.exited).toBe(0); // one session: the backend ends with it
  }, 120_000);

  it.skipIf(!existsSync(QEMU))('QEMU microvm runs the same guest on the same kind of tap: the same ping and echoes (the cross-check)', async () => {
    const ns = netns();
    ip(ns, 'tuntap', 'add', 'qtap0', 'mode', 'tap');
    ip(ns, 'addr', 'add', '10.0.2.1/24', 'dev', 'qtap0');
    ip(ns, 'link', 'set', 'qtap0', 'up');
    const qemu = start(ns, [
      QEMU, '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=off', '-accel', 'kvm', '-cpu', 'host,-arch-capabilities',
      '-m', '64', '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio',
      '-global', 'virtio-mmio.force-legacy=false',
      '-netdev', 'tap,id=n0,ifname=qtap0,script=no,downscript=no', '-device', 'virtio-net-device,netdev=n0',
      '-kernel', NET, '-append', `net.ip=${IP} net.count=5000`,
    ]);
    await waitFor(qemu.out, `net: ip ${IP} up`, 30_000);
    pingAndEcho(ns, qemu.out);
    await waitFor(qemu.out, 'net: udp echoed 10000 bytes=');
    expect(qemu.out()).toContain('net: arp reply to 10.0.2.1');
  }, 120_000);
});
