// `kindling jail` (src/jail/jail.ts, native/jail/kindling-jail-exec.c): the argument parser and the
// inner-command rewriting (pure), the removal that never deletes data, and — as root — real jails
// around `kindling vhost-user` (which runs here without KVM): the jailed process runs as uid 65534
// with no capabilities, no_new_privs and its seccomp filter, sees only the jail's files, has its
// rlimits and cgroup, is OOM-killed when its memory limit is exceeded, can be put in a new PID and a
// given network namespace; SIGTERM ends it and the jail and cgroup are removed. The jailed `run` of
// hello.elf and blk.elf is test/kvm/jail.test.ts.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { JAIL_EXEC, JailUsageError, explainSeccompKill, parseJailArgs, removeJailTree, rewriteInner, type JailCommand, usesTap } from '../../src/jail/jail.js';
import { runs } from '../fuzz/budget.js';
import { lazyTempDir } from '../fuzz/tmp.js';

const ROOT = join(import.meta.dirname, '..', '..');
const KINDLING = join(ROOT, 'bin', 'kindling.js');

describe('jail arguments', () => {
  const base = ['--id', 'vm-1', '--uid', '65534', '--gid', '65534'];
  it('parses Firecracker jailer flags and the inner command', () => {
    const c = parseJailArgs([...base, '--chroot-base-dir=/srv/j', '--new-pid-ns', '--cgroup', 'memory.max=512M', '--cgroup=cpu.max=50000 100000', '--resource-limit', 'no-file=1024,fsize=1048576', '--netns', '/var/run/netns/x', '--', 'run', '--kernel', 'k']) as JailCommand;
    expect(c).toEqual({
      kind: 'jail', id: 'vm-1', uid: 65534, gid: 65534, chrootBaseDir: '/srv/j', netns: '/var/run/netns/x', newPidNs: true,
      cgroups: [{ file: 'memory.max', value: '512M' }, { file: 'cpu.max', value: '50000 100000' }], rlimits: { nofile: 1024, fsize: 1048576 },
      daemonize: false, keepJail: false, inner: ['run', '--kernel', 'k'],
    });
    expect((parseJailArgs([...base, '--', 'vhost-user']) as JailCommand).chrootBaseDir).toBe('/srv/jailer');
    expect(parseJailArgs(['--help'])).toEqual({ kind: 'jail-help' });
  });

  it.each([
    [['--uid', '1', '--gid', '1', '--', 'run'], /needs --id/],
    [['--id', 'a/b', '--uid', '1', '--gid', '1', '--', 'run'], /--id must be 1\.\.64 characters/],
    [['--id', 'x'.repeat(65), '--uid', '1', '--gid', '1', '--', 'run'], /--id must be/],
    [['--id', 'a', '--uid', '0', '--gid', '1', '--', 'run'], /--uid must be a whole number ≥ 1/],
    [['--id', 'a', '--gid', '1', '--', 'run'], /needs --uid UID and --gid GID/],
    [['--id', 'a', '--uid', '1', '--gid', '1'], /needs the command to run after --/],
    [['--id', 'a', '--uid', '1', '--gid', '1', '--', 'guest'], /run ARGS\.\.\., vhost-user ARGS\.\.\., serve/],
    [['--id', 'a', '--uid', '1', '--gid', '1', '--', 'run', '--mem', '64'], /jail -- run needs --kernel/],
    [['--id', 'a', '--uid', '1', '--gid', '1', '--cgroup', 'memory', '--', 'run'], /--cgroup must be FILE=VALUE/],
    [['--id', 'a', '--uid', '1', '--gid', '1', '--cgroup', '../x=1', '--', 'run'], /--cgroup must be FILE=VALUE/],
    [['--id', 'a', '--uid', '1', '--gid', '1', '--resource-limit', 'cpu=1', '--', 'run'], /--resource-limit must be/],
    [['--id', 'a', '--uid', '1', '--gid', '1', '--chroot-base-dir', 'rel', '--', 'run'], /absolute path/],
    [['--id', 'a', '--uid', '1', '--gid', '1', '--cgroup-version', '3', '--', 'run'], /--cgroup-version must be 1 or 2/],
    [['--id', 'a', '--uid', '1', '--gid', '1', '--bogus', '--', 'run'], /unknown option "--bogus"/],
    [['--id'], /--id needs a value/],
  ])('%j → a usage error', (argv, message) => {
    expect(() => parseJailArgs(argv)).toThrow(JailUsageError);
    expect(() => parseJailArgs(argv)).toThrow(message);
  });

  it('the CLI prints a jail usage error as one line and exits 2', () => {
    const r = spawnSync(process.execPath, [KINDLING, 'jail', '--id', 'x'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^kindling: jail needs --uid UID and --gid GID/);
  });

  it('rewrites image paths to /images/ (both flag spellings, ,ro kept), leaves guest arguments and other flags alone', () => {
    const r = rewriteInner(['run', '--kernel', 'k/vmlinux', '--initrd=/x/initrd.img', '--disk', '/d/a.img,ro', '--disk=/e/a.img', '--mem', '64', '--', '--kernel', 'guest-arg'], '/cwd');
    expect(r.argv).toEqual(['run', '--kernel', '/images/vmlinux', '--initrd=/images/initrd.img', '--disk', '/images/a.img,ro', '--disk=/images/2-a.img', '--mem', '64', '--', '--kernel', 'guest-arg']);
    expect(r.files).toEqual([
      { host: '/cwd/k/vmlinux', jailPath: '/images/vmlinux', readOnly: true },
      { host: '/x/initrd.img', jailPath: '/images/initrd.img', readOnly: true },
      { host: '/d/a.img', jailPath: '/images/a.img', readOnly: true },
      { host: '/e/a.img', jailPath: '/images/2-a.img', readOnly: false },
    ]);
    expect(rewriteInner(['serve', '--api-sock', '/run/api.sock', '--config-file', 'vm.json'], '/w')).toEqual({
      argv: ['serve', '--api-sock', '/run/api.sock', '--config-file', '/images/vm.json'],
      files: [{ host: '/w/vm.json', jailPath: '/images/vm.json', readOnly: true }],
    });
    expect(rewriteInner(['--api-sock', '/run/api.sock', '--config-file=/c/vm.json'], '/w').argv).toEqual(['--api-sock', '/run/api.sock', '--config-file=/images/vm.json']);
    expect((parseJailArgs(['--id', 'a', '--uid', '1', '--gid', '1', '--', '--api-sock', '/run/x']) as JailCommand).inner).toEqual(['--api-sock', '/run/x']);
    expect(rewriteInner(['vhost-user', '--socket', '/run/s', '--device', 'blk=img,ro'], '/w')).toEqual({
      argv: ['vhost-user', '--socket', '/run/s', '--device', 'blk=/images/img,ro'],
      files: [{ host: '/w/img', jailPath: '/images/img', readOnly: true }],
    });
  });

  it('a disk\'s rate-limiter options stay on the rewritten path (the path is what comes before them)', () => {
    expect(rewriteInner(['run', '--disk', '/d/a.img,ro,bw=1000/100,ops=5/10', '--disk=/d/b.img,ops=1/1'], '/').argv).toEqual(['run', '--disk', '/images/a.img,ro,bw=1000/100,ops=5/10', '--disk=/images/b.img,ops=1/1']);
    expect(rewriteInner(['vhost-user', '--device', 'blk=/d/c,img,bw=1/1'], '/')).toEqual({ argv: ['vhost-user', '--device', 'blk=/images/c,img,bw=1/1'], files: [{ host: '/d/c,img', jailPath: '/images/c,img', readOnly: false }] });
  });

  it('usesTap: a tap NIC on the inner command line (both spellings, vhost-user net=tap=), or serve; passt and guest arguments do not count', () => {
    expect(usesTap(['run', '--kernel', 'k', '--net', 'tap=t0'])).toBe(true);
    expect(usesTap(['run', '--kernel', 'k', '--net=tap=t0,mac=02:00:00:00:00:01'])).toBe(true);
    expect(usesTap(['vhost-user', '--socket', 's', '--device', 'net=tap=t0'])).toBe(true);
    expect(usesTap(['serve', '--api-sock', 's'])).toBe(true);
    expect(usesTap(['--api-sock', 's'])).toBe(true);
    expect(usesTap(['run', '--kernel', 'k', '--net', 'passt'])).toBe(false);
    expect(usesTap(['run', '--kernel', 'k', '--cmdline', 'tap=t0'])).toBe(false);
    expect(usesTap(['run', '--kernel', 'k'])).toBe(false);
  });

  it('property: every image lands on a distinct /images/ path; the same file twice is one bind, writable if either use is', () => {
    const name = fc.stringMatching(/^[a-z0-9._-]{1,12}$/).filter((n) => n !== '.' && n !== '..');
    const disk = fc.record({ dir: fc.constantFrom('/a', '/b', '/c/d'), name, ro: fc.boolean() });
    fc.assert(
      fc.property(fc.array(disk, { maxLength: 8 }), (disks) => {
        const r = rewriteInner(['run', ...disks.flatMap((d) => ['--disk', `${d.dir}/${d.name}${d.ro ? ',ro' : ''}`])], '/');
        const paths = r.files.map((f) => f.jailPath);
        expect(new Set(paths).size).toBe(paths.length);
        for (const p of paths) expect(p).toMatch(/^\/images\/[^/]+$/);
        for (const f of r.files) {
          const uses = disks.filter((d) => `${d.dir}/${d.name}` === f.host);
          expect(uses.length).toBeGreaterThan(0);
          expect(f.readOnly).toBe(uses.every((u) => u.ro));
        }
        expect(r.argv.filter((a) => a === '--disk')).toHaveLength(disks.length);
      }),
      { numRuns: runs(200) },
    );
  });

  it('a seccomp kill is explained from the kernel\'s audit record: thread and syscall by name', () => {
    const log = [
      '[1.0] audit: type=1326 audit(1:1): auid=4294967295 uid=65534 gid=65534 ses=4294967295 pid=41 comm="vcpu0" exe="/usr/bin/node" sig=31 arch=c000003e syscall=59 compat=0 ip=0x1 code=0x80000000',
      '[2.0] audit: type=1326 audit(1:2): auid=4294967295 uid=65534 gid=65534 ses=4294967295 pid=42 comm="virtio-blk0" exe="/usr/bin/node" sig=31 arch=c000003e syscall=41 compat=0 ip=0x1 code=0x80000000',
    ].join('\n');
    expect(explainSeccompKill(41, false, () => log)).toBe('killed by its seccomp filter: thread vcpu0 made syscall 59 (execve), which its role does not allow');
    expect(explainSeccompKill(7, true, () => log)).toMatch(/thread virtio-blk0 made syscall 41 \(socket\)/);
    expect(explainSeccompKill(7, false, () => log)).toMatch(/the kernel log \(dmesg, audit type=1326\) names the thread/);
    expect(explainSeccompKill(41, false, () => undefined)).toMatch(/^killed by its seccomp filter \(SIGSYS\)/);
  });

  const tmp = lazyTempDir('kindling-jail-rm-');
  it('removing a jail tree never deletes a non-empty regular file', () => {
    const d = join(tmp(), 'jail');
    mkdirSync(join(d, 'root', 'images'), { recursive: true });
    mkdirSync(join(d, 'root', 'run'), { recursive: true });
    writeFileSync(join(d, 'root', 'images', 'mountpoint'), '');
    writeFileSync(join(d, 'root', 'images', 'data.img'), 'user data');
    const kept = removeJailTree(d);
    expect(kept).toEqual([join(d, 'root', 'images', 'data.img')]);
    expect(readFileSync(join(d, 'root', 'images', 'data.img'), 'utf8')).toBe('user data');
    expect(existsSync(join(d, 'root', 'run'))).toBe(false);
    expect(existsSync(join(d, 'root', 'images', 'mountpoint'))).toBe(false);
  });
});

// ---- real jails (root) ------------------------------------------------------------------------------

const isRoot = process.getuid?.() === 0;
const haveExec = existsSync(JAIL_EXEC) && existsSync(join(ROOT, 'dist', 'jail', 'jail.js'));
const cgroupV1Memory = existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes');
const cgroupV2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
const memoryFile = cgroupV2 ? 'memory.max' : 'memory.limit_in_bytes';
const haveIp = spawnSync('sh', ['-c', 'command -v ip'], { stdio: 'ignore' }).status === 0;
if (!isRoot) console.warn('\n!!! SKIP jail tests (test/unit/jail.test.ts): not root (kindling jail needs root) !!!\n');
else if (!haveExec) console.warn('\n!!! SKIP jail tests (test/unit/jail.test.ts): build/tools/kindling-jail-exec or dist/ missing (npm install / npm test build them) !!!\n');

interface Jailed {
  jailPid: number;
  pid: number;
  root: string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `kindling jail … -- vhost-user --socket /run/rng.sock --device rng`; resolves once it listens. */
async function jailRng(base: string, id: string, jailFlags: string[]): Promise<Jailed> {
  const p = spawn(process.execPath, [KINDLING, 'jail', '--id', id, '--uid', '65534', '--gid', '65534', '--chroot-base-dir', base, ...jailFlags, '--', 'vhost-user', '--socket', '/run/rng.sock', '--device', 'rng'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  p.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => p.on('exit', (code, signal) => res({ code, signal })));
  const root = join(base, 'kindling', id, 'root');
  for (let i = 0; i < 600 && !existsSync(join(root, 'run', 'rng.sock')); i++) await new Promise((r) => setTimeout(r, 25));
  expect(existsSync(join(root, 'run', 'rng.sock')), err).toBe(true);
  // The jailed node process: the jail's child (the helper exec'd into it) or, with a new PID namespace,
  // the helper's child; in both cases a descendant of this jail running as uid 65534.
  const ppid = (q: number): number => Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${q}/status`, 'utf8'))?.[1] ?? -1);
  const pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
  const pid = pids.find((q) => {
    try {
      const up = ppid(q);
      return (up === p.pid || (up > 0 && ppid(up) === p.pid)) && readFileSync(`/proc/${q}/status`, 'utf8').includes('Uid:\t65534');
    } catch {
      return false;
    }
  });
  live.push(p);
  expect(pid, 'the jailed process').toBeDefined();
  // The socket exists from listen(); the filter is installed a moment later, once serving is set up.
  for (let i = 0; i < 200 && !/^Seccomp:\s+2$/m.test(readFileSync(`/proc/${pid}/status`, 'utf8')); i++) await new Promise((r) => setTimeout(r, 25));
  return { jailPid: p.pid!, pid: pid!, root, stderr: () => err, exited };
}

const field = (pid: number, k: string): string => new RegExp(`^${k}:[ \\t]*(.*)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1].trim() ?? '?';
/** Jails started by a test, killed (SIGTERM, then SIGKILL) after each test so a failure leaves nothing running. */
const live: ChildProcess[] = [];
afterEach(async () => {
  for (const p of live.splice(0)) {
    if (p.exitCode !== null || p.signalCode !== null) continue;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }
});

describe.skipIf(!isRoot || !haveExec)('kindling jail around vhost-user (root)', () => {
  const tmp = lazyTempDir('kindling-jail-');

  it('uid/gid 65534, no capabilities, no_new_privs, seccomp, rlimits, cgroup; only the jail is visible; SIGTERM removes jail and cgroup', async () => {
    const base = tmp();
    const j = await jailRng(base, 'rng-1', ['--resource-limit', 'no-file=256', ...(cgroupV1Memory || cgroupV2 ? ['--cgroup', `${memoryFile}=268435456`] : [])]);
    expect(field(j.pid, 'Uid')).toBe('65534\t65534\t65534\t65534');
    expect(field(j.pid, 'Gid')).toBe('65534\t65534\t65534\t65534');
    expect(field(j.pid, 'Groups')).toBe('');
    for (const k of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'].filter((c) => c !== 'CapBnd')) expect(field(j.pid, k), k).toBe('0000000000000000');
    expect(field(j.pid, 'NoNewPrivs')).toBe('1');
    expect(field(j.pid, 'Seccomp')).toBe('2');
    expect(readFileSync(`/proc/${j.pid}/limits`, 'utf8')).toMatch(/Max open files\s+256\s+256/);
    if (cgroupV1Memory || cgroupV2) expect(readFileSync(`/proc/${j.pid}/cgroup`, 'utf8')).toMatch(/kindling\/rng-1$/m);
    // The process's root is the jail: the host's /etc, /root, /home, /var are not there.
    const seen = readdirSync(`/proc/${j.pid}/root`).sort();
    expect(seen).toEqual(expect.arrayContaining(['dev', 'images', 'run', 'tmp', 'usr']));
    for (const hidden of ['root', 'home', 'var', 'srv', 'proc', 'sys', 'boot']) expect(seen).not.toContain(hidden);
    expect(readdirSync(`/proc/${j.pid}/root/etc`)).toEqual(['ld.so.cache']);
    expect(readdirSync(`/proc/${j.pid}/root/dev`).sort()).toEqual(expect.arrayContaining(['null', 'random', 'urandom', 'zero']));
    process.kill(j.jailPid, 'SIGTERM');
    const end = await j.exited;
    expect(end, j.stderr()).toEqual({ code: 143, signal: null });
    expect(existsSync(join(base, 'kindling', 'rng-1'))).toBe(false);
    if (cgroupV1Memory) expect(existsSync('/sys/fs/cgroup/memory/kindling/rng-1')).toBe(false);
    if (cgroupV2) expect(existsSync('/sys/fs/cgroup/kindling/rng-1')).toBe(false);
  }, 60_000);

  it.skipIf(!cgroupV1Memory && !cgroupV2)('the memory limit is enforced: over it, the jailed process is OOM-killed (128+9) and the jail removed', () => {
    const base = tmp();
    const r = spawnSync(process.execPath, [KINDLING, 'jail', '--id', 'oom', '--uid', '65534', '--gid', '65534', '--chroot-base-dir', base, '--cgroup', `${memoryFile}=6000000`, '--', 'vhost-user', '--socket', '/run/x.sock', '--device', 'rng'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(128 + 9);
    expect(existsSync(join(base, 'kindling', 'oom'))).toBe(false);
  }, 60_000);

  it('--new-pid-ns: the jailed kindling is PID 1 of its own PID namespace', async () => {
    const base = tmp();
    const j = await jailRng(base, 'pidns', ['--new-pid-ns']);
    expect(field(j.pid, 'NSpid')).toMatch(/^\d+\s+1$/);
    process.kill(j.jailPid, 'SIGTERM');
    expect((await j.exited).code).toBe(143);
    expect(existsSync(join(base, 'kindling', 'pidns'))).toBe(false);
  }, 60_000);

  it.skipIf(!haveIp)('--netns: the jailed process is in that network namespace', async () => {
    const ns = `kindling-jail-${process.pid}`;
    expect(spawnSync('ip', ['netns', 'add', ns]).status).toBe(0);
    try {
      const base = tmp();
      const j = await jailRng(base, 'netns', ['--netns', `/var/run/netns/${ns}`]);
      expect(statSync(`/proc/${j.pid}/ns/net`).ino).toBe(statSync(`/var/run/netns/${ns}`).ino);
      expect(statSync(`/proc/${j.pid}/ns/net`).ino).not.toBe(statSync('/proc/self/ns/net').ino);
      process.kill(j.jailPid, 'SIGTERM');
      await j.exited;
    } finally {
      spawnSync('ip', ['netns', 'delete', ns]);
    }
  }, 60_000);

  it('serve in a jail: the Firecracker API answers on the socket inside the jail, from uid 65534', async () => {
    const base = tmp();
    const p = spawn(process.execPath, [KINDLING, 'jail', '--id', 'api-1', '--uid', '65534', '--gid', '65534', '--chroot-base-dir', base, '--', 'serve', '--api-sock', '/run/api.sock'], { stdio: ['ignore', 'pipe', 'pipe'] });
    live.push(p);
    const exited = new Promise<number | null>((res) => p.on('exit', (code) => res(code)));
    const sock = join(base, 'kindling', 'api-1', 'root', 'run', 'api.sock');
    for (let i = 0; i < 600 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
    const body = await new Promise<string>((res, rej) => {
      const req = request({ socketPath: sock, path: '/', method: 'GET' }, (r) => {
        let b = '';
        r.on('data', (c: Buffer) => (b += c.toString()));
        r.on('end', () => res(`${r.statusCode} ${b}`));
      });
      req.on('error', rej);
      req.end();
    });
    expect(body).toMatch(/^200 \{.*"state":"Not started"/);
    expect(statSync(sock).uid).toBe(65534);
    p.kill('SIGTERM');
    expect(await exited).toBe(143);
    expect(existsSync(join(base, 'kindling', 'api-1'))).toBe(false);
  }, 60_000);

  it('refuses an existing jail, a missing image, and runs only as root (one line, exit 2)', () => {
    const base = tmp();
    mkdirSync(join(base, 'kindling', 'busy'), { recursive: true });
    const busy = spawnSync(process.execPath, [KINDLING, 'jail', '--id', 'busy', '--uid', '65534', '--gid', '65534', '--chroot-base-dir', base, '--', 'vhost-user', '--socket', '/run/x', '--device', 'rng'], { encoding: 'utf8' });
    expect(busy.status).toBe(2);
    expect(busy.stderr).toMatch(/^kindling: jail .*busy already exists/);
    const missing = spawnSync(process.execPath, [KINDLING, 'jail', '--id', 'm', '--uid', '65534', '--gid', '65534', '--chroot-base-dir', base, '--', 'vhost-user', '--socket', '/run/x', '--device', `blk=${join(base, 'nope.img')}`], { encoding: 'utf8' });
    expect(missing.status).toBe(2);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).toMatch(/nope\.img: not found/);
    expect(existsSync(join(base, 'kindling', 'm'))).toBe(false);
    const asUser = spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, KINDLING, 'jail', '--id', 'u', '--uid', '65534', '--gid', '65534', '--chroot-base-dir', base, '--', 'vhost-user', '--socket', '/run/x', '--device', 'rng'], { encoding: 'utf8' });
    if (asUser.error === undefined && !/setpriv: /.test(asUser.stderr)) {
      expect(asUser.status).toBe(2);
      expect(asUser.stderr).toMatch(/^kindling: kindling jail needs root/);
    }
  });
});
