// Disk images: openDisk's one checked fd (type, size and serial from the fd that is then used; a
// FIFO cannot block the open) and the OFD lock bytes that make kindling and QEMU refuse each other
// (src/devices/virtio/block/image.ts). No KVM: all of this is plain host code.
//   kindling vs kindling   rw/rw and rw/ro refused both ways, ro/ro shared, locks gone with the fd
//   kindling vs qemu-io    Debian's qemu-utils; skipped with one loud line when qemu-io is missing
//   kindling vs a holder   a child node process taking F_OFD_SETLK bytes with the addon (always runs)
//   property               a QEMU-style peer with any (perm, shared) pair: kindling admits or refuses
//                          it exactly as QEMU's raw_check_lock_bytes rules say, in both orders
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, fstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { errorLine } from '../../src/cli/cli-args.js';
import { blockDeviceType } from '../../src/devices/virtio/block/index.js';
import { openDisk, type OpenedDisk } from '../../src/devices/virtio/block/image.js';
import { loadAddon } from '../../src/kvm/addon.js';
import { ConfigError } from '../../src/main/config.js';

const addon = loadAddon();
const ADDON_PATH = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'native', 'build', 'Release', 'kindling.node');
const dir = mkdtempSync(join(tmpdir(), 'kindling-imglock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const qemuIo = spawnSync('qemu-io', ['--version'], { encoding: 'utf8' });
const haveQemuIo = qemuIo.status === 0;
if (!haveQemuIo) console.log('image-lock.test: qemu-io not found (apt-get install qemu-utils) — SKIPPING the kindling-vs-QEMU lock tests');

const IN_USE = /^disk image is in use \(locked by another process\): /;
const IN_USE_BY_WRITER = /^disk image is in use \(locked by another process that has it open for writing; a read-only attach needs it unwritten\): /;

let seq = 0;
/** A fresh image of `bytes` random bytes; removed by the caller (rm) at the end of its test. */
function image(bytes = 64 * 1024): string {
  const p = join(dir, `img${seq++}.raw`);
  writeFileSync(p, randomBytes(bytes));
  return p;
}
const digest = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');
const openFds = (): number => readdirSync('/proc/self/fd').length;

function attach(path: string, readOnly = false): OpenedDisk {
  return openDisk(addon, { path, readOnly });
}
function release(d: OpenedDisk): void {
  addon.close(d.fd);
}

/** openDisk must throw one ConfigError line matching `re`, and leave no fd open. */
function refused(path: string, readOnly: boolean, re: RegExp): string {
  const before = openFds();
  let err: unknown;
  try {
    release(attach(path, readOnly));
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  const msg = (err as Error).message;
  expect(msg).toMatch(re);
  expect(msg).not.toContain('\n');
  expect(openFds()).toBe(before);
  return msg;
}

/** A child process holding OFD locks on `path` through the addon until it is killed or its stdin ends. */
async function holder(path: string, locks: Array<[start: number, len: number, exclusive: boolean]>, writable = true): Promise<ChildProcess> {
  const script = `
    const a = require(process.argv[1]);
    const fd = a.openFile(process.argv[2], a.constants[process.argv[3]], 0);
    for (const [s, l, x] of JSON.parse(process.argv[4])) if (!a.ofdLock(fd, s, l, x)) { console.log('refused'); process.exit(3); }
    console.log('held');
    process.stdin.on('end', () => process.exit(0)).resume();`;
  const child = spawn(process.execPath, ['-e', script, ADDON_PATH, path, writable ? 'O_RDWR' : 'O_RDONLY', JSON.stringify(locks)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  await waitForLine(child, /^held$/m);
  return child;
}

function waitForLine(child: ChildProcess, re: RegExp): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`child did not print ${re} (got ${JSON.stringify(out)})`)), 20_000);
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      if (re.test(out)) {
        clearTimeout(t);
        resolve();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`child exited (${code}) before printing ${re}: ${JSON.stringify(out)}`));
    });
  });
}

function ended(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode);
    else child.on('exit', (code) => resolve(code));
  });
}

async function stop(child: ChildProcess): Promise<void> {
  child.stdin?.end();
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await ended(child);
  clearTimeout(t);
}

/** Another open file description of `path` in this process: its OFD locks conflict with openDisk's. */
function peerFd(path: string): number {
  return addon.openFile(path, addon.constants.O_RDWR, 0);
}

describe('openDisk: one checked fd', () => {
  it('opens a regular image: sectors, serial inode and flags from the fd it returns', () => {
    const p = image(8192);
    try {
      const d = attach(p);
      try {
        expect(d.sectors).toBe(16);
        expect(d.readOnly).toBe(false);
        const ino = fstatSync(d.fd, { bigint: true }).ino.toString(16);
        expect(Buffer.from(d.serial).toString('latin1').replace(/\0+$/, '')).toMatch(new RegExp(`-${ino}$`));
        const flags = parseInt(/^flags:\s+(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${d.fd}`, 'utf8'))![1], 8);
        expect(flags & addon.constants.O_NONBLOCK).toBe(0); // the I/O worker's calls are blocking
        expect(flags & addon.constants.O_CLOEXEC).not.toBe(0);
        expect(flags & 3).toBe(addon.constants.O_RDWR);
      } finally {
        release(d);
      }
      const r = attach(p, true);
      expect(readFileSync(`/proc/self/fdinfo/${r.fd}`, 'utf8')).toMatch(/^flags:\s+\d*0$/m); // O_RDONLY
      release(r);
    } finally {
      rmSync(p);
    }
  });

  it('refuses a FIFO at once, read-only or not (the open does not block)', async () => {
    const fifo = join(dir, `fifo${seq++}`);
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    // Were the open blocking, this writer would unblock it after 2 s (and the time check fail) rather
    // than the test hanging forever.
    const writer = spawn('sh', ['-c', 'sleep 2; exec 3>"$1"; sleep 1', 'sh', fifo], { stdio: 'ignore' });
    try {
      for (const ro of [true, false]) {
        const t0 = Date.now();
        refused(fifo, ro, /^disk image is a FIFO \(named pipe\), not a regular file or block device: /);
        expect(Date.now() - t0).toBeLessThan(1000);
      }
    } finally {
      writer.kill('SIGKILL');
      await ended(writer);
      rmSync(fifo);
    }
  });

  it('refuses character devices, directories, sockets, missing files and odd sizes with one line', async () => {
    refused('/dev/null', true, /^disk image is a character device, not a regular file or block device: \/dev\/null$/);
    refused('/dev/zero', false, /^disk image is a character device, not a regular file or block device: /);
    const sub = join(dir, `sub${seq++}`);
    mkdirSync(sub);
    const sock = join(dir, `sock${seq++}`);
    const server = createServer();
    await new Promise<void>((r) => server.listen(sock, r));
    const odd = image(1000);
    try {
      refused(sub, true, /^disk image is a directory, not a regular file or block device: /);
      refused(sub, false, /^disk image is a directory, not a regular file or block device: /);
      refused(sock, true, /^disk image is a socket, not a regular file or block device: /);
      refused(join(dir, 'missing.img'), false, /^disk image not found: /);
      refused(join(odd, 'below-a-file'), true, /^disk image not found: /);
      refused(odd, false, /^disk image size 1000 bytes is not a multiple of 512: /);
      refused(image(0), false, /^disk image is empty \(0 bytes\): /);
      refused(join(dir, 'new\nline.img'), true, /^disk image not found: "/); // shown() quotes it, on one line
      expect(errorLine(new ConfigError('x')).code).toBe(2);
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
      rmSync(sub, { recursive: true });
      rmSync(odd);
    }
  });

  const canLoop = process.getuid?.() === 0 && existsSync('/dev/loop-control') && spawnSync('losetup', ['--version']).status === 0;
  if (!canLoop) console.log('image-lock.test: not root, or no losetup or /dev/loop-control — SKIPPING the block-device checks');
  it.skipIf(!canLoop)('attaches a block device: size from BLKGETSIZE64 on the same fd, locked like a file (root, loop device)', () => {
    const p = image(3 * 1024 * 1024);
    const sum = digest(p);
    const loop = spawnSync('losetup', ['-f', '--show', p], { encoding: 'utf8' });
    const dev = loop.stdout.trim();
    try {
      expect(loop.status, loop.stderr).toBe(0);
      const d = attach(dev);
      try {
        expect(d.sectors).toBe(6144);
        refused(dev, false, IN_USE);
        refused(dev, true, IN_USE_BY_WRITER);
      } finally {
        release(d);
      }
      const r = [attach(dev, true), attach(dev, true)];
      refused(dev, false, IN_USE);
      for (const x of r) release(x);
    } finally {
      if (dev) spawnSync('losetup', ['-d', dev]);
      expect(digest(p)).toBe(sum);
      rmSync(p);
    }
  });

  it.skipIf(process.getuid?.() === 0)('refuses images the user may not open (non-root only)', () => {
    const p = image(512);
    try {
      chmodSync(p, 0o444);
      refused(p, false, /^disk image is not writable: .*\(permission denied; append ,ro to attach it read-only\)$/);
      chmodSync(p, 0o000);
      refused(p, true, /^disk image is not readable: .*\(permission denied\)$/);
    } finally {
      rmSync(p);
    }
  });
  if (process.getuid?.() === 0) console.log('image-lock.test: running as root — SKIPPING the permission-denied checks');
});

describe('image locks: kindling vs kindling', () => {
  it('read-write excludes everything; read-only attaches share; locks go with the fd', () => {
    const p = image();
    const sum = digest(p);
    try {
      const rw = attach(p);
      refused(p, false, IN_USE);
      refused(p, true, IN_USE_BY_WRITER);
      release(rw);
      const ro = [attach(p, true), attach(p, true), attach(p, true)];
      refused(p, false, IN_USE);
      for (const d of ro) release(d);
      release(attach(p)); // every lock went with its fd
      expect(digest(p)).toBe(sum);
    } finally {
      rmSync(p);
    }
  });

  it("blockDeviceType's release() closes the fd, which drops the lock", () => {
    const p = image();
    try {
      const prepared = blockDeviceType.prepare({ path: p, readOnly: false }, { addon } as never);
      refused(p, true, IN_USE_BY_WRITER);
      prepared.release?.();
      release(attach(p));
    } finally {
      rmSync(p);
    }
  });
});

describe('image locks: kindling vs a holder process (F_OFD_SETLK through the addon)', () => {
  it('a QEMU-writer holder refuses both attaches; a QEMU-reader holder refuses only read-write; gone when the holder dies', async () => {
    const p = image();
    const sum = digest(p);
    const kids: ChildProcess[] = [];
    try {
      // What a QEMU VM's writable disk holds: perm CONSISTENT_READ|WRITE, not sharing WRITE|RESIZE.
      const w = await holder(p, [[100, 1, false], [101, 1, false], [201, 1, false], [203, 1, false]]);
      kids.push(w);
      refused(p, false, IN_USE);
      refused(p, true, IN_USE_BY_WRITER);
      w.kill('SIGKILL');
      await ended(w);
      release(attach(p));
      // qemu-io -r: perm CONSISTENT_READ, shares everything.
      const r = await holder(p, [[100, 1, false]], false);
      kids.push(r);
      release(attach(p, true));
      refused(p, false, IN_USE);
      await stop(r);
      // A whole-file exclusive lock (a tool that locks like Cloud Hypervisor's writers).
      const x = await holder(p, [[0, 0, true]]);
      kids.push(x);
      refused(p, true, IN_USE_BY_WRITER);
      refused(p, false, IN_USE);
      await stop(x);
      // And the other way: a holder cannot take an exclusive lock over kindling's bytes.
      const d = attach(p, true);
      const y = spawnSync(process.execPath, ['-e', `const a=require(process.argv[1]);const fd=a.openFile(process.argv[2],a.constants.O_RDWR,0);process.exit(a.ofdLock(fd,0,0,true)?0:3)`, ADDON_PATH, p]);
      expect(y.status).toBe(3);
      release(d);
      expect(digest(p)).toBe(sum);
    } finally {
      for (const k of kids) if (k.exitCode === null && k.signalCode === null) k.kill('SIGKILL');
      await Promise.all(kids.map(ended));
      rmSync(p);
    }
  });
});

describe.skipIf(!haveQemuIo)('image locks: kindling vs qemu-io', () => {
  const qio = (args: string[]): { status: number | null; out: string } => {
    const r = spawnSync('qemu-io', args, { encoding: 'utf8', timeout: 30_000 });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };

  it('qemu-io cannot write an image kindling holds (read-write or read-only); a QEMU reader may read it', () => {
    const p = image();
    const sum = digest(p);
    try {
      for (const ro of [false, true]) {
        const d = attach(p, ro);
        try {
          const w = qio(['-f', 'raw', '-c', 'write -P 0x5a 0 512', p]);
          expect(w.status).not.toBe(0);
          expect(w.out).toContain('Failed to get "write" lock');
          expect(digest(p)).toBe(sum);
          const r = qio(['-r', '-f', 'raw', '-c', 'read 0 512', p]);
          expect(r.out).toContain('read 512/512 bytes at offset 0');
        } finally {
          release(d);
        }
      }
      // With kindling gone, the same write goes through (the refusal above was the lock).
      const w = qio(['-f', 'raw', '-c', 'write -P 0x5a 0 512', p]);
      expect(w.status).toBe(0);
      expect(readFileSync(p).subarray(0, 512).every((b) => b === 0x5a)).toBe(true);
    } finally {
      rmSync(p);
    }
  });

  it('kindling refuses an image a running qemu-io holds: read-write and read-only while it writes, read-write while it reads', async () => {
    const p = image();
    const sum = digest(p);
    const probe = peerFd(p);
    const kids: ChildProcess[] = [];
    try {
      for (const readOnly of [false, true]) {
        // qemu-io interactive, its stdin a pipe: it holds the image until stdin ends.
        const q = spawn('qemu-io', [...(readOnly ? ['-r'] : []), '-f', 'raw', p], { stdio: ['pipe', 'ignore', 'inherit'] });
        kids.push(q);
        const held = readOnly ? 100 : 101; // its CONSISTENT_READ / WRITE permission byte
        const t0 = Date.now();
        while (addon.ofdTest(probe, held, 1, true) === null) {
          if (Date.now() - t0 > 20_000 || q.exitCode !== null) throw new Error(`qemu-io did not lock byte ${held}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        refused(p, false, IN_USE);
        if (readOnly) release(attach(p, true));
        else refused(p, true, IN_USE_BY_WRITER);
        q.stdin?.end('quit\n');
        expect(await ended(q)).toBe(0);
        release(attach(p)); // free again once qemu-io is gone
      }
      expect(digest(p)).toBe(sum);
    } finally {
      addon.close(probe);
      for (const k of kids) if (k.exitCode === null && k.signalCode === null) k.kill('SIGKILL');
      await Promise.all(kids.map(ended));
      rmSync(p);
    }
  });
});

describe('image locks: property', () => {
  // QEMU's rule (block/file-posix.c raw_check_lock_bytes), on BLK_PERM_* masks (0..15): two users
  // conflict when one uses a permission the other does not share.
  const ALL = 0x0f;
  const qemuConflict = (a: { perm: number; shared: number }, b: { perm: number; shared: number }): boolean =>
    (a.perm & ~b.shared & ALL) !== 0 || (b.perm & ~a.shared & ALL) !== 0;
  const KINDLING = { rw: { perm: 0x03, shared: 0x01 }, ro: { perm: 0x01, shared: 0x05 } };
  const peerBytes = (q: { perm: number; shared: number }): number[] => {
    const out: number[] = [];
    for (let i = 0; i < 4; i++) {
      if (q.perm & (1 << i)) out.push(100 + i);
      if (!(q.shared & (1 << i))) out.push(200 + i);
    }
    return out;
  };
  /** raw_check_lock_bytes from the peer's side: would QEMU (holding `fd`) be refused? */
  const qemuRefused = (fd: number, q: { perm: number; shared: number }): boolean => {
    for (let i = 0; i < 4; i++) {
      if (q.perm & (1 << i) && addon.ofdTest(fd, 200 + i, 1, true)) return true;
      if (!(q.shared & (1 << i)) && addon.ofdTest(fd, 100 + i, 1, true)) return true;
    }
    return false;
  };

  it('a QEMU-style peer with any permissions is refused or admitted as QEMU would, both orders', () => {
    const p = image(4096);
    const sum = digest(p);
    const fds = openFds();
    try {
      fc.assert(
        fc.property(
          fc.record({ perm: fc.integer({ min: 0, max: ALL }), shared: fc.integer({ min: 0, max: ALL }) }),
          fc.boolean(),
          fc.boolean(),
          (peer, readOnly, exclusive) => {
            const k = readOnly ? KINDLING.ro : KINDLING.rw;
            const bytes = peerBytes(peer);
            // Peer first, kindling second.
            const fd = peerFd(p);
            try {
              for (const b of bytes) expect(addon.ofdLock(fd, b, 1, false)).toBe(true);
              if (exclusive) expect(addon.ofdLock(fd, 400, 1, true)).toBe(true); // an exclusive lock elsewhere
              const holds = bytes.length > 0 || exclusive;
              const writer = (peer.perm & 0x02) !== 0 || exclusive;
              const expectRefused = readOnly ? qemuConflict(peer, k) || exclusive : holds;
              if (expectRefused) refused(p, readOnly, readOnly && writer ? IN_USE_BY_WRITER : IN_USE);
              else release(attach(p, readOnly));
            } finally {
              addon.close(fd);
            }
            // Kindling first, the peer second (applying its bytes, then checking as QEMU does).
            const d = attach(p, readOnly);
            const fd2 = peerFd(p);
            try {
              for (const b of bytes) expect(addon.ofdLock(fd2, b, 1, false)).toBe(true);
              expect(qemuRefused(fd2, peer)).toBe(qemuConflict(peer, k));
              expect(addon.ofdLock(fd2, 0, 0, true)).toBe(false); // nobody gets the file exclusively
            } finally {
              addon.close(fd2);
              release(d);
            }
          },
        ),
      );
      expect(openFds()).toBe(fds);
      expect(digest(p)).toBe(sum);
      expect(existsSync(p)).toBe(true);
    } finally {
      rmSync(p);
    }
  });
});
