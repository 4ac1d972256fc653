// VM config validation: any input → a valid config or one clear ConfigError line, never another
// exception, never a hang, never a big allocation; messages in library terms (VMConfig names), the
// CLI's wording from src/cli/flag-names.ts. Kernel, initrd and disk paths include FIFOs, character
// devices, directories, symlinks (to each and dangling) and sparse oversized files.
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { cliConfigMessage, flagName } from '../../src/cli/flag-names.js';
import { CmdlineError, KernelFormatError, KernelLoadError } from '../../src/loader/index.js';
import {
  ConfigError,
  DEFAULT_CMDLINE,
  MAX_VCPUS,
  MIN_MEM_MIB,
  resolveConfig,
  shown,
  takeConfigFiles,
  type VMConfig,
} from '../../src/main/config.js';
import { VM } from '../../src/main/vm.js';
import { runs } from '../fuzz/budget.js';
import { testBzImage, testKernelImage } from './fixtures/test-kernel.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const HOST = 8 * GiB;

const dir = mkdtempSync(join(tmpdir(), 'kindling-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const file = (name: string, data: Uint8Array | string): string => {
  const p = join(dir, name);
  writeFileSync(p, data);
  return p;
};
/** A sparse file of `size` bytes (no blocks allocated). */
const sparse = (name: string, size: number): string => {
  const p = join(dir, name);
  const fd = openSync(p, 'w');
  ftruncateSync(fd, size);
  closeSync(fd);
  return p;
};
const link = (name: string, target: string): string => {
  const p = join(dir, name);
  symlinkSync(target, p);
  return p;
};

const kernel = file('kernel', testKernelImage());
const initrd = file('initrd', Buffer.alloc(4096, 0x5a));
const notKernel = file('not-a-kernel', 'x');
const bz10 = file('bz10', testBzImage({ cmdlineSize: 10 }));
const disk = file('disk.img', Buffer.alloc(4096));
const fifo = join(dir, 'fifo');
execFileSync('mkfifo', [fifo]);
const sub = join(dir, 'sub');
mkdirSync(sub);
const huge = sparse('huge-3g', 3 * GiB);
const big = sparse('big-1.5g', 1.5 * GiB);
/** Larger than every guest RAM size the property uses. */
const overRam = sparse('over-ram-300m', 300 * MiB);
const missing = join(dir, 'missing');

/** Special paths and the message each gives as a kernel or initrd (or a disk: `disk`). */
const SPECIAL: Array<{ path: string; file: RegExp; disk: RegExp }> = [
  { path: fifo, file: /is a FIFO \(named pipe\), not a regular file: /, disk: /^disk image is a FIFO \(named pipe\), not a regular file or block device: / },
  { path: '/dev/zero', file: /is a character device, not a regular file: /, disk: /^disk image is a character device, not a regular file or block device: / },
  { path: '/dev/null', file: /is a character device, not a regular file: /, disk: /^disk image is a character device, not a regular file or block device: / },
  { path: sub, file: /is a directory, not a regular file: /, disk: /^disk image is a directory, not a regular file or block device: / },
  { path: missing, file: /not found: /, disk: /^disk image not found: / },
  { path: huge, file: /is 3 GiB, more than kindling reads \(2 GiB\): /, disk: /./ },
];
for (const s of [...SPECIAL]) SPECIAL.push({ ...s, path: link(`link-to-${s.path.split('/').pop()}`, s.path) });
SPECIAL.push({ path: link('dangling', join(dir, 'nowhere')), file: /not found: /, disk: /^disk image not found: / });

/** The error `f` throws (fails the test when it throws nothing). */
function thrown(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, got none');
}

function rss(): number {
  return process.memoryUsage().rss;
}

describe('resolveConfig', () => {
  it('fills defaults and hands over the kernel bytes it read, once', () => {
    const c = resolveConfig({ kernel, initrd }, { hostMemBytes: HOST });
    expect(c).toMatchObject({ kernel, initrd, vcpus: 1, memBytes: 256 * MiB, cmdline: DEFAULT_CMDLINE, logLevel: 'warn', seccomp: 'strict' });
    const files = takeConfigFiles(c);
    expect(files.kernelKind).toBe('pvh-elf');
    expect(Buffer.from(files.kernel).equals(readFileSync(kernel))).toBe(true);
    expect(Buffer.from(files.initrd!).equals(readFileSync(initrd))).toBe(true);
    expect(() => takeConfigFiles(c)).toThrow(/internal/);
  });

  it('speaks VMConfig names (option set); the CLI gets flag names', () => {
    const cases: Array<[VMConfig, string, RegExp, RegExp]> = [
      [{ kernel, memMiB: 0 }, 'memMiB', /^memMiB must be a whole number of MiB ≥ 16 \(got 0\)$/, /^--mem must be a whole number of MiB ≥ 16 \(got 0\)$/],
      [{ kernel, memMiB: 1 }, 'memMiB', /^memMiB must be/, /^--mem must be/],
      [{ kernel, vcpus: 0 }, 'vcpus', /^vcpus must be/, /^--vcpus must be/],
      [{ kernel, vcpus: MAX_VCPUS + 1 }, 'vcpus', /^vcpus 255 is more than kindling supports/, /^--vcpus 255 is more than kindling supports/],
      [{ kernel, cmdline: 'a\nb' }, 'cmdline', /^cmdline must not contain NUL or newline/, /^--cmdline must not contain/],
      [{ kernel, logLevel: 'loud' }, 'logLevel', /^logLevel must be one of/, /^--log-level must be one of/],
      [{ kernel, seccomp: 'lax' as never }, 'seccomp', /^seccomp must be one of strict, log, off \(got lax\)$/, /^--seccomp must be one of strict, log, off/],
      [{ kernel, console: 'tty' as never }, 'console', /^console must be serial or virtio/, /^--console must be/],
      [{ kernel, rng: 'no' as never }, 'rng', /^rng must be true, false or \{ rate \}/, /^--no-rng must be/],
      [{ kernel: '' }, 'kernel', /^kernel is required/, /^--kernel is required/],
      [{ kernel, disks: [{ path: disk }, null] as never }, 'disks[1]', /^disks\[1\] must be \{ path, readOnly\?, rate\? \}$/, /^--disk #2 must be/],
      [{ kernel, disks: [{ path: disk, readOnly: 1 }] as never }, 'disks[0].readOnly', /^disks\[0\]\.readOnly must be true or false/, /^--disk #1 must be/],
      [{ kernel, cmdlineExtra: 'x' as never }, 'cmdlineExtra', /^cmdlineExtra must be an array of strings$/, /^cmdlineExtra must be/],
      [{ kernel: missing }, 'kernel', /^kernel not found: /, /^kernel not found: /],
      [{ kernel, memMiB: 64 }, 'memMiB', /^memMiB 64 is more than this host's RAM \(32 MiB\)$/, /^--mem 64 is more than this host's RAM/],
    ];
    for (const [config, option, lib, cli] of cases) {
      const e = thrown(() => resolveConfig(config, { hostMemBytes: option === 'memMiB' && config.memMiB === 64 ? 32 * MiB : HOST }));
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).option).toBe(option);
      expect(e.message).toMatch(lib);
      expect(cliConfigMessage(e as ConfigError)).toMatch(cli);
    }
    expect(flagName('disks[3].path')).toBe('--disk #4');
    expect(flagName('memMiB')).toBe('--mem');
  });

  it('new VM() reports a bad config in library terms, and a bad kernel at construction, not in start()', () => {
    const e = thrown(() => new VM({ kernel, memMiB: 1 }));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toMatch(/^memMiB must be/);
    expect(e.message).not.toContain('--mem');
    const k = thrown(() => new VM({ kernel: notKernel }));
    expect(k).toBeInstanceOf(KernelFormatError);
    expect(k).toBeInstanceOf(ConfigError);
    expect((k as ConfigError).option).toBe('kernel');
    expect(k.message).toBe(`kernel ${notKernel}: not a Linux kernel: no ELF magic or bzImage setup header`);
  });

  it('refuses FIFOs, character devices, directories, symlinks to them and dangling ones, at once, naming the file', () => {
    for (const s of SPECIAL) {
      for (const option of ['kernel', 'initrd'] as const) {
        const t0 = performance.now();
        const config: VMConfig = option === 'kernel' ? { kernel: s.path } : { kernel, initrd: s.path };
        const e = thrown(() => resolveConfig(config, { hostMemBytes: HOST }));
        expect(performance.now() - t0).toBeLessThan(2000);
        expect(e).toBeInstanceOf(ConfigError);
        expect((e as ConfigError).option).toBe(option);
        expect(e.message).toMatch(new RegExp(`^${option} ${s.file.source}`));
        expect(e.message.endsWith(shown(s.path))).toBe(true);
      }
      if (s.path.includes('huge')) continue;
      const e = thrown(() => resolveConfig({ kernel, disks: [{ path: s.path, readOnly: true }] }, { hostMemBytes: HOST }));
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).option).toBe('disks[0].path');
      expect(e.message).toMatch(s.disk);
      expect(e.message.endsWith(shown(s.path))).toBe(true);
    }
  });

  it('accepts an ELF kernel whose file is larger than guest RAM when its segments fit (an unstripped vmlinux)', () => {
    const p = join(dir, 'vmlinux-with-debug-info');
    writeFileSync(p, testKernelImage());
    const fd = openSync(p, 'r+');
    ftruncateSync(fd, 80 * MiB); // sparse: as if 80 MiB of debug sections followed the loaded code
    closeSync(fd);
    const r = resolveConfig({ kernel: p, memMiB: 64 }, { hostMemBytes: HOST });
    expect(r.kernel).toBe(p);
    rmSync(p);
  });

  it('compares kernel and initrd sizes with guest RAM before reading a byte', () => {
    const before = rss();
    const t0 = performance.now();
    const e = thrown(() => resolveConfig({ kernel, initrd: big, memMiB: 64 }, { hostMemBytes: HOST }));
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toBe(`initrd is 1.5 GiB, larger than the guest's RAM (64 MiB): ${big}`);
    expect((e as ConfigError).option).toBe('initrd');
    const k = thrown(() => resolveConfig({ kernel: overRam, memMiB: 64 }, { hostMemBytes: HOST }));
    expect(k.message).toBe(`kernel is 300 MiB, larger than the guest's RAM (64 MiB): ${overRam}`);
    // Over 2 GiB: named, whatever the RAM (here 4 GiB, of which 3 GiB below the MMIO hole).
    const h = thrown(() => resolveConfig({ kernel, initrd: huge, memMiB: 4096 }, { hostMemBytes: HOST }));
    expect(h.message).toBe(`initrd is 3 GiB, more than kindling reads (2 GiB): ${huge}`);
    expect(rss() - before).toBeLessThan(64 * MiB);
    // An initrd that fits RAM alone but not next to the kernel: the loader's placement, still before reading it.
    const p = thrown(() => resolveConfig({ kernel, initrd: sparse('initrd-63m', 63 * MiB), memMiB: 64 }, { hostMemBytes: HOST }));
    expect(p).toBeInstanceOf(KernelLoadError);
    expect((p as ConfigError).option).toBe('initrd');
    expect(p.message).toMatch(/^initrd .*initrd-63m: initrd of 63 MiB does not fit in guest RAM/);
  });

  it('checks the command line against the kernel’s limit when the config is resolved (device words included)', () => {
    const t0 = performance.now();
    const e = thrown(() => resolveConfig({ kernel, cmdline: 'x'.repeat(50_000_000) }, { hostMemBytes: HOST }));
    expect(performance.now() - t0).toBeLessThan(3000);
    expect(e).toBeInstanceOf(CmdlineError);
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as ConfigError).option).toBe('cmdline');
    expect(e.message).toBe('kernel command line is too long: 50000000 bytes, the limit is 2047 for any kernel');
    expect(thrown(() => resolveConfig({ kernel, cmdline: 'x'.repeat(2040) }, { hostMemBytes: HOST })).message).toMatch(/^kernel command line is too long: \d+ bytes, the limit is 2047 \(for kernel .*kernel\)$/);
    // A bzImage's own cmdline_size (10): 10 bytes fit; with virtio-rng's device word they do not.
    expect(resolveConfig({ kernel: bz10, cmdline: 'x'.repeat(10), rng: false }, { hostMemBytes: HOST }).cmdline).toBe('x'.repeat(10));
    expect(thrown(() => resolveConfig({ kernel: bz10, cmdline: 'x'.repeat(11), rng: false }, { hostMemBytes: HOST })).message).toMatch(/the limit is 10 /);
    expect(thrown(() => resolveConfig({ kernel: bz10, cmdline: 'x' }, { hostMemBytes: HOST }))).toBeInstanceOf(CmdlineError);
    expect(cliConfigMessage(e as ConfigError)).toBe(e.message);
  });

  it('property: any config over special and oversized paths → a config or one ConfigError line naming the path, bounded RSS', () => {
    const goodKernels = [kernel, bz10];
    const paths = fc.constantFrom(kernel, initrd, notKernel, disk, overRam, ...SPECIAL.map((s) => s.path));
    const anyValue = fc.oneof(fc.integer({ min: -5, max: 300 }), fc.double(), fc.string(), fc.constant(undefined), fc.constant(null), fc.boolean());
    const before = rss();
    let peak = before;
    const seen = { ok: 0, file: 0, other: 0 };
    fc.assert(
      fc.property(
        fc.record(
          {
            kernel: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(kernel, bz10) }, { weight: 4, arbitrary: paths }, { weight: 1, arbitrary: fc.oneof(fc.string(), anyValue) }),
            initrd: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(undefined, initrd) }, { weight: 2, arbitrary: paths }),
            disks: fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.array(fc.record({ path: paths, readOnly: fc.constant(true) }), { maxLength: 2 }) }),
            vcpus: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(undefined, 1, 2) }, { weight: 1, arbitrary: anyValue }),
            memMiB: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(16, 64, 256, undefined) }, { weight: 1, arbitrary: anyValue }),
            cmdline: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(undefined, 'console=ttyS0') }, { weight: 1, arbitrary: fc.oneof(fc.string(), fc.integer()) }),
            rng: fc.boolean(),
            logLevel: fc.oneof(fc.constantFrom('warn', 'debug', 'silent', 'nope'), fc.constant(undefined)),
          },
          { requiredKeys: [] },
        ),
        (input) => {
          let c;
          try {
            c = resolveConfig(input as unknown as VMConfig, { hostMemBytes: HOST });
          } catch (e) {
            peak = Math.max(peak, rss());
            expect(e).toBeInstanceOf(ConfigError);
            const msg = (e as Error).message;
            expect(msg.length).toBeGreaterThan(0);
            expect(msg).not.toContain('\n');
            const option = (e as ConfigError).option;
            const d = /^disks\[(\d+)\]\.path$/.exec(option);
            const path = option === 'kernel' ? input.kernel : option === 'initrd' ? input.initrd : d ? input.disks?.[Number(d[1])]?.path : undefined;
            if (typeof path === 'string' && path !== '' && !(e instanceof CmdlineError)) {
              seen.file++;
              expect(msg).toContain(shown(path));
              const special = SPECIAL.find((s) => s.path === path);
              if (special && (option === 'kernel' || option === 'initrd')) expect(msg).toMatch(special.file);
              if (special && d) expect(msg).toMatch(special.disk);
              if (path === overRam && !d) expect(msg).toMatch(/larger than the guest's RAM/);
            } else seen.other++;
            return;
          }
          peak = Math.max(peak, rss());
          seen.ok++;
          takeConfigFiles(c);
          expect(goodKernels).toContain(c.kernel);
          if (c.initrd !== undefined) expect([initrd, kernel, notKernel, bz10, disk]).toContain(c.initrd);
          expect(c.disks.every((x) => [disk, initrd, bz10, overRam, huge, join(dir, 'link-to-huge-3g')].includes(x.path))).toBe(true);
          expect(Number.isInteger(c.vcpus) && c.vcpus >= 1 && c.vcpus <= MAX_VCPUS).toBe(true);
          expect(c.memBytes % MiB).toBe(0);
          expect(c.memBytes >= MIN_MEM_MIB * MiB && c.memBytes <= HOST).toBe(true);
          expect(c.cmdline).not.toMatch(/[\0\n\r]/);
        },
      ),
      { numRuns: runs(300) },
    );
    if (process.env.H1_DEBUG) console.log(seen);
    expect(seen.ok).toBeGreaterThan(0);
    expect(seen.file).toBeGreaterThan(0);
    expect(seen.other).toBeGreaterThan(0);
    // Nothing oversized was read: the largest file that may be read is the 4 KiB initrd / disk.
    expect(peak - before).toBeLessThan(96 * MiB);
  }, 60_000);
});
