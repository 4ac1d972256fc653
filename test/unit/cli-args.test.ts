// The CLI's argv parser: any argv → one Command, or one UsageError whose printed line is a single
// line of printable text; a run command's config then resolves or fails with one ConfigError line.
import { execFileSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaultGuestOnPvm, errorLine, parseCommandLine, parseDiskArg, UsageError, type Command } from '../../src/cli/cli-args.js';
import { consoleMode } from '../../src/cli/terminal.js';
import { SignalStop, signalExitCode, STOP_SIGNALS } from '../../src/cli/signals.js';
import { ConfigError, MAX_VCPUS, resolveConfig } from '../../src/main/config.js';
import { runs } from '../fuzz/budget.js';
import { tempDir } from '../fuzz/tmp.js';
import { testKernelImage } from './fixtures/test-kernel.js';

const dir = tempDir('kindling-cli-args-');
const kernel = join(dir, 'kernel');
writeFileSync(kernel, testKernelImage()); // resolveConfig checks the kernel image itself
const disk = join(dir, 'disk.img');
writeFileSync(disk, Buffer.alloc(1024));
const oddDisk = join(dir, 'odd.img');
writeFileSync(oddDisk, Buffer.alloc(100));
const HOST = 8 * 1024 * 1024 * 1024;
// Special files the user may name: a FIFO (an open must not block), a symlink to the kernel, a
// dangling symlink, a directory, character devices.
const fifo = join(dir, 'fifo');
execFileSync('mkfifo', [fifo]);
const link = join(dir, 'kernel-link');
symlinkSync(kernel, link);
const dangling = join(dir, 'dangling');
symlinkSync(join(dir, 'nowhere'), dangling);
const SPECIAL_PATHS = [fifo, link, dangling, dir, '/dev/null', '/dev/zero', '/dev/tty', '/proc/self/mem'];
/** Numbers as a careless or hostile user types them. */
const NUMBERS = ['-5', '-1', '-0', '0', '+3', '1e3', '0x10', '1.5', ' 8', '8 ', 'abc', '', '99999999999999999999', '9007199254740993', 'Infinity', 'NaN'];

const OPTIONS = ['vcpus', 'mem', 'kernel', 'initrd', 'cmdline', 'disk', 'log-level'] as const;
/** What a printed error line may contain: no control character, no line separator. */
const PRINTABLE_LINE = /^kindling: [^\p{Cc}\u2028\u2029]+$/u;

/** Characters that matter to the parser and to a terminal, mixed with any other code point. */
const char = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom('-', '=', ',', 'r', 'o', 'w', ' ', '1', '\n', '\r', '\0', '\x1b', '\u2028', '"') },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
);
const text = fc.string({ unit: char, maxLength: 12 });
const digits = fc.oneof(fc.nat({ max: 300 }).map(String), fc.stringMatching(/^[0-9]{1,25}$/));

export function expectOneLine(e: unknown, code: number): void {
  const { line, code: c } = errorLine(e);
  expect(c).toBe(code);
  expect(line).toMatch(PRINTABLE_LINE);
}

function parseOrUsageError(argv: string[]): Command | UsageError {
  try {
    return parseCommandLine(argv);
  } catch (e) {
    if (e instanceof UsageError) return e;
    throw e;
  }
}

interface RunModel {
  vcpus?: string;
  mem?: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  logLevel?: string;
  disks: Array<{ path: string; readOnly: boolean; spelled: 'plain' | 'ro' | 'rw' }>;
  guestArgs?: string[];
  force?: boolean;
}

const runModel: fc.Arbitrary<RunModel> = fc
  .record(
    {
      vcpus: digits,
      mem: digits,
      kernel: text,
      initrd: text,
      cmdline: text,
      logLevel: text,
      disks: fc.array(
        fc.record({ path: text.filter((p) => p !== ''), readOnly: fc.boolean(), spelled: fc.constantFrom('plain' as const, 'ro' as const, 'rw' as const) }),
        { maxLength: 3 },
      ),
      guestArgs: fc.array(text, { maxLength: 3 }),
      force: fc.constant(true),
    },
    { requiredKeys: ['disks'] },
  )
  .map((m) => (m.kernel === undefined ? { ...m, initrd: undefined } : m));

/** Render a model as argv: options in any order (disks keep theirs), `--opt v` or `--opt=v`. */
function render(m: RunModel, order: number[], joined: boolean[]): string[] {
  const groups: Array<[string, string]> = [];
  const add = (name: string, v: string | undefined): void => {
    if (v !== undefined) groups.push([name, v]);
  };
  add('vcpus', m.vcpus);
  add('mem', m.mem);
  add('kernel', m.kernel);
  add('initrd', m.initrd);
  add('cmdline', m.cmdline);
  add('log-level', m.logLevel);
  if (m.force) groups.push(['force', '']);
  const scalars = groups.length;
  for (const d of m.disks) {
    // A path that itself ends in ,ro or ,rw must be spelled with its mode to keep its last comma.
    const ambiguous = /,(ro|rw)$/.test(d.path);
    const mode = d.readOnly ? ',ro' : d.spelled === 'rw' || ambiguous ? ',rw' : '';
    groups.push(['disk', d.path + mode]);
  }
  // Scalars go anywhere; disks are placed in their own order among them.
  const keyed = groups.map((g, i) => ({ g, key: order[i % order.length] }));
  const diskKeys = keyed.slice(scalars).map((k) => k.key).sort((a, b) => a - b);
  keyed.slice(scalars).forEach((k, i) => (k.key = diskKeys[i]));
  keyed.sort((a, b) => a.key - b.key);
  const argv = ['run'];
  keyed.forEach(({ g: [name, v] }, i) => {
    if (name === 'force') return void argv.push('--force');
    // A value that looks like an option (or is empty) has to be attached with '='.
    if (joined[i % joined.length] || v.startsWith('-') || v === '') argv.push(`--${name}=${v}`);
    else argv.push(`--${name}`, v);
  });
  if (m.guestArgs !== undefined) argv.push('--', ...m.guestArgs);
  return argv;
}

describe('parseCommandLine', () => {
  it('examples', () => {
    expect(parseCommandLine([])).toEqual({ kind: 'usage' });
    expect(parseCommandLine(['--version'])).toEqual({ kind: 'version' });
    expect(parseCommandLine(['run', '-h'])).toEqual({ kind: 'help' });
    expect(parseCommandLine(['run', '--vcpus', '2', '--mem=64', '--kernel', 'k', '--disk', 'a,b,ro', '--', 'x', '--', 'y'])).toEqual({
      kind: 'run',
      defaultGuest: false,
      force: false,
      guestArgs: ['x', '--', 'y'],
      config: { kernel: 'k', vcpus: 2, memMiB: 64, disks: [{ path: 'a,b', readOnly: true }], cmdlineExtra: ['--', 'x', '--', 'y'] },
    });
    expect(parseCommandLine(['run', '--', 'uname', '-a'])).toMatchObject({ kind: 'run', defaultGuest: true, guestArgs: ['uname', '-a'], force: false });
    expect(parseCommandLine(['run', '--force'])).toMatchObject({ kind: 'run', defaultGuest: true, force: true });
    expect(parseCommandLine(['run', '--kernel', 'k', '--seccomp', 'log'])).toMatchObject({ kind: 'run', config: { seccomp: 'log' } });
    expect(parseCommandLine(['run', '--kernel', 'k'])).not.toHaveProperty('config.seccomp');
    expect(parseDiskArg('img,rw,ro')).toEqual({ path: 'img,rw', readOnly: true });
    expect(parseDiskArg('a\n,ro')).toEqual({ path: 'a\n', readOnly: true });
    expect(() => parseDiskArg(',ro')).toThrow(UsageError);
    // Rate limiters: bw= and ops= off the end in any order, each once; a repeated one is part of the path.
    expect(parseDiskArg('img,ro,bw=1048576/1000+4096,ops=100/1000')).toEqual({
      path: 'img',
      readOnly: true,
      rate: { bandwidth: { size: 1048576, refillTimeMs: 1000, oneTimeBurst: 4096 }, ops: { size: 100, refillTimeMs: 1000 } },
    });
    expect(parseDiskArg('img,ops=5/10,rw')).toEqual({ path: 'img', readOnly: false, rate: { ops: { size: 5, refillTimeMs: 10 } } });
    expect(parseDiskArg('img,bw=1/1,bw=2/2')).toEqual({ path: 'img,bw=1/1', readOnly: false, rate: { bandwidth: { size: 2, refillTimeMs: 2 } } });
    expect(() => parseDiskArg('img,bw=fast')).toThrow(/^--disk bw= needs SIZE\/MS\[\+BURST\] \(got "bw=fast"\)$/);
    expect(() => parseDiskArg('img,ops=0/10')).toThrow(/^--disk ops= needs SIZE ≥ 1 and MS ≥ 1 \(got "0\/10"\)$/);
    expect(() => parseDiskArg(',bw=1/1')).toThrow(/needs an image path/);
    expect(parseCommandLine(['run', '--kernel', 'k', '--disk', 'd.img,bw=2097152/1000'])).toMatchObject({ config: { disks: [{ path: 'd.img', readOnly: false, rate: { bandwidth: { size: 2097152, refillTimeMs: 1000 } } }] } });
  });

  it('--rng bw=…,ops=…: the entropy device with a rate limiter; a bad or repeated bucket and --no-rng with it are usage errors', () => {
    expect(parseCommandLine(['run', '--kernel', 'k', '--rng', 'bw=1000/100+50,ops=10/1000'])).toMatchObject({
      config: { rng: { rate: { bandwidth: { size: 1000, refillTimeMs: 100, oneTimeBurst: 50 }, ops: { size: 10, refillTimeMs: 1000 } } } },
    });
    expect(parseCommandLine(['run', '--kernel', 'k', '--rng', 'ops=5/10'])).toMatchObject({ config: { rng: { rate: { ops: { size: 5, refillTimeMs: 10 } } } } });
    for (const bad of ['', 'fast', 'bw=1/1,bw=2/2', 'bw=0/10', 'iops=1/1', 'bw=1/1,']) expect(() => parseCommandLine(['run', '--kernel', 'k', '--rng', bad]), bad).toThrow(UsageError);
    expect(() => parseCommandLine(['run', '--kernel', 'k', '--no-rng', '--rng', 'bw=1/1'])).toThrow(/--no-rng and --rng contradict each other/);
  });

  it('--net …,poll-us=N: the transmit busy-poll window, 0..1000 µs; anything else, or twice, is a usage error; net[].pollUs likewise', () => {
    expect(parseCommandLine(['run', '--kernel', 'k', '--net', 'tap=t0,poll-us=0'])).toMatchObject({ config: { net: [{ tap: 't0', pollUs: 0 }] } });
    expect(parseCommandLine(['run', '--kernel', 'k', '--net', 'passt,mac=02:00:00:00:00:01,poll-us=1000'])).toMatchObject({ config: { net: [{ passt: true, pollUs: 1000 }] } });
    for (const bad of ['poll-us=', 'poll-us=1001', 'poll-us=-1', 'poll-us=1.5', 'poll-us=abc', 'poll-us=5,poll-us=6', 'poll-us=99999'])
      expect(() => parseCommandLine(['run', '--kernel', 'k', '--net', `tap=t0,${bad}`]), bad).toThrow(UsageError);
    for (const bad of [-1, 1001, 1.5, '50', null]) expect(() => resolveConfig({ kernel, net: [{ tap: 't0', pollUs: bad as number }] }), String(bad)).toThrow(/net\[0\]\.pollUs must be an integer number of µs from 0 to 1000/);
    expect(resolveConfig({ kernel, net: [{ tap: 't0', pollUs: 20 }] }).net).toEqual([{ tap: 't0', pollUs: 20 }]);
  });

  it('errors name the culprit on one printable line (regression: a newline in a value used to split it)', () => {
    const cases: Array<[string[], RegExp]> = [
      [['run', '--vcpus', '1\n2'], /^kindling: --vcpus needs a whole number \(got "1\\n2"\)/],
      [['run', '--fr\nob'], /^kindling: Unknown option '--fr\\nob'/],
      [['lau\x1bnch'], /^kindling: unknown command "lau\\u001bnch"/],
      [['guest', 'x\ny'], /^kindling: unexpected argument for guest: "x\\ny"/],
      [['run', '--initrd', 'i'], /--initrd needs --kernel/],
      [['run', '--mem'], /--mem/],
      [['run', '--mem', '-5'], /^kindling: --mem needs a whole number \(got "-5"\)/],
      [['run', '--vcpus', '-1', '--mem', '64'], /^kindling: --vcpus needs a whole number \(got "-1"\)/],
    ];
    for (const [argv, re] of cases) {
      let err: unknown;
      try {
        parseCommandLine(argv);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UsageError);
      expect(errorLine(err).line).toMatch(re);
      expectOneLine(err, 2);
    }
    const bad = join(dir, 'no\nsuch\x1b[2J');
    let cerr: unknown;
    try {
      resolveConfig({ kernel: bad });
    } catch (e) {
      cerr = e;
    }
    expect(cerr).toBeInstanceOf(ConfigError);
    expect(errorLine(cerr).line).toBe(`kindling: kernel not found: ${JSON.stringify(bad)}`);
    expectOneLine(new Error('first\nsecond'), 1);
  });

  it('property: any well-formed run argv parses back to exactly what it says', () => {
    fc.assert(
      fc.property(runModel, fc.array(fc.nat({ max: 20 }), { minLength: 1, maxLength: 12 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 12 }), (m, order, joined) => {
        const argv = render(m, order, joined);
        const cmd = parseCommandLine(argv);
        const guestArgs = m.guestArgs ?? [];
        const expected: Command = {
          kind: 'run',
          defaultGuest: m.kernel === undefined,
          guestArgs,
          force: m.force === true,
          config: {
            kernel: m.kernel ?? '',
            initrd: m.initrd,
            cmdline: m.cmdline,
            vcpus: m.vcpus === undefined ? undefined : Number(m.vcpus),
            memMiB: m.mem === undefined ? undefined : Number(m.mem),
            logLevel: m.logLevel,
            disks: m.disks.map((d) => ({ path: d.path, readOnly: d.readOnly })),
            ...(m.kernel !== undefined && guestArgs.length ? { cmdlineExtra: ['--', ...guestArgs] } : {}),
          },
        };
        expect(cmd).toStrictEqual(expected);
      }),
      { numRuns: runs(300) },
    );
  });

  it('property: one fault in a well-formed argv gives a UsageError naming it, on one line', () => {
    const fault = fc.oneof(
      fc.record({ kind: fc.constant('unknown' as const), name: fc.stringMatching(/^[a-z][a-z-]{0,10}$/).filter((n) => !(OPTIONS as readonly string[]).includes(n) && !['help', 'force', 'no-rng', 'agent'].includes(n)) }),
      fc.record({ kind: fc.constant('positional' as const), word: text.filter((w) => w !== '' && !w.startsWith('-')) }),
      fc.record({ kind: fc.constant('not-a-number' as const), name: fc.constantFrom('vcpus', 'mem'), value: text.filter((v) => !/^[0-9]+$/.test(v)) }),
      fc.record({ kind: fc.constant('missing-value' as const), name: fc.constantFrom(...OPTIONS) }),
      fc.record({ kind: fc.constant('empty-disk' as const), value: fc.constantFrom('', ',ro', ',rw') }),
    );
    fc.assert(
      fc.property(runModel, fault, fc.nat(), (m, f, at) => {
        const argv = render(m, [0], [false]);
        const end = argv.includes('--') ? argv.indexOf('--') : argv.length;
        // Insert at an option boundary: between 'run' and the end of the options.
        const bounds = [1];
        for (let i = 2; i <= end; i++) if (argv[i]?.startsWith('--') || i === end) bounds.push(i);
        const pos = bounds[at % bounds.length];
        let tokens: string[];
        let names: RegExp;
        switch (f.kind) {
          case 'unknown':
            tokens = [`--${f.name}`];
            names = new RegExp(`--${f.name}`);
            break;
          case 'positional':
            tokens = [f.word];
            names = /positional/i;
            break;
          case 'not-a-number':
            // Put it last among the options so it is the value that counts (last one wins).
            tokens = [`--${f.name}=${f.value}`];
            names = new RegExp(`--${f.name} needs a whole number`);
            break;
          case 'missing-value':
            tokens = [`--${f.name}`];
            names = new RegExp(`--${f.name}`);
            break;
          case 'empty-disk':
            tokens = [`--disk=${f.value}`];
            names = /--disk needs an image path/;
            break;
        }
        const insertAt = f.kind === 'not-a-number' || f.kind === 'missing-value' ? end : pos;
        const bad = [...argv.slice(0, insertAt), ...tokens, ...argv.slice(insertAt)];
        const r = parseOrUsageError(bad);
        expect(r).toBeInstanceOf(UsageError);
        expect(errorLine(r).line).toMatch(names);
        expectOneLine(r, 2);
      }),
      { numRuns: runs(300) },
    );
  });

  it('property: any argv → a command or one usage line; a run config → a valid config or one config line', () => {
    const token = fc.oneof(
      fc.constantFrom('run', 'guest', '--', '-h', '--help', '--version', '-x', ...OPTIONS.map((o) => `--${o}`)),
      fc.constantFrom(kernel, disk, `${disk},ro`, oddDisk, dir, '0', '1', '64', '255', '99999999999', '--force', '--disk'),
      fc.constantFrom(...SPECIAL_PATHS, ...SPECIAL_PATHS.map((p) => `${p},ro`), ...NUMBERS),
      fc.tuple(fc.constantFrom(...OPTIONS), fc.oneof(text, fc.constantFrom(kernel, disk, '8', ...NUMBERS, ...SPECIAL_PATHS))).map(([o, v]) => `--${o}=${v}`),
      fc.tuple(fc.constantFrom('--disk', '--kernel', '--initrd'), fc.constantFrom(...SPECIAL_PATHS, disk, `${disk},ro`, `${oddDisk},rw`)),
      fc.tuple(fc.constantFrom('--mem', '--vcpus'), fc.constantFrom(...NUMBERS)),
      text,
    );
    const seen = { usage: 0, config: 0, ok: 0 };
    fc.assert(
      fc.property(fc.oneof(fc.array(token, { maxLength: 10 }), fc.array(token, { maxLength: 10 }).map((a) => ['run', ...a])), (tokens) => {
        const argv = tokens.flat();
        const r = parseOrUsageError(argv);
        if (r instanceof UsageError) {
          seen.usage++;
          expectOneLine(r, 2);
          return;
        }
        if (r.kind !== 'run') return;
        const config = r.defaultGuest ? { ...r.config, kernel } : r.config;
        let c;
        try {
          c = resolveConfig(config, { hostMemBytes: HOST });
        } catch (e) {
          expect(e).toBeInstanceOf(ConfigError);
          seen.config++;
          expectOneLine(e, 2);
          return;
        }
        seen.ok++;
        // Only the files that exist and are non-empty can be a kernel (the symlink resolves to one);
        // only disk.img has a size of n×512.
        expect([kernel, link, disk, oddDisk]).toContain(c.kernel);
        expect(c.kernel).toBe(config.kernel);
        expect(c.vcpus >= 1 && c.vcpus <= MAX_VCPUS).toBe(true);
        expect(c.memBytes).toBeLessThanOrEqual(HOST);
        expect(c.disks.every((d) => d.path === disk)).toBe(true);
        expect(c.cmdline).not.toMatch(/[\0\n\r]/);
      }),
      { numRuns: runs(500) },
    );
    expect(seen.usage).toBeGreaterThan(0);
    expect(seen.config).toBeGreaterThan(0);
    expect(seen.ok).toBeGreaterThan(0);
  });
});

describe('errorLine classification', () => {
  it('ConfigError and its subclasses, also from another copy of the class (dist/ vs the bundle), exit 2', () => {
    class KernelFormatLike extends ConfigError {}
    expectOneLine(new KernelFormatLike('kernel is not a bzImage or ELF: "k"', 'kernel'), 2);
    expectOneLine(ConfigError.about('memMiB', 'must be a whole number of MiB ≥ 16 (got 1)'), 2);
    expect(errorLine(ConfigError.about('memMiB', 'must be a whole number of MiB ≥ 16 (got 1)')).line).toBe('kindling: --mem must be a whole number of MiB ≥ 16 (got 1)');
    // Same names, not the same classes: what a second module instance would throw.
    class ConfigErrorCopy extends Error {}
    Object.defineProperty(ConfigErrorCopy, 'name', { value: 'ConfigError' });
    class LockedCopy extends ConfigErrorCopy {}
    expectOneLine(new LockedCopy('disk image "a.img" is locked by another process'), 2);
    class UsageErrorCopy extends Error {}
    Object.defineProperty(UsageErrorCopy, 'name', { value: 'UsageError' });
    expect(errorLine(new UsageErrorCopy('bad')).line).toBe('kindling: bad (see kindling --help)');
    // The VMM or the guest failing: 1.
    expectOneLine(new Error('/dev/kvm not found: KVM is not available'), 1);
    expectOneLine('a string', 1);
    expectOneLine(undefined, 1);
  });

  it('the default guest on KVM-PVM: refused at once with the kernel to pass, or booted with earlyprintk under --force', () => {
    expect(defaultGuestOnPvm({ pvm: false, force: false, helloKernel: '/k/hello.elf' })).toEqual({ cmdlineWords: [] });
    expect(defaultGuestOnPvm({ pvm: false, force: true, helloKernel: '/k/hello.elf' })).toEqual({ cmdlineWords: [] });
    expect(defaultGuestOnPvm({ pvm: true, force: true, helloKernel: '/k/hello.elf' })).toEqual({ cmdlineWords: ['earlyprintk=serial'] });
    const r = defaultGuestOnPvm({ pvm: true, force: false, helloKernel: '/k/hello.elf' });
    expect(r.refuse).toBeInstanceOf(ConfigError);
    const { line, code } = errorLine(r.refuse);
    expect(code).toBe(2);
    expect(line).toMatch(PRINTABLE_LINE);
    expect(line).toMatch(/cannot boot here: \/dev\/kvm is KVM-PVM .*--kernel \/k\/hello\.elf, or --force/);
  });
});

describe('consoleMode (raw mode only in the terminal\'s foreground process group)', () => {
  it('decides from isatty, getpgrp and tcgetpgrp', () => {
    expect(consoleMode({ isTTY: true, processGroup: 100, foregroundGroup: 100 })).toBe('raw');
    expect(consoleMode({ isTTY: true, processGroup: 100, foregroundGroup: 99 })).toBe('background');
    expect(consoleMode({ isTTY: true, processGroup: 100, foregroundGroup: -1 })).toBe('background');
    expect(consoleMode({ isTTY: false, processGroup: 100, foregroundGroup: 100 })).toBe('pipe');
    fc.assert(
      fc.property(fc.boolean(), fc.integer({ min: 1, max: 1 << 22 }), fc.integer({ min: -1, max: 1 << 22 }), (isTTY, pg, fg) => {
        const m = consoleMode({ isTTY, processGroup: pg, foregroundGroup: fg });
        expect(m === 'raw').toBe(isTTY && pg === fg);
        if (!isTTY) expect(m).toBe('pipe');
      }),
      { numRuns: runs(200) },
    );
  });
});

describe('SignalStop', () => {
  const make = (): { s: SignalStop; lines: string[]; exits: number[] } => {
    const lines: string[] = [];
    const exits: number[] = [];
    return { s: new SignalStop({ write: (l) => lines.push(l), exit: (c) => exits.push(c) }), lines, exits };
  };

  it('before a VM exists: one line and 128+N at once', () => {
    for (const [sig, code] of [['SIGTERM', 143], ['SIGHUP', 129], ['SIGINT', 130]] as const) {
      const { s, lines, exits } = make();
      s.handle(sig);
      expect(lines).toEqual([`kindling: stopped by ${sig}`]);
      expect(exits).toEqual([code]);
      expect(signalExitCode(sig)).toBe(code);
    }
  });

  it('with a VM: the first signal stops it (no exit yet), a second one exits at once with 128+N', async () => {
    const { s, lines, exits } = make();
    let stops = 0;
    s.setStopper(() => {
      stops++;
      return new Promise(() => {}); // a VM that never finishes stopping
    });
    s.handle('SIGTERM');
    expect(stops).toBe(1);
    expect(exits).toEqual([]);
    expect(s.exitCode).toBe(143);
    s.handle('SIGINT');
    expect(exits).toEqual([130]);
    expect(lines).toHaveLength(2);
    for (const l of lines) expect(l).toMatch(PRINTABLE_LINE);
  });

  it('a signal that came while the VM was being made stops it as soon as it exists', () => {
    const { s, exits } = make();
    s.handle('SIGHUP');
    expect(exits).toEqual([129]); // no VM yet: exit (a real exit never returns)
    let stops = 0;
    s.setStopper(async () => void stops++);
    expect(stops).toBe(1);
  });

  it('install/uninstall handlers on a process-like emitter', () => {
    const { s, exits } = make();
    const ee = new EventEmitter();
    const off = s.install(ee as unknown as NodeJS.Process);
    expect(STOP_SIGNALS.every((x) => ee.listenerCount(x) === 1)).toBe(true);
    ee.emit('SIGTERM');
    expect(exits).toEqual([143]);
    off();
    expect(STOP_SIGNALS.every((x) => ee.listenerCount(x) === 0)).toBe(true);
  });
});
