/*
 * Plain ELF64 entry (no PVH note): e_entry is entered the way the Linux 64-bit
 * boot protocol enters a vmlinux: long mode, identity-mapped, interrupts off,
 * %rsi = physical address of struct boot_params.
 */
#include "layout.h"

        .section .text.entry, "ax"
        .code64
        .globl  _start64
_start64:
        movl    $BOOT_ELF64, %edi
        jmp     enter64                 /* lib/entry.S */

        .section .note.GNU-stack, "", @progbits
