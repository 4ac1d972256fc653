// Linux's virtio_blk driver (user-mode Linux) against a *jailed* `kindling vhost-user`: `kindling jail
// --uid 65534 … -- vhost-user --device blk=IMAGE` serves the image from inside its jail (bind-mounted at
// /images, the socket at the jail's /run), as uid 65534 with no capabilities and its seccomp filter;
// mkfs.ext4, mount, a write and sync inside Linux, then fsck.ext4 -n and debugfs on the host, and the
// jail is gone after the frontend disconnects. Needs root (the jail) and UML.
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { KINDLING, ROOT, VIRTIO_ID, describeRun, kindlingHasVhostUser, runUml, startBackend, testDir, umlOrSkipNotice, which, type Backend } from './helpers.js';

const isRoot = process.getuid?.() === 0;
const haveExec = existsSync(join(ROOT, 'build', 'tools', 'kindling-jail-exec'));
const canRun =
  umlOrSkipNotice('uml/jail.test.ts', () =>
    !isRoot ? 'not root (kindling jail needs root)' : !haveExec ? 'build/tools/kindling-jail-exec missing' : ['mkfs.ext4', 'fsck.ext4', 'debugfs'].some((t) => !which(t)) ? 'e2fsprogs is absent' : undefined,
  ) && kindlingHasVhostUser();

let dirs: string[] = [];
let backends: Backend[] = [];
afterEach(async () => {
  for (const b of backends) await b.kill();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
  backends = [];
});

describe.skipIf(!canRun)('virtio_blk in user-mode Linux against a jailed kindling vhost-user', () => {
  it('mkfs.ext4, mount, write inside; the image checks on the host; the jail is removed', async () => {
    const dir = testDir('uml-jail');
    dirs.push(dir);
    const img = join(dir, 'disk.img');
    writeFileSync(img, '');
    truncateSync(img, 64 << 20);
    chownSync(img, 65534, 65534); // the jailed user opens it read-write; kindling jail itself never chowns
    const base = join(dir, 'jails');
    const socket = join(base, 'kindling', 'blk-1', 'root', 'run', 'blk.sock');
    const b = await startBackend(
      [process.execPath, KINDLING, 'jail', '--id', 'blk-1', '--uid', '65534', '--gid', '65534', '--chroot-base-dir', base, '--', 'vhost-user', '--socket', '/run/blk.sock', '--device', `blk=${img}`],
      socket,
    );
    backends.push(b);
    const r = await runUml({
      devices: [{ socket, virtioId: VIRTIO_ID.blk }],
      modules: ['virtio_blk'],
      script: [
        'set -e',
        'mkfs.ext4 -q -F /dev/vda',
        'mount -t ext4 /dev/vda "$RUN/mnt"',
        'echo "written by linux through a jail" > "$RUN/mnt/jailed.txt"',
        'sync',
        'umount "$RUN/mnt"',
        'echo done',
      ].join('\n'),
    });
    expect(r.status, describeRun(r)).toBe(0);
    expect(r.output).toContain('done');
    const exit = await Promise.race([b.exited, new Promise<'still running'>((res) => setTimeout(() => res('still running'), 10_000))]);
    expect(exit, b.stderr()).toEqual({ code: 0, signal: null });
    expect(existsSync(join(base, 'kindling', 'blk-1'))).toBe(false);
    const fsck = spawnSync('fsck.ext4', ['-n', '-f', img], { encoding: 'utf8' });
    expect(fsck.status, fsck.stdout + fsck.stderr).toBe(0);
    const cat = spawnSync('debugfs', ['-R', 'cat /jailed.txt', img], { encoding: 'utf8' });
    expect(cat.stdout).toContain('written by linux through a jail');
    expect(readFileSync(img).length).toBe(64 << 20);
  }, 180_000);
});
