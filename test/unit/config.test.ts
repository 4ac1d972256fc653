// VM config validation: any input → a valid config or one clear ConfigError line, never another
// exception and never a stack trace's worth of text.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_CMDLINE, MAX_VCPUS, MIN_MEM_MIB, resolveConfig, type VMConfig } from '../../src/main/config.js';
import { runs } from '../fuzz/budget.js';

const dir = mkdtempSync(join(tmpdir(), 'kindling-config-'));
const kernel = join(dir, 'kernel');
writeFileSync(kernel, 'x');
const HOST = 8 * 1024 * 1024 * 1024;

const anyValue = fc.oneof(fc.integer({ min: -5, max: 100_000 }), fc.double(), fc.string(), fc.constant(undefined), fc.constant(null), fc.boolean());

describe('resolveConfig', () => {
  it('fills defaults', () => {
    const c = resolveConfig({ kernel }, { hostMemBytes: HOST });
    expect(c).toMatchObject({ kernel, vcpus: 1, memBytes: 256 * 1024 * 1024, cmdline: DEFAULT_CMDLINE, logLevel: 'warn' });
  });

  it('names the problem in one line', () => {
    expect(() => resolveConfig({ kernel: join(dir, 'missing') })).toThrow(/^kernel not found: /);
    expect(() => resolveConfig({ kernel: dir })).toThrow(/is a directory/);
    expect(() => resolveConfig({ kernel, memMiB: 0 })).toThrow(/--mem must be/);
    expect(() => resolveConfig({ kernel, memMiB: 64 }, { hostMemBytes: 32 * 1024 * 1024 })).toThrow(/more than this host's RAM/);
    expect(() => resolveConfig({ kernel, vcpus: 0 })).toThrow(/--vcpus must be/);
    expect(() => resolveConfig({ kernel, vcpus: MAX_VCPUS + 1 })).toThrow(/more than kindling supports/);
    expect(() => resolveConfig({ kernel, cmdline: 'a\nb' })).toThrow(/newline/);
    expect(() => resolveConfig({ kernel, logLevel: 'loud' })).toThrow(/--log-level/);
  });

  it('property: arbitrary inputs give a config within bounds or exactly one ConfigError line', () => {
    fc.assert(
      fc.property(
        fc.record(
          {
            kernel: fc.oneof(fc.constant(kernel), fc.constant(join(dir, 'nope')), fc.constant(dir), fc.string()),
            vcpus: anyValue,
            memMiB: anyValue,
            cmdline: fc.oneof(fc.string(), fc.constant(undefined), fc.integer()),
            logLevel: fc.oneof(fc.constantFrom('warn', 'debug', 'silent', 'nope'), fc.constant(undefined)),
          },
          { requiredKeys: [] },
        ),
        (input) => {
          let c;
          try {
            c = resolveConfig(input as unknown as VMConfig, { hostMemBytes: HOST });
          } catch (e) {
            expect(e).toBeInstanceOf(ConfigError);
            const msg = (e as Error).message;
            expect(msg.length).toBeGreaterThan(0);
            expect(msg).not.toContain('\n');
            return;
          }
          expect(c.kernel).toBe(kernel);
          expect(Number.isInteger(c.vcpus) && c.vcpus >= 1 && c.vcpus <= MAX_VCPUS).toBe(true);
          expect(c.memBytes % (1024 * 1024)).toBe(0);
          expect(c.memBytes >= MIN_MEM_MIB * 1024 * 1024 && c.memBytes <= HOST).toBe(true);
          expect(c.cmdline).not.toMatch(/[\0\n\r]/);
        },
      ),
      { numRuns: runs(300) },
    );
  });
});
