/*
 * Linux x86 boot protocol (Documentation/arch/x86/boot.rst,
 * arch/x86/include/uapi/asm/bootparam.h): the fields of struct boot_params
 * (the "zero page") and of its struct setup_header that the guests use, as
 * byte offsets.  Shared by C (read them with bp_u8/16/32/64 from lib.h) and
 * assembly (lib/start_bzimage.S).  The setup header sits at the same offsets
 * in a bzImage file and in boot_params.
 */
#ifndef GUEST_BOOTPARAM_H
#define GUEST_BOOTPARAM_H

#define BP_EXT_RAMDISK_IMAGE  0x0c0     /* u32: ramdisk_image >> 32 */
#define BP_EXT_RAMDISK_SIZE   0x0c4     /* u32: ramdisk_size >> 32 */
#define BP_EXT_CMD_LINE_PTR   0x0c8     /* u32: cmd_line_ptr >> 32 */
#define BP_E820_ENTRIES       0x1e8     /* u8 */
#define BP_E820_TABLE         0x2d0     /* struct boot_e820_entry[128] */
#define BP_E820_ENTRY_SIZE    20        /* packed: u64 addr, u64 size, u32 type */
#define BP_E820_MAX           128
#define BOOT_PARAMS_SIZE      0x1000

#define HDR_SETUP_SECTS       0x1f1     /* u8: 512-byte sectors of setup after the boot sector */
#define HDR_SYSSIZE           0x1f4     /* u32: protected-mode part in 16-byte units */
#define HDR_VID_MODE          0x1fa     /* u16 */
#define HDR_BOOT_FLAG         0x1fe     /* u16 = 0xAA55 */
#define HDR_JUMP              0x200     /* 0xEB, length of the header after 0x202 */
#define HDR_HEADER            0x202     /* u32 = "HdrS" */
#define HDR_VERSION           0x206     /* u16 */
#define HDR_KERNEL_VERSION    0x20e     /* u16: version string - 0x200 */
#define HDR_TYPE_OF_LOADER    0x210     /* u8 */
#define HDR_LOADFLAGS         0x211     /* u8 */
#define HDR_CODE32_START      0x214     /* u32 */
#define HDR_RAMDISK_IMAGE     0x218     /* u32 */
#define HDR_RAMDISK_SIZE      0x21c     /* u32 */
#define HDR_CMD_LINE_PTR      0x228     /* u32 */
#define HDR_INITRD_ADDR_MAX   0x22c     /* u32 */
#define HDR_KERNEL_ALIGNMENT  0x230     /* u32 */
#define HDR_RELOCATABLE       0x234     /* u8 */
#define HDR_MIN_ALIGNMENT     0x235     /* u8 */
#define HDR_XLOADFLAGS        0x236     /* u16 */
#define HDR_CMDLINE_SIZE      0x238     /* u32 */
#define HDR_PREF_ADDRESS      0x258     /* u64 */
#define HDR_INIT_SIZE         0x260     /* u32 */
#define HDR_END               0x26c     /* end of the 2.15 header (kernel_info_offset + 4) */

#define BOOT_FLAG_MAGIC       0xaa55
#define HDRS_MAGIC            0x53726448    /* "HdrS" */
#define LOADED_HIGH           0x01          /* loadflags */
#define XLF_KERNEL_64         0x01          /* xloadflags: 64-bit entry at +0x200 */
#define XLF_CAN_BE_LOADED_ABOVE_4G 0x02

#endif
