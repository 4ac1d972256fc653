// The kindling CLI as a process (issue 10, items 1-3): `node bin/kindling.js …` (dist/ must be built:
// `node scripts/build.mjs ts`, which `npm test` runs first; this file builds nothing) is given every
// class of careless or hostile user input and must answer each with exit status 2 and exactly ONE
// line on stderr starting `kindling:` — no stack trace, no hang (every spawn has a timeout and the
// test fails on it), nothing read that was not needed (a 3 GiB sparse initrd is refused from its
// size, in well under a second).
//
// Which inputs are decided before /dev/kvm is opened? All of them but one: the flags, the kernel and
// initrd (opened non-blocking, checked on that fd, sizes against RAM and the kernel's format before
// a byte of guest RAM exists) and the command line are all checked by resolveConfig() when the VM
// object is made, and `kindling vhost-user` never opens /dev/kvm at all. The exception is a locked
// disk under `kindling run`: the block device opens and locks its image when it is attached, after
// the VM fd exists. So on a host without /dev/kvm (this one) every case below runs, and would fail
// if its check came after the KVM open (it would print the /dev/kvm line and exit 1); the
// locked-disk `run` case alone needs KVM and skips with one loud line without it (the same lock is
// shown here through `kindling vhost-user --device blk=…`, which opens the image the same way).
//
// Every `run` also attaches a read-only disk image (`--disk IMG,ro`) and a read-write one where it
// makes sense; both must be byte-identical (SHA-256) and keep their mtime after every run.
//
// The 50 MB --cmdline: Linux refuses an execve whose single argument is 128 KiB or more (E2BIG,
// MAX_ARG_STRLEN), so no such argv can ever reach kindling; the test shows that, then gives the
// largest argument the kernel passes (128 KiB - 1) and a 1,000,000-byte boot_args in a Firecracker
// --config-file (at most 1 MiB), both refused at once from their length.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { PVM_WARNING } from '../../dist/kvm/system.js';
import { tempDir } from '../fuzz/tmp.js';
import { testKernelImage } from './fixtures/test-kernel.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'bin/kindling.js');
const ADDON_PATH = join(root, 'native', 'build', 'Release', 'kindling.node');
const built = existsSync(join(root, 'dist/cli/cli.js')) && existsSync(join(root, 'dist/main/bundle.js'));
if (!built) console.warn('\n!!! cli-process.test: SKIPPED: dist/ is not built (run `node scripts/build.mjs ts`) !!!\n');
const HAS_KVM = existsSync('/dev/kvm');
if (!HAS_KVM) console.warn('\n!!! cli-process.test: /dev/kvm is absent: the locked-disk case of `kindling run` (decided after the KVM open) is SKIPPED; every other case runs !!!\n');
const haveQemuIo = spawnSync('qemu-io', ['--version']).status === 0;
if (!haveQemuIo) console.warn('cli-process.test: qemu-io not found (apt-get install qemu-utils): the disk lock is held by an F_OFD_SETLK child instead');

/** How long one kindling process may take before the test calls it a hang. */
const HANG_MS = 15_000;

interface Result {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Run `node bin/kindling.js ...args` with stdin from /dev/null; rejects (kills it) after HANG_MS. */
function kindling(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const childEnv = { ...process.env, ...env };
    delete childEnv.KINDLING_DEBUG; // it adds the stack trace this test says is never there
    const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`kindling ${args.map((a) => a.slice(0, 60)).join(' ')} did not exit within ${HANG_MS} ms (hung); stderr so far: ${JSON.stringify(stderr)}`));
    }, HANG_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

/**
 * Exit 2, nothing on stdout, exactly one stderr line `kindling: …` matching `re`, no stack trace. On a
 * KVM-PVM host a refusal that comes after /dev/kvm was opened is preceded by kindling's one PVM
 * warning line (src/kvm/system.ts), which is not part of the error.
 */
function expectUserError(r0: Result, re: RegExp): string {
  const r = r0.stderr.startsWith(`${PVM_WARNING}\n`) ? { ...r0, stderr: r0.stderr.slice(PVM_WARNING.length + 1) } : r0;
  const ctx = JSON.stringify(r0);
  expect(r.signal, ctx).toBeNull();
  expect(r.status, ctx).toBe(2);
  expect(r.stdout, ctx).toBe('');
  expect(r.stderr, ctx).toMatch(/^kindling: [^\n]*\n$/);
  expect(r.stderr, ctx).not.toMatch(/^\s+at /m);
  expect(r.stderr, ctx).not.toMatch(/Error:|node:internal|\.js:\d+/);
  const line = r.stderr.slice(0, -1);
  expect(line, ctx).toMatch(re);
  return line;
}

const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');

let dir = '';
let kernel = '';
let roDisk = '';
let rwDisk = '';
let roSum = '';
let rwSum = '';
let roMtime = 0;
let rwMtime = 0;

/** The images must be exactly as they were: bytes and mtime (nothing was written, not even nothing). */
function expectImagesUntouched(): void {
  expect(sha(roDisk)).toBe(roSum);
  expect(sha(rwDisk)).toBe(rwSum);
  expect(statSync(roDisk).mtimeMs).toBe(roMtime);
  expect(statSync(rwDisk).mtimeMs).toBe(rwMtime);
}

/** `kindling run ARGS --disk RO,ro`: one user error; the images are untouched afterwards. */
async function runRefused(args: string[], re: RegExp, o: { rw?: boolean } = {}): Promise<Result> {
  const r = await kindling(['run', ...args, '--disk', `${roDisk},ro`, ...(o.rw ? ['--disk', rwDisk] : [])]);
  expectUserError(r, re);
  expectImagesUntouched();
  return r;
}

function fillImage(p: string, bytes: number): void {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4) b.writeUInt32LE((Math.imul(i, 2654435761) ^ 0x5eed) >>> 0, i);
  writeFileSync(p, b);
}

beforeAll(() => {
  if (!built) return;
  dir = tempDir('kindling-cli-process-');
  kernel = join(dir, 'vmlinux');
  writeFileSync(kernel, testKernelImage());
  roDisk = join(dir, 'ro.img');
  rwDisk = join(dir, 'rw.img');
  fillImage(roDisk, 256 * 1024);
  fillImage(rwDisk, 256 * 1024);
  // An mtime in the past, so that any write in the same second would still show.
  execFileSync('touch', ['-d', '2001-02-03 04:05:06', roDisk, rwDisk]);
  roSum = sha(roDisk);
  rwSum = sha(rwDisk);
  roMtime = statSync(roDisk).mtimeMs;
  rwMtime = statSync(rwDisk).mtimeMs;
});

describe.skipIf(!built)('kindling as a process: every user-input error is one line and exit 2', () => {
  it('no arguments: the usage on stderr (nothing on stdout), exit 2', async () => {
    const r = await kindling([]);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^usage:\n {2}kindling run /);
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });

  it('flags: --mem -5, --vcpus 0, an unknown flag, a missing value', async () => {
    await runRefused(['--kernel', kernel, '--mem', '-5'], /^kindling: --mem needs a whole number \(got "-5"\) \(see kindling --help\)$/);
    await runRefused(['--kernel', kernel, '--vcpus', '0'], /^kindling: --vcpus must be a whole number ≥ 1 \(got 0\)$/);
    await runRefused(['--kernel', kernel, '--bogus'], /^kindling: Unknown option '--bogus' \(see kindling --help\)$/);
    await runRefused(['--kernel', kernel, '--mem', '1'], /^kindling: --mem must be a whole number of MiB ≥ 16 \(got 1\)$/);
    const r = await kindling(['run', '--kernel']);
    expectUserError(r, /^kindling: Option '--kernel <value>' argument missing \(see kindling --help\)$/);
    expectUserError(await kindling(['frobnicate']), /^kindling: unknown command "frobnicate" \(see kindling --help\)$/);
  });

  it('a FIFO as --kernel or --initrd (directly or through a symlink) is refused at once, not a hang', async () => {
    const fifo = join(dir, 'fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    const link = join(dir, 'fifo-link');
    symlinkSync(fifo, link);
    // Nobody ever opens the FIFO's other end: a blocking open would hang until HANG_MS fails the test.
    for (const p of [fifo, link]) {
      const r = await runRefused(['--kernel', p], /^kindling: kernel is a FIFO \(named pipe\), not a regular file: /);
      expect(r.ms).toBeLessThan(HANG_MS);
      expect(r.stderr).toContain(p);
      await runRefused(['--kernel', kernel, '--initrd', p], /^kindling: initrd is a FIFO \(named pipe\), not a regular file: /);
    }
  });

  it('/dev/zero as --kernel or --initrd: a character device, refused from fstat (not read)', async () => {
    await runRefused(['--kernel', '/dev/zero'], /^kindling: kernel is a character device, not a regular file: \/dev\/zero$/);
    const r = await runRefused(['--kernel', kernel, '--initrd', '/dev/zero'], /^kindling: initrd is a character device, not a regular file: \/dev\/zero$/);
    expect(r.ms).toBeLessThan(HANG_MS);
  });

  it('a directory, a missing file, a 0-byte kernel, a truncated bzImage (518 bytes), not a kernel at all', async () => {
    const sub = join(dir, 'a-directory');
    mkdirSync(sub);
    await runRefused(['--kernel', sub], /^kindling: kernel is a directory, not a regular file: /);
    await runRefused(['--kernel', kernel, '--initrd', sub], /^kindling: initrd is a directory, not a regular file: /);
    await runRefused(['--kernel', join(dir, 'missing')], /^kindling: kernel not found: /);
    const empty = join(dir, 'empty');
    writeFileSync(empty, '');
    await runRefused(['--kernel', empty], /^kindling: kernel is empty: /);
    // The fuzz counterexample of issue 10 item 12: boot flag and "HdrS" present, the header cut at 518.
    const cut = Buffer.alloc(518);
    cut.writeUInt16LE(0xaa55, 0x1fe);
    cut.write('HdrS', 0x202, 'latin1');
    const trunc = join(dir, 'truncated.bzImage');
    writeFileSync(trunc, cut);
    await runRefused(['--kernel', trunc], /^kindling: kernel .*truncated\.bzImage: bzImage is truncated: 518 bytes/);
    const text = join(dir, 'notes.txt');
    writeFileSync(text, 'not a kernel\n'.repeat(100));
    await runRefused(['--kernel', text], /^kindling: kernel .*notes\.txt: /);
  });

  it('a sparse 3 GiB initrd and an initrd larger than --mem are refused from their size, before a byte is read', async () => {
    const huge = join(dir, 'huge.initrd');
    writeFileSync(huge, '');
    truncateSync(huge, 3 * 1024 ** 3);
    const r = await runRefused(['--kernel', kernel, '--initrd', huge], /^kindling: initrd is 3 GiB, more than kindling reads \(2 GiB\): .*huge\.initrd$/);
    // Reading 3 GiB of (sparse) zeros takes seconds and 3 GiB of RAM; the refusal comes from fstat.
    expect(r.ms).toBeLessThan(5000);
    const big = join(dir, 'big.initrd');
    writeFileSync(big, '');
    truncateSync(big, 1.5 * 1024 ** 3);
    const b = await runRefused(['--kernel', kernel, '--mem', '64', '--initrd', big], /^kindling: initrd is 1\.5 GiB, larger than the guest's RAM \(64 MiB\): .*big\.initrd$/);
    expect(b.ms).toBeLessThan(5000);
    const over = join(dir, 'over.initrd');
    writeFileSync(over, '');
    truncateSync(over, 17 * 1024 * 1024);
    await runRefused(['--kernel', kernel, '--mem', '16', '--initrd', over], /^kindling: initrd is 17 MiB, larger than the guest's RAM \(16 MiB\): /);
  });

  it('a command line with a newline, and the longest ones an argv or a config file can carry', async () => {
    await runRefused(['--kernel', kernel, '--cmdline', 'console=ttyS0\ninit=/bin/sh'], /^kindling: --cmdline must not contain NUL or newline characters$/);
    // 50 MB: execve refuses it (E2BIG) before kindling exists; nothing kindling could do or be asked to.
    const fifty = 'a'.repeat(50_000_000);
    await expect(kindling(['run', '--kernel', kernel, '--cmdline', fifty])).rejects.toMatchObject({ code: 'E2BIG' });
    // The longest single argument Linux passes (MAX_ARG_STRLEN = 32 pages, less its NUL).
    const r = await runRefused(['--kernel', kernel, '--cmdline', 'a'.repeat(128 * 1024 - 1)], /^kindling: kernel command line is too long: 131071 bytes, the limit is 2047 for any kernel$/);
    expect(r.ms).toBeLessThan(5000);
    // A Firecracker config file (kindling reads at most 1 MiB of it) with a 1,000,000-byte boot_args.
    const cfg = join(dir, 'long-cmdline.json');
    writeFileSync(cfg, JSON.stringify({ 'boot-source': { kernel_image_path: kernel, boot_args: 'a'.repeat(1_000_000) }, 'machine-config': { vcpu_count: 1, mem_size_mib: 64 } }));
    const c = await kindling(['--no-api', '--config-file', cfg, '--level', 'Off']);
    expectUserError(c, /^kindling: config file: .*boot_args: kernel command line is too long: 1000000 bytes, the limit is 2047 for any kernel$/);
    writeFileSync(cfg, JSON.stringify({ 'boot-source': { kernel_image_path: kernel, boot_args: 'a'.repeat(2_000_000) } }));
    expectUserError(await kindling(['--no-api', '--config-file', cfg, '--level', 'Off']), /^kindling: --config-file: .*long-cmdline\.json is larger than 1 MiB$/);
  });

  it('disks that cannot be attached: a directory, an odd size, a missing image, /dev/zero, a FIFO; both images untouched', async () => {
    const odd = join(dir, 'odd.img');
    writeFileSync(odd, Buffer.alloc(1000));
    await runRefused(['--kernel', kernel, '--disk', odd], /^kindling: disk image size 1000 bytes is not a multiple of 512: /, { rw: true });
    await runRefused(['--kernel', kernel, '--disk', dir], /^kindling: disk image is a directory, not a regular file or block device: /, { rw: true });
    await runRefused(['--kernel', kernel, '--disk', join(dir, 'nope.img')], /^kindling: disk image not found: /, { rw: true });
    await runRefused(['--kernel', kernel, '--disk', '/dev/zero'], /^kindling: disk image is a character device, not a regular file or block device: /, { rw: true });
    const fifo = join(dir, 'disk-fifo');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    await runRefused(['--kernel', kernel, '--disk', fifo], /^kindling: disk image is a FIFO \(named pipe\), not a regular file or block device: /, { rw: true });
  });

  it('a valid config with the images attached: on this host the one line is about the VMM (exit 1), the images untouched', async () => {
    const r = await kindling(['run', '--kernel', kernel, '--log-level', 'error', '--disk', `${roDisk},ro`, '--disk', rwDisk]);
    if (HAS_KVM) {
      // The test kernel writes 0 to the debug-exit port. It does not touch the disks.
      expect(r.status, JSON.stringify(r)).toBe(0);
    } else {
      expect(r.status, JSON.stringify(r)).toBe(1);
      expect(r.stderr).toMatch(/^kindling: \/dev\/kvm not found: [^\n]*\n$/);
    }
    expectImagesUntouched();
  });
});

/** Someone else holding `path` as QEMU does for a writable disk: qemu-io when present, else an OFD holder. */
async function lockHolder(path: string): Promise<ChildProcess> {
  const child = haveQemuIo
    ? spawn('qemu-io', ['-f', 'raw', path], { stdio: ['pipe', 'ignore', 'ignore'] })
    : spawn(
        process.execPath,
        [
          '-e',
          // QEMU's writer: shared locks on perm bytes CONSISTENT_READ|WRITE (100, 101) and on the
          // "does not share" bytes WRITE|RESIZE (201, 203).
          `const a = require(process.argv[1]); const fd = a.openFile(process.argv[2], a.constants.O_RDWR, 0);
           for (const b of [100, 101, 201, 203]) if (!a.ofdLock(fd, b, 1, false)) process.exit(3);
           process.stdin.on('end', () => process.exit(0)).resume();`,
          ADDON_PATH,
          path,
        ],
        { stdio: ['pipe', 'ignore', 'inherit'] },
      );
  // Held once /proc/locks lists an OFD lock on the image's inode.
  const ino = statSync(path).ino;
  const t0 = Date.now();
  while (!readFileSync('/proc/locks', 'utf8').split('\n').some((l) => /\bOFDLCK\b/.test(l) && l.includes(`:${ino} `))) {
    if (child.exitCode !== null || Date.now() - t0 > 10_000) {
      child.kill('SIGKILL');
      throw new Error(`the lock holder (${haveQemuIo ? 'qemu-io' : 'OFD child'}) did not lock ${path}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return child;
}

async function release(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise((r) => child.on('exit', r));
  child.stdin?.end(haveQemuIo ? 'quit\n' : undefined);
  const t = setTimeout(() => child.kill('SIGKILL'), 5000);
  await done;
  clearTimeout(t);
}

describe.skipIf(!built)('a locked disk image (held by another process with QEMU-compatible OFD locks)', () => {
  it('kindling vhost-user --device blk=IMG (rw and ,ro) is refused with one line, exit 2, image untouched', async () => {
    const h = await lockHolder(rwDisk);
    try {
      const sock = join(dir, 'blk.sock');
      const r = await kindling(['vhost-user', '--socket', sock, '--device', `blk=${rwDisk}`]);
      expectUserError(r, /^kindling: disk image is in use \(locked by another process\): .*rw\.img$/);
      const ro = await kindling(['vhost-user', '--socket', sock, '--device', `blk=${rwDisk},ro`]);
      expectUserError(ro, /^kindling: disk image is in use \(locked by another process that has it open for writing; a read-only attach needs it unwritten\): .*rw\.img$/);
      expect(existsSync(sock)).toBe(false);
    } finally {
      await release(h);
    }
    expectImagesUntouched();
  });

  it.skipIf(!HAS_KVM)('kindling run --disk IMG is refused with one line, exit 2, image untouched (needs /dev/kvm: the disk is attached after the VM fd exists)', async () => {
    const h = await lockHolder(rwDisk);
    try {
      await runRefused(['--kernel', kernel, '--disk', rwDisk], /^kindling: disk image is in use \(locked by another process\): .*rw\.img$/);
      await runRefused(['--kernel', kernel, '--disk', `${rwDisk},ro`], /^kindling: disk image is in use \(locked by another process that has it open for writing; a read-only attach needs it unwritten\): /);
    } finally {
      await release(h);
    }
    expectImagesUntouched();
  });
});
