import { describe, expect, it } from 'vitest';
import { E820_RAM, E820_RESERVED, PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START } from '../../src/arch/x86_64/layout.js';
import { e820Map } from '../../src/arch/x86_64/memory-map.js';
import {
  BOOT_PARAMS_SIZE,
  BP_ACPI_RSDP_ADDR,
  BP_E820_ENTRIES,
  BP_E820_TABLE,
  BP_EXT_CMD_LINE_PTR,
  BP_EXT_RAMDISK_IMAGE,
  BP_EXT_RAMDISK_SIZE,
  BP_SENTINEL,
  buildBootParams,
  HDR_BOOT_FLAG,
  HDR_CMD_LINE_PTR,
  HDR_CMDLINE_SIZE,
  HDR_HEADER,
  HDR_HEAP_END_PTR,
  HDR_INIT_SIZE,
  HDR_KERNEL_ALIGNMENT,
  HDR_RAMDISK_IMAGE,
  HDR_RAMDISK_SIZE,
  HDR_SETUP_DATA,
  HDR_START,
  HDR_TYPE_OF_LOADER,
  HDR_VERSION,
  HDR_VID_MODE,
} from '../../src/loader/boot-params.js';
import { buildPvhStructures, encodeMemmap, encodeModlist, encodeStartInfo, HVM_START_MAGIC } from '../../src/loader/pvh.js';

const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

describe('buildBootParams', () => {
  it('uses the documented field offsets', () => {
    expect([BP_ACPI_RSDP_ADDR, BP_EXT_RAMDISK_IMAGE, BP_EXT_CMD_LINE_PTR, BP_E820_ENTRIES, HDR_START, BP_E820_TABLE]).toEqual([
      0x70, 0xc0, 0xc8, 0x1e8, 0x1f1, 0x2d0,
    ]);
    expect([HDR_BOOT_FLAG, HDR_HEADER, HDR_VERSION, HDR_TYPE_OF_LOADER, HDR_RAMDISK_IMAGE, HDR_CMD_LINE_PTR, HDR_INIT_SIZE]).toEqual([
      0x1fe, 0x202, 0x206, 0x210, 0x218, 0x228, 0x260,
    ]);
  });

  it('synthesizes a header for a vmlinux (64-bit protocol, Firecracker-style)', () => {
    const e820 = e820Map(64 << 20);
    const bp = buildBootParams({ cmdlineAddr: 0x20000, cmdlineSize: 13, e820 });
    const v = dv(bp);
    expect(bp.length).toBe(BOOT_PARAMS_SIZE);
    expect(v.getUint16(HDR_BOOT_FLAG, true)).toBe(0xaa55);
    expect(v.getUint32(HDR_HEADER, true)).toBe(0x53726448);
    expect(Buffer.from(bp.subarray(HDR_HEADER, HDR_HEADER + 4)).toString('latin1')).toBe('HdrS');
    expect(bp[HDR_TYPE_OF_LOADER]).toBe(0xff);
    expect(v.getUint32(HDR_KERNEL_ALIGNMENT, true)).toBe(0x0100_0000);
    expect(v.getUint32(HDR_CMDLINE_SIZE, true)).toBe(13);
    expect(v.getUint32(HDR_CMD_LINE_PTR, true)).toBe(0x20000);
    expect(v.getUint32(BP_EXT_CMD_LINE_PTR, true)).toBe(0);
    expect(v.getUint16(HDR_VID_MODE, true)).toBe(0xffff);
    expect(v.getUint32(HDR_RAMDISK_IMAGE, true)).toBe(0);
    expect(v.getUint32(HDR_RAMDISK_SIZE, true)).toBe(0);
    expect(v.getBigUint64(BP_ACPI_RSDP_ADDR, true)).toBe(0n);
    expect(bp[BP_SENTINEL]).toBe(0);
    expect(bp[BP_E820_ENTRIES]).toBe(4);
    const table = [...Array(4)].map((_, i) => {
      const o = BP_E820_TABLE + i * 20;
      return [Number(v.getBigUint64(o, true)), Number(v.getBigUint64(o + 8, true)), v.getUint32(o + 16, true)];
    });
    expect(table).toEqual([
      [0, 0x9fc00, E820_RAM],
      [0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED],
      [0x100000, (64 << 20) - 0x100000, E820_RAM],
      [0xc000_0000, 0x4000_0000, E820_RESERVED],
    ]);
    // Nothing else in the page is set.
    const touched = new Set<number>();
    const mark = (o: number, n: number): void => {
      for (let i = 0; i < n; i++) touched.add(o + i);
    };
    mark(HDR_BOOT_FLAG, 2);
    mark(HDR_HEADER, 4);
    mark(HDR_TYPE_OF_LOADER, 1);
    mark(HDR_KERNEL_ALIGNMENT, 4);
    mark(HDR_CMDLINE_SIZE, 4);
    mark(HDR_CMD_LINE_PTR, 4);
    mark(HDR_VID_MODE, 2);
    mark(BP_E820_ENTRIES, 1);
    mark(BP_E820_TABLE, 4 * 20);
    for (let i = 0; i < bp.length; i++) if (!touched.has(i)) expect(bp[i], `offset 0x${i.toString(16)}`).toBe(0);
  });

  it('copies a bzImage setup header and overrides the loader-owned fields', () => {
    const hdr = new Uint8Array(0x26c - HDR_START).fill(0x5a);
    const h = dv(hdr);
    h.setUint16(HDR_VERSION - HDR_START, 0x020f, true);
    h.setUint32(HDR_INIT_SIZE - HDR_START, 0x123456, true);
    const bp = buildBootParams({
      setupHeader: hdr,
      cmdlineAddr: 0x1_2345_6789,
      cmdlineSize: 5,
      initrd: { addr: 0x2_0000_1000, size: 0x1_0000_0010 },
      e820: [],
      rsdpAddr: 0xe0000,
    });
    const v = dv(bp);
    expect(v.getUint16(HDR_VERSION, true)).toBe(0x020f);
    expect(v.getUint32(HDR_INIT_SIZE, true)).toBe(0x123456);
    expect(v.getUint32(HDR_CMDLINE_SIZE, true)).toBe(0x5a5a5a5a); // the kernel's field, untouched
    expect(bp[HDR_TYPE_OF_LOADER]).toBe(0xff);
    expect(v.getUint16(HDR_VID_MODE, true)).toBe(0xffff);
    expect(v.getUint16(HDR_HEAP_END_PTR, true)).toBe(0);
    expect(v.getBigUint64(HDR_SETUP_DATA, true)).toBe(0n);
    expect(v.getUint32(HDR_CMD_LINE_PTR, true)).toBe(0x2345_6789);
    expect(v.getUint32(BP_EXT_CMD_LINE_PTR, true)).toBe(1);
    expect(v.getUint32(HDR_RAMDISK_IMAGE, true)).toBe(0x1000);
    expect(v.getUint32(BP_EXT_RAMDISK_IMAGE, true)).toBe(2);
    expect(v.getUint32(HDR_RAMDISK_SIZE, true)).toBe(0x10);
    expect(v.getUint32(BP_EXT_RAMDISK_SIZE, true)).toBe(1);
    expect(v.getBigUint64(BP_ACPI_RSDP_ADDR, true)).toBe(0xe0000n);
    expect(bp[BP_E820_ENTRIES]).toBe(0);
    expect(bp[0x1f0]).toBe(0); // nothing before the header
    expect(bp[0x26c]).toBe(0); // nor after it
  });

  it('rejects more than 128 e820 entries and out-of-range values', () => {
    const e = { addr: 0, size: 4096, type: 1 };
    expect(() => buildBootParams({ cmdlineAddr: 0, cmdlineSize: 0, e820: Array(129).fill(e) })).toThrow(RangeError);
    expect(buildBootParams({ cmdlineAddr: 0, cmdlineSize: 0, e820: Array(128).fill(e) })[BP_E820_ENTRIES]).toBe(128);
    expect(() => buildBootParams({ cmdlineAddr: -1, cmdlineSize: 0, e820: [] })).toThrow(RangeError);
    expect(() => buildBootParams({ cmdlineAddr: 0, cmdlineSize: 0, e820: [], setupHeader: new Uint8Array(0x300) })).toThrow(RangeError);
  });
});

describe('PVH structures', () => {
  it('encodes hvm_start_info version 1', () => {
    const b = encodeStartInfo({ cmdlinePaddr: 0x20000, modlistPaddr: 0x6040, nrModules: 1, memmapPaddr: 0x7000, memmapEntries: 5, rsdpPaddr: 0xe0000 });
    const v = dv(b);
    expect(b.length).toBe(56);
    expect(v.getUint32(0, true)).toBe(HVM_START_MAGIC);
    expect(v.getUint32(0, true)).toBe(0x336ec578);
    expect(v.getUint32(4, true)).toBe(1);
    expect(v.getUint32(8, true)).toBe(0);
    expect(v.getUint32(12, true)).toBe(1);
    expect(v.getBigUint64(16, true)).toBe(0x6040n);
    expect(v.getBigUint64(24, true)).toBe(0x20000n);
    expect(v.getBigUint64(32, true)).toBe(0xe0000n);
    expect(v.getBigUint64(40, true)).toBe(0x7000n);
    expect(v.getUint32(48, true)).toBe(5);
    expect(v.getUint32(52, true)).toBe(0);
  });

  it('encodes module list and memmap entries', () => {
    const m = dv(encodeModlist([{ paddr: 0x3f00000, size: 0x1234 }]));
    expect(m.byteLength).toBe(32);
    expect([m.getBigUint64(0, true), m.getBigUint64(8, true), m.getBigUint64(16, true), m.getBigUint64(24, true)]).toEqual([0x3f00000n, 0x1234n, 0n, 0n]);
    const mm = dv(encodeMemmap([{ addr: 0x1_0000_0000, size: 0x4000_0000, type: 1 }, { addr: 0x9fc00, size: 0x60400, type: 2 }]));
    expect(mm.byteLength).toBe(48);
    expect([mm.getBigUint64(0, true), mm.getBigUint64(8, true), mm.getUint32(16, true), mm.getUint32(20, true)]).toEqual([0x1_0000_0000n, 0x4000_0000n, 1, 0]);
    expect([mm.getBigUint64(24, true), mm.getBigUint64(32, true), mm.getUint32(40, true)]).toEqual([0x9fc00n, 0x60400n, 2]);
  });

  it('places the structures at their fixed slots; no modules → modlist_paddr 0', () => {
    const s = buildPvhStructures({ cmdlinePaddr: 0x20000, modules: [], memmap: e820Map(32 << 20) });
    expect([s.startInfo.gpa, s.modlist.gpa, s.memmap.gpa]).toEqual([PVH_INFO_START, PVH_MODLIST_START, PVH_MEMMAP_START]);
    const v = dv(s.startInfo.bytes);
    expect(v.getUint32(12, true)).toBe(0);
    expect(v.getBigUint64(16, true)).toBe(0n);
    expect(v.getUint32(48, true)).toBe(4);
    expect(s.memmap.bytes.length).toBe(4 * 24);
    expect(s.modlist.bytes.length).toBe(0);
  });
});
