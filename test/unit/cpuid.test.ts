import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { cpuidVendor, findCpuid, signatureRegs, vcpuCpuid, MAX_VCPUS } from '../../src/arch/x86_64/cpuid.js';
import { decodeCpuid, encodeCpuid, type CpuidEntry } from '../../src/kvm/structs.js';
import { runs } from '../fuzz/budget.js';

interface FixtureEntry {
  function: string;
  index: number;
  flags: number;
  eax: string;
  ebx: string;
  ecx: string;
  edx: string;
}

function fixture(name: string): CpuidEntry[] {
  const raw = JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8')) as { entries: FixtureEntry[] };
  return raw.entries.map((e) => ({
    function: Number(e.function),
    index: e.index,
    flags: e.flags,
    eax: Number(e.eax),
    ebx: Number(e.ebx),
    ecx: Number(e.ecx),
    edx: Number(e.edx),
  }));
}

// AMD: captured from this machine (AMD EPYC, KVM-PVM). Intel: hand-written Ice Lake-SP.
const AMD = fixture('cpuid-amd-epyc-pvm.json');
const INTEL = fixture('cpuid-intel-icx.json');

function leaf(entries: CpuidEntry[], fn: number, index = 0): CpuidEntry {
  const e = findCpuid(entries, fn, index);
  if (!e) throw new Error(`leaf 0x${fn.toString(16)}.${index} missing`);
  return e;
}
const bits = (x: number, lo: number, hi: number): number => Number((BigInt(x) >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n));
const bit = (x: number, b: number): number => bits(x, b, b);
const nextPow2 = (n: number): number => 2 ** Math.ceil(Math.log2(n));
const sigText = (e: CpuidEntry): string => Buffer.from(new Uint32Array([e.ebx, e.ecx, e.edx]).buffer).toString('latin1');

describe('fixtures', () => {
  it('vendor detection from leaf 0', () => {
    expect(cpuidVendor(AMD)).toBe('amd');
    expect(cpuidVendor(INTEL)).toBe('intel');
    expect(cpuidVendor([])).toBe('other');
  });
});

for (const [name, input] of [
  ['AMD (captured)', AMD],
  ['Intel (hand-written)', INTEL],
] as const) {
  describe(`vcpuCpuid on ${name}`, () => {
    for (const count of [1, 4, 32]) {
      const ids = [...new Set([0, 1, 2, 3, count - 1])].filter((i) => i < count);
      for (const id of ids) {
        it(`vcpuCount ${count}, vcpuId ${id}: leaf 1, topology leaves and the KVM signature`, () => {
          const out = vcpuCpuid(input, { vcpuId: id, vcpuCount: count });
          const shift = Math.ceil(Math.log2(count));

          const l1 = leaf(out, 1);
          const in1 = leaf(input, 1);
          expect(bits(l1.ebx, 24, 31)).toBe(id);
          expect(bits(l1.ebx, 16, 23)).toBe(nextPow2(count));
          expect(bits(l1.ebx, 8, 15)).toBe(8);
          expect(bits(l1.ebx, 0, 7)).toBe(bits(in1.ebx, 0, 7));
          expect(bit(l1.ecx, 31)).toBe(1);
          expect(bit(l1.ecx, 24)).toBe(bit(in1.ecx, 24)); // TSC-deadline kept as KVM reports it
          expect(bit(l1.ecx, 15)).toBe(0);
          expect(bit(l1.edx, 28)).toBe(count > 1 ? 1 : 0);
          expect(l1.eax).toBe(in1.eax);

          // x2APIC topology: one thread per core, `count` cores in one package.
          const b0 = leaf(out, 0xb, 0);
          const b1 = leaf(out, 0xb, 1);
          const b2 = leaf(out, 0xb, 2);
          expect([b0.eax, b0.ebx, b0.ecx, b0.edx, b0.flags]).toEqual([0, 1, 0x100, id, 1]);
          expect([b1.eax, b1.ebx, b1.ecx, b1.edx, b1.flags]).toEqual([shift, count, 0x201, id, 1]);
          expect([b2.eax, b2.ebx, b2.ecx, b2.edx]).toEqual([0, 0, 2, id]);
          expect(2 ** b1.eax).toBeGreaterThanOrEqual(count);
          expect(out.filter((e) => e.function === 0xb)).toHaveLength(3);

          const h0 = leaf(out, 0x4000_0000);
          expect(h0.eax).toBe(0x4000_0001);
          expect(sigText(h0)).toBe('KVMKVMKVM\0\0\0');
          expect([h0.ebx, h0.ecx, h0.edx]).toEqual([0x4b4d564b, 0x564b4d56, 0x4d]);
          expect(leaf(out, 0x4000_0001)).toEqual(leaf(input, 0x4000_0001));

          expect(leaf(out, 0xa)).toMatchObject({ eax: 0, ebx: 0, ecx: 0, edx: 0 });
        });
      }

      if (input === INTEL) {
        it(`Intel, vcpuCount ${count}: leaf 4 cores/sharing, leaf 0x1F mirrors 0xB, leaf 6/7 fix-ups`, () => {
          const out = vcpuCpuid(input, { vcpuId: count - 1, vcpuCount: count });
          for (let i = 0; i < 4; i++) {
            const c = leaf(out, 4, i);
            const level = bits(c.eax, 5, 7);
            expect(bits(c.eax, 26, 31)).toBe(count - 1);
            expect(bits(c.eax, 14, 25)).toBe(level === 3 ? count - 1 : 0);
            expect(bits(c.eax, 0, 13)).toBe(bits(leaf(input, 4, i).eax, 0, 13));
            expect([c.ebx, c.ecx, c.edx]).toEqual([leaf(input, 4, i).ebx, leaf(input, 4, i).ecx, leaf(input, 4, i).edx]);
          }
          expect(leaf(out, 4, 4)).toEqual(leaf(input, 4, 4)); // the null terminator is untouched
          for (let i = 0; i < 3; i++) {
            const { function: _f, ...b } = leaf(out, 0xb, i);
            const { function: _g, ...f } = leaf(out, 0x1f, i);
            expect(f).toEqual(b);
          }
          expect(out.filter((e) => e.function === 0x1f)).toHaveLength(3);
          expect(bit(leaf(out, 6).eax, 1)).toBe(0);
          expect(bit(leaf(out, 6).ecx, 3)).toBe(0);
          expect(bit(leaf(out, 6).eax, 2)).toBe(1); // ARAT kept
          const l7 = leaf(out, 7, 0);
          expect([bit(l7.ebx, 6), bit(l7.ebx, 13), bit(l7.ecx, 5)]).toEqual([1, 1, 0]);
          expect(l7.edx).toBe(leaf(input, 7, 0).edx); // ARCH_CAPABILITIES stays on Intel
        });
      } else {
        it(`AMD, vcpuCount ${count}: 0x80000008 NC, 0x8000001D sharing, 0x8000001E extended APIC id, no ARCH_CAPABILITIES`, () => {
          for (const id of ids) {
            const out = vcpuCpuid(input, { vcpuId: id, vcpuCount: count });
            const e8 = leaf(out, 0x8000_0008);
            expect(bits(e8.ecx, 0, 7)).toBe(count - 1);
            expect(bits(e8.ecx, 12, 15)).toBe(Math.ceil(Math.log2(count)));
            expect([e8.eax, e8.ebx]).toEqual([leaf(input, 0x8000_0008).eax, leaf(input, 0x8000_0008).ebx]);
            const e1e = leaf(out, 0x8000_001e);
            expect(e1e.eax).toBe(id);
            expect(bits(e1e.ebx, 0, 7)).toBe(id);
            expect(bits(e1e.ebx, 8, 15)).toBe(0);
            expect(bits(e1e.ecx, 0, 10)).toBe(0);
            for (let i = 0; i < 4; i++) {
              const c = leaf(out, 0x8000_001d, i);
              expect(bits(c.eax, 14, 25)).toBe(bits(c.eax, 5, 7) === 3 ? count - 1 : 0);
            }
            expect(bit(leaf(out, 7, 0).edx, 29)).toBe(0);
            expect(bit(leaf(input, 7, 0).edx, 29)).toBe(1); // this host's KVM does report it
            expect(leaf(out, 0x8000_0000).eax).toBe(0x8000_0021);
          }
        });
      }
    }

    it('is pure: same input → identical output, and the input is not modified', () => {
      const before = JSON.stringify(input);
      const a = vcpuCpuid(input, { vcpuId: 2, vcpuCount: 4 });
      const b = vcpuCpuid(input, { vcpuId: 2, vcpuCount: 4 });
      expect(b).toEqual(a);
      expect(JSON.stringify(b)).toBe(JSON.stringify(a));
      expect(encodeCpuid(b)).toEqual(encodeCpuid(a));
      expect(JSON.stringify(input)).toBe(before);
      expect(vcpuCpuid([...input].reverse(), { vcpuId: 2, vcpuCount: 4 })).toEqual(a);
    });

    it('output is sorted with unique (function, index) and keeps every input leaf', () => {
      const out = vcpuCpuid(input, { vcpuId: 0, vcpuCount: 8 });
      const keys = out.map((e) => BigInt(e.function) * 2n ** 32n + BigInt(e.index));
      expect([...keys].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0))).toEqual(keys);
      expect(new Set(keys).size).toBe(keys.length);
      for (const e of input) expect(findCpuid(out, e.function, e.index)).toBeDefined();
      expect(decodeCpuid(encodeCpuid(out))).toEqual(out);
    });

    it('per-vCPU tables differ only in APIC-id fields', () => {
      const count = 32;
      const base = vcpuCpuid(input, { vcpuId: 0, vcpuCount: count });
      for (const id of [1, 7, 31]) {
        const other = vcpuCpuid(input, { vcpuId: id, vcpuCount: count });
        expect(other.map((e) => [e.function, e.index, e.flags])).toEqual(base.map((e) => [e.function, e.index, e.flags]));
        other.forEach((e, i) => {
          const b = base[i];
          const where = `0x${e.function.toString(16)}.${e.index}`;
          if (e.function === 1) {
            expect((e.ebx & 0x00ff_ffff) >>> 0, where).toBe((b.ebx & 0x00ff_ffff) >>> 0);
            expect(e.ebx >>> 24, where).toBe(id);
            expect([e.eax, e.ecx, e.edx], where).toEqual([b.eax, b.ecx, b.edx]);
          } else if (e.function === 0xb || e.function === 0x1f) {
            expect(e.edx, where).toBe(id);
            expect([e.eax, e.ebx, e.ecx], where).toEqual([b.eax, b.ebx, b.ecx]);
          } else if (e.function === 0x8000_001e) {
            expect(e.eax, where).toBe(id);
            expect((e.ebx & ~0xff) >>> 0, where).toBe((b.ebx & ~0xff) >>> 0);
            expect([e.ecx, e.edx], where).toEqual([b.ecx, b.edx]);
          } else {
            expect(e, where).toEqual(b);
          }
        });
      }
    });
  });
}

describe('vcpuCpuid options and limits', () => {
  it('takes a custom hypervisor signature (NUL-padded to 12 bytes)', () => {
    const out = vcpuCpuid(AMD, { vcpuId: 0, vcpuCount: 1, hypervisorSignature: 'kindling' });
    expect(sigText(leaf(out, 0x4000_0000))).toBe('kindling\0\0\0\0');
    expect(signatureRegs('KVMKVMKVM\0\0\0')).toEqual([0x4b4d564b, 0x564b4d56, 0x4d]);
  });

  it('adds the hypervisor leaves and topology subleaves when KVM reports none', () => {
    const minimal = AMD.filter((e) => (e.function >>> 28) !== 4 && e.function !== 0xb && e.function !== 0x8000_001e);
    const out = vcpuCpuid(minimal, { vcpuId: 1, vcpuCount: 2 });
    expect(leaf(out, 0x4000_0000).eax).toBe(0x4000_0001);
    expect(leaf(out, 0x4000_0001)).toMatchObject({ eax: 0, ebx: 0, ecx: 0, edx: 0 });
    expect(leaf(out, 0xb, 1)).toMatchObject({ eax: 1, ebx: 2, ecx: 0x201, edx: 1 });
    expect(leaf(out, 0x8000_001e).eax).toBe(1);
  });

  it('drops hypervisor leaves beyond 0x40000001', () => {
    const extra = [...INTEL, { function: 0x4000_0010, index: 0, flags: 0, eax: 1, ebx: 2, ecx: 0, edx: 0 }];
    expect(findCpuid(vcpuCpuid(extra, { vcpuId: 0, vcpuCount: 1 }), 0x4000_0010)).toBeUndefined();
  });

  it('rejects impossible ids and counts', () => {
    expect(() => vcpuCpuid(AMD, { vcpuId: 0, vcpuCount: 0 })).toThrow(RangeError);
    expect(() => vcpuCpuid(AMD, { vcpuId: 4, vcpuCount: 4 })).toThrow(RangeError);
    expect(() => vcpuCpuid(AMD, { vcpuId: -1, vcpuCount: 4 })).toThrow(RangeError);
    expect(() => vcpuCpuid(AMD, { vcpuId: 0, vcpuCount: MAX_VCPUS + 1 })).toThrow(RangeError);
    expect(() => vcpuCpuid(AMD, { vcpuId: 0.5, vcpuCount: 4 })).toThrow(RangeError);
  });

  it('encodes a consistent topology for every vcpuCount/vcpuId (property)', () => {
    const arb = fc.integer({ min: 1, max: MAX_VCPUS }).chain((n) => fc.tuple(fc.constant(n), fc.integer({ min: 0, max: n - 1 })));
    fc.assert(
      fc.property(arb, fc.constantFrom(AMD, INTEL), ([count, id], input) => {
        const out = vcpuCpuid(input, { vcpuId: id, vcpuCount: count });
        const l1 = leaf(out, 1);
        const b1 = leaf(out, 0xb, 1);
        expect(l1.ebx >>> 24).toBe(id);
        expect(bits(l1.ebx, 16, 23)).toBe(Math.min(nextPow2(count), 255));
        expect(leaf(out, 0xb, 0).edx).toBe(id);
        expect(b1.ebx).toBe(count);
        expect(2 ** b1.eax).toBeGreaterThanOrEqual(count);
        expect(b1.eax === 0 || 2 ** (b1.eax - 1) < count).toBe(true);
        expect(id >> b1.eax).toBe(0); // everything in one package
        if (input === AMD) expect(bits(leaf(out, 0x8000_0008).ecx, 0, 7)).toBe(count - 1);
        else expect(bits(leaf(out, 4, 0).eax, 26, 31)).toBe(Math.min(count - 1, 63));
      }),
      { numRuns: runs(200) },
    );
  });
});
