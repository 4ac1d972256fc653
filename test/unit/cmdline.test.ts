import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CMDLINE_MAX_SIZE } from '../../src/arch/x86_64/layout.js';
import { CmdlineError, isKernelSpaceByte, KernelCmdline } from '../../src/loader/cmdline.js';
import { runs } from '../fuzz/budget.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The kernel's command line splitter (lib/cmdline.c next_arg + skip_spaces), on bytes. */
function kernelParse(text: string): [string, string | null][] {
  const b = enc.encode(text);
  const out: [string, string | null][] = [];
  let p = 0;
  while (p < b.length && isKernelSpaceByte(b[p])) p++;
  while (p < b.length) {
    let start = p;
    let inQuote = false;
    let quoted = false;
    if (b[start] === 0x22) {
      start++;
      inQuote = true;
      quoted = true;
    }
    let i = start;
    let equals = -1; // the kernel uses 0 for "none", so '=' as the first byte does not count
    for (; i < b.length; i++) {
      if (isKernelSpaceByte(b[i]) && !inQuote) break;
      if (equals < 0 && b[i] === 0x3d && i > start) equals = i;
      if (b[i] === 0x22) inQuote = !inQuote;
    }
    let paramEnd = equals >= 0 ? equals : i;
    let valStart = equals + 1;
    let valEnd = i;
    if (equals >= 0 && b[valStart] === 0x22) {
      valStart++;
      if (b[i - 1] === 0x22) valEnd = i - 1;
    }
    if (quoted && i > start && b[i - 1] === 0x22) {
      if (equals < 0) paramEnd = i - 1;
      else valEnd = Math.min(valEnd, i - 1);
    }
    out.push([dec.decode(b.subarray(start, paramEnd)), equals >= 0 ? dec.decode(b.subarray(valStart, Math.max(valStart, valEnd))) : null]);
    p = i < b.length ? i + 1 : i;
    while (p < b.length && isKernelSpaceByte(b[p])) p++;
  }
  return out;
}

describe('KernelCmdline', () => {
  it('builds words and key=value pairs, quoting values with spaces', () => {
    const c = new KernelCmdline();
    c.push('console=ttyS0').push('quiet').set('panic', -1).set('init', '/bin/sh -c x').set('empty', '');
    expect(c.toString()).toBe('console=ttyS0 quiet panic=-1 init="/bin/sh -c x" empty=');
    expect(kernelParse(c.toString())).toEqual([
      ['console', 'ttyS0'],
      ['quiet', null],
      ['panic', '-1'],
      ['init', '/bin/sh -c x'],
      ['empty', ''],
    ]);
    const bytes = c.bytes();
    expect(bytes.length).toBe(c.length + 1);
    expect(bytes[bytes.length - 1]).toBe(0);
    expect(dec.decode(bytes.subarray(0, -1))).toBe(c.toString());
  });

  it('quotes values containing a 0xA0 byte inside UTF-8 (the kernel treats 0xA0 as space)', () => {
    const c = new KernelCmdline().set('label', 'voilà');
    expect(c.toString()).toBe('label="voilà"');
    expect(kernelParse(c.toString())).toEqual([['label', 'voilà']]);
    expect(new KernelCmdline().set('label', 'café').toString()).toBe('label=café');
  });

  it('rejects bad keys, values and words with one-line CmdlineErrors', () => {
    const c = new KernelCmdline();
    expect(() => c.set('a', 'x"y')).toThrow(CmdlineError);
    expect(() => c.set('a', 'x\0y')).toThrow(/NUL/);
    expect(() => c.set('a', 'x\ny')).toThrow(/control character \(U\+000A\)/);
    expect(() => c.set('a=b', 'x')).toThrow(CmdlineError);
    expect(() => c.set('a b', 'x')).toThrow(CmdlineError);
    expect(() => c.set('', 'x')).toThrow(CmdlineError);
    expect(() => c.push('two words')).toThrow(CmdlineError);
    expect(() => c.push('')).toThrow(CmdlineError);
    expect(() => c.push('q"')).toThrow(CmdlineError);
    expect(() => c.push('=x')).toThrow(CmdlineError);
    expect(() => c.append('root=/dev/vda "unbalanced')).toThrow(/unbalanced/);
    expect(() => c.append('a\u0000b')).toThrow(/NUL/);
    expect(() => c.append('a\ud800b')).toThrow(/UTF-8/);
    expect(c.toString()).toBe('');
    for (const f of [() => c.set('a', 'x"'), () => c.append('\x07')]) {
      try {
        f();
      } catch (e) {
        expect((e as Error).message).not.toContain('\n');
      }
    }
  });

  it('append() takes user text verbatim, trimmed, with tabs and balanced quotes', () => {
    const c = new KernelCmdline().push('console=ttyS0').append('  root=/dev/vda\tinit="/bin/sh -x" -- arg  ');
    expect(c.toString()).toBe('console=ttyS0 root=/dev/vda\tinit="/bin/sh -x" -- arg');
    c.append('   ');
    expect(c.toString()).toBe('console=ttyS0 root=/dev/vda\tinit="/bin/sh -x" -- arg');
  });

  it('enforces the size limit (including the NUL) and leaves the line unchanged on failure', () => {
    const c = new KernelCmdline(10);
    c.push('123456789'); // 9 bytes + NUL = 10
    expect(() => c.push('x')).toThrow(/too long: 11 bytes, the limit is 9/);
    expect(c.toString()).toBe('123456789');
    expect(() => new KernelCmdline(4).set('k', 'é')).toThrow(CmdlineError); // "k=é" is 4 bytes, + NUL
    expect(new KernelCmdline(5).set('k', 'é').bytes()).toEqual(new Uint8Array([0x6b, 0x3d, 0xc3, 0xa9, 0]));
  });

  it('counts UTF-8 bytes, not UTF-16 units', () => {
    const c = new KernelCmdline(5);
    expect(() => c.push('ééé')).toThrow(CmdlineError); // 6 bytes
    c.push('éé'); // 4 bytes + NUL
    expect(c.length).toBe(4);
  });

  it('defaults to CMDLINE_MAX_SIZE', () => {
    const c = new KernelCmdline();
    expect(c.maxSize).toBe(CMDLINE_MAX_SIZE);
    c.push('x'.repeat(CMDLINE_MAX_SIZE - 1));
    expect(() => c.push('y')).toThrow(CmdlineError);
  });

  it('property: never exceeds the limit; set/push round-trip through the kernel parser', () => {
    const keyArb = fc.stringMatching(/^[a-z_][a-z0-9_.-]{0,12}$/);
    const valueArb = fc.oneof(
      fc.string({ maxLength: 20 }),
      fc.string({ unit: 'grapheme', maxLength: 10 }),
      fc.constantFrom('a b', ' lead', 'trail ', 'à', '\u00a0', 'x=y', '\t', 'é=è', ''),
    );
    const op = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), key: keyArb, value: valueArb }),
      fc.record({ kind: fc.constant('push' as const), word: fc.oneof(keyArb, fc.string({ maxLength: 12 })) }),
      fc.record({ kind: fc.constant('append' as const), raw: fc.string({ maxLength: 30 }) }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), fc.array(op, { maxLength: 20 }), (max, ops) => {
        const c = new KernelCmdline(max);
        const expected: [string, string | null][] = [];
        let appended = false;
        for (const o of ops) {
          try {
            if (o.kind === 'set') {
              c.set(o.key, o.value);
              expected.push([o.key, o.value]);
            } else if (o.kind === 'push') {
              c.push(o.word);
              const eq = o.word.indexOf('=');
              expected.push(eq < 0 ? [o.word, null] : [o.word.slice(0, eq), o.word.slice(eq + 1)]);
            } else {
              const before = c.toString();
              c.append(o.raw);
              if (c.toString() !== before) appended = true;
            }
          } catch (e) {
            expect(e).toBeInstanceOf(CmdlineError);
            expect((e as Error).message).not.toContain('\n');
          }
          const bytes = c.bytes();
          expect(bytes.length).toBeLessThanOrEqual(max);
          expect(bytes[bytes.length - 1]).toBe(0);
          expect(bytes.subarray(0, -1).includes(0)).toBe(false);
          expect(enc.encode(c.toString()).length).toBe(c.length);
        }
        if (!appended) expect(kernelParse(c.toString())).toEqual(expected);
      }),
      { numRuns: runs(500) },
    );
  });
});
