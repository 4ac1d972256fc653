// The vsock option end to end up to the device: `--vsock CID[,uds=PATH]` parsing, config.vsock
// validation (one line each, exit 2, nothing the user has at udsPath touched), its place in the
// device plan and the command line, and prepare(): a CID unique per VM in a process, the socket file
// created and removed, a busy path refused.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { errorLine, parseCommandLine, parseVsockArg } from '../../src/cli/cli-args.js';
import { vsockDeviceType } from '../../src/devices/virtio/vsock/index.js';
import { loadAddon } from '../../src/kvm/addon.js';
import { ConfigError, resolveConfig, virtioDevicePlan, type VMConfig } from '../../src/main/config.js';
import { testKernelImage } from './fixtures/test-kernel.js';

const dir = mkdtempSync(join(tmpdir(), 'kindling-vsock-config-'));
const kernel = join(dir, 'kernel');
writeFileSync(kernel, testKernelImage());
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const refused = (c: Partial<VMConfig>): string => {
  try {
    resolveConfig({ kernel, ...c } as VMConfig);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    const { line, code } = errorLine(e);
    expect(code).toBe(2);
    expect(line).not.toMatch(/\n/);
    return line;
  }
  throw new Error('accepted');
};

describe('--vsock', () => {
  it('parses CID[,uds=PATH] (the path is everything after uds=)', () => {
    expect(parseVsockArg('3')).toEqual({ cid: 3 });
    expect(parseVsockArg('42,uds=/tmp/a,b.sock')).toEqual({ cid: 42, udsPath: '/tmp/a,b.sock' });
    const run = parseCommandLine(['run', '--kernel', 'k', '--vsock', '7,uds=/x/v.sock']);
    expect(run).toMatchObject({ kind: 'run', config: { vsock: { cid: 7, udsPath: '/x/v.sock' } } });
    for (const bad of ['', 'x', '3,', '3,uds=', '3,path=/x', '-3']) {
      let e: unknown;
      try {
        parseCommandLine(['run', '--kernel', 'k', '--vsock', bad]);
      } catch (err) {
        e = err;
      }
      expect(errorLine(e)).toMatchObject({ code: 2 });
      expect(errorLine(e).line).toMatch(/--vsock/);
    }
  });

  it('refuses CIDs outside 3..4294967294 and unusable socket paths with one line, touching nothing', () => {
    expect(refused({ vsock: { cid: 2 } })).toMatch(/--vsock CID must be a whole number in 3\.\.4294967294 \(got 2\)/);
    expect(refused({ vsock: { cid: 4294967295 } })).toMatch(/--vsock CID/);
    expect(refused({ vsock: { cid: 3.5 } })).toMatch(/--vsock CID/);
    expect(refused({ vsock: 'x' as never })).toMatch(/--vsock must be/);
    const mine = join(dir, 'precious');
    writeFileSync(mine, 'user data');
    expect(refused({ vsock: { cid: 3, udsPath: mine } })).toMatch(/already exists/);
    expect(readFileSync(mine, 'utf8')).toBe('user data');
    expect(refused({ vsock: { cid: 3, udsPath: join(dir, 'nodir', 'v.sock') } })).toMatch(/directory that does not exist/);
    expect(refused({ vsock: { cid: 3, udsPath: join(dir, 'x'.repeat(120)) } })).toMatch(/longer than a Unix socket path/);
  });

  it('places virtio-vsock after the other devices', () => {
    const r = resolveConfig({ kernel, vsock: { cid: 9, udsPath: join(dir, 'v.sock') } });
    expect(r.vsock).toEqual({ cid: 9, udsPath: join(dir, 'v.sock') });
    expect(virtioDevicePlan(r).map((d) => d.name)).toEqual(['virtio-rng', 'virtio-vsock']);
    expect(virtioDevicePlan(r)[1]).toMatchObject({ kind: 'vsock', options: { cid: 9 } });
    expect(virtioDevicePlan(resolveConfig({ kernel })).map((d) => d.kind)).toEqual(['rng']);
  });

  it('prepare(): one VM per CID in a process; the socket is created and removed; a busy path is refused', () => {
    const addon = loadAddon();
    const uds = join(dir, 'p.sock');
    const a = vsockDeviceType.prepare({ cid: 11, udsPath: uds }, { addon });
    try {
      expect(existsSync(uds)).toBe(true);
      expect(() => vsockDeviceType.prepare({ cid: 11 }, { addon })).toThrow(/11 is already used by another VM/);
      expect(() => vsockDeviceType.prepare({ cid: 12, udsPath: uds }, { addon })).toThrow(/already exists/);
      // the refused prepare took nothing: 12 is free
      vsockDeviceType.prepare({ cid: 12 }, { addon }).release();
    } finally {
      a.release();
    }
    expect(existsSync(uds)).toBe(false);
    const b = vsockDeviceType.prepare({ cid: 11 }, { addon });
    b.release();
    b.release();
  });
});
