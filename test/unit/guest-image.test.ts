// Unit tests for the default-guest builder's pure parts: cpio writer, LZ4 legacy decompressor,
// bzImage payload extraction, .modinfo parsing, dependency ordering, guest command encoding, /init.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { parseCpio, writeCpio, type CpioEntry } from '../../src/guest-image/cpio.js';
import { lz4DecompressBlock, lz4DecompressLegacy } from '../../src/guest-image/lz4.js';
import { bzImagePayload, extractVmlinux, findPvhEntry } from '../../src/guest-image/bzimage.js';
import { moduleName, modulesDep, parseModinfo, resolveModuleOrder } from '../../src/guest-image/modinfo.js';
import { decodeGuestCommand, encodeGuestCommand, exitHelperElf, initScript, shellQuote } from '../../src/guest-image/init-script.js';
import { guestHome, findBuiltGuest } from '../../src/guest-image/index.js';

const has = (tool: string): boolean => {
  const r = spawnSync(tool, ['--version'], { stdio: 'ignore' });
  return !r.error;
};
const tmp = mkdtempSync(join(tmpdir(), 'kindling-guest-unit-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// ------------------------------------------------------------------------------------------- cpio
describe('cpio newc writer', () => {
  const entries: CpioEntry[] = [
    { type: 'file', path: '/init', data: '#!/bin/sh\necho hi\n', mode: 0o755 },
    { type: 'chardev', path: 'dev/console', major: 5, minor: 1, mode: 0o600 },
    { type: 'chardev', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { type: 'blockdev', path: 'dev/vda', major: 254, minor: 0 },
    { type: 'symlink', path: 'bin/sh', target: '/bin/busybox' },
    { type: 'file', path: 'bin/busybox', data: new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]), mode: 0o755 },
    { type: 'dir', path: 'tmp', mode: 0o1777 },
    { type: 'file', path: 'lib/modules/6.1.0/kernel/a.ko', data: new Uint8Array(1001).fill(7) },
    { type: 'file', path: 'etc/empty', data: '' },
  ];

  it('round-trips through the parser, sorted, with parents added and device nodes', () => {
    const buf = writeCpio(entries, { mtime: 1234 });
    expect(buf.length % 4).toBe(0);
    const recs = parseCpio(buf);
    const paths = recs.map((r) => r.path);
    expect(paths).toEqual([...paths].sort());
    expect(paths).toEqual([
      'bin',
      'bin/busybox',
      'bin/sh',
      'dev',
      'dev/console',
      'dev/null',
      'dev/vda',
      'etc',
      'etc/empty',
      'init',
      'lib',
      'lib/modules',
      'lib/modules/6.1.0',
      'lib/modules/6.1.0/kernel',
      'lib/modules/6.1.0/kernel/a.ko',
      'tmp',
    ]);
    const by = new Map(recs.map((r) => [r.path, r]));
    expect(by.get('dev/console')).toMatchObject({ mode: 0o020600, rdevMajor: 5, rdevMinor: 1, uid: 0, gid: 0, mtime: 1234 });
    expect(by.get('dev/null')).toMatchObject({ mode: 0o020666, rdevMajor: 1, rdevMinor: 3 });
    expect(by.get('dev/vda')).toMatchObject({ mode: 0o060600, rdevMajor: 254, rdevMinor: 0 });
    expect(by.get('bin/sh')!.mode).toBe(0o120777);
    expect(new TextDecoder().decode(by.get('bin/sh')!.data)).toBe('/bin/busybox');
    expect(by.get('init')!.mode).toBe(0o100755);
    expect(new TextDecoder().decode(by.get('init')!.data)).toBe('#!/bin/sh\necho hi\n');
    expect(by.get('tmp')!.mode).toBe(0o041777);
    expect(by.get('lib')!.mode).toBe(0o040755);
    expect(by.get('lib/modules/6.1.0/kernel/a.ko')!.data).toEqual(new Uint8Array(1001).fill(7));
    expect(by.get('etc/empty')!.data.length).toBe(0);
    expect(new Set(recs.map((r) => r.ino)).size).toBe(recs.length);
    // ends with the trailer
    expect(new TextDecoder().decode(buf.subarray(buf.length - 128))).toContain('TRAILER!!!');
  });

  it('is deterministic regardless of input order, and gzip round-trips', () => {
    const a = writeCpio(entries);
    const b = writeCpio([...entries].reverse());
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    const gz = gzipSync(a, { level: 9 });
    expect(Buffer.from(gzipSync(b, { level: 9 })).equals(gz)).toBe(true);
    expect(parseCpio(gunzipSync(gz)).length).toBe(16);
    for (const r of parseCpio(a)) expect(r.mtime).toBe(0);
  });

  it('rejects duplicates, ".." and files with children', () => {
    expect(() => writeCpio([{ type: 'dir', path: 'a' }, { type: 'dir', path: '/a/' }])).toThrow(/duplicate/);
    expect(() => writeCpio([{ type: 'file', path: 'a/../b', data: '' }])).toThrow(/\.\./);
    expect(() => writeCpio([{ type: 'file', path: 'a', data: '' }, { type: 'file', path: 'a/b', data: '' }])).toThrow(/not a directory/);
  });

});

// -------------------------------------------------------------------------------------------- lz4
function legacy(...blocks: Uint8Array[]): Uint8Array {
  const parts: number[] = [0x02, 0x21, 0x4c, 0x18];
  for (const b of blocks) parts.push(b.length & 0xff, (b.length >> 8) & 0xff, (b.length >> 16) & 0xff, b.length >>> 24, ...b);
  return new Uint8Array(parts);
}
const ascii = (s: string): number[] => [...Buffer.from(s, 'latin1')];

describe('lz4', () => {
  // token 0x39: 3 literals "abc", match length 9+4=13 at offset 3 (overlapping), then 5 final literals
  const block1 = new Uint8Array([0x39, ...ascii('abc'), 3, 0, 0x50, ...ascii('hello')]);
  const want1 = 'abc'.repeat(5) + 'a' + 'hello';

  it('decodes a hand-made block with an overlapping match', () => {
    const out = new Uint8Array(64);
    const n = lz4DecompressBlock(block1, out);
    expect(Buffer.from(out.subarray(0, n)).toString('latin1')).toBe(want1);
  });

  it('decodes extended literal and match lengths', () => {
    // 20 literals (15 + 5), match offset 1, length 4 + 15 + 255 + 1 = 275, then 5 literals
    const lits = 'ABCDEFGHIJKLMNOPQRST';
    const blk = new Uint8Array([0xff, 5, ...ascii(lits), 1, 0, 255, 1, 0x50, ...ascii('tail!')]);
    const out = lz4DecompressLegacy(legacy(blk));
    expect(Buffer.from(out).toString('latin1')).toBe(lits + 'T'.repeat(275) + 'tail!');
  });

  it('decodes a legacy stream of several blocks, with expected size and a repeated magic', () => {
    const blk2 = new Uint8Array([0x50, ...ascii('world')]);
    const s = legacy(block1, blk2);
    expect(Buffer.from(lz4DecompressLegacy(s)).toString('latin1')).toBe(want1 + 'world');
    expect(lz4DecompressLegacy(s, want1.length + 5).length).toBe(want1.length + 5);
    expect(() => lz4DecompressLegacy(s, 99)).toThrow(/expected 99/);
    const twice = new Uint8Array([...legacy(block1), ...legacy(blk2)]);
    expect(Buffer.from(lz4DecompressLegacy(twice)).toString('latin1')).toBe(want1 + 'world');
  });

  it('rejects malformed input', () => {
    expect(() => lz4DecompressLegacy(new Uint8Array([1, 2, 3, 4, 5]))).toThrow(/magic/);
    expect(() => lz4DecompressLegacy(legacy(block1).subarray(0, 12))).toThrow(/past the end/);
    expect(() => lz4DecompressBlock(new Uint8Array([0x10, 0x41, 9, 0, 0x10, 0x41]), new Uint8Array(64))).toThrow(/offset/);
    expect(() => lz4DecompressBlock(block1, new Uint8Array(8))).toThrow(/overflow/);
    expect(() => lz4DecompressBlock(new Uint8Array([0x10, 0x41, 1, 0]), new Uint8Array(64))).toThrow(/final literals/);
  });

  it.skipIf(!has('lz4'))('matches the lz4 CLI (`lz4 -l`, 8 MiB blocks) on ~10 MiB of data', () => {
    const n = 10 * 1024 * 1024 + 12345;
    const data = Buffer.alloc(n);
    let x = 12345;
    for (let i = 0; i < n; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      data[i] = i % 4096 < 2048 ? 97 + ((x >>> 16) % 6) : (i * 7) & 0xff; // mix of noise and runs
    }
    const f = join(tmp, 'data.bin');
    writeFileSync(f, data);
    const r = spawnSync('lz4', ['-l', '-9', '-c', f], { maxBuffer: 1 << 26 });
    expect(r.status).toBe(0);
    const out = lz4DecompressLegacy(r.stdout);
    expect(out.length).toBe(n);
    expect(Buffer.from(out).equals(data)).toBe(true);
  });
});

// ------------------------------------------------------------------------------------------ bzImage
/** A minimal ELF64 with one PT_NOTE holding Xen notes (type 18 = PHYS32_ENTRY). */
function fakeVmlinux(entry: number): Uint8Array {
  const notes: number[] = [];
  const note = (name: string, type: number, desc: number[]): void => {
    const nb = [...Buffer.from(name + '\0')];
    const w = (v: number): void => void notes.push(v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >>> 24);
    w(nb.length);
    w(desc.length);
    w(type);
    notes.push(...nb, ...new Array((4 - (nb.length % 4)) % 4).fill(0));
    notes.push(...desc, ...new Array((4 - (desc.length % 4)) % 4).fill(0));
  };
  note('GNU', 3, [1, 2, 3, 4]);
  note('Xen', 6, [...Buffer.from('linux\0')]);
  note('Xen', 18, [entry & 0xff, (entry >> 8) & 0xff, (entry >> 16) & 0xff, entry >>> 24, 0, 0, 0, 0]);
  const elf = new Uint8Array(64 + 56 + notes.length + 1000);
  const dv = new DataView(elf.buffer);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  dv.setUint16(16, 2, true);
  dv.setUint16(18, 0x3e, true);
  dv.setBigUint64(32, 64n, true);
  dv.setUint16(54, 56, true);
  dv.setUint16(56, 1, true);
  dv.setUint32(64, 4, true); // PT_NOTE
  dv.setBigUint64(64 + 8, 120n, true);
  dv.setBigUint64(64 + 32, BigInt(notes.length), true);
  elf.set(notes, 120);
  for (let i = 120 + notes.length; i < elf.length; i++) elf[i] = i % 13;
  return elf;
}

function fakeBzImage(compressed: Uint8Array, size: number): Uint8Array {
  const setupSects = 3;
  const pm = (setupSects + 1) * 512;
  const payloadOffset = 0x40;
  const payload = new Uint8Array([...compressed, size & 0xff, (size >> 8) & 0xff, (size >> 16) & 0xff, size >>> 24]);
  const bz = new Uint8Array(pm + payloadOffset + payload.length + 64);
  const dv = new DataView(bz.buffer);
  bz[0x1f1] = setupSects;
  dv.setUint32(0x202, 0x53726448, true);
  dv.setUint16(0x206, 0x20f, true);
  dv.setUint32(0x248, payloadOffset, true);
  dv.setUint32(0x24c, payload.length, true);
  bz.set(payload, pm + payloadOffset);
  return bz;
}

describe('bzImage → vmlinux', () => {
  const elf = fakeVmlinux(0x1000850);

  it('extracts a gzip payload and finds the PVH entry', () => {
    const bz = fakeBzImage(gzipSync(elf), elf.length);
    expect(bzImagePayload(bz).format).toBe('gzip');
    const out = extractVmlinux(bz);
    expect(Buffer.from(out).equals(Buffer.from(elf))).toBe(true);
    expect(findPvhEntry(out)).toBe(0x1000850);
  });

  it.skipIf(!has('lz4'))('extracts an LZ4 legacy payload (as the kernel build makes it with `lz4 -l`)', () => {
    const f = join(tmp, 'vmlinux.bin');
    writeFileSync(f, elf);
    const r = spawnSync('lz4', ['-l', '-c', f]);
    expect(r.status).toBe(0);
    const bz = fakeBzImage(r.stdout, elf.length);
    expect(bzImagePayload(bz).format).toBe('lz4');
    expect(Buffer.from(extractVmlinux(bz)).equals(Buffer.from(elf))).toBe(true);
  });

  it('reports a missing PVH note and bad images clearly', () => {
    const noPvh = fakeVmlinux(0);
    noPvh[120 + 44 + 8] = 17; // retype the PHYS32_ENTRY note (third note's type field)
    expect(findPvhEntry(noPvh)).toBeUndefined();
    expect(() => extractVmlinux(new Uint8Array(4096))).toThrow(/HdrS/);
    expect(() => extractVmlinux(fakeBzImage(new Uint8Array([9, 9, 9, 9, 9]), 5))).toThrow(/unsupported payload compression/);
    expect(() => extractVmlinux(fakeBzImage(gzipSync(elf), elf.length + 1))).toThrow(/trailer says/);
  });
});

// ------------------------------------------------------------------------------------------ modinfo
/** A relocatable ELF64 with sections: null, .text, .modinfo, .shstrtab. */
function fakeKo(modinfo: string[]): Uint8Array {
  const shstr = Buffer.from('\0.text\0.modinfo\0.shstrtab\0');
  const info = Buffer.from(modinfo.join('\0') + '\0');
  const text = Buffer.from([0xc3, 0x90, 0x90, 0x90]);
  const textOff = 64;
  const infoOff = textOff + text.length;
  const strOff = infoOff + info.length;
  const shoff = (strOff + shstr.length + 7) & ~7;
  const elf = new Uint8Array(shoff + 4 * 64);
  const dv = new DataView(elf.buffer);
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  dv.setUint16(16, 1, true); // ET_REL
  dv.setUint16(18, 0x3e, true);
  dv.setBigUint64(0x28, BigInt(shoff), true);
  dv.setUint16(0x34, 64, true);
  dv.setUint16(0x3a, 64, true);
  dv.setUint16(0x3c, 4, true);
  dv.setUint16(0x3e, 3, true);
  elf.set(text, textOff);
  elf.set(info, infoOff);
  elf.set(shstr, strOff);
  const sh = (i: number, name: number, type: number, off: number, size: number): void => {
    const h = shoff + i * 64;
    dv.setUint32(h, name, true);
    dv.setUint32(h + 4, type, true);
    dv.setBigUint64(h + 0x18, BigInt(off), true);
    dv.setBigUint64(h + 0x20, BigInt(size), true);
  };
  sh(1, 1, 1, textOff, text.length);
  sh(2, 7, 1, infoOff, info.length);
  sh(3, 16, 3, strOff, shstr.length);
  return elf;
}

describe('modinfo', () => {
  it('parses depends, name, vermagic and repeated keys from .modinfo', () => {
    const ko = fakeKo([
      'alias=virtio:d00000001v*',
      'alias=virtio:d00000002v*',
      'depends=net_failover,virtio-ring,virtio',
      'retpoline=Y',
      'name=virtio_net',
      'vermagic=6.1.0-50-cloud-amd64 SMP preempt mod_unload modversions ',
      'parm=napi_weight:int',
    ]);
    const m = parseModinfo(ko);
    expect(m.name).toBe('virtio_net');
    expect(m.depends).toEqual(['net_failover', 'virtio_ring', 'virtio']);
    expect(m.vermagic?.split(' ')[0]).toBe('6.1.0-50-cloud-amd64');
    expect(m.fields['alias']).toEqual(['virtio:d00000001v*', 'virtio:d00000002v*']);
    expect(parseModinfo(fakeKo(['depends=', 'name=virtio'])).depends).toEqual([]);
  });

  it('rejects non-ELF input and ELF without .modinfo', () => {
    expect(() => parseModinfo(new Uint8Array(100))).toThrow(/not an ELF/);
    const ko = fakeKo(['name=x']);
    ko[ko.length - 2 * 64 + 0] = 1; // point .modinfo's name at ".text"
    expect(() => parseModinfo(ko)).toThrow(/no \.modinfo/);
  });

  it('orders modules after their dependencies (first seen wins) and reports cycles and missing modules', () => {
    const deps: Record<string, string[]> = {
      virtio_mmio: ['virtio', 'virtio_ring'],
      virtio: [],
      virtio_ring: [],
      virtio_net: ['net_failover', 'virtio', 'virtio_ring'],
      net_failover: ['failover'],
      failover: [],
      vmw_vsock_virtio_transport: ['vmw_vsock_virtio_transport_common', 'virtio', 'virtio_ring', 'vsock'],
      vmw_vsock_virtio_transport_common: ['vsock'],
      vsock: [],
      virtio_rng: ['virtio', 'virtio_ring'],
    };
    const order = resolveModuleOrder(['virtio_mmio', 'virtio_net', 'virtio-rng', 'vmw_vsock_virtio_transport'], (n) => deps[n]);
    expect(order).toEqual([
      'virtio',
      'virtio_ring',
      'virtio_mmio',
      'failover',
      'net_failover',
      'virtio_net',
      'virtio_rng',
      'vsock',
      'vmw_vsock_virtio_transport_common',
      'vmw_vsock_virtio_transport',
    ]);
    for (const [m, ds] of Object.entries(deps)) for (const d of ds) expect(order.indexOf(d)).toBeLessThan(order.indexOf(m));
    expect(() => resolveModuleOrder(['a'], (n) => ({ a: ['b'], b: ['a'] })[n])).toThrow(/cycle: a -> b -> a/);
    expect(() => resolveModuleOrder(['a'], (n) => ({ a: ['zz'] })[n])).toThrow(/module zz not found \(needed by a\)/);
    expect(moduleName('kernel/drivers/char/hw_random/virtio-rng.ko.xz')).toBe('virtio_rng');
    const dep = modulesDep(order.slice(0, 6), (n) => `k/${n}.ko`, (n) => deps[n]);
    expect(dep).toContain('k/virtio_net.ko: k/virtio_ring.ko k/virtio.ko k/net_failover.ko k/failover.ko\n');
    expect(dep).toContain('k/virtio.ko:\n');
  });
});

// -------------------------------------------------------------------------------- guest command
describe('encodeGuestCommand', () => {
  const nasty = [
    "it's",
    'a b  c',
    '$HOME ${PATH} `id` $(id)',
    'line1\nline2\n',
    '',
    '*',
    '-n',
    'A=1',
    '~root',
    'back\\slash "dq" \'sq\'',
    'tab\there; exit 3 | & > /dev/null',
    'ünïcödé 🐢',
    '!event #hash',
  ];

  it('round-trips argv through base64 and `sh -c`', () => {
    const value = encodeGuestCommand(['printf', '%s\\0', ...nasty]);
    expect(value).toMatch(/^[A-Za-z0-9+/]+=*$/);
    const script = decodeGuestCommand(value);
    const r = spawnSync('sh', ['-c', script], { encoding: 'utf8', env: { PATH: process.env.PATH, HOME: '/nonexistent' } });
    expect(r.status).toBe(0);
    expect(r.stdout.split('\0').slice(0, -1)).toEqual(nasty);
  });

  it('keeps simple words bare, rejects empty argv and NUL bytes, and limits length', () => {
    expect(shellQuote('ls')).toBe('ls');
    expect(shellQuote('/usr/bin/x-y_z.1')).toBe('/usr/bin/x-y_z.1');
    expect(shellQuote('A=1')).toBe("'A=1'");
    expect(shellQuote('')).toBe("''");
    expect(decodeGuestCommand(encodeGuestCommand(['echo', 'hi there']))).toBe("echo 'hi there'");
    expect(() => encodeGuestCommand([])).toThrow(/empty/);
    expect(() => encodeGuestCommand(['a\0b'])).toThrow(/NUL/);
    expect(() => encodeGuestCommand(['x'.repeat(5000)])).toThrow(/too long/);
  });

  it('reports the exit status of the command through sh -c', () => {
    const r = spawnSync('sh', ['-c', decodeGuestCommand(encodeGuestCommand(['sh', '-c', 'exit 42']))]);
    expect(r.status).toBe(42);
  });
});

// ------------------------------------------------------------------------------------- /init & exit
describe('/init and the exit helper', () => {
  it('/init is valid sh and follows the contract', () => {
    const s = initScript('/etc/modules.list');
    const f = join(tmp, 'init');
    writeFileSync(f, s);
    expect(spawnSync('sh', ['-n', f]).status).toBe(0);
    expect(s.startsWith('#!/bin/sh\n')).toBe(true);
    expect(s).toContain('mount -t devtmpfs devtmpfs /dev');
    expect(s).toContain('kindling.cmd=*) cmd=${w#kindling.cmd=}');
    expect(s).toContain('base64 -d');
    expect(s).toContain('setsid cttyhack sh -c "$script"');
    expect(s).toContain('setsid cttyhack sh\n');
    expect(s).toContain('code=$((status & 255))');
    expect(s).toContain('/bin/kindling-exit "$code"');
    expect(s).toContain('dd of=/dev/port bs=1 seek=244 count=1 conv=notrunc');
    expect(s).toContain('poweroff -f');
  });

  it('the exit helper is a valid static x86-64 ELF', () => {
    const e = exitHelperElf();
    const dv = new DataView(e.buffer, e.byteOffset, e.byteLength);
    expect([...e.subarray(0, 4)]).toEqual([0x7f, 0x45, 0x4c, 0x46]);
    expect(dv.getUint16(18, true)).toBe(0x3e);
    const entry = Number(dv.getBigUint64(24, true));
    expect(entry).toBe(0x400000 + 120);
    expect(Number(dv.getBigUint64(96, true))).toBe(e.length);
  });

  // Without CAP_SYS_RAWIO ioperm() fails, so it never touches a port on this host: it must exit 1.
  it.skipIf(process.platform !== 'linux' || process.arch !== 'x64' || (process.getuid?.() === 0 && !has('setpriv')))(
    'the exit helper runs and exits 1 when ioperm is not allowed',
    () => {
      const f = join(tmp, 'kindling-exit');
      writeFileSync(f, exitHelperElf(), { mode: 0o755 });
      const r =
        process.getuid?.() === 0
          ? spawnSync('setpriv', ['--bounding-set=-sys_rawio', '--inh-caps=-sys_rawio', f, '7'])
          : spawnSync(f, ['7']);
      expect(r.error).toBeUndefined();
      expect(r.status).toBe(1);
    },
  );
});

// ------------------------------------------------------------------------------------------ paths
describe('guest home', () => {
  it('uses $KINDLING_HOME/guest, else ~/.cache/kindling/guest', () => {
    expect(guestHome({ KINDLING_HOME: '/x/y' })).toBe('/x/y/guest');
    expect(guestHome({ HOME: '/home/u' })).toBe('/home/u/.cache/kindling/guest');
  });

  it('finds no build in an empty or inconsistent dir', () => {
    const d = join(tmp, 'g');
    expect(findBuiltGuest(d)).toBeUndefined();
    spawnSync('mkdir', ['-p', d]);
    writeFileSync(join(d, 'manifest.json'), JSON.stringify({ format: 1, kernelVersion: 'k', files: { vmlinuz: { size: 1 }, vmlinux: { size: 1 }, 'initramfs.cpio.gz': { size: 1 } } }));
    expect(findBuiltGuest(d)).toBeUndefined();
    for (const f of ['vmlinuz', 'vmlinux', 'initramfs.cpio.gz']) writeFileSync(join(d, f), 'x');
    expect(findBuiltGuest(d)).toMatchObject({ kernel: join(d, 'vmlinux'), initrd: join(d, 'initramfs.cpio.gz'), kernelVersion: 'k' });
    writeFileSync(join(d, 'vmlinux'), 'xx');
    expect(findBuiltGuest(d)).toBeUndefined();
  });
});
