/*
 * The boot adapters: turn what the loader handed over (PVH start_info or
 * Linux boot_params) into one struct boot_info (command line, e820 map,
 * initrd), so that guests do not care which protocol booted them.
 */
#include "lib.h"

#define GiB4 0x100000000ull

static struct boot_info bi;

/* Pointers the loader gave us are only usable inside the 4 GiB identity map. */
static const void *low_ptr(uint64_t paddr)
{
    return paddr && paddr < GiB4 ? (const void *)(uintptr_t)paddr : 0;
}

static void from_pvh(const struct hvm_start_info *si)
{
    bi.pvh = si;
    if (!si)
        return;
    bi.cmdline = low_ptr(si->cmdline_paddr);
    const struct hvm_memmap_table_entry *map = low_ptr(si->memmap_paddr);
    if (si->version >= 1 && map) {
        bi.e820_count = si->memmap_entries > BOOT_E820_MAX ? BOOT_E820_MAX : si->memmap_entries;
        for (unsigned i = 0; i < bi.e820_count; i++)
            bi.e820[i] = (struct boot_e820){ map[i].addr, map[i].size, map[i].type };
    }
    const struct hvm_modlist_entry *m = low_ptr(si->modlist_paddr);
    if (si->nr_modules > 0 && m) {
        bi.have_initrd = 1;
        bi.initrd_addr = m->paddr;
        bi.initrd_size = m->size;
    }
}

static void from_boot_params(const uint8_t *bp)
{
    bi.zero_page = bp;
    if (!bp)
        return;
    bi.cmdline = low_ptr(bp_u32(bp, HDR_CMD_LINE_PTR) | (uint64_t)bp_u32(bp, BP_EXT_CMD_LINE_PTR) << 32);
    unsigned n = bp_u8(bp, BP_E820_ENTRIES);
    bi.e820_count = n > BP_E820_MAX ? BP_E820_MAX : n;
    for (unsigned i = 0; i < bi.e820_count; i++) {
        unsigned o = BP_E820_TABLE + i * BP_E820_ENTRY_SIZE;
        bi.e820[i] = (struct boot_e820){ bp_u64(bp, o), bp_u64(bp, o + 8), bp_u32(bp, o + 16) };
    }
    uint64_t size = bp_u32(bp, HDR_RAMDISK_SIZE) | (uint64_t)bp_u32(bp, BP_EXT_RAMDISK_SIZE) << 32;
    if (size) {
        bi.have_initrd = 1;
        bi.initrd_addr = bp_u32(bp, HDR_RAMDISK_IMAGE) | (uint64_t)bp_u32(bp, BP_EXT_RAMDISK_IMAGE) << 32;
        bi.initrd_size = size;
    }
}

const struct boot_info *boot_info_init(unsigned protocol, const void *info)
{
    static const char *const names[] = {
        [BOOT_PVH] = "pvh",
        [BOOT_BZIMAGE32] = "bzimage entry32",
        [BOOT_BZIMAGE64] = "bzimage entry64",
        [BOOT_ELF64] = "elf64",
    };
    bi.protocol = protocol;
    bi.protocol_name = protocol >= BOOT_PVH && protocol <= BOOT_ELF64 ? names[protocol] : "unknown";
    if (protocol == BOOT_PVH)
        from_pvh(info);
    else
        from_boot_params(info);
    if (!bi.cmdline)
        bi.cmdline = "";
    return &bi;
}
