// The jailed `run` (issue 15 item 6): hello.elf and blk.elf under `kindling jail --uid 65534`, with the
// guests' output on the jail's stdout, the exit status passed through, a writable image written by the
// guest (bind-mounted, never copied) and a read-only one unchanged; a guest touching more RAM than the
// cgroup's memory limit OOM-killed (hello.touch=M), one under it not; while the VM runs, the kindling
// process is uid 65534 with no capabilities and every vCPU/I/O worker thread filtered. Needs /dev/kvm
// and root.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ip, testNamespaces } from '../netns.js';
import { lazyTempDir } from '../fuzz/tmp.js';
import { ROOT, guest, kvmOrSkipNotice } from './helpers.js';

const kvm = kvmOrSkipNotice('jail.test.ts');
const isRoot = process.getuid?.() === 0;
if (kvm && !isRoot) console.warn('\n!!! KVM TESTS SKIPPED (jail.test.ts): not root (kindling jail needs root) !!!\n');
const KINDLING = join(ROOT, 'bin', 'kindling.js');
const jailArgs = (base: string, id: string): string[] => [KINDLING, 'jail', '--id', id, '--uid', '65534', '--gid', '65534', '--chroot-base-dir', base, '--'];
const cgroupV1Memory = existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes');
const cgroupV2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
const memoryFile = cgroupV2 ? 'memory.max' : 'memory.limit_in_bytes';
const sha = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');

describe.skipIf(!kvm || !isRoot)('kindling jail -- run (KVM)', () => {
  const dir = lazyTempDir('kindling-kvm-jail-');
  const namespaces = testNamespaces(afterEach, 'kindling-jail');

  it('hello.elf prints through the jail and its exit status comes back; the jail is removed', () => {
    const base = join(dir(), 'j');
    const r = spawnSync(process.execPath, [...jailArgs(base, 'hello'), 'run', '--kernel', guest('hello.elf'), '--cmdline', 'exit=7'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stdout, r.stderr).toContain('hello from guest');
    expect(r.status).toBe(7);
    expect(existsSync(join(base, 'kindling', 'hello'))).toBe(false);
  });

  it.skipIf(!cgroupV1Memory && !cgroupV2)('memory limit: a guest that touches more RAM than the cgroup allows is OOM-killed (128+9); under the limit it runs', () => {
    const run = (id: string, mib: number): ReturnType<typeof spawnSync> =>
      spawnSync(process.execPath, [...jailArgs(join(dir(), id), id).slice(0, -1), '--cgroup', `${memoryFile}=${300 << 20}`, '--', 'run', '--kernel', guest('hello.elf'), '--mem', '1024', '--no-rng', '--cmdline', `hello.touch=${mib}`], { encoding: 'utf8', timeout: 120_000 });
    // 1 GiB of guest RAM is mapped lazily: touching 16 MiB of it stays well under 300 MiB with the VMM's own memory.
    const small = run('oom-small', 16);
    expect(small.stdout, String(small.stderr)).toContain('touch: 4096 pages');
    expect(small.status).toBe(0);
    // Touching 800 MiB passes the limit: the kernel's OOM killer ends the VMM, as documented.
    const big = run('oom-big', 800);
    expect(big.stdout, String(big.stderr)).toContain('hello from guest');
    expect(big.stdout).not.toContain('touch:');
    expect(big.status).toBe(128 + 9);
    expect(existsSync(join(dir(), 'oom-big', 'kindling', 'oom-big'))).toBe(false);
  });

  it('without root: kindling run as an unprivileged user whose only access is /dev/kvm\'s group (no capabilities)', () => {
    const kvmGid = statSync('/dev/kvm').gid;
    const r = spawnSync('setpriv', ['--reuid', '65534', '--regid', '65534', `--groups`, String(kvmGid), '--inh-caps=-all', process.execPath, KINDLING, 'run', '--kernel', guest('hello.elf'), '--cmdline', 'exit=5'], { encoding: 'utf8', timeout: 60_000 });
    if ((statSync('/dev/kvm').mode & 0o060) !== 0o060) {
      expect(r.status).not.toBe(5); // /dev/kvm is not group read-write here: the kvm-group path cannot work
      return;
    }
    expect(r.stdout, r.stderr).toContain('hello from guest');
    expect(r.status).toBe(5);
  });

  it('net.elf behind a tap: --netns joins the test\'s namespace, /dev/net/tun exists in the jail, the unprivileged kindling attaches the tap it was given and echoes UDP', async () => {
    if (!existsSync('/dev/net/tun')) return; // no tun driver here (the net tests skip loudly)
    const ns = namespaces.netns();
    ip(ns, 'tuntap', 'add', 'jtap0', 'mode', 'tap', 'user', '65534');
    ip(ns, 'addr', 'add', '10.0.2.1/24', 'dev', 'jtap0');
    ip(ns, 'link', 'set', 'jtap0', 'up');
    const base = join(dir(), 'j');
    const p = spawn(process.execPath, [...jailArgs(base, 'net').slice(0, -1), '--netns', `/var/run/netns/${ns}`, '--', 'run', '--kernel', guest('net.elf'), '--net', 'tap=jtap0', '--cmdline', 'net.ip=10.0.2.15 net.exit=100 net.count=0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString('latin1')));
    p.stderr.on('data', (b: Buffer) => (out += b.toString('latin1')));
    const code = new Promise<number | null>((res) => p.on('close', (c) => res(c)));
    for (let i = 0; i < 300 && !out.includes('net: ip 10.0.2.15 up') && p.exitCode === null; i++) await new Promise((r) => setTimeout(r, 20));
    expect(out).toContain('net: ip 10.0.2.15 up');
    const c = spawnSync('ip', ['netns', 'exec', ns, process.execPath, join(ROOT, 'test', 'kvm', 'fixtures', 'udp-echo-client.mjs'), '10.0.2.15', '100', '4'], { encoding: 'utf8', timeout: 60_000 });
    expect(JSON.parse(c.stdout.trim())).toMatchObject({ bad: 0, lost: 0 });
    expect(await code, out).toBe(0);
    expect(out).toContain('net: done echoed=100 dropped=0 badcsum=0');
  });

  it('blk.elf writes the bind-mounted image; a ,ro image is unchanged; the VM threads are confined', async () => {
    const img = join(dir(), 'disk.img');
    writeFileSync(img, Buffer.alloc(1 << 20));
    chownSync(img, 65534, 65534);
    const ro = join(dir(), 'ro.img');
    writeFileSync(ro, Buffer.alloc(1 << 20, 0x11));
    const roSha = sha(ro);
    const base = join(dir(), 'j');
    const r = spawnSync(process.execPath, [...jailArgs(base, 'blk'), 'run', '--kernel', guest('blk.elf'), '--disk', img, '--cmdline', 'blk.write=3:a5'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stdout, r.stderr).toContain('blk write ok');
    expect(r.status).toBe(0);
    expect([...new Set(readFileSync(img).subarray(3 * 512, 4 * 512))]).toEqual([0xa5]);
    const r2 = spawnSync(process.execPath, [...jailArgs(base, 'blk-ro'), 'run', '--kernel', guest('blk.elf'), '--disk', `${ro},ro`, '--cmdline', 'blk.write=3:a5'], { encoding: 'utf8', timeout: 60_000 });
    expect(r2.stdout).toContain('blk write status');
    expect(sha(ro)).toBe(roSha);

    // A guest that runs long enough to look at: hello.elf printing 8 MB through COM1 (its virtio-rng
    // device, on by default, has an I/O worker), stopped once looked at (under KVM-PVM every byte is
    // an exit and the whole flood takes about a minute).
    const p = spawn(process.execPath, [...jailArgs(base, 'look'), 'run', '--kernel', guest('hello.elf'), '--cmdline', 'hello.flood=8000000'], { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout.resume();
    const done = new Promise((res) => p.on('exit', res));
    let seen = false;
    for (let i = 0; i < 200 && !seen; i++) {
      await new Promise((res) => setTimeout(res, 10));
      for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
        try {
          const status = readFileSync(`/proc/${pid}/status`, 'utf8');
          if (!status.includes('Uid:\t65534') || !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('hello.flood=8000000')) continue;
          expect(status).toMatch(/^CapEff:\s+0000000000000000$/m);
          const workers = readdirSync(`/proc/${pid}/task`).filter((t) => /^(vcpu\d+|virtio-)/.test(readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8')));
          for (const t of workers) expect(readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8')).toMatch(/^Seccomp:\s+2$/m);
          if (workers.length) seen = true;
        } catch {
          // the process ended meanwhile
        }
      }
    }
    p.kill('SIGTERM');
    await done;
    expect(seen).toBe(true);
  });
});
