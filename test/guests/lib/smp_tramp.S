/*
 * AP start-up trampoline.  smp_boot_aps() copies smp_tramp_start..end to
 * SMP_TRAMPOLINE (4 KiB aligned, below 1 MiB) and patches the GDTR and CR3
 * slots at its end.  A SIPI with vector SMP_TRAMPOLINE >> 12 starts the AP
 * there in real mode (CS = SMP_TRAMPOLINE >> 4, IP = 0).
 *
 * real mode -> 32-bit PM (BSP's GDT, selector 0x38) -> long mode (BSP's page
 * tables) -> smp_ap_start64 in the image: stack per APIC id, BSP's IDT,
 * smp_ap_main(apic_id).  About 30 instructions, all emulated under KVM-PVM.
 */
#include "layout.h"
#include "smp.h"

#define TR(x)   (SMP_TRAMPOLINE + ((x) - smp_tramp_start))

        .text
        .code16
        .globl  smp_tramp_start, smp_tramp_end, smp_tramp_gdtr, smp_tramp_cr3
        .p2align 4
smp_tramp_start:
        cli
        movw    %cs, %ax
        movw    %ax, %ds
        lgdtl   smp_tramp_gdtr - smp_tramp_start        /* DS-relative */
        movl    %cr0, %eax
        orl     $1, %eax                                /* PE */
        movl    %eax, %cr0
        ljmpl   $SEL_KCODE32, $TR(tr_pm32)

        .code32
tr_pm32:
        movl    $SEL_KDATA, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movl    TR(smp_tramp_cr3), %eax
        movl    %eax, %cr3
        movl    $0x20, %eax                             /* CR4.PAE */
        movl    %eax, %cr4
        movl    $0xC0000080, %ecx                       /* EFER.LME */
        movl    $0x100, %eax
        xorl    %edx, %edx
        wrmsr
        movl    %cr0, %eax
        orl     $0x80010001, %eax                       /* PG | WP | PE */
        movl    %eax, %cr0
        ljmp    $SEL_KCODE, $smp_ap_start64             /* absolute, in the image */

        .p2align 3
        .word   0                                       /* so that the base is 4-aligned */
smp_tramp_gdtr:
        .word   0                                       /* limit  (patched) */
        .long   0                                       /* base   (patched) */
smp_tramp_cr3:
        .long   0                                       /* PML4   (patched) */
smp_tramp_end:

        .code64
smp_ap_start64:
        movl    $SEL_KDATA, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        xorl    %eax, %eax
        movl    %eax, %fs
        movl    %eax, %gs
        movl    $0xfee00020, %edx                       /* LAPIC ID register */
        movl    (%rdx), %edi
        shrl    $24, %edi                               /* 1st arg: APIC id (0..255) */
        leal    1(%rdi), %eax
        shll    $SMP_AP_STACK_SHIFT, %eax
        leaq    smp_ap_stacks(%rip), %rsp
        addq    %rax, %rsp                              /* top of this APIC id's stack */
        lidt    smp_ap_idtr(%rip)                       /* BSP's IDT, saved by smp_boot_aps */
        call    smp_ap_main
1:      cli
        hlt
        jmp     1b

        .bss
        .p2align 12
smp_ap_stacks:
        .space  (SMP_MAX_APIC_ID + 1) * SMP_AP_STACK_SIZE

        .section .note.GNU-stack, "", @progbits
