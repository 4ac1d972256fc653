/*
 * bzImage entry (Linux x86 boot protocol 2.15, Documentation/arch/x86/boot.rst).
 *
 * File layout (lib/bzimage.ld):
 *   0x0000  boot sector: zeros, except the setup header from 0x1f1 (boot_flag 0xAA55 at 0x1fe)
 *   0x0200  jump over the header, then the rest of the header up to 0x26c
 *   0x1000  real-mode setup code (the first 4 KiB, where a real-mode loader put
 *           the setup, are used in place as struct boot_params)
 *   0x1200  protected-mode part (SETUP_SECTS = 8), loaded at 1 MiB:
 *             +0x000  startup_32: 32-bit entry (code32_start), %esi = boot_params
 *             +0x200  startup_64: 64-bit entry (XLF_KERNEL_64), %rsi = boot_params
 *
 * Entered in real mode (QEMU + qboot or SeaBIOS): the loader copies the setup
 * to a segment S, fills in the header there, and jumps to S+0x20:0 with
 * DS = ES = SS = S.  The setup code asks the BIOS for the e820 map (int 0x15,
 * ax=0xe820) straight into the boot_params at S:0 (its e820 area, 0x2d0-0xcd0,
 * is zero in the file), switches to 32-bit protected mode with flat __BOOT_CS
 * (0x10) / __BOOT_DS (0x18) and jumps to code32_start with %esi = S << 4.
 * Real-mode ring-0 code is emulated under KVM-PVM: keep it short.
 *
 * The protected-mode part carries its .bss as zeros (bzimage.ld), because
 * loaders copy the file but clear nothing behind it.
 */
#include "layout.h"
#include "bootparam.h"

#define SETUP_SECTS     8
#define SETUP_SIZE      ((SETUP_SECTS + 1) * 512)
#define RM_CODE         0x1000          /* real-mode code: after the 4 KiB of boot_params */
#define SMAP            0x534d4150      /* "SMAP" */
#define BOOT_CS         0x10            /* Linux's __BOOT_CS / __BOOT_DS */
#define BOOT_DS         0x18
#define LOAD_ADDR       0x100000

/* ---- real-mode part: setup header + setup code; addresses = file offsets ---- */
        .section .setup, "ax"
        .code16

        /* Each field is placed with .org: a field that is too long fails the build. */
        .org    HDR_SETUP_SECTS
        .byte   SETUP_SECTS
        .org    0x1f2
        .word   0                       /* root_flags */
        .org    HDR_SYSSIZE
        .long   __bz_syssize            /* bzimage.ld */
        .org    0x1f8
        .word   0                       /* ram_size (obsolete) */
        .org    HDR_VID_MODE
        .word   0xffff                  /* NORMAL_VGA */
        .org    0x1fc
        .word   0                       /* root_dev */
        .org    HDR_BOOT_FLAG
        .word   BOOT_FLAG_MAGIC
        .org    HDR_JUMP
        .byte   0xeb, HDR_END - (HDR_JUMP + 2)  /* jmp short hdr_end: the real-mode entry */
        .org    HDR_HEADER
        .ascii  "HdrS"
        .org    HDR_VERSION
        .word   0x020f
        .org    0x208
        .long   0                       /* realmode_swtch */
        .org    0x20c
        .word   0                       /* start_sys_seg (obsolete) */
        .org    HDR_KERNEL_VERSION
        .word   kernel_version - 0x200
        .org    HDR_TYPE_OF_LOADER
        .byte   0                       /* the loader writes its id here */
        .org    HDR_LOADFLAGS
        .byte   LOADED_HIGH
        .org    0x212
        .word   0                       /* setup_move_size */
        .org    HDR_CODE32_START
        .long   LOAD_ADDR
        .org    HDR_RAMDISK_IMAGE
        .long   0
        .org    HDR_RAMDISK_SIZE
        .long   0
        .org    0x220
        .long   0                       /* bootsect_kludge */
        .org    0x224
        .word   0                       /* heap_end_ptr */
        .org    0x226
        .byte   0, 0                    /* ext_loader_ver, ext_loader_type */
        .org    HDR_CMD_LINE_PTR
        .long   0
        .org    HDR_INITRD_ADDR_MAX
        .long   0x7fffffff              /* the guest maps (and checks) only the first 4 GiB */
        .org    HDR_KERNEL_ALIGNMENT
        .long   0x200000
        .org    HDR_RELOCATABLE
        .byte   0                       /* linked at 1 MiB, runs only there */
        .org    HDR_MIN_ALIGNMENT
        .byte   21
        .org    HDR_XLOADFLAGS
        .word   XLF_KERNEL_64           /* not XLF_CAN_BE_LOADED_ABOVE_4G: fixed at 1 MiB */
        .org    HDR_CMDLINE_SIZE
        .long   2047
        .org    0x23c
        .long   0                       /* hardware_subarch: default PC */
        .quad   0                       /* hardware_subarch_data */
        .org    0x248
        .long   0, 0                    /* payload_offset, payload_length: no payload */
        .org    0x250
        .quad   0                       /* setup_data */
        .org    HDR_PREF_ADDRESS
        .quad   LOAD_ADDR
        .org    HDR_INIT_SIZE
        .long   __bz_init_size          /* bzimage.ld: the whole image incl. .bss */
        .org    0x264
        .long   0                       /* handover_offset: no EFI handover */
        .long   0                       /* kernel_info_offset */
        .org    HDR_END
        jmp     rm_start
kernel_version:
        .asciz  "kindling test guest"

        .org    RM_CODE
rm_start:
        cli
        cld
        movw    %cs, %ax
        subw    $0x20, %ax
        movw    %ax, %ds                /* DS = ES = the setup segment = boot_params */
        movw    %ax, %es

        /* e820: int 0x15, eax=0xe820, into boot_params.e820_table (ES:DI) */
        movb    $0, BP_E820_ENTRIES
        movw    $BP_E820_TABLE, %di
        xorl    %ebx, %ebx
1:      movl    $0xe820, %eax
        movl    $BP_E820_ENTRY_SIZE, %ecx
        movl    $SMAP, %edx
        int     $0x15
        jc      2f
        cmpl    $SMAP, %eax
        jne     2f
        addw    $BP_E820_ENTRY_SIZE, %di
        incb    BP_E820_ENTRIES
        cmpb    $BP_E820_MAX, BP_E820_ENTRIES
        jae     2f
        testl   %ebx, %ebx
        jnz     1b
2:
        /* to 32-bit protected mode, then code32_start with %esi = &boot_params */
        xorl    %esi, %esi
        movw    %ds, %si
        shll    $4, %esi
        leal    rm_gdt(%esi), %eax
        movl    %eax, rm_gdt_ptr + 2
        leal    rm_pm32(%esi), %eax
        movl    %eax, rm_pm32_ptr
        movl    HDR_CODE32_START, %eax
        lgdtl   rm_gdt_ptr
        movl    %cr0, %edx
        orb     $1, %dl                 /* CR0.PE */
        movl    %edx, %cr0
        ljmpl   *rm_pm32_ptr            /* DS keeps its real-mode base until reloaded */

        .code32
rm_pm32:                                /* position-independent: runs at S*16 + offset */
        movw    $BOOT_DS, %cx
        movw    %cx, %ds
        movw    %cx, %es
        movw    %cx, %fs
        movw    %cx, %gs
        movw    %cx, %ss
        xorl    %ebx, %ebx              /* boot.rst: %ebp, %edi, %ebx zero */
        xorl    %ebp, %ebp
        xorl    %edi, %edi
        jmp     *%eax

        .p2align 3
rm_gdt:
        .quad   0, 0
        .quad   0x00cf9a000000ffff      /* 0x10 __BOOT_CS: 32-bit code, flat */
        .quad   0x00cf92000000ffff      /* 0x18 __BOOT_DS: data, flat */
rm_gdt_ptr:
        .word   4 * 8 - 1
        .long   0                       /* linear base, patched */
rm_pm32_ptr:
        .long   0                       /* linear rm_pm32, patched */
        .word   BOOT_CS

        .org    SETUP_SIZE

/* ---- protected-mode part, loaded at 1 MiB ---- */
        .section .text.entry, "ax"
        .code32
        .globl  startup_32
startup_32:                             /* 32-bit protected mode, paging off, %esi = boot_params */
        movl    $BOOT_BZIMAGE32, %edi
        jmp     enter32                 /* lib/entry.S */

        .org    0x200
        .code64
        .globl  startup_64
startup_64:                             /* long mode, identity map, %rsi = boot_params */
        movl    $BOOT_BZIMAGE64, %edi
        jmp     enter64                 /* lib/entry.S */

        .section .note.GNU-stack, "", @progbits
