// --disk validation and where the virtio-mmio device announcements go on the kernel command line.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { errorLine } from '../../src/cli/cli-args.js';
import { blockDeviceType } from '../../src/devices/virtio/block/index.js';
import { loadAddon } from '../../src/kvm/addon.js';
import { ConfigError, resolveConfig, withDeviceWords, type VMConfig } from '../../src/main/config.js';
import { MAX_VIRTIO_DEVICES, virtioMmioCmdlineWord, virtioMmioSlot } from '../../src/main/resources.js';
import { testKernelImage } from './fixtures/test-kernel.js';

const dir = mkdtempSync(join(tmpdir(), 'kindling-blkcfg-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const kernel = join(dir, 'kernel');
writeFileSync(kernel, testKernelImage()); // resolveConfig checks the kernel image itself
const img = join(dir, 'disk.img');
writeFileSync(img, Buffer.alloc(4096));
const HOST = 8 * 1024 ** 3;

/** The command line as the VM builds it: the resolved line plus the words of the placed disks (placed first). */
function placed(config: VMConfig): { cmdline: string } {
  const r = resolveConfig(config, { hostMemBytes: HOST });
  return { cmdline: withDeviceWords(r.cmdline, r.disks.map((_, i) => virtioMmioCmdlineWord(i))) };
}

describe('--disk', () => {
  it('windows, GSIs and command line words', () => {
    expect(virtioMmioSlot(0)).toEqual({ base: 0xd0000000, size: 0x1000, gsi: 5 });
    expect(virtioMmioSlot(3)).toEqual({ base: 0xd0003000, size: 0x1000, gsi: 8 });
    expect(virtioMmioCmdlineWord(1)).toBe('virtio_mmio.device=4K@0xd0001000:6');
    expect(() => virtioMmioSlot(MAX_VIRTIO_DEVICES)).toThrow(RangeError);
  });

  it('announces each disk after the user words and before `--`', () => {
    const two = [{ path: img, readOnly: true }, { path: img, readOnly: true }];
    expect(placed({ kernel, cmdline: 'a b', disks: two }).cmdline).toBe(
      'a b virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6',
    );
    expect(placed({ kernel, cmdline: 'a', cmdlineExtra: ['--', 'x', 'y'], disks: [{ path: img }] }).cmdline).toBe(
      'a virtio_mmio.device=4K@0xd0000000:5 -- x y',
    );
    expect(placed({ kernel, cmdline: 'a "q -- q" -- init args', cmdlineExtra: ['--', 'more'], disks: [{ path: img }] }).cmdline).toBe(
      'a "q -- q" virtio_mmio.device=4K@0xd0000000:5 -- init args more',
    );
    expect(placed({ kernel, cmdline: 'a' }).cmdline).toBe('a');
    expect(resolveConfig({ kernel, disks: [{ path: img }] }, { hostMemBytes: HOST }).disks).toEqual([{ path: img, readOnly: false }]);
  });

  it('refuses unusable images with one line', () => {
    const odd = join(dir, 'odd.img');
    writeFileSync(odd, Buffer.alloc(1000));
    const sub = join(dir, 'sub');
    mkdirSync(sub, { recursive: true });
    const bad = (disks: unknown, re: RegExp): void => {
      let err: unknown;
      try {
        resolveConfig({ kernel, disks } as never, { hostMemBytes: HOST });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(re);
      expect((err as Error).message).not.toContain('\n');
    };
    bad([{ path: join(dir, 'missing.img') }], /^disk image not found: /);
    bad([{ path: sub }], /^disk image is a directory, not a regular file or block device: /);
    bad([{ path: odd }], /^disk image size 1000 bytes is not a multiple of 512: /);
    bad([{ path: '/proc/self/mem' }], /^disk image is empty \(0 bytes\): /); // a "regular" file of size 0
    bad([{ path: '' }], /no image path/);
    bad([{ path: img, readOnly: 'yes' }], /readOnly must be/);
    bad('disk.img', /disks must be an array/);
    bad([null], /must be \{ path, readOnly\?, rate\? \}/);
    bad([{ path: img, readonly: true }], /^disks\[0\] has unknown field readonly \(path, readOnly, rate\)$/);
    bad([{ path: img, rate: { bandwidth: { size: 0, refillTimeMs: 10 } } }], /^disks\[0\]\.rate\.bandwidth size must be a whole number ≥ 1$/);
    bad([{ path: img, rate: { iops: {} } }], /^disks\[0\]\.rate has unknown field iops \(bandwidth, ops\)$/);
    bad(Array.from({ length: MAX_VIRTIO_DEVICES + 1 }, () => ({ path: img, readOnly: true })), /at most 16 disks/);
    // The boot timer takes a window: 15 disks fit beside it, 16 do not.
    const ro = (n: number): VMConfig['disks'] => Array.from({ length: n }, () => ({ path: img, readOnly: true }));
    expect(resolveConfig({ kernel, disks: ro(MAX_VIRTIO_DEVICES - 1), rng: false, bootTimer: true }, { hostMemBytes: HOST }).bootTimer).toBe(true);
    expect(() => resolveConfig({ kernel, disks: ro(MAX_VIRTIO_DEVICES), rng: false, bootTimer: true }, { hostMemBytes: HOST })).toThrow(/^at most 15 disks \(got 16\); the boot timer takes one MMIO window$/);
    expect(() => resolveConfig({ kernel, bootTimer: 'yes' } as never, { hostMemBytes: HOST })).toThrow(/^bootTimer must be true or false \(got "?yes"?\)$/);
    if (process.getuid?.() !== 0) {
      const locked = join(dir, 'noperm.img');
      writeFileSync(locked, Buffer.alloc(512));
      chmodSync(locked, 0o444);
      bad([{ path: locked }], /^disk image is not writable: .*append ,ro/);
      chmodSync(locked, 0o000);
      bad([{ path: locked, readOnly: true }], /^disk image is not readable: /);
    }
  });

  it('a locked image passes config checks and is refused at attach with one line, exit status 2', () => {
    // The lock is taken when the device is prepared (image.ts), on the fd the device then uses; the
    // config check only looks. A second attach of the same writable image is the simplest holder.
    const addon = loadAddon();
    const shared = join(dir, 'locked.img');
    writeFileSync(shared, Buffer.alloc(4096));
    const disks = resolveConfig({ kernel, disks: [{ path: shared }, { path: shared, readOnly: true }] }, { hostMemBytes: HOST }).disks;
    const first = blockDeviceType.prepare(disks[0]!, { addon } as never);
    try {
      for (const d of [disks[0]!, disks[1]!]) {
        let err: unknown;
        try {
          blockDeviceType.prepare(d, { addon } as never).release?.();
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(ConfigError);
        const { line, code } = errorLine(err);
        expect(code).toBe(2);
        expect(line).toMatch(d.readOnly ? /^kindling: disk image is in use \(locked by another process that has it open for writing; / : /^kindling: disk image is in use \(locked by another process\): /);
        expect(line.endsWith(shared)).toBe(true);
      }
    } finally {
      first.release?.();
    }
    blockDeviceType.prepare(disks[1]!, { addon } as never).release?.(); // released with the fd
  });
});
