import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  EXPECTED_STRUCT_LAYOUT,
  KVM_CPUID_ENTRY2_WORDS,
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_INTR,
  KVM_EXIT_IO,
  KVM_EXIT_MMIO,
  KVM_EXIT_NMI,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_FPU_SIZE,
  KVM_REGS_FIELDS,
  KVM_REGS_SIZE,
  KVM_RUN_OFFSETS,
  KVM_SREGS_SIZE,
  checkStructLayouts,
  decodeCpuid,
  decodeFpu,
  decodeRegs,
  decodeSegment,
  decodeSregs,
  encodeCpuid,
  encodeFpu,
  encodeRegs,
  encodeSegment,
  encodeSregs,
  getLapicReg,
  kvmExitReasonName,
  setLapicReg,
  type CpuidEntry,
  type KvmFpu,
  type KvmRegs,
  type KvmSegment,
  type KvmSregs,
} from '../../src/kvm/structs.js';
import { KvmRunView, decodeExit } from '../../src/kvm/exits.js';

const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u8 = fc.integer({ min: 0, max: 0xff });

const arbRegs: fc.Arbitrary<KvmRegs> = fc.record(
  Object.fromEntries(KVM_REGS_FIELDS.map((f) => [f, u64])) as Record<keyof KvmRegs, fc.Arbitrary<bigint>>,
);
const arbSegment: fc.Arbitrary<KvmSegment> = fc.record({
  base: u64,
  limit: u32,
  selector: u16,
  type: u8,
  present: u8,
  dpl: u8,
  db: u8,
  s: u8,
  l: u8,
  g: u8,
  avl: u8,
  unusable: u8,
});
const arbDtable = fc.record({ base: u64, limit: u16 });
const arbSregs: fc.Arbitrary<KvmSregs> = fc.record({
  cs: arbSegment,
  ds: arbSegment,
  es: arbSegment,
  fs: arbSegment,
  gs: arbSegment,
  ss: arbSegment,
  tr: arbSegment,
  ldt: arbSegment,
  gdt: arbDtable,
  idt: arbDtable,
  cr0: u64,
  cr2: u64,
  cr3: u64,
  cr4: u64,
  cr8: u64,
  efer: u64,
  apicBase: u64,
  interruptBitmap: fc.array(u64, { minLength: 4, maxLength: 4 }),
});
const arbFpu: fc.Arbitrary<KvmFpu> = fc.record({
  fpr: fc.uint8Array({ minLength: 128, maxLength: 128 }),
  fcw: u16,
  fsw: u16,
  ftwx: u8,
  lastOpcode: u16,
  lastIp: u64,
  lastDp: u64,
  xmm: fc.uint8Array({ minLength: 256, maxLength: 256 }),
  mxcsr: u32,
});
const arbCpuid: fc.Arbitrary<CpuidEntry> = fc.record({ function: u32, index: u32, flags: u32, eax: u32, ebx: u32, ecx: u32, edx: u32 });

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

describe('kvm_regs', () => {
  it('decode(encode(x)) = x', () => {
    fc.assert(fc.property(arbRegs, (r) => {
      expect(decodeRegs(encodeRegs(r))).toEqual(r);
    }));
  });

  it('is 144 bytes with each u64 at 8 × its field index (rax 0 … rip 128, rflags 136)', () => {
    expect(encodeRegs(decodeRegs(new Uint8Array(KVM_REGS_SIZE))).length).toBe(144);
    expect(KVM_REGS_FIELDS.indexOf('r8')).toBe(8);
    expect(KVM_REGS_FIELDS.indexOf('rip')).toBe(16);
    KVM_REGS_FIELDS.forEach((f, i) => {
      const raw = new Uint8Array(KVM_REGS_SIZE);
      view(raw).setBigUint64(i * 8, 0x0123_4567_89ab_cdefn, true);
      const r = decodeRegs(raw);
      for (const g of KVM_REGS_FIELDS) expect(r[g]).toBe(g === f ? 0x0123_4567_89ab_cdefn : 0n);
    });
    const r = decodeRegs(new Uint8Array(KVM_REGS_SIZE));
    r.rip = 0x1000_0000n;
    r.rflags = 2n;
    r.rsi = 0x7000n;
    const raw = encodeRegs(r);
    expect(view(raw).getBigUint64(128, true)).toBe(0x1000_0000n);
    expect(view(raw).getBigUint64(136, true)).toBe(2n);
    expect(view(raw).getBigUint64(32, true)).toBe(0x7000n);
  });

  it('decodes from a Uint8Array that is a window into a larger buffer', () => {
    const big = new Uint8Array(KVM_REGS_SIZE + 16);
    view(big).setBigUint64(16 + 128, 42n, true);
    expect(decodeRegs(big.subarray(16)).rip).toBe(42n);
  });

  it('rejects a short buffer', () => {
    expect(() => decodeRegs(new Uint8Array(100))).toThrow(RangeError);
  });
});

describe('kvm_segment / kvm_sregs', () => {
  it('segment decode(encode(x)) = x', () => {
    fc.assert(fc.property(arbSegment, (s) => {
      expect(decodeSegment(encodeSegment(s))).toEqual(s);
    }));
  });

  it('segment fields sit at base 0, limit 8, selector 12, type 14 … unusable 22', () => {
    const raw = new Uint8Array(24);
    const v = view(raw);
    v.setBigUint64(0, 0x1122_3344_5566_7788n, true);
    v.setUint32(8, 0xfffff, true);
    v.setUint16(12, 0x18, true);
    [0xb, 1, 2, 3, 4, 5, 6, 7, 8].forEach((b, i) => v.setUint8(14 + i, b));
    v.setUint8(23, 0xee); // padding is ignored
    expect(decodeSegment(raw)).toEqual({
      base: 0x1122_3344_5566_7788n,
      limit: 0xfffff,
      selector: 0x18,
      type: 0xb,
      present: 1,
      dpl: 2,
      db: 3,
      s: 4,
      l: 5,
      g: 6,
      avl: 7,
      unusable: 8,
    });
    expect(encodeSegment(decodeSegment(raw))[23]).toBe(0);
  });

  it('sregs decode(encode(x)) = x', () => {
    fc.assert(fc.property(arbSregs, (s) => {
      expect(decodeSregs(encodeSregs(s))).toEqual(s);
    }));
  });

  it('sregs is 312 bytes: segments every 24 from 0, gdt 192, idt 208, cr0 224 … apic_base 272, bitmap 280', () => {
    const raw = new Uint8Array(KVM_SREGS_SIZE);
    const v = view(raw);
    v.setUint16(0 + 12, 0x08, true); // cs.selector
    v.setUint16(24 + 12, 0x10, true); // ds.selector
    v.setUint8(120 + 19, 1); // ss.l
    v.setUint16(144 + 12, 0x18, true); // tr.selector
    v.setUint8(168 + 14, 2); // ldt.type
    v.setBigUint64(192, 0x500n, true);
    v.setUint16(200, 31, true);
    v.setBigUint64(208, 0x520n, true);
    v.setUint16(216, 7, true);
    v.setBigUint64(224, 0x8000_0011n, true);
    v.setBigUint64(232, 0xdeadn, true);
    v.setBigUint64(240, 0x9000n, true);
    v.setBigUint64(248, 0x20n, true);
    v.setBigUint64(256, 0xfn, true);
    v.setBigUint64(264, 0x500n, true);
    v.setBigUint64(272, 0xfee0_0900n, true);
    v.setBigUint64(304, 1n << 63n, true);
    const s = decodeSregs(raw);
    expect(s.cs.selector).toBe(0x08);
    expect(s.ds.selector).toBe(0x10);
    expect(s.ss.l).toBe(1);
    expect(s.tr.selector).toBe(0x18);
    expect(s.ldt.type).toBe(2);
    expect(s.gdt).toEqual({ base: 0x500n, limit: 31 });
    expect(s.idt).toEqual({ base: 0x520n, limit: 7 });
    expect([s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apicBase]).toEqual([0x8000_0011n, 0xdeadn, 0x9000n, 0x20n, 0xfn, 0x500n, 0xfee0_0900n]);
    expect(s.interruptBitmap).toEqual([0n, 0n, 0n, 1n << 63n]);
    expect(encodeSregs(s)).toEqual(raw);
  });
});

describe('kvm_fpu', () => {
  it('decode(encode(x)) = x', () => {
    fc.assert(fc.property(arbFpu, (f) => {
      expect(decodeFpu(encodeFpu(f))).toEqual(f);
    }));
  });

  it('is 416 bytes: fcw 128, fsw 130, ftwx 132, last_opcode 134, last_ip 136, last_dp 144, xmm 152, mxcsr 408', () => {
    const raw = encodeFpu({ fcw: 0x37f, mxcsr: 0x1f80 });
    expect(raw.length).toBe(KVM_FPU_SIZE);
    expect([raw[128], raw[129]]).toEqual([0x7f, 0x03]);
    expect([...raw.subarray(408, 412)]).toEqual([0x80, 0x1f, 0, 0]);
    expect(raw.reduce((a, b) => a + b, 0)).toBe(0x7f + 0x03 + 0x80 + 0x1f);

    const full = encodeFpu({ fsw: 0xabcd, ftwx: 0xee, lastOpcode: 0x1234, lastIp: 0x1122334455667788n, lastDp: 0x99n });
    const v = view(full);
    expect(v.getUint16(130, true)).toBe(0xabcd);
    expect(full[132]).toBe(0xee);
    expect(full[133]).toBe(0);
    expect(v.getUint16(134, true)).toBe(0x1234);
    expect(v.getBigUint64(136, true)).toBe(0x1122334455667788n);
    expect(v.getBigUint64(144, true)).toBe(0x99n);
    const xmm = new Uint8Array(256).fill(0x5a);
    expect(encodeFpu({ xmm })[152]).toBe(0x5a);
    expect(encodeFpu({ xmm })[151]).toBe(0);
    expect(encodeFpu({ xmm })[407]).toBe(0x5a);
    expect(encodeFpu({ xmm })[408]).toBe(0);
  });
});

describe('kvm_cpuid_entry2 arrays', () => {
  it('decode(encode(x)) = x', () => {
    fc.assert(fc.property(fc.array(arbCpuid, { maxLength: 40 }), (es) => {
      expect(decodeCpuid(encodeCpuid(es))).toEqual(es);
    }));
  });

  it('uses 10 u32 per entry: function, index, flags, eax, ebx, ecx, edx, 3 × padding', () => {
    const raw = encodeCpuid([
      { function: 0x4000_0000, index: 0, flags: 0, eax: 0x4000_0001, ebx: 0x4b4d564b, ecx: 0x564b4d56, edx: 0x4d },
      { function: 0xb, index: 1, flags: 1, eax: 5, ebx: 32, ecx: 0x201, edx: 7 },
    ]);
    expect(raw.length).toBe(2 * KVM_CPUID_ENTRY2_WORDS);
    expect([...raw]).toEqual([0x4000_0000, 0, 0, 0x4000_0001, 0x4b4d564b, 0x564b4d56, 0x4d, 0, 0, 0, 0xb, 1, 1, 5, 32, 0x201, 7, 0, 0, 0]);
  });

  it('rejects a length that is not a multiple of 10', () => {
    expect(() => decodeCpuid(new Uint32Array(15))).toThrow(RangeError);
  });
});

describe('kvm_lapic_state registers', () => {
  it('reads and writes little-endian u32 at the register offset', () => {
    const buf = new Uint8Array(1024);
    setLapicReg(buf, 0x350, 0x8000_0700);
    expect([...buf.subarray(0x350, 0x354)]).toEqual([0x00, 0x07, 0x00, 0x80]);
    expect(getLapicReg(buf, 0x350)).toBe(0x8000_0700);
    expect(getLapicReg(buf, 0x360)).toBe(0);
  });

  it('rejects offsets outside the page or unaligned', () => {
    const buf = new Uint8Array(1024);
    expect(() => getLapicReg(buf, 1024)).toThrow(RangeError);
    expect(() => setLapicReg(buf, 1022, 1)).toThrow(RangeError);
    expect(() => getLapicReg(buf, 0x351)).toThrow(RangeError);
  });
});

describe('kvm_run offsets and exit reasons', () => {
  it('match <linux/kvm.h> (x86-64)', () => {
    expect(KVM_RUN_OFFSETS).toMatchObject({
      exitReason: 8,
      immediateExit: 1,
      ioDirection: 32,
      ioSize: 33,
      ioPort: 34,
      ioCount: 36,
      ioDataOffset: 40,
      mmioPhysAddr: 32,
      mmioData: 40,
      mmioLen: 48,
      mmioIsWrite: 52,
      failEntryReason: 32,
      failEntryCpu: 40,
      internalSuberror: 32,
      internalNdata: 36,
      internalData: 40,
      systemEventType: 32,
      systemEventNdata: 36,
      systemEventData: 40,
    });
    expect([KVM_EXIT_IO, KVM_EXIT_HLT, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTR, KVM_EXIT_NMI, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_SYSTEM_EVENT]).toEqual([
      2, 5, 6, 8, 9, 10, 16, 17, 24,
    ]);
    expect(kvmExitReasonName(5)).toBe('KVM_EXIT_HLT');
    expect(kvmExitReasonName(999)).toBe('KVM_EXIT_999');
  });

  it('checkStructLayouts accepts matching addon values and names mismatches', () => {
    expect(checkStructLayouts({ ...EXPECTED_STRUCT_LAYOUT, 'sizeof.kvm_run': 2352, 'sizeof.kvm_clock_data': 48 })).toEqual([]);
    expect(checkStructLayouts({ 'sizeof.kvm_sregs': 320, 'kvm_run.io.port': 36, 'sizeof.kvm_run': 100 })).toEqual([
      'sizeof.kvm_sregs: addon 320, TypeScript 312',
      'kvm_run.io.port: addon 36, TypeScript 34',
      'sizeof.kvm_run: addon 100 < 2352',
    ]);
  });
});

describe('exit decoding', () => {
  function run(): { v: DataView; k: KvmRunView } {
    const v = new DataView(new ArrayBuffer(4096));
    return { v, k: new KvmRunView(v) };
  }

  it('decodes a port-I/O exit', () => {
    const { v, k } = run();
    v.setUint32(8, KVM_EXIT_IO, true);
    v.setUint8(32, 1);
    v.setUint8(33, 2);
    v.setUint16(34, 0x3f8, true);
    v.setUint32(36, 3, true);
    v.setBigUint64(40, 4096n, true);
    expect(decodeExit(v)).toEqual({ kind: 'io', direction: 'out', port: 0x3f8, size: 2, count: 3, dataOffset: 4096 });
    expect([k.exitReason, k.ioDirection, k.ioIsOut, k.ioSize, k.ioPort, k.ioCount, k.ioDataOffset]).toEqual([2, 1, true, 2, 0x3f8, 3, 4096]);
    v.setUint8(32, 0);
    expect(decodeExit(v)).toMatchObject({ direction: 'in' });
    expect(k.ioIsOut).toBe(false);
  });

  it('decodes an MMIO exit, with 64-bit addresses exact', () => {
    const { v, k } = run();
    v.setUint32(8, KVM_EXIT_MMIO, true);
    v.setBigUint64(32, 0x1_d000_0050n, true);
    v.setUint32(48, 4, true);
    v.setUint8(52, 1);
    expect(decodeExit(v)).toEqual({ kind: 'mmio', isWrite: true, addr: 0x1_d000_0050, len: 4 });
    expect([k.mmioAddr, k.mmioLen, k.mmioIsWrite, k.mmioDataOffset]).toEqual([0x1_d000_0050, 4, true, 40]);
  });

  it('decodes hlt, shutdown, intr, fail-entry, internal-error, system-event and others', () => {
    const { v, k } = run();
    for (const [r, kind] of [
      [KVM_EXIT_HLT, 'hlt'],
      [KVM_EXIT_SHUTDOWN, 'shutdown'],
      [KVM_EXIT_INTR, 'intr'],
    ] as const) {
      v.setUint32(8, r, true);
      expect(decodeExit(v)).toEqual({ kind });
    }
    v.setUint32(8, KVM_EXIT_FAIL_ENTRY, true);
    v.setBigUint64(32, 0x8000_0021n, true);
    v.setUint32(40, 3, true);
    expect(decodeExit(v)).toEqual({ kind: 'fail-entry', reason: 0x8000_0021n, cpu: 3 });
    expect([k.failEntryReason, k.failEntryCpu]).toEqual([0x8000_0021n, 3]);

    v.setUint32(8, KVM_EXIT_INTERNAL_ERROR, true);
    v.setUint32(32, 1, true);
    v.setUint32(36, 2, true);
    v.setBigUint64(40, 7n, true);
    v.setBigUint64(48, 9n, true);
    expect(decodeExit(v)).toEqual({ kind: 'internal-error', suberror: 1, data: [7n, 9n] });
    v.setUint32(36, 1000, true); // a bogus ndata is clamped to the 16 slots
    expect((decodeExit(v) as { data: bigint[] }).data.length).toBe(16);

    v.setUint32(8, KVM_EXIT_SYSTEM_EVENT, true);
    v.setUint32(32, 1, true);
    v.setUint32(36, 0, true);
    expect(decodeExit(v)).toEqual({ kind: 'system-event', type: 1, data: [] });
    v.setUint32(36, 1, true);
    expect(decodeExit(v)).toEqual({ kind: 'system-event', type: 1, data: [7n] });
    expect([k.systemEventType, k.systemEventNdata, k.dataU64(0)]).toEqual([1, 1, 7n]);

    v.setUint32(8, KVM_EXIT_NMI, true);
    expect(decodeExit(v)).toEqual({ kind: 'other', reason: KVM_EXIT_NMI });
    expect(k.decode()).toEqual({ kind: 'other', reason: KVM_EXIT_NMI });
  });

  it('immediate_exit is writable through the view', () => {
    const { v, k } = run();
    k.immediateExit = 1;
    expect(v.getUint8(1)).toBe(1);
    expect(k.immediateExit).toBe(1);
  });
});
