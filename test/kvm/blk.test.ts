// virtio-blk end to end: blk.elf (a freestanding virtio-mmio driver, test/guests/README.md) against
// kindling's virtio-blk device in its I/O worker, compared with the host file: reads (CRC-32),
// writes, GET_ID, capacity, malformed requests, read-only disks, the image lock, durability across
// SIGKILL, and the main thread being off the I/O path.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, join } from 'node:path';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { lazyTempDir } from '../fuzz/tmp.js';
import { VM } from '../../dist/main/index.js';
import { blockSerial } from '../../dist/devices/virtio/block/device.js';
import { ROOT, guest, kvmOrSkipNotice, runGuest, waitFor } from './helpers.js';

const kvm = kvmOrSkipNotice('blk.test.ts');
const BLK = guest('blk.elf');
const KINDLING = join(ROOT, 'bin', 'kindling.js');
const SECTORS = 8192; // 4 MiB

const dir = lazyTempDir('kindling-blk-');
const original = randomBytes(SECTORS * 512);
let n = 0;
/** A fresh copy of the random 4 MiB image. */
function image(bytes: Buffer = original): string {
  const p = join(dir(), `disk${n++}.img`);
  writeFileSync(p, bytes);
  return p;
}
const hex8 = (x: number): string => (x >>> 0).toString(16).padStart(8, '0');
const lines = (s: string): string[] => s.replace(/\r/g, '').split('\n');

describe.skipIf(!kvm)('virtio-blk with blk.elf', () => {
  it('blk.read=64: the CRC-32 of the first 64 sectors equals the host file’s; blk.id and blk.capacity', async () => {
    const img = image();
    const r = await runGuest({ kernel: BLK, memMiB: 64, disks: [{ path: img }], cmdline: 'blk.read=64 blk.id blk.capacity', rng: false });
    const out = lines(r.output);
    expect(out).toContain('blk: device at 0xd0000000 irq 5 (cmdline)');
    expect(out).toContain(`blk read 64 crc32=${hex8(crc32(original.subarray(0, 64 * 512)))}`);
    const serial = Buffer.from(blockSerial(img, statSync(img, { bigint: true }).ino)).toString('latin1').replace(/\0+$/, '');
    expect(serial).toBe(`${basename(img)}-${statSync(img, { bigint: true }).ino.toString(16)}`.slice(-20));
    expect(out).toContain(`blk id ${serial}`);
    expect(out).toContain(`blk capacity ${SECTORS} ro=0`);
    expect(out).toContain('blk done');
    expect(r.exit).toEqual({ reason: 'exit', exitCode: 0 });
    expect(r.vm.cmdline).toBe('blk.read=64 blk.id blk.capacity virtio_mmio.device=4K@0xd0000000:5');
    expect(r.vm.blockStats()[0]).toMatchObject({ reads: 1, bytesRead: 64 * 512, errors: 0, needsReset: 0 });
    // The image is untouched by reads.
    expect(readFileSync(img).equals(original)).toBe(true);
  });

  it('the whole disk through small rings, small segments and indirect descriptors gives the same CRC', async () => {
    const img = image();
    const want = `blk read ${SECTORS} crc32=${hex8(crc32(original))}`;
    for (const extra of ['', 'blk.qsize=32 blk.seg=512', 'blk.indirect blk.seg=4096', 'blk.indirect blk.qsize=4']) {
      const r = await runGuest({ kernel: BLK, memMiB: 64, disks: [{ path: img, readOnly: true }], cmdline: `blk.read=${SECTORS} ${extra}` });
      expect(lines(r.output), extra).toContain(want);
      expect(r.exit.exitCode, extra).toBe(0);
    }
  });

  it('used-buffer interrupts reach the guest through the irqfd on the device GSI (blk.irq: PIC route, ring 0)', async () => {
    const img = image();
    const r = await runGuest({ kernel: BLK, memMiB: 64, disks: [{ path: img, readOnly: true }], cmdline: 'blk.irq blk.read=128 blk.bench=rand blk.ops=32 blk.qd=4' });
    const out = lines(r.output);
    expect(out).toContain(`blk read 128 crc32=${hex8(crc32(original.subarray(0, 128 * 512)))}`);
    expect(out).toContain('blk bench done bytes=131072 ops=32');
    const irqs = Number(/^blk irqs (\d+)$/m.exec(r.output.replace(/\r/g, ''))?.[1]);
    expect(irqs).toBeGreaterThanOrEqual(1);
    const st = r.vm.blockStats()[0];
    expect(st.interrupts).toBeGreaterThanOrEqual(irqs);
    expect(st.interrupts).toBeLessThanOrEqual(st.batches);
    expect(r.exit.exitCode).toBe(0);
  });

  it('blk.write=S:B lands in the file (and nothing else changes)', async () => {
    const img = image();
    const r = await runGuest({ kernel: BLK, memMiB: 64, disks: [{ path: img }], cmdline: 'blk.write=5:3c blk.read=16' });
    expect(lines(r.output)).toContain('blk write ok');
    expect(r.exit.exitCode).toBe(0);
    const after = readFileSync(img);
    const expected = Buffer.from(original);
    expected.fill(0x3c, 5 * 512, 6 * 512);
    expect(after.equals(expected)).toBe(true);
    // the read after the write sees it
    expect(lines(r.output)).toContain(`blk read 16 crc32=${hex8(crc32(expected.subarray(0, 16 * 512)))}`);
    expect(r.vm.blockStats()[0]).toMatchObject({ writes: 1, flushes: 1, bytesWritten: 512 });
  });

  it('blk.bad: malformed chain, out-of-range read and unknown type get answers, kindling keeps serving, the VM exits 0', async () => {
    const img = image();
    const r = await runGuest({ kernel: BLK, memMiB: 64, disks: [{ path: img }], cmdline: 'blk.bad blk.bench=seq blk.mib=1' });
    const out = lines(r.output);
    expect(out).toContain('blk bad chain: used len=0 status=255'); // header only: no status byte to answer in
    expect(out).toContain('blk bad range: status 1'); // IOERR
    expect(out).toContain('blk bad type: status 2'); // UNSUPP
    expect(out).toContain('blk bench done bytes=1048576 ops=16');
    expect(r.exit).toEqual({ reason: 'exit', exitCode: 0 });
    expect(r.vm.blockStats()[0]).toMatchObject({ badChains: 1, errors: 1, unsupported: 1, needsReset: 0 });

    const oob = await runGuest({ kernel: BLK, memMiB: 64, disks: [{ path: img }], cmdline: 'blk.bad=oob blk.read=8' });
    const o = lines(oob.output);
    expect(o).toContain('blk bad chain: used len=1 status=1'); // data buffer outside RAM: IOERR in its status byte
    expect(o).toContain(`blk read 8 crc32=${hex8(crc32(original.subarray(0, 8 * 512)))}`);
    expect(oob.exit.exitCode).toBe(0);
    expect(readFileSync(img).equals(original)).toBe(true);
  });

  it('a read-only disk: VIRTIO_BLK_F_RO, writes answer IOERR, the file is unchanged', async () => {
    const img = image();
    const r = await runGuest({ kernel: BLK, memMiB: 64, disks: [{ path: img, readOnly: true }], cmdline: 'blk.write=1:ff blk.capacity blk.bad blk.read=4' });
    const out = lines(r.output);
    expect(out).toContain('blk write status 1');
    expect(out).toContain(`blk capacity ${SECTORS} ro=1`);
    expect(out).toContain('blk bad ro-write: status 1');
    expect(out).toContain(`blk read 4 crc32=${hex8(crc32(original.subarray(0, 4 * 512)))}`);
    expect(r.exit.exitCode).toBe(1); // blk.elf reports the refused write
    expect(readFileSync(img).equals(original)).toBe(true);
  });

  it('a second VM on the same writable image is refused with a clear error (exit 2 from the CLI), a read-only one too', async () => {
    const img = image();
    const first = new VM({ kernel: BLK, memMiB: 64, disks: [{ path: img }], cmdline: 'blk.bench=rand blk.ops=100000000', logLevel: 'silent' });
    let out = '';
    first.serial.on('data', (b: Buffer) => (out += b.toString('latin1')));
    await first.start();
    try {
      await waitFor(() => out, 'blk bench start');
      const second = new VM({ kernel: BLK, memMiB: 64, disks: [{ path: img }], logLevel: 'silent' });
      await expect(second.start()).rejects.toThrow(`disk image is in use (locked by another process): ${img}`);
      expect(second.state).toBe('stopped');
      const cli = spawnSync(process.execPath, [KINDLING, 'run', '--kernel', BLK, '--mem', '64', '--disk', img], { encoding: 'utf8', timeout: 30_000 });
      expect(cli.status).toBe(2);
      expect(cli.stderr).toContain(`kindling: disk image is in use (locked by another process): ${img}\n`);
      // As QEMU's locks: a writer shares the image with no one, not even a read-only attach.
      const ro = new VM({ kernel: BLK, memMiB: 64, disks: [{ path: img, readOnly: true }], logLevel: 'silent' });
      await expect(ro.start()).rejects.toThrow(`disk image is in use (locked by another process that has it open for writing; a read-only attach needs it unwritten): ${img}`);
    } finally {
      await first.stop();
    }
    // Released on stop.
    const again = await runGuest({ kernel: BLK, memMiB: 64, disks: [{ path: img }], cmdline: 'blk.capacity' });
    expect(again.exit.exitCode).toBe(0);
  });

  it('vm.swapDisk (PATCH /drives path_on_host): the guest gets a config-change interrupt, the new capacity and the new bytes; the old image is unlocked, the new one locked', async () => {
    const a = image();
    const bBytes = randomBytes(2 << 20);
    const b = image(bBytes);
    // After the swap the guest reads and then keeps the new image busy (blk.bench) until stopped.
    const vm = new VM({ kernel: BLK, memMiB: 64, disks: [{ path: a }], cmdline: 'blk.capacity blk.swap=16 blk.bench=rand blk.ops=100000000', logLevel: 'silent' });
    let out = '';
    vm.serial.on('data', (d: Buffer) => (out += d.toString('latin1')));
    await vm.start();
    try {
      await waitFor(() => out, 'blk waiting for a config change');
      expect(out).toContain(`blk capacity ${SECTORS} ro=0`);
      // A missing image is refused in one line and changes nothing.
      await expect(vm.swapDisk(0, join(dir(), 'missing.img'))).rejects.toThrow(/^disk image not found: /);
      await vm.swapDisk(0, b);
      await waitFor(() => out, 'blk bench start');
      expect(out).toContain(`blk config change: capacity ${bBytes.length / 512}`);
      expect(out).toContain(`blk read 16 crc32=${hex8(crc32(bBytes.subarray(0, 16 * 512)))}`);
      // a is free again (another VM may take it), b is held.
      const other = await runGuest({ kernel: BLK, memMiB: 64, disks: [{ path: a }], cmdline: 'blk.capacity', rng: false });
      expect(other.exit.exitCode).toBe(0);
      await expect(new VM({ kernel: BLK, memMiB: 64, disks: [{ path: b }], logLevel: 'silent' }).start()).rejects.toThrow(/disk image is in use/);
      await expect(vm.swapDisk(1, b)).rejects.toThrow(/^no disk 1 \(the VM has 1\)$/);
      expect(vm.blockStats()[0].requests).toBeGreaterThan(0);
    } finally {
      await vm.stop();
    }
  });

  it('durability: SIGKILL the moment `blk write ok` is printed, and the bytes are in the file', async () => {
    const img = image();
    // blk.bench keeps the guest busy after the write, so the kill lands on a running VM.
    const p = spawn(process.execPath, [KINDLING, 'run', '--kernel', BLK, '--mem', '64', '--disk', img, '--cmdline', 'blk.write=5:3c blk.bench=rand blk.ops=100000000'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => p.on('exit', (code, signal) => r({ code, signal })));
    p.stdout.on('data', (b: Buffer) => {
      out += b.toString('latin1');
      if (out.includes('blk write ok')) p.kill('SIGKILL');
    });
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
    const { signal } = await ended;
    clearTimeout(timer);
    expect(out).toContain('blk write ok');
    expect(signal).toBe('SIGKILL');
    const after = readFileSync(img);
    expect([...new Set(after.subarray(5 * 512, 6 * 512))]).toEqual([0x3c]);
    expect(after.subarray(0, 5 * 512).equals(original.subarray(0, 5 * 512))).toBe(true);
    expect(after.subarray(6 * 512).equals(original.subarray(6 * 512))).toBe(true);
  });

  it('the main thread is not on the I/O path: the guest’s reads complete while the main thread is blocked', async () => {
    // 64 MiB: the first 4 MiB random, the rest a hole; 1024 requests of 64 KiB.
    const img = image();
    truncateSync(img, 64 << 20);
    const whole = Buffer.alloc(64 << 20);
    original.copy(whole);
    const total = (64 << 20) / 512;
    // blk.read of the whole disk (1024 requests of 64 KiB), then one more sequential pass (1024 more).
    const requests = 2048;
    const vm = new VM({
      kernel: BLK,
      memMiB: 64,
      disks: [{ path: img, readOnly: true }],
      cmdline: `blk.read=${total} blk.bench=seq blk.mib=64`,
      logLevel: 'silent',
    });
    let out = '';
    vm.serial.on('data', (b: Buffer) => (out += b.toString('latin1')));
    await vm.start();
    try {
      // Busy-wait from the moment the vCPU runs: no event-loop turn, no message, no timer on this
      // thread for ≥ 2 s (longer only if the guest is not done yet, up to 20 s).
      const t0 = performance.now();
      const startReqs = vm.blockStats()[0].requests;
      let reqs = startReqs;
      while (performance.now() - t0 < 2000 || (reqs < requests && performance.now() - t0 < 20_000)) reqs = vm.blockStats()[0].requests;
      const blockedMs = performance.now() - t0;
      // Everything completed during the block: the device did not need this thread.
      expect(startReqs).toBeLessThan(requests / 2);
      expect(reqs).toBe(requests);
      expect(blockedMs).toBeGreaterThanOrEqual(2000);
      // The guest's results were waiting in the serial ring; they appear as soon as the loop lets go.
      const t1 = performance.now();
      await waitFor(() => out, 'blk done', 5000);
      expect(performance.now() - t1).toBeLessThan(250);
      expect(lines(out)).toContain(`blk read ${total} crc32=${hex8(crc32(whole))}`);
      expect(lines(out)).toContain(`blk bench done bytes=${64 << 20} ops=1024`);
      expect((await vm.wait()).exitCode).toBe(0);
    } finally {
      await vm.stop();
    }
  });

  it('CLI: kindling run --kernel blk.elf --disk IMG --cmdline blk.read=64', () => {
    const img = image();
    const r = spawnSync(process.execPath, [KINDLING, 'run', '--kernel', BLK, '--disk', img, '--cmdline', 'blk.read=64'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(lines(r.stdout)).toContain(`blk read 64 crc32=${hex8(crc32(original.subarray(0, 64 * 512)))}`);
    const ro = spawnSync(process.execPath, [KINDLING, 'run', '--kernel', BLK, '--disk', `${img},ro`, '--cmdline', 'blk.capacity'], { encoding: 'utf8', timeout: 60_000 });
    expect(lines(ro.stdout)).toContain(`blk capacity ${SECTORS} ro=1`);
    const odd = join(dir(), 'odd.img');
    writeFileSync(odd, Buffer.alloc(1000));
    for (const [arg, msg] of [
      [join(dir(), 'missing.img'), 'disk image not found: '],
      [dir(), 'disk image is a directory, not a regular file or block device: '],
      [odd, 'disk image size 1000 bytes is not a multiple of 512: '],
    ]) {
      const e = spawnSync(process.execPath, [KINDLING, 'run', '--kernel', BLK, '--disk', arg], { encoding: 'utf8', timeout: 30_000 });
      expect(e.status).toBe(2);
      expect(e.stderr).toBe(`kindling: ${msg}${arg}\n`);
    }
  });

  it('two disks: two windows, two GSIs, both announced; the guest drives the first', async () => {
    const a = image();
    const b = join(dir(), 'copy.img');
    copyFileSync(a, b);
    const r = await runGuest({ kernel: BLK, memMiB: 64, disks: [{ path: a }, { path: b, readOnly: true }], cmdline: 'blk.capacity', rng: false });
    expect(r.vm.cmdline).toBe('blk.capacity virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6');
    expect(lines(r.output)).toContain('blk: device at 0xd0000000 irq 5 (cmdline)');
    expect(lines(r.output)).toContain(`blk capacity ${SECTORS} ro=0`);
    expect(r.vm.blockStats()).toHaveLength(2);
  });
});
