// virtio-vsock end to end with the test guest vsock.elf (test/guests/vsock.c: echoes on port 1234,
// streams vsock.bytes of a pattern plus its CRC-32 to host port 5678): through vm.vsock (in-process)
// and through Firecracker's hybrid vsock on a Unix socket (CONNECT/OK, <uds>_<port>). Checked: the
// 16 MiB stream arrives whole with the right CRC both ways in; echoes byte for byte; a slow reader on
// either side stalls the writer with memory flat; 64 connections at once; RST (refusal) for ports
// nobody listens on; every connection torn down and the socket file removed when the VM stops.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { VM, type VMConfig } from '../../dist/main/index.js';
import { guest, kvmOrSkipNotice, waitFor } from './helpers.js';

const kvm = kvmOrSkipNotice('vsock.test.ts');
const VSOCK = guest('vsock.elf');
const CID = 3;
const MiB = 1024 * 1024;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'kindling-vsock-kvm-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

async function boot(config: Partial<VMConfig>, cmdline = ''): Promise<{ vm: VM; out: () => string }> {
  const vm = new VM({ kernel: VSOCK, memMiB: 64, logLevel: 'silent', rng: false, vsock: { cid: CID }, cmdline: `console=ttyS0 ${cmdline}`, ...config });
  let out = '';
  vm.serial.on('data', (b: Buffer) => (out += b.toString('latin1')));
  cleanups.push(() => vm.stop());
  return { vm, out: () => out };
}

/** Everything a socket sends until its end. */
function readAll(s: net.Socket): Promise<Buffer> {
  return new Promise((res, rej) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('end', () => res(Buffer.concat(parts)));
    s.on('error', rej);
  });
}

/** The guest's stream: `n` pattern bytes then their CRC-32 (le32). */
function checkStream(b: Buffer, n: number): void {
  expect(b.length).toBe(n + 4);
  const data = b.subarray(0, n);
  expect(b.readUInt32LE(n)).toBe(crc32(data));
  for (const i of [0, 1, 4095, 4096, n >> 1, n - 1]) expect(data[i]).toBe(Number((BigInt(i) * 0x9e3779b1n) & 0xffffffffn) >>> 24);
}

/** Write `data`, read the same number of bytes back. */
async function echo(s: net.Socket, data: Buffer): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  const done = new Promise<void>((res, rej) => {
    s.on('data', (d: Buffer) => {
      parts.push(d);
      got += d.length;
      if (got >= data.length) res();
    });
    s.on('error', rej);
    s.on('close', () => (got >= data.length ? res() : rej(new Error(`closed after ${got} of ${data.length} echoed bytes`))));
  });
  s.write(data);
  await done;
  return Buffer.concat(parts);
}

describe.skipIf(!kvm)('virtio-vsock with vsock.elf', () => {
  it('vm.vsock: the guest stream (16 MiB + CRC) arrives whole; echo on 1234 is byte for byte', async () => {
    const { vm, out } = await boot({});
    const streamed = new Promise<Buffer>((res) => vm.vsock!.listen(5678, (s) => res(readAll(s))));
    await vm.start();
    await waitFor(out, 'vsock: listening on 1234');
    const s = await vm.vsock!.connect(1234);
    const data = randomBytes(3 * MiB + 17);
    expect((await echo(s, data)).equals(data)).toBe(true);
    s.destroy();
    checkStream(await streamed, 16 * MiB);
    await waitFor(out, `vsock: stream done bytes=${16 * MiB} crc=`);
    expect(out()).toContain(`vsock: cid ${CID} `);
  }, 120_000);

  it("Firecracker's hybrid vsock: CONNECT 1234 → OK, echo; the guest's connection to port 5678 reaches <uds>_5678", async () => {
    const dir = tmp();
    const uds = join(dir, 'v.sock');
    const got = new Promise<Buffer>((res) => {
      const srv = net.createServer((c) => res(readAll(c)));
      srv.listen(`${uds}_5678`);
      cleanups.push(() => new Promise((r) => srv.close(r)));
    });
    const { vm, out } = await boot({ vsock: { cid: CID, udsPath: uds } }, `vsock.bytes=${4 * MiB}`);
    await vm.start();
    await waitFor(out, 'vsock: listening on 1234');
    const c = net.connect(uds);
    await new Promise((r) => c.once('connect', r));
    c.write('CONNECT 1234\n');
    const ok = await new Promise<string>((res) => {
      let line = '';
      const on = (d: Buffer): void => {
        line += d.toString('latin1');
        if (line.includes('\n')) {
          c.off('data', on);
          res(line);
        }
      };
      c.on('data', on);
    });
    expect(ok).toMatch(/^OK \d+\n$/);
    const data = randomBytes(MiB);
    expect((await echo(c, data)).equals(data)).toBe(true);
    c.destroy();
    checkStream(await got, 4 * MiB);
    await vm.stop();
    expect(existsSync(uds)).toBe(false);
  }, 120_000);

  it('a slow host reader stalls the guest stream with memory flat, then it completes', async () => {
    const { vm, out } = await boot({});
    let sock: net.Socket | undefined;
    vm.vsock!.listen(5678, (s) => {
      sock = s;
      s.pause();
    });
    await vm.start();
    await waitFor(out, 'vsock: stream connected');
    const rss0 = process.memoryUsage().rss;
    await new Promise((r) => setTimeout(r, 3000));
    // Nothing read for 3 s: the guest holds its data (credit), kindling holds at most its buffers.
    expect(out()).not.toContain('vsock: stream done');
    expect(sock!.readableLength).toBeLessThanOrEqual(2 * MiB);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(32 * MiB);
    const all = readAll(sock!);
    sock!.resume();
    checkStream(await all, 16 * MiB);
  }, 120_000);

  it('a slow guest reader (vsock.delay) stalls the host writer: write() returns false, memory flat, echo intact', async () => {
    const { vm, out } = await boot({}, 'vsock.connect=0 vsock.delay=2000000');
    await vm.start();
    await waitFor(out, 'vsock: listening on 1234');
    const s = await vm.vsock!.connect(1234);
    const parts: Buffer[] = [];
    s.pause(); // and the host does not read its echo either at first
    const chunk = randomBytes(64 * 1024);
    let accepted = 0;
    while (s.write(chunk) && accepted < 64 * MiB) accepted += chunk.length;
    expect(accepted).toBeLessThan(8 * MiB); // back-pressure long before 64 MiB
    const rss0 = process.memoryUsage().rss;
    await new Promise((r) => setTimeout(r, 2000));
    expect(process.memoryUsage().rss - rss0).toBeLessThan(32 * MiB);
    s.on('data', (d: Buffer) => parts.push(d));
    s.resume();
    const total = accepted + chunk.length;
    await new Promise<void>((res) => {
      const t = setInterval(() => {
        if (parts.reduce((n, p) => n + p.length, 0) >= total) {
          clearInterval(t);
          res();
        }
      }, 20);
    });
    const back = Buffer.concat(parts);
    for (let off = 0; off < total; off += chunk.length) expect(back.subarray(off, off + chunk.length).equals(chunk)).toBe(true);
    s.destroy();
  }, 180_000);

  it('64 connections at once each echo their own bytes', async () => {
    const { vm, out } = await boot({}, 'vsock.connect=0');
    await vm.start();
    await waitFor(out, 'vsock: listening on 1234');
    const socks = await Promise.all(Array.from({ length: 64 }, () => vm.vsock!.connect(1234)));
    const datas = socks.map(() => randomBytes(128 * 1024));
    const backs = await Promise.all(socks.map((s, i) => echo(s, datas[i])));
    backs.forEach((b, i) => expect(b.equals(datas[i])).toBe(true));
    for (const s of socks) s.destroy();
  }, 120_000);

  it('ports nobody listens on are refused (RST): vm.vsock, CONNECT on the Unix socket, and the guest to an unlistened host port', async () => {
    const dir = tmp();
    const uds = join(dir, 'v.sock');
    const { vm, out } = await boot({ vsock: { cid: CID, udsPath: uds } }, 'vsock.tries=3');
    await vm.start();
    await waitFor(out, 'vsock: listening on 1234');
    await expect(vm.vsock!.connect(4321)).rejects.toThrow(/guest port 4321 refused/);
    const c = net.connect(uds);
    const closed = readAll(c);
    c.write('CONNECT 4321\n');
    expect((await closed).length).toBe(0); // closed without OK, as Firecracker does
    await waitFor(out, 'vsock: stream gave up'); // nothing on 5678: RST three times
    expect(out()).toContain('vsock: stream refused, retrying');
    expect(vm.vsockStats()!.connectionsRefused).toBeGreaterThanOrEqual(1);
  }, 120_000);

  it('stopping the VM closes every connection and listener; vm.vsock then fails with one line', async () => {
    const dir = tmp();
    const uds = join(dir, 'v.sock');
    const { vm, out } = await boot({ vsock: { cid: CID, udsPath: uds } }, 'vsock.connect=0');
    await vm.start();
    await waitFor(out, 'vsock: listening on 1234');
    const a = await vm.vsock!.connect(1234);
    const b = net.connect(uds);
    b.write('CONNECT 1234\n');
    await new Promise((r) => b.once('data', r));
    const closedA = new Promise((r) => a.once('close', r));
    const closedB = new Promise((r) => b.once('close', r));
    await vm.stop();
    await Promise.all([closedA, closedB]);
    expect(existsSync(uds)).toBe(false);
    await expect(vm.vsock!.connect(1234)).rejects.toThrow(/the VM has stopped/);
  }, 120_000);
});
