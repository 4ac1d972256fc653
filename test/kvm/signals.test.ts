// Termination signals on a running VM (issue 10 item 5; src/cli/signals.ts): `kindling run` with
// blk.elf (test/guests/blk.c) busy on its disk gets SIGTERM, SIGHUP or SIGINT (stdin a pipe, not a
// TTY) and must stop the VM cleanly and exit 128+N with exactly one line, `kindling: stopped by SIG…`;
// a second signal while it stops forces the exit (128 + the second signal, one more line). The
// guest's write acknowledged before the signal (`blk.write=5:3c`: fill sector 5, write, flush, then
// print `blk write ok`) is in the image afterwards, nothing else in it changed, and the image's lock
// is gone: a QEMU-style writer (qemu-io when present, else an F_OFD_SETLK exclusive lock over the
// whole file) gets it right after. Needs /dev/kvm (skips with one loud line without it) and
// build/guests/blk.elf (`make -C test/guests`, which `npm test` builds).
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lazyTempDir } from '../fuzz/tmp.js';
import { ROOT, guest, kvmOrSkipNotice } from './helpers.js';

const kvm = kvmOrSkipNotice('signals.test.ts');
const BLK = guest('blk.elf');
const KINDLING = join(ROOT, 'bin', 'kindling.js');
const ADDON_PATH = join(ROOT, 'native', 'build', 'Release', 'kindling.node');
const haveQemuIo = spawnSync('qemu-io', ['--version']).status === 0;
const SIGNO: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

const dir = lazyTempDir('kindling-signals-');
const original = randomBytes(2 * 1024 * 1024);
let n = 0;

interface Stopped {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  img: string;
}

/**
 * Boot blk.elf on a fresh image (write sector 5, then a random-read benchmark that runs far longer
 * than the test), wait for `blk bench start`, then send `signals` one right after the other.
 */
async function signalRunningGuest(signals: NodeJS.Signals[]): Promise<Stopped> {
  const img = join(dir(), `disk${n++}.img`);
  writeFileSync(img, original);
  const p = spawn(process.execPath, [KINDLING, 'run', '--kernel', BLK, '--mem', '64', '--log-level', 'error', '--disk', img, '--cmdline', 'blk.write=5:3c blk.bench=rand blk.ops=1000000000'], {
    stdio: ['pipe', 'pipe', 'pipe'], // stdin a pipe: SIGINT is a stop request, not a key for the guest
  });
  let stdout = '';
  let stderr = '';
  let sent = false;
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => p.on('exit', (code, signal) => r({ code, signal })));
  p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  p.stdout.on('data', (b: Buffer) => {
    stdout += b.toString('latin1');
    if (!sent && stdout.includes('blk bench start')) {
      sent = true;
      for (const s of signals) p.kill(s);
    }
  });
  const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
  const { code, signal } = await ended;
  clearTimeout(timer);
  expect(sent, `the guest never started its benchmark: ${stdout} ${stderr}`).toBe(true);
  return { code, signal, stdout, stderr, img };
}

/** The guest's acknowledged write is in the image and nothing else changed. */
function expectWriteDurable(img: string): void {
  const after = readFileSync(img);
  expect(after.length).toBe(original.length);
  expect([...new Set(after.subarray(5 * 512, 6 * 512))]).toEqual([0x3c]);
  expect(after.subarray(0, 5 * 512).equals(original.subarray(0, 5 * 512))).toBe(true);
  expect(after.subarray(6 * 512).equals(original.subarray(6 * 512))).toBe(true);
}

/** Another process can take the image for writing right away: kindling's lock is gone. */
function expectUnlocked(img: string): void {
  const r = haveQemuIo
    ? spawnSync('qemu-io', ['-f', 'raw', '-c', 'read 0 512', img], { encoding: 'utf8', timeout: 20_000 })
    : spawnSync(process.execPath, ['-e', 'const a=require(process.argv[1]);const fd=a.openFile(process.argv[2],a.constants.O_RDWR,0);process.exit(a.ofdLock(fd,0,0,true)?0:3)', ADDON_PATH, img], { encoding: 'utf8', timeout: 20_000 });
  expect(r.status, `${r.stdout} ${r.stderr}`).toBe(0);
  if (haveQemuIo) expect(r.stdout).toMatch(/read 512\/512 bytes/);
}

describe.skipIf(!kvm || !existsSync(BLK))('a running VM and termination signals (kindling run, blk.elf)', () => {
  for (const sig of ['SIGTERM', 'SIGHUP', 'SIGINT'] as const) {
    it(`${sig}: the VM stops cleanly, exit ${128 + SIGNO[sig]} with one line; the acknowledged write is in the image, which is unlocked`, async () => {
      const r = await signalRunningGuest([sig]);
      expect(r.signal, r.stderr).toBeNull();
      expect(r.code, r.stderr).toBe(128 + SIGNO[sig]);
      expect(r.stderr).toBe(`kindling: stopped by ${sig}\n`);
      expect(r.stdout).toContain('blk write ok');
      expectWriteDurable(r.img);
      expectUnlocked(r.img);
    });
  }

  it('a second signal while the VM stops forces the exit (128 + the second signal), one more line', async () => {
    // Sent back to back, both may be pending at once, and Linux then delivers the lower-numbered
    // SIGHUP first: either order is a first and a second signal.
    const r = await signalRunningGuest(['SIGTERM', 'SIGHUP']);
    expect(r.signal, r.stderr).toBeNull();
    const m = /^kindling: stopped by (SIGTERM|SIGHUP)\nkindling: (SIGTERM|SIGHUP) again: exiting without waiting for the VM to stop\n$/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    expect(m![1]).not.toBe(m![2]);
    expect(r.code).toBe(128 + SIGNO[m![2]]);
    // The guest flushed its write itself before printing `blk write ok`; the forced exit loses nothing acknowledged.
    expectWriteDurable(r.img);
    expectUnlocked(r.img);
  });
});
