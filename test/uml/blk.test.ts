// Linux's virtio_blk driver (user-mode Linux, test/uml/helpers.ts) against vhost-user-blk backends:
// `kindling vhost-user --device blk=IMAGE[,ro]`, and qemu-storage-daemon as the control (the same
// scenario passing against QEMU's backend shows the scenario itself is sound).
//   - writable: mkfs.ext4 on /dev/vda inside Linux, mount, write a small file and 8 MiB of random
//     bytes (their sha256 taken inside), sync, unmount; on the host fsck.ext4 -n -f exits 0 and
//     debugfs reads both files back (the random file's sha256 matches the guest's);
//   - read-only: the block device is read-only inside Linux (/sys/block/vda/ro, a direct write to it
//     fails, the ext4 file system mounts read-only and refuses a new file), the existing file reads
//     back, and the image's sha256 is unchanged.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VIRTIO_ID, describeRun, exitWithin, kindlingArgv, kindlingHasVhostUser, qsdArgv, runUml, umlOrSkipNotice, umlScratch, which } from './helpers.js';

const e2fs = (): string | undefined =>
  ['mkfs.ext4', 'fsck.ext4', 'debugfs'].some((t) => !which(t)) ? 'e2fsprogs (mkfs.ext4, fsck.ext4, debugfs) is absent' : undefined;
const canRun = umlOrSkipNotice('uml/blk.test.ts', e2fs);
const hasKindling = canRun && kindlingHasVhostUser();
const hasQsd = canRun && which('qemu-storage-daemon') !== undefined;
if (canRun && !hasKindling) console.warn('\n!!! UML TESTS SKIPPED (uml/blk.test.ts, kindling): `kindling vhost-user` is not in this build (dist/) !!!\n');
if (canRun && !hasQsd) console.warn('\n!!! UML TESTS SKIPPED (uml/blk.test.ts, qemu-storage-daemon): not installed (qemu-system-common) !!!\n');

interface Peer {
  name: string;
  enabled: boolean;
  argv: (socket: string, image: string, ro: boolean) => string[];
  /** Whether the backend exits by itself once the frontend disconnects. */
  exitsOnDisconnect: boolean;
}
const PEERS: Peer[] = [
  { name: 'kindling', enabled: hasKindling, argv: (s, img, ro) => kindlingArgv(s, `blk=${img}${ro ? ',ro' : ''}`), exitsOnDisconnect: true },
  { name: 'qemu-storage-daemon', enabled: hasQsd, argv: (s, img, ro) => qsdArgv(s, img, !ro), exitsOnDisconnect: false },
];

const sha256 = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');
function host(cmd: string, args: string[]): { code: number; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'latin1', maxBuffer: 64 << 20 });
  return { code: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

const scratch = umlScratch(afterEach);

for (const peer of PEERS) {
  describe.skipIf(!peer.enabled)(`virtio_blk in user-mode Linux against ${peer.name}`, () => {
    it('mkfs.ext4, mount, write, sync, umount inside; fsck.ext4 -n and debugfs on the host', async () => {
      const dir = scratch.dir('uml-blk');
      const img = join(dir, 'disk.img');
      writeFileSync(img, '');
      truncateSync(img, 64 << 20);
      const socket = join(dir, 'blk.sock');
      const b = await scratch.backend(peer.argv(socket, img, false), socket);
      const r = await runUml({
        devices: [{ socket, virtioId: VIRTIO_ID.blk }],
        modules: ['virtio_blk'],
        script: [
          'set -e',
          'echo "size $(cat /sys/block/vda/size) ro $(cat /sys/block/vda/ro)"',
          'mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/vda',
          'mount -t ext4 /dev/vda "$RUN/mnt"',
          'mkdir "$RUN/mnt/dir"',
          'printf "hello from linux %s\\n" "$(uname -r)" > "$RUN/mnt/hello.txt"',
          'dd if=/dev/urandom of="$RUN/mnt/dir/random.bin" bs=1M count=8 status=none',
          'echo "sha $(sha256sum "$RUN/mnt/dir/random.bin" | cut -d" " -f1)"',
          'sync',
          'umount "$RUN/mnt"',
          'echo done',
        ].join('\n'),
      });
      expect(r.status, describeRun(r)).toBe(0);
      expect(r.output).toContain('size 131072 ro 0');
      expect(r.output).toContain('done');
      const guestSha = /sha ([0-9a-f]{64})/.exec(r.output)?.[1];
      expect(guestSha, r.output).toBeDefined();
      if (peer.exitsOnDisconnect) expect(await exitWithin(b), b.stderr()).toEqual({ code: 0, signal: null });
      else await b.kill();

      const fsck = host('fsck.ext4', ['-n', '-f', img]);
      expect(fsck.code, fsck.out).toBe(0);
      const hello = host('debugfs', ['-R', 'cat /hello.txt', img]);
      expect(hello.out).toMatch(/hello from linux 6\.\d+/);
      const out = join(dir, 'random.out');
      const dump = host('debugfs', ['-R', `dump /dir/random.bin ${out}`, img]);
      expect(dump.code, dump.out).toBe(0);
      expect(sha256(out)).toBe(guestSha);
    }, 180_000);

    it('a read-only device (ro) refuses writes inside Linux and the image is unchanged', async () => {
      const dir = scratch.dir('uml-blk-ro');
      const img = join(dir, 'ro.img');
      const content = join(dir, 'content');
      mkdirSync(content);
      writeFileSync(join(content, 'kept.txt'), 'written on the host\n');
      const mk = host('mkfs.ext4', ['-q', '-F', '-d', content, img, '16M']);
      expect(mk.code, mk.out).toBe(0);
      const before = sha256(img);
      const socket = join(dir, 'blk.sock');
      const b = await scratch.backend(peer.argv(socket, img, true), socket);
      const r = await runUml({
        devices: [{ socket, virtioId: VIRTIO_ID.blk }],
        modules: ['virtio_blk'],
        script: [
          'echo "ro $(cat /sys/block/vda/ro)"',
          'if dd if=/dev/zero of=/dev/vda bs=4096 count=1 oflag=direct conv=notrunc status=none; then echo "raw write succeeded"; else echo "raw write refused"; fi',
          'mount -t ext4 /dev/vda "$RUN/mnt" || exit 10',
          'grep -q " $RUN/mnt ext4 ro" /proc/mounts && echo "mounted ro"',
          'cat "$RUN/mnt/kept.txt"',
          'if echo new > "$RUN/mnt/new.txt"; then echo "file write succeeded"; else echo "file write refused"; fi',
          'umount "$RUN/mnt"',
          'echo done',
        ].join('\n'),
      });
      expect(r.status, describeRun(r)).toBe(0);
      expect(r.output).toContain('ro 1');
      expect(r.output).toContain('raw write refused');
      expect(r.output).toContain('mounted ro');
      expect(r.output).toContain('written on the host');
      expect(r.output).toContain('file write refused');
      expect(r.output).toContain('done');
      if (peer.exitsOnDisconnect) expect(await exitWithin(b), b.stderr()).toEqual({ code: 0, signal: null });
      else await b.kill();
      expect(sha256(img)).toBe(before);
    }, 180_000);
  });
}
