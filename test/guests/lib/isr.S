/*
 * Interrupt entry stubs, ring-3 entry/return.
 *
 * isr_table: 256 stubs of 16 bytes each; stub v pushes a dummy error code
 * (unless the CPU pushes one) and v, then jumps to isr_common, which saves
 * the GPRs and calls isr_dispatch(struct frame *) in lib/cpu.c.
 */
#include "layout.h"

        .text
        .p2align 4
        .globl  isr_table
isr_table:
        .set    v, 0
        .rept   256
        .p2align 4
        .if (v == 8) || (v == 10) || (v == 11) || (v == 12) || (v == 13) || (v == 14) || (v == 17) || (v == 21) || (v == 29) || (v == 30)
        nop; nop                        /* CPU pushed an error code */
        .else
        pushq   $0
        .endif
        pushq   $v
        jmp     isr_common
        .set    v, v + 1
        .endr

isr_common:
        pushq   %rax
        pushq   %rbx
        pushq   %rcx
        pushq   %rdx
        pushq   %rsi
        pushq   %rdi
        pushq   %rbp
        pushq   %r8
        pushq   %r9
        pushq   %r10
        pushq   %r11
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        movq    %rsp, %rdi
        cld
        call    isr_dispatch
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %r11
        popq    %r10
        popq    %r9
        popq    %r8
        popq    %rbp
        popq    %rdi
        popq    %rsi
        popq    %rdx
        popq    %rcx
        popq    %rbx
        popq    %rax
        addq    $16, %rsp               /* vector, error code */
        iretq

/*
 * uint64_t run_user(uint64_t (*fn)(void *), void *arg, void *stack_top)
 * Runs fn(arg) in ring 3 with IOPL=3 (in/out allowed) and IF=0 on the given
 * stack; returns fn's return value once fn returns (via ud2 at user_trap_return).
 */
        .globl  run_user
run_user:
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        pushfq
        movq    %rsp, kctx_rsp(%rip)
        testq   %rdx, %rdx
        jnz     1f
        leaq    ustack_top(%rip), %rdx
1:      andq    $-16, %rdx
        pushq   $SEL_UDATA              /* ss */
        pushq   %rdx                    /* rsp */
        pushq   $0x3002                 /* rflags: IOPL=3, IF=0 */
        pushq   $SEL_UCODE              /* cs */
        leaq    user_entry(%rip), %rax
        pushq   %rax                    /* rip */
        movq    %rdi, %rax
        movq    %rsi, %rdi
        iretq

user_entry:                             /* ring 3 */
        call    *%rax
        movq    %rax, %rdi
        .globl  user_trap_return
user_trap_return:
        ud2                             /* -> ud_entry -> back to run_user's caller */

        .globl  user_trap_halt
user_trap_halt:
        ud2                             /* -> ud_entry -> halt forever */

/*
 * #UD entry (vector 6).  A ud2 at user_trap_return/user_trap_halt executed in
 * ring 3 is a request, anything else goes to the generic stub (report+exit).
 * Frame: rip, cs, rflags, rsp, ss (no error code).
 */
        .globl  ud_entry
ud_entry:
        testb   $3, 8(%rsp)
        jz      isr_table + 16 * 6
        pushq   %rax
        leaq    user_trap_return(%rip), %rax
        cmpq    %rax, 8(%rsp)
        je      user_return
        leaq    user_trap_halt(%rip), %rax
        cmpq    %rax, 8(%rsp)
        popq    %rax
        jne     isr_table + 16 * 6
1:      cli
        hlt
        jmp     1b

/* unwind to run_user's caller, %rdi = result */
user_return:
        movl    $SEL_KDATA, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movq    kctx_rsp(%rip), %rsp
        movq    %rdi, %rax
        popfq
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        ret

        .bss
        .p2align 3
kctx_rsp:
        .quad   0

        .section .note.GNU-stack, "", @progbits
