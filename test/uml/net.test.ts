// Linux's virtio_net driver (user-mode Linux) against `kindling vhost-user --device net=…`, kindling's
// virtio-net device behind a vhost-user socket. Every test creates its own network namespace
// (`ip netns add kindling-net-<pid>-<n>`, deleted afterwards); kindling's backend (and the tap or
// passt it opens) runs inside it with `ip netns exec`, so no frame ever leaves the namespace:
// - tap: kindling creates the tap in the namespace and brings it up; the host side gets 10.77.0.1/24,
//   UML's eth0 10.77.0.2/24; ping both ways, then UDP datagrams of 1..1472 bytes echoed by the host
//   side and compared byte for byte in the guest.
// - passt: passt (started by kindling on a socketpair) copies the namespace's addresses to the guest
//   (a veth pair with 10.78.0.2/24 and a default route via 10.78.0.1, so passt has a template
//   interface); the guest gets its address, prefix and router from passt's DHCP server (busybox's
//   udhcpc over hostfs; the lease must be the template's 10.78.0.2/24 via 10.78.0.1) and fetches a
//   page over HTTP from a server the test runs on the namespace's loopback, reached through passt's
//   gateway mapping; the content is checked.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ip, testNamespaces } from '../netns.js';
import { describeRun, exitWithin, kindlingArgv, runUml, umlHasModule, umlKindlingOrSkipNotice, umlScratch } from './helpers.js';

const VIRTIO_ID_NET = 1;

const missing = (): string | undefined => {
  if (!umlHasModule('virtio_net')) return "Debian's UML has no virtio_net module";
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  if (!existsSync('/usr/sbin/ip') && !existsSync('/sbin/ip') && !existsSync('/usr/bin/ip')) return 'iproute2 (ip) is not installed';
  if (!existsSync('/usr/bin/ping') && !existsSync('/bin/ping')) return 'iputils-ping is not installed';
  return undefined;
};
const canRun = umlKindlingOrSkipNotice('uml/net.test.ts', missing);
const HAS_PASST = existsSync('/usr/bin/passt') || existsSync('/usr/sbin/passt');
const HAS_UDHCPC = existsSync('/usr/bin/busybox') || existsSync('/bin/busybox');
if (canRun && !HAS_PASST) console.warn('\n!!! UML TEST SKIPPED (uml/net.test.ts passt): passt is not installed (apt-get install passt) !!!\n');
if (canRun && HAS_PASST && !HAS_UDHCPC) console.warn('\n!!! UML TEST SKIPPED (uml/net.test.ts passt): busybox (its udhcpc is the guest\'s DHCP client) is not installed (apt-get install busybox) !!!\n');

const scratch = umlScratch(afterEach);
const { netns } = testNamespaces(afterEach, 'kindling-net');

const inNs = (ns: string, argv: string[]): string[] => ['ip', 'netns', 'exec', ns, ...argv];

/** A Python helper run inside the namespace (host side of a test), killed with its group after the test. */
function nsPython(ns: string, code: string): { ready: Promise<void>; out: () => string } {
  const p = spawn('ip', ['netns', 'exec', ns, '/usr/bin/python3', '-u', '-c', code], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (b: Buffer) => (out += b.toString()));
  p.stderr.on('data', (b: Buffer) => (out += b.toString()));
  afterEachKill.push(() => {
    try {
      process.kill(-p.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  });
  const ready = new Promise<void>((res, rej) => {
    const t = setInterval(() => {
      if (out.includes('READY')) {
        clearInterval(t);
        res();
      } else if (p.exitCode !== null) {
        clearInterval(t);
        rej(new Error(`helper exited: ${out}`));
      }
    }, 20);
  });
  return { ready, out: () => out };
}
const afterEachKill: Array<() => void> = [];
afterEach(() => {
  for (const k of afterEachKill.splice(0)) k();
});

// Guest-side UDP check: every size 1..1472 sent to the host's echo server, the reply compared.
const GUEST_UDP = `
import socket, os, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
bad = 0
for n in range(1, 1473):
    data = os.urandom(n)
    for attempt in range(3):
        s.sendto(data, ("10.77.0.1", 7777))
        try:
            got, _ = s.recvfrom(2048)
        except socket.timeout:
            continue
        break
    else:
        got = b""
    if got != data:
        bad += 1
print("UDP-ECHO sizes=1472 bad=%d" % bad)
`;

describe.skipIf(!canRun)('virtio-net in user-mode Linux over kindling vhost-user', () => {
  it('tap: kindling creates and brings up the tap in the namespace; ping both ways and UDP 1..1472 bytes echoed byte for byte', async () => {
    const ns = netns();
    const dir = scratch.dir('uml-net');
    const sock = join(dir, 'net.sock');
    const backend = await scratch.backend(inNs(ns, kindlingArgv(sock, 'net=tap=ktap0,mac=02:00:00:00:00:02')), sock);
    ip(ns, 'addr', 'add', '10.77.0.1/24', 'dev', 'ktap0');
    const echo = nsPython(ns, `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.77.0.1", 7777))
print("READY")
while True:
    d, a = s.recvfrom(4096)
    s.sendto(d, a)
`);
    await echo.ready;
    // The host pings the guest while the guest is up (started once the guest marks it is ready).
    let hostPing = '';
    const r = await runUml({
      devices: [{ socket: sock, virtioId: VIRTIO_ID_NET }],
      modules: ['virtio_net'],
      memMiB: 192,
      timeoutMs: 120_000,
      onMark: (name) => {
        if (name !== 'net-up') return;
        const p = spawnSync('ip', ['netns', 'exec', ns, 'ping', '-c', '3', '-i', '0.3', '-W', '3', '10.77.0.2'], { encoding: 'utf8' });
        hostPing = `${p.stdout}${p.stderr} status=${p.status}`;
      },
      script: [
        'ip link set eth0 up',
        'ip addr add 10.77.0.2/24 dev eth0',
        'cat /sys/class/net/eth0/address',
        'ping -c 3 -i 0.3 -W 3 10.77.0.1; echo PING-STATUS $?',
        'mark net-up',
        'sleep 3',
        `/usr/bin/python3 -c '${GUEST_UDP.replace(/'/g, `'\\''`)}'`,
        'cat /sys/class/net/eth0/statistics/rx_packets /sys/class/net/eth0/statistics/tx_packets',
      ].join('\n'),
    });
    expect(r.status, describeRun(r)).toBe(0);
    expect(r.output, describeRun(r)).toContain('02:00:00:00:00:02');
    expect(r.output, describeRun(r)).toMatch(/3 packets transmitted, 3 received/);
    expect(r.output, describeRun(r)).toContain('PING-STATUS 0');
    expect(hostPing, `${hostPing}\n${describeRun(r)}`).toMatch(/3 packets transmitted, 3 received/);
    expect(r.output, describeRun(r)).toContain('UDP-ECHO sizes=1472 bad=0');
    expect(backend.stderr()).not.toMatch(/Error|dropped/);
    // The frontend has gone: the backend (filtered) exits 0 by itself, and its tap goes with it.
    expect(await exitWithin(backend), backend.stderr()).toEqual({ code: 0, signal: null });
  }, 180_000);

  it('rate limiters: tx-bw and rx-bw of 2 MB/s hold a TCP stream each way within 10 % of the limit', async () => {
    const ns = netns();
    const dir = scratch.dir('uml-net-rate');
    const sock = join(dir, 'net.sock');
    // 200 000 bytes every 100 ms each way (Firecracker's bandwidth bucket: size, refill_time).
    const backend = await scratch.backend(inNs(ns, kindlingArgv(sock, 'net=tap=ktap1,tx-bw=200000/100,rx-bw=200000/100')), sock);
    ip(ns, 'addr', 'add', '10.77.1.1/24', 'dev', 'ktap1');
    const N = 6_000_000;
    // Host side: receive the guest's stream (rate from the first byte to EOF), then send one to the guest.
    const host = nsPython(ns, `
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("10.77.1.1", 9000)); s.listen(1)
print("READY")
c, _ = s.accept(); n = 0; t = None
while True:
    b = c.recv(1 << 20)
    if not b: break
    if t is None: t = time.time()
    n += len(b)
print("G2H %d %.3f" % (n, time.time() - t)); c.close()
for i in range(200):
    try:
        c = socket.create_connection(("10.77.1.2", 9001)); break
    except OSError: time.sleep(0.05)
b = bytes(1 << 16); left = ${N}
while left > 0:
    k = min(left, len(b)); c.sendall(b[:k]); left -= k
c.shutdown(socket.SHUT_WR)
while c.recv(65536): pass
print("H2G-SENT")
`);
    await host.ready;
    const GUEST = `
import socket, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("10.77.1.2", 9001)); l.listen(1)
c = socket.create_connection(("10.77.1.1", 9000)); b = bytes(1 << 16); left = ${N}
while left > 0:
    k = min(left, len(b)); c.sendall(b[:k]); left -= k
c.close()
d, _ = l.accept(); n = 0; t = None
while True:
    x = d.recv(1 << 20)
    if not x: break
    if t is None: t = time.time()
    n += len(x)
print("H2G %d %.3f" % (n, time.time() - t)); d.close()
`;
    const r = await runUml({
      devices: [{ socket: sock, virtioId: VIRTIO_ID_NET }],
      modules: ['virtio_net'],
      memMiB: 192,
      timeoutMs: 120_000,
      script: ['ip link set eth0 up', 'ip addr add 10.77.1.2/24 dev eth0', `/usr/bin/python3 -c '${GUEST.replace(/'/g, `'\\''`)}'`].join('\n'),
    });
    expect(r.status, describeRun(r)).toBe(0);
    const g2h = /G2H (\d+) ([0-9.]+)/.exec(host.out());
    const h2g = /H2G (\d+) ([0-9.]+)/.exec(r.output);
    expect(g2h, host.out()).not.toBeNull();
    expect(h2g, r.output).not.toBeNull();
    expect(Number(g2h![1])).toBe(N);
    expect(Number(h2g![1])).toBe(N);
    // Payload rate: frames carry ~3 % of headers the limiter counts too, and the full bucket at the
    // start lets 200 kB through at once: both within the 10 %.
    const limit = 2_000_000;
    const rates = { g2h: N / Number(g2h![2]), h2g: N / Number(h2g![2]) };
    if (process.env.KINDLING_NET_RATES) console.log(`rate limiter: guest→host ${Math.round(rates.g2h)} B/s, host→guest ${Math.round(rates.h2g)} B/s (limit ${limit})`);
    for (const [dirn, rate] of Object.entries(rates)) {
      expect(rate, `${dirn} ${Math.round(rate)} B/s against ${limit}`).toBeGreaterThan(0.9 * limit);
      expect(rate, `${dirn} ${Math.round(rate)} B/s against ${limit}`).toBeLessThan(1.1 * limit);
    }
    expect(await exitWithin(backend), backend.stderr()).toEqual({ code: 0, signal: null });
  }, 180_000);

  it.skipIf(!HAS_PASST || !HAS_UDHCPC)('passt: kindling starts passt; the guest leases its address by DHCP and fetches a page over HTTP through passt, content checked', async () => {
    const ns = netns();
    // A template interface for passt: a veth pair, one end with an address and a default route.
    ip(ns, 'link', 'add', 'kv0', 'type', 'veth', 'peer', 'name', 'kv1');
    ip(ns, 'addr', 'add', '10.78.0.2/24', 'dev', 'kv0');
    ip(ns, 'link', 'set', 'kv0', 'up');
    ip(ns, 'link', 'set', 'kv1', 'up');
    ip(ns, 'route', 'add', 'default', 'via', '10.78.0.1');
    const page = `kindling-passt-${process.pid}-${Date.now()}`;
    const http = nsPython(ns, `
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"${page}\\n" * 1000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
socketserver.TCPServer.allow_reuse_address = True
srv = socketserver.TCPServer(("127.0.0.1", 8088), H)
print("READY")
srv.serve_forever()
`);
    await http.ready;
    const dir = scratch.dir('uml-net-passt');
    const sock = join(dir, 'net.sock');
    const backend = await scratch.backend(inNs(ns, kindlingArgv(sock, 'net=passt')), sock);
    const r = await runUml({
      devices: [{ socket: sock, virtioId: VIRTIO_ID_NET }],
      modules: ['virtio_net'],
      memMiB: 192,
      timeoutMs: 120_000,
      script: [
        'ip link set eth0 up',
        // busybox udhcpc runs this with the lease in its environment (mask: the prefix length).
        `cat > "$RUN/tmp/dhcp.sh" <<'EOS'
#!/bin/sh
case "$1" in
bound|renew)
  ip addr add "$ip/$mask" dev "$interface"
  ip route add default via "\${router%% *}"
  echo "DHCP-LEASE $ip/$mask router $router";;
esac
EOS`,
        'chmod +x "$RUN/tmp/dhcp.sh"',
        'busybox udhcpc -i eth0 -f -q -n -t 5 -T 3 -s "$RUN/tmp/dhcp.sh" 2>/dev/null || echo "DHCP-FAILED"',
        'ip -4 -o addr show dev eth0 | sed "s/^/ADDR /"',
        `/usr/bin/python3 -c 'import urllib.request,hashlib; b=urllib.request.urlopen("http://10.78.0.1:8088/", timeout=20).read(); print("HTTP-LEN", len(b)); print("HTTP-LINES", b.decode().count("${page}"))'`,
      ].join('\n'),
    });
    expect(r.status, `${describeRun(r)}\n--- backend ---\n${backend.stderr()}`).toBe(0);
    expect(r.output).toContain('DHCP-LEASE 10.78.0.2/24 router 10.78.0.1');
    expect(r.output).toMatch(/^ADDR .*inet 10\.78\.0\.2\/24 /m);
    expect(r.output).toContain(`HTTP-LEN ${(page.length + 1) * 1000}`);
    expect(r.output).toContain('HTTP-LINES 1000');
    // The backend (filtered, passt its child) exits 0 by itself once UML has gone, and passt with it.
    expect(await exitWithin(backend), backend.stderr()).toEqual({ code: 0, signal: null });
    const left = spawnSync('pgrep', ['-f', 'passt.* --quiet --fd 3'], { encoding: 'utf8' }).stdout.trim();
    expect(left.split('\n').filter(Boolean).filter((pid) => !/Z/.test(spawnSync('ps', ['-o', 'stat=', '-p', pid], { encoding: 'utf8' }).stdout)), 'passt still running').toEqual([]);
  }, 180_000);
});
