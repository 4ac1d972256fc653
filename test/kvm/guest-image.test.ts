// Slow path: builds the real default guest (downloads ~27 MB from Debian's apt archive) into a temp
// KINDLING_HOME. Not skipped when the archive is unreachable: it fails, saying so.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  encodeGuestCommand,
  ensureDefaultGuest,
  findBuiltGuest,
  findPvhEntry,
  guestHome,
  parseCpio,
  readGuestManifest,
  verifyGuest,
  type GuestImage,
} from '../../src/guest-image/index.js';

const root = mkdtempSync(join(tmpdir(), 'kindling-guest-kvm-'));
const home = guestHome({ KINDLING_HOME: root });
let image: GuestImage;
let coldMs = 0;
const lines: string[] = [];

beforeAll(async () => {
  const t0 = performance.now();
  try {
    image = await ensureDefaultGuest({ home, log: (l) => lines.push(l) });
  } catch (e) {
    throw new Error(
      `building the default guest failed (is Debian's apt archive reachable? this test needs it): ${(e as Error).message}`,
    );
  }
  coldMs = performance.now() - t0;
}, 600_000);

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('default guest image (real build)', () => {
  it('builds all outputs into $KINDLING_HOME/guest with a manifest, reporting each step', () => {
    expect(image.dir).toBe(join(root, 'guest'));
    expect(image.kernel).toBe(join(image.dir, 'vmlinux'));
    expect(image.kernelVersion).toMatch(/^\d+\.\d+\.\d+-\d+-cloud-amd64$/);
    for (const f of [image.kernel, image.vmlinuz, image.initrd]) expect(statSync(f).size).toBeGreaterThan(1_000_000);
    const m = readGuestManifest(home)!;
    expect(m.kernelVersion).toBe(image.kernelVersion);
    expect(Object.keys(m.packages)).toEqual(expect.arrayContaining(['linux-image-cloud-amd64', 'busybox-static', `linux-image-${image.kernelVersion}`]));
    for (const step of ['download kernel', 'download busybox', 'extract', 'modules', 'initramfs', 'vmlinux']) {
      expect(lines.some((l) => l.includes(step))).toBe(true);
    }
    console.log(`cold build: ${(coldMs / 1000).toFixed(1)} s; ${lines[lines.length - 1]}`);
  });

  it('vmlinux is an x86-64 ELF64 with a PVH entry note', () => {
    const elf = readFileSync(image.kernel);
    expect([...elf.subarray(0, 5)]).toEqual([0x7f, 0x45, 0x4c, 0x46, 2]);
    expect(elf.readUInt16LE(18)).toBe(0x3e);
    const entry = findPvhEntry(elf);
    expect(entry).toBeGreaterThan(0);
    expect(entry).toBeLessThan(0x1_0000_0000);
    expect(readGuestManifest(home)!.pvhEntry).toBe('0x' + entry!.toString(16));
  });

  it('the initramfs holds /init, device nodes, busybox, the exit helper and the modules in load order', () => {
    const recs = parseCpio(gunzipSync(readFileSync(image.initrd)));
    const by = new Map(recs.map((r) => [r.path, r]));
    expect(by.get('init')!.mode).toBe(0o100755);
    expect(by.get('dev/console')).toMatchObject({ mode: 0o020600, rdevMajor: 5, rdevMinor: 1 });
    expect(by.get('dev/null')).toMatchObject({ rdevMajor: 1, rdevMinor: 3 });
    expect(by.get('bin/busybox')!.data.length).toBeGreaterThan(500_000);
    expect(by.get('bin/sh')!.mode & 0o170000).toBe(0o120000);
    expect(by.has('bin/kindling-exit')).toBe(true);
    expect(by.has('sbin/insmod')).toBe(true);
    const list = new TextDecoder().decode(by.get('etc/modules.list')!.data).trim().split('\n');
    const names = list.map((p) => p.replace(/^.*\//, '').replace(/\.ko$/, '').replace(/-/g, '_'));
    for (const n of ['virtio_ring', 'virtio', 'virtio_mmio', 'virtio_blk', 'failover', 'net_failover', 'virtio_net', 'virtio_console', 'virtio_rng', 'vsock', 'vmw_vsock_virtio_transport_common', 'vmw_vsock_virtio_transport']) {
      expect(names).toContain(n);
    }
    expect(names.indexOf('virtio_mmio')).toBeGreaterThan(names.indexOf('virtio_ring'));
    expect(names.indexOf('virtio_net')).toBeGreaterThan(names.indexOf('net_failover'));
    expect(names.indexOf('net_failover')).toBeGreaterThan(names.indexOf('failover'));
    expect(names.indexOf('vmw_vsock_virtio_transport')).toBeGreaterThan(names.indexOf('vmw_vsock_virtio_transport_common'));
    for (const p of list) {
      expect(p.startsWith(`/lib/modules/${image.kernelVersion}/`)).toBe(true);
      expect(by.has(p.slice(1))).toBe(true);
    }
  });

  it('a second call is a fast no-op, and the outputs verify against the manifest', async () => {
    const before = statSync(image.kernel).mtimeMs;
    const t0 = performance.now();
    const again = await ensureDefaultGuest({ home, log: (l) => lines.push(`second: ${l}`) });
    const warmMs = performance.now() - t0;
    expect(again).toEqual(image);
    expect(lines.some((l) => l.startsWith('second:'))).toBe(false);
    expect(statSync(image.kernel).mtimeMs).toBe(before);
    expect(warmMs).toBeLessThan(100);
    expect(findBuiltGuest(home)).toEqual(image);
    expect(await verifyGuest(home)).toBe(true);
    console.log(`warm call: ${warmMs.toFixed(1)} ms`);
  });

  const qemu = !spawnSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' }).error;
  it.skipIf(!qemu)('boots under QEMU TCG (PVH vmlinux), runs kindling.cmd and reports its status on port 0xf4', () => {
    const cmd = encodeGuestCommand(['sh', '-c', 'echo "GUEST-CMD $(wc -l < /proc/modules) modules"; exit 7']);
    const r = spawnSync(
      'qemu-system-x86_64',
      [
        '-M', 'microvm,x-option-roms=off,isa-serial=on,rtc=off', '-accel', 'tcg', '-m', '256',
        '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio',
        '-kernel', image.kernel, '-initrd', image.initrd,
        '-append', `console=ttyS0 quiet reboot=t panic=-1 tsc_early_khz=2000000 lpj=4000000 kindling.cmd=${cmd}`,
        '-device', 'isa-debug-exit,iobase=0xf4,iosize=4',
      ],
      { encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    expect(r.stdout).toContain('GUEST-CMD 12 modules');
    expect(r.stdout).not.toContain('insmod');
    expect(r.status).toBe((7 << 1) | 1);
  }, 130_000);
});
