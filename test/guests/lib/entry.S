/*
 * Common entry paths for the kindling test guests.
 *
 * A protocol-specific stub (lib/start_pvh.S, lib/start_bzimage.S,
 * lib/start_elf64.S) is the image's entry point; it loads
 *   %edi = enum boot_protocol (lib/lib.h)
 *   %esi/%rsi = the loader's boot structure (start_info or boot_params)
 * and jumps to enter32 (32-bit protected mode, paging off) or enter64 (long
 * mode, any identity map covering the image).  Both end in guest_start(protocol,
 * info) (lib/cpu.c) running on this image's own GDT, page tables and stack.
 * Everything the switch to long mode needs is static data built at assembly
 * time, so the (emulated, slow) ring-0 path is a dozen instructions.
 *
 * Low memory below 1 MiB is left untouched, so a future AP trampoline can live
 * below 0x8000; it can reuse `gdt`, `gdt_ptr` and `pml4` from here.
 */
#include "layout.h"

        .text
/* ---- from 32-bit protected mode, paging off (flat segments) ---- */
        .code32
        .globl  enter32
enter32:
        cli
        lgdt    gdt_ptr
        movl    $pml4, %eax
        movl    %eax, %cr3
        movl    $0x20, %eax             /* CR4.PAE */
        movl    %eax, %cr4
        movl    $0xC0000080, %ecx       /* EFER.LME */
        movl    $0x100, %eax
        xorl    %edx, %edx
        wrmsr
        movl    %cr0, %eax
        orl     $0x80010001, %eax       /* PG | WP | PE */
        movl    %eax, %cr0
        ljmp    $SEL_KCODE, $start64_from32

        .code64
start64_from32:
        movl    %esi, %esi              /* zero-extend the 32-bit pointer */
        jmp     start64

/* ---- from long mode (the Linux 64-bit boot protocol): switch to our GDT and tables ---- */
        .globl  enter64
enter64:
        cli
        lgdt    gdt_ptr(%rip)
        movl    $pml4, %eax
        movq    %rax, %cr3
        pushq   $SEL_KCODE
        pushq   $start64
        lretq

start64:
        movl    $SEL_KDATA, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        xorl    %eax, %eax
        movl    %eax, %fs
        movl    %eax, %gs
        leaq    kstack_top(%rip), %rsp
        call    guest_start             /* (%edi protocol, %rsi info): lib/cpu.c; never returns */
1:      cli
        hlt
        jmp     1b

/* ---- GDT ---- */
        .data
        .p2align 4
        .globl  gdt, gdt_ptr
gdt:
        .quad   0                       /* 0x00 null */
        .quad   0x00af9a000000ffff      /* 0x08 kernel code, 64-bit */
        .quad   0x00cf92000000ffff      /* 0x10 kernel data */
        .quad   0x00affa000000ffff      /* 0x18 user code, 64-bit, DPL3 (sel 0x1b) */
        .quad   0x00cff2000000ffff      /* 0x20 user data, DPL3 (sel 0x23) */
        .quad   0, 0                    /* 0x28 TSS (16 bytes), filled by tss_init() */
        .quad   0x00cf9a000000ffff      /* 0x38 kernel code, 32-bit (for an AP trampoline) */
gdt_end:
        .p2align 3
        .word   0                       /* pad so that gdt_ptr+2 is 4-aligned */
        .word   0
        .word   0
gdt_ptr:
        .word   gdt_end - gdt - 1
        .quad   gdt

/*
 * ---- Identity page tables: first 4 GiB in 2 MiB pages ----
 * All entries are user-accessible (US=1) so ring-3 code can touch any RAM
 * and the exit/serial ports via IOPL=3.  SMEP/SMAP stay off.  The 3-4 GiB
 * window (LAPIC, IOAPIC, MMIO) is mapped uncached (PCD|PWT).
 */
        .section .data.pagetables, "aw"
        .p2align 12
        .globl  pml4
pml4:
        .quad   pdpt + 0x7
        .fill   511, 8, 0
pdpt:
        .quad   pd + 0x0000 + 0x7
        .quad   pd + 0x1000 + 0x7
        .quad   pd + 0x2000 + 0x7
        .quad   pd + 0x3000 + 0x7
        .fill   508, 8, 0
pd:
        .set    i, 0
        .rept   2048
        .if     i >= 1536
        .quad   (i << 21) | 0x9f        /* P RW US PWT PCD PS */
        .else
        .quad   (i << 21) | 0x87        /* P RW US PS */
        .endif
        .set    i, i + 1
        .endr

/* ---- stacks ---- */
        .bss
        .p2align 12
        .globl  kstack_top, istack_top, ustack_top
        .space  KSTACK_SIZE
kstack_top:                             /* ring-0 stack of the boot CPU */
        .space  ISTACK_SIZE
istack_top:                             /* TSS.RSP0: interrupts/traps from ring 3 */
        .space  USTACK_SIZE
ustack_top:                             /* default ring-3 stack for run_user() */

        .section .note.GNU-stack, "", @progbits
