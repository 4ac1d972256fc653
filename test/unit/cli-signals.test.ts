// Termination signals on a kindling process that needs no /dev/kvm (issue 10 item 5; the running-VM
// half is test/kvm/signals.test.ts): `kindling vhost-user --device blk=IMG` serving its socket with
// the image open and locked gets SIGTERM, SIGHUP or SIGINT (stdin a pipe, not a TTY) and must exit
// 128+N by itself, its last stderr line `kindling: stopped by SIG…` (the one before it is the
// `listening on` line), no stack trace; the socket is removed, the image byte-identical, and its
// lock released: a QEMU-style writer (qemu-io when present, else an F_OFD_SETLK exclusive lock over
// the whole file) takes it right after. Needs dist/ (`node scripts/build.mjs ts`; `npm test` builds it).
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../fuzz/tmp.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'bin/kindling.js');
const ADDON_PATH = join(root, 'native', 'build', 'Release', 'kindling.node');
const built = existsSync(join(root, 'dist/cli/cli.js'));
if (!built) console.warn('\n!!! cli-signals.test: SKIPPED: dist/ is not built (run `node scripts/build.mjs ts`) !!!\n');
const haveQemuIo = spawnSync('qemu-io', ['--version']).status === 0;
const SIGNO = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;

const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');

/** Is there an OFD lock on `path`'s inode (/proc/locks)? */
function ofdLocked(path: string): boolean {
  const ino = statSync(path).ino;
  return readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .some((l) => /\bOFDLCK\b/.test(l) && l.includes(`:${ino} `));
}

/** Another process takes the image for writing at once (exit 0), or cannot (non-zero). */
function writerCanLock(img: string): { status: number | null; out: string } {
  const r = haveQemuIo
    ? spawnSync('qemu-io', ['-f', 'raw', '-c', 'read 0 512', img], { encoding: 'utf8', timeout: 20_000 })
    : spawnSync(process.execPath, ['-e', 'const a=require(process.argv[1]);const fd=a.openFile(process.argv[2],a.constants.O_RDWR,0);process.exit(a.ofdLock(fd,0,0,true)?0:3)', ADDON_PATH, img], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, out: `${r.stdout} ${r.stderr}` };
}

describe.skipIf(!built)('kindling vhost-user blk and termination signals (no KVM needed)', () => {
  for (const sig of ['SIGTERM', 'SIGHUP', 'SIGINT'] as const) {
    it(`${sig}: exit ${128 + SIGNO[sig]}, last line "stopped by ${sig}", socket removed, image unchanged and unlocked`, async () => {
      const dir = tempDir('kindling-cli-signals-');
      const img = join(dir, 'disk.img');
      const b = Buffer.alloc(1024 * 1024);
      for (let i = 0; i < b.length; i += 4) b.writeUInt32LE(Math.imul(i + 1, 2246822519) >>> 0, i);
      writeFileSync(img, b);
      const sum = sha(img);
      const sock = join(dir, 'blk.sock');
      const p = spawn(process.execPath, [bin, 'vhost-user', '--socket', sock, '--device', `blk=${img}`], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stderr = '';
      let stdout = '';
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => p.on('exit', (code, signal) => r({ code, signal })));
      const timer = setTimeout(() => p.kill('SIGKILL'), 20_000);
      try {
        // Serving: the socket exists and the image is locked (a writer is refused).
        const t0 = Date.now();
        while (!/listening on/.test(stderr)) {
          if (p.exitCode !== null || Date.now() - t0 > 15_000) throw new Error(`vhost-user did not start listening: ${stderr}`);
          await new Promise((r) => setTimeout(r, 20));
        }
        expect(existsSync(sock)).toBe(true);
        expect(ofdLocked(img)).toBe(true);
        expect(writerCanLock(img).status).not.toBe(0);
        p.kill(sig);
        const { code, signal } = await ended;
        const lines = stderr.split('\n').filter((l) => l !== '');
        expect(signal, stderr).toBeNull();
        expect(code, stderr).toBe(128 + SIGNO[sig]);
        expect(lines, stderr).toEqual([`kindling: vhost-user blk listening on ${sock}`, `kindling: stopped by ${sig}`]);
        expect(stdout).toBe('');
        expect(existsSync(sock)).toBe(false);
        expect(sha(img)).toBe(sum);
        const w = writerCanLock(img);
        expect(w.status, w.out).toBe(0);
      } finally {
        clearTimeout(timer);
        if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      }
    });
  }
});
