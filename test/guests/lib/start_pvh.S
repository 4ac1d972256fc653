/*
 * PVH entry: the image is an ELF with a Xen PVH note.  The loader enters
 * _start32 in 32-bit protected mode, paging off, with %ebx = physical address
 * of struct hvm_start_info.
 */
#include "layout.h"

/* ---- Xen PVH ELF note: XEN_ELFNOTE_PHYS32_ENTRY (18) ---- */
        .section .note.Xen, "a", @note
        .p2align 2
        .long   4                       /* namesz: "Xen\0" */
        .long   8                       /* descsz */
        .long   18                      /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz  "Xen"
        .quad   _start32                /* < 4 GiB, readable as 32 or 64 bits */

        .section .text.entry, "ax"
        .code32
        .globl  _start32
_start32:
        movl    %ebx, %esi              /* struct hvm_start_info * */
        movl    $BOOT_PVH, %edi
        jmp     enter32                 /* lib/entry.S */

        .section .note.GNU-stack, "", @progbits
