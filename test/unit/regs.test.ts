import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  BOOT_GDT_START,
  BOOT_IDT_START,
  BOOT_STACK_POINTER,
  IDENTITY_MAP_GIB,
  MiB,
  PDE_START,
  PDPTE_START,
  PML4_START,
} from '../../src/arch/x86_64/layout.js';
import {
  bootFpu,
  bootGdt,
  bootRegs,
  bootSregs,
  configureLapic,
  gdtEntry,
  segmentFromGdtEntry,
  setApicDeliveryMode,
  writeBootGdt,
  writeIdentityPageTables,
} from '../../src/arch/x86_64/regs.js';
import { MSR_DENYLIST, MSR_IA32_ARCH_CAPABILITIES, bootMsrs, toMsrArrays } from '../../src/arch/x86_64/msr.js';
import { decodeSregs, encodeFpu, encodeSregs, decodeRegs, encodeRegs, getLapicReg, type KvmSregs } from '../../src/kvm/structs.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { runs } from '../fuzz/budget.js';
import { expectSameBytes } from '../fuzz/bytes.js';

function memory(size = 2 * MiB): GuestMemory {
  return new GuestMemory([{ slot: 0, gpa: 0, size, buffer: new SharedArrayBuffer(size) }]);
}

/** KVM_GET_SREGS right after KVM_CREATE_VCPU (x86 reset state), as the VMM's starting point. */
function resetSregs(): KvmSregs {
  const s = decodeSregs(new Uint8Array(312));
  const seg = { base: 0n, limit: 0xffff, selector: 0, type: 3, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 0, avl: 0, unusable: 0 };
  s.cs = { ...seg, type: 0xb, selector: 0xf000, base: 0xffff_0000n };
  s.ds = { ...seg };
  s.es = { ...seg };
  s.fs = { ...seg };
  s.gs = { ...seg };
  s.ss = { ...seg };
  s.tr = { ...seg, s: 0, type: 0xb };
  s.ldt = { ...seg, s: 0, type: 2 };
  s.gdt = { base: 0n, limit: 0xffff };
  s.idt = { base: 0n, limit: 0xffff };
  s.cr0 = 0x6000_0010n; // CD | NW | ET
  s.apicBase = 0xfee0_0900n;
  s.interruptBitmap = [0n, 0n, 0n, 0n];
  return s;
}

describe('GDT entries', () => {
  it('match Firecracker / Cloud Hypervisor words', () => {
    expect(gdtEntry(0, 0, 0)).toBe(0n);
    expect(gdtEntry(0xa09b, 0, 0xfffff)).toBe(0x00af_9b00_0000_ffffn); // 64-bit code
    expect(gdtEntry(0xc093, 0, 0xfffff)).toBe(0x00cf_9300_0000_ffffn); // data
    expect(gdtEntry(0x808b, 0, 0xfffff)).toBe(0x008f_8b00_0000_ffffn); // 64-bit TSS
    expect(gdtEntry(0xc09b, 0, 0xfffff)).toBe(0x00cf_9b00_0000_ffffn); // 32-bit code (PVH)
    expect(gdtEntry(0xc09b, 0, 0xffff_ffff)).toBe(0x00cf_9b00_0000_ffffn); // limit is a 20-bit field
    expect(gdtEntry(0x008b, 0, 0x67)).toBe(0x0000_8b00_0000_0067n); // PVH TSS
    expect(gdtEntry(0x0093, 0x1234_5678, 0xabcde)).toBe(0x120a_9334_5678_bcden);
  });

  it('boot GDTs: [null, code, data, tss]', () => {
    expect(bootGdt('linux64')).toEqual([0n, 0x00af_9b00_0000_ffffn, 0x00cf_9300_0000_ffffn, 0x008f_8b00_0000_ffffn]);
    expect(bootGdt('pvh')).toEqual([0n, 0x00cf_9b00_0000_ffffn, 0x00cf_9300_0000_ffffn, 0x0000_8b00_0000_0067n]);
  });

  it('segmentFromGdtEntry parses the 64-bit code descriptor like Firecracker', () => {
    const seg = segmentFromGdtEntry(gdtEntry(0xa09b, 0x10_0000, 0xfffff), 0x08);
    expect(seg).toEqual({ base: 0x10_0000n, limit: 0xffff_ffff, selector: 8, type: 0xb, present: 1, dpl: 0, db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0 });
    expect(segmentFromGdtEntry(0n, 0).unusable).toBe(1);
    expect(segmentFromGdtEntry(gdtEntry(0x008b, 0, 0x67), 0x18)).toMatchObject({ limit: 0x67, g: 0, s: 0, type: 0xb, present: 1 });
  });

  it('segmentFromGdtEntry inverts gdtEntry (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff_ffff }), fc.integer({ min: 0, max: 0xfffff }), fc.integer({ min: 0, max: 0x1fff }), (flags, base, limit, index) => {
        const seg = segmentFromGdtEntry(gdtEntry(flags, base, limit), index * 8);
        expect(seg.base).toBe(BigInt(base));
        expect(seg.selector).toBe(index * 8);
        expect(seg.type).toBe(flags & 0xf);
        expect(seg.s).toBe((flags >> 4) & 1);
        expect(seg.dpl).toBe((flags >> 5) & 3);
        expect(seg.present).toBe((flags >> 7) & 1);
        expect(seg.unusable).toBe(seg.present ? 0 : 1);
        expect([seg.avl, seg.l, seg.db, seg.g]).toEqual([(flags >> 12) & 1, (flags >> 13) & 1, (flags >> 14) & 1, (flags >> 15) & 1]);
        expect(seg.limit).toBe(seg.g ? limit * 4096 + 0xfff : limit);
      }),
    );
  });

  it('writeBootGdt writes the table at BOOT_GDT_START and a zero IDT entry at BOOT_IDT_START', () => {
    for (const p of ['linux64', 'pvh'] as const) {
      const mem = memory();
      mem.write64(BOOT_IDT_START, 0xffff_ffffn);
      const gdt = writeBootGdt(mem, p);
      expect(gdt).toEqual(bootGdt(p));
      gdt.forEach((e, i) => expect(mem.read64(BOOT_GDT_START + 8 * i)).toBe(e));
      expect(mem.read64(BOOT_IDT_START)).toBe(0n);
    }
  });
});

describe('identity-map page tables', () => {
  const mem = memory();
  const cr3 = writeIdentityPageTables(mem);

  it('PML4 → PDPT → 4 page directories, returns CR3 = PML4_START', () => {
    expect(cr3).toBe(BigInt(PML4_START));
    expect(mem.read64(PML4_START)).toBe(0xa003n);
    for (let i = 1; i < 512; i++) expect(mem.read64(PML4_START + 8 * i)).toBe(0n);
    for (let i = 0; i < 512; i++) {
      expect(mem.read64(PDPTE_START + 8 * i)).toBe(i < IDENTITY_MAP_GIB ? BigInt(PDE_START + 0x1000 * i) | 3n : 0n);
    }
    expect(mem.read64(PDPTE_START)).toBe(0xb003n);
  });

  it('every PDE is present|RW|PS and maps 2 MiB × its index', () => {
    for (let n = 0; n < IDENTITY_MAP_GIB * 512; n++) {
      const pde = mem.read64(PDE_START + 8 * n);
      expect(pde & 0x83n).toBe(0x83n);
      expect(pde & ~0xfffn).toBe(BigInt(n) << 21n);
      expect(pde & 0xfffn & ~0x83n).toBe(0n);
    }
  });

  it('a software page walk maps addresses below 4 GiB to themselves', () => {
    const walk = (va: bigint): bigint => {
      const pml4e = mem.read64(Number(cr3) + Number((va >> 39n) & 511n) * 8);
      const pdpte = mem.read64(Number(pml4e & ~0xfffn) + Number((va >> 30n) & 511n) * 8);
      const pde = mem.read64(Number(pdpte & ~0xfffn) + Number((va >> 21n) & 511n) * 8);
      expect(pml4e & pdpte & pde & 1n).toBe(1n);
      return (pde & ~0x1f_ffffn & ((1n << 52n) - 1n)) | (va & 0x1f_ffffn);
    };
    for (const va of [0n, 0x1000n, 0x10_0000n, 0x1234_5678n, 0xc000_0000n, 0xfee0_0000n, 0xffff_ffffn]) expect(walk(va)).toBe(va);
  });
});

describe('bootSregs', () => {
  it('linux64: long mode with paging, 64-bit CS, flat data, TR, boot GDT/IDT', () => {
    const base = resetSregs();
    const snapshot = structuredClone(base);
    const s = bootSregs(base, 'linux64', 0x9000n);
    expect(base).toEqual(snapshot); // not mutated
    expect(s.cs).toEqual({ base: 0n, limit: 0xffff_ffff, selector: 0x08, type: 0xb, present: 1, dpl: 0, db: 0, s: 1, l: 1, g: 1, avl: 0, unusable: 0 });
    for (const seg of [s.ds, s.es, s.fs, s.gs, s.ss]) {
      expect(seg).toEqual({ base: 0n, limit: 0xffff_ffff, selector: 0x10, type: 0x3, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 });
    }
    expect(s.tr).toMatchObject({ base: 0n, selector: 0x18, type: 0xb, s: 0, present: 1, unusable: 0 });
    expect(s.gdt).toEqual({ base: 0x500n, limit: 31 });
    expect(s.idt).toEqual({ base: 0x520n, limit: 7 });
    expect(s.cr0).toBe(0x8000_0031n); // PG | NE | ET | PE; CD and NW cleared
    expect(s.cr3).toBe(0x9000n);
    expect(s.cr4).toBe(0x20n); // PAE
    expect(s.efer).toBe(0x500n); // LMA | LME
    expect(s.apicBase).toBe(0xfee0_0900n);
    expect(s.ldt).toEqual(base.ldt);
    expect(bootSregs(base, 'linux64').cr3).toBe(BigInt(PML4_START));
    expect(decodeSregs(encodeSregs(s))).toEqual(s);
  });

  it('pvh: 32-bit protected mode, paging off, flat 4 GiB segments, 32-bit TSS — the PVH entry ABI', () => {
    const base = resetSregs();
    base.efer = 0x500n;
    base.cr4 = 0x20n;
    const s = bootSregs(base, 'pvh');
    expect(s.cs).toEqual({ base: 0n, limit: 0xffff_ffff, selector: 0x08, type: 0xb, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 });
    for (const seg of [s.ds, s.es, s.fs, s.gs, s.ss]) expect(seg).toMatchObject({ base: 0n, limit: 0xffff_ffff, db: 1, g: 1, type: 3, s: 1 });
    expect(s.tr).toEqual({ base: 0n, limit: 0x67, selector: 0x18, type: 0xb, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0, unusable: 0 });
    expect(s.cr0).toBe(0x11n); // PE | ET
    expect(s.cr4).toBe(0n);
    expect(s.efer).toBe(0n);
    expect(s.cr3).toBe(0n);
    expect(s.gdt).toEqual({ base: BigInt(BOOT_GDT_START), limit: 31 });
  });
});

describe('bootRegs / bootFpu', () => {
  it('linux64: rip, rsp = rbp = BOOT_STACK_POINTER, rsi = boot_params, rflags 2', () => {
    const r = bootRegs('linux64', 0x100_0000, 0x7000);
    expect(r).toMatchObject({ rip: 0x100_0000n, rsp: BigInt(BOOT_STACK_POINTER), rbp: BigInt(BOOT_STACK_POINTER), rsi: 0x7000n, rflags: 2n, rbx: 0n, rax: 0n });
    expect(decodeRegs(encodeRegs(r))).toEqual(r);
  });

  it('pvh: rip, rbx = start_info, rflags 2, everything else 0', () => {
    const r = bootRegs('pvh', 0x100_0000n, 0x6000n);
    const nonzero = Object.entries(r).filter(([, v]) => v !== 0n);
    expect(Object.fromEntries(nonzero)).toEqual({ rip: 0x100_0000n, rbx: 0x6000n, rflags: 2n });
  });

  it('FPU: FCW 0x37F at byte 128, MXCSR 0x1F80 at byte 408', () => {
    const raw = encodeFpu(bootFpu());
    expect(new DataView(raw.buffer).getUint16(128, true)).toBe(0x37f);
    expect(new DataView(raw.buffer).getUint32(408, true)).toBe(0x1f80);
    expect(raw.reduce((a, b) => a + b, 0)).toBe(0x7f + 0x03 + 0x80 + 0x1f);
  });
});

describe('configureLapic', () => {
  it('sets LINT0 to ExtINT and LINT1 to NMI, leaves every other byte alone, and does not modify its input', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1024, maxLength: 1024 }), (raw) => {
        const before = raw.slice();
        const out = configureLapic(raw);
        expectSameBytes(raw, before, 'input');
        expect(out.length).toBe(1024);
        const lint0 = getLapicReg(out, 0x350);
        const lint1 = getLapicReg(out, 0x360);
        expect((lint0 >> 8) & 7).toBe(7);
        expect((lint1 >> 8) & 7).toBe(4);
        expect((lint0 & ~0x700) >>> 0).toBe((getLapicReg(raw, 0x350) & ~0x700) >>> 0);
        expect((lint1 & ~0x700) >>> 0).toBe((getLapicReg(raw, 0x360) & ~0x700) >>> 0);
        // Every byte outside LVT LINT0 (0x350) and LINT1 (0x360) is unchanged.
        const outside = (b: Uint8Array): Uint8Array => Uint8Array.from(b).fill(0, 0x350, 0x354).fill(0, 0x360, 0x364);
        expectSameBytes(outside(out), outside(raw), 'LAPIC page outside LINT0/LINT1');
      }),
      { numRuns: runs(50) },
    );
    expect(setApicDeliveryMode(0x0001_0000, 7)).toBe(0x0001_0700);
    expect(setApicDeliveryMode(0xffff_ffff, 4)).toBe(0xffff_fcff);
  });
});

describe('boot MSRs', () => {
  it('are the Firecracker boot set plus MTRRdefType, never IA32_ARCH_CAPABILITIES', () => {
    const list = bootMsrs();
    const byIndex = new Map(list.map((m) => [m.index, m.value]));
    expect(byIndex).toEqual(
      new Map<number, bigint>([
        [0x174, 0n],
        [0x175, 0n],
        [0x176, 0n],
        [0xc000_0081, 0n],
        [0xc000_0083, 0n],
        [0xc000_0102, 0n],
        [0xc000_0084, 0n],
        [0xc000_0082, 0n],
        [0x10, 0n],
        [0x1a0, 1n],
        [0x2ff, 0x806n],
      ]),
    );
    expect(list.every((m) => m.name.length > 0)).toBe(true);
    expect(byIndex.has(MSR_IA32_ARCH_CAPABILITIES)).toBe(false);
    expect(MSR_DENYLIST.has(0x10a)).toBe(true);
  });

  it('toMsrArrays gives parallel arrays and drops denied MSRs', () => {
    const { indices, values } = toMsrArrays([...bootMsrs(), { index: 0x10a, value: 1n, name: 'IA32_ARCH_CAPABILITIES' }]);
    expect(indices.length).toBe(11);
    expect(values.length).toBe(11);
    expect([...indices]).not.toContain(0x10a);
    expect(indices[9]).toBe(0x1a0);
    expect(values[9]).toBe(1n);
    expect(indices[10]).toBe(0x2ff);
    expect(values[10]).toBe(0x806n);
  });
});
