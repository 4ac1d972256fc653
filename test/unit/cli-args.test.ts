// The CLI's argv parser: any argv → one Command, or one UsageError whose printed line is a single
// line of printable text; a run command's config then resolves or fails with one ConfigError line.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { errorLine, parseCommandLine, parseDiskArg, UsageError, type Command } from '../../src/cli/cli-args.js';
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
      guestArgs: ['x', '--', 'y'],
      config: { kernel: 'k', vcpus: 2, memMiB: 64, disks: [{ path: 'a,b', readOnly: true }], cmdlineExtra: ['--', 'x', '--', 'y'] },
    });
    expect(parseCommandLine(['run', '--', 'uname', '-a'])).toMatchObject({ kind: 'run', defaultGuest: true, guestArgs: ['uname', '-a'] });
    expect(parseDiskArg('img,rw,ro')).toEqual({ path: 'img,rw', readOnly: true });
    expect(parseDiskArg('a\n,ro')).toEqual({ path: 'a\n', readOnly: true });
    expect(() => parseDiskArg(',ro')).toThrow(UsageError);
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
      fc.record({ kind: fc.constant('unknown' as const), name: fc.stringMatching(/^[a-z][a-z-]{0,10}$/).filter((n) => !(OPTIONS as readonly string[]).includes(n) && n !== 'help') }),
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
      fc.constantFrom(kernel, disk, `${disk},ro`, oddDisk, dir, '0', '1', '64', '255', '99999999999'),
      fc.tuple(fc.constantFrom(...OPTIONS), fc.oneof(text, fc.constantFrom(kernel, disk, '8'))).map(([o, v]) => `--${o}=${v}`),
      text,
    );
    const seen = { usage: 0, config: 0, ok: 0 };
    fc.assert(
      fc.property(fc.oneof(fc.array(token, { maxLength: 10 }), fc.array(token, { maxLength: 10 }).map((a) => ['run', ...a])), (argv) => {
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
        // Only the files that exist and are non-empty can be a kernel; only disk.img has a size of n×512.
        expect([kernel, disk, oddDisk]).toContain(c.kernel);
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
