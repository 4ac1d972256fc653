// The stream half of bench/net.mjs against net.elf (test/guests/net.c), run inside the benchmark's
// network namespace with `ip netns exec` (node directly, no wrapper; request/response and echoes/s use
// test/kvm/fixtures/udp-echo-client.mjs):
//   node udp-blast.mjs IP SECONDS SIZE
//     asks the discard port 9 for the guest's counters ("STAT"), then sends SIZE-byte datagrams
//     (0x5a bytes, never "STAT") to IP port 9 as fast as the socket takes them (at most 64 sends
//     outstanding in libuv) for SECONDS, waits 300 ms for the tap's queue to drain, and asks again.
//     The guest's count is what arrived; the difference to `sent` is loss (tap queue or rx ring full).
// Prints one JSON line { sent, sentBytes, errors, ms, cpuMs, before, after } (before/after: the guest's
// STAT lines).
import dgram from 'node:dgram';

const [ip, nArg, sizeArg] = process.argv.slice(2);
const n = Number(nArg);
const size = Number(sizeArg);
if (!ip || !(n > 0) || !Number.isInteger(size) || size < 4 || size > 1472) {
  console.error('usage: node udp-blast.mjs IP SECONDS SIZE (4 <= SIZE <= 1472)');
  process.exit(2);
}
const sock = dgram.createSocket('udp4');
await new Promise((r) => sock.bind(0, r));

/** The guest's counters line from discard port 9 (3 tries, 1 s each). */
async function stat() {
  for (let i = 0; i < 3; i++) {
    const line = await new Promise((resolve) => {
      const t = setTimeout(() => {
        sock.removeAllListeners('message');
        resolve(null);
      }, 1000);
      sock.removeAllListeners('message');
      sock.on('message', (m) => {
        const s = m.toString('latin1');
        if (!s.startsWith('rx=')) return;
        clearTimeout(t);
        sock.removeAllListeners('message');
        resolve(s.trim());
      });
      sock.send(Buffer.from('STAT'), 9, ip);
    });
    if (line) return line;
  }
  throw new Error(`no STAT answer from ${ip}`);
}

const before = await stat();
const buf = Buffer.alloc(size, 0x5a);
let sent = 0;
let errors = 0;
const t0 = process.hrtime.bigint();
const c0 = process.cpuUsage();
const end = performance.now() + n * 1000;
await new Promise((done) => {
  let inflight = 0;
  let over = false;
  const pump = () => {
    while (!over && inflight < 64) {
      if (performance.now() >= end) over = true;
      else {
        inflight++;
        sock.send(buf, 9, ip, onSent);
      }
    }
    if (over && inflight === 0) done();
  };
  const onSent = (err) => {
    inflight--;
    if (err) errors++;
    else sent++;
    if (inflight < 32) pump();
  };
  pump();
});
const ms = Number(process.hrtime.bigint() - t0) / 1e6;
const cpu = process.cpuUsage(c0);
await new Promise((r) => setTimeout(r, 300));
const after = await stat();
console.log(JSON.stringify({ sent, sentBytes: sent * size, errors, ms, cpuMs: (cpu.user + cpu.system) / 1000, before, after }));
sock.close();
