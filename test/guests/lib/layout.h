/* Shared between C and assembly. */
#ifndef GUEST_LAYOUT_H
#define GUEST_LAYOUT_H

#define SEL_KCODE   0x08
#define SEL_KDATA   0x10
#define SEL_UCODE   0x1b    /* GDT index 3, RPL 3 */
#define SEL_UDATA   0x23    /* GDT index 4, RPL 3 */
#define SEL_TSS     0x28
#define SEL_KCODE32 0x38

#define KSTACK_SIZE 0x4000
#define ISTACK_SIZE 0x2000
#define USTACK_SIZE 0x4000

#define EXIT_PORT   0xf4    /* debug-exit: outb(status) ends the VM */
/* Ring 3 gets back to ring 0 with `ud2` at one of two known addresses
 * (user_trap_return, user_trap_halt): KVM-PVM answers `int n` from ring 3
 * with #UD, so software-interrupt gates cannot be used. */

#define STATUS_EXCEPTION 0xee

/* Boot protocols: the entry stub (lib/start_*.S) passes one to guest_start(). */
#define BOOT_PVH        1   /* start_pvh.S: 32-bit, %ebx = hvm_start_info */
#define BOOT_BZIMAGE32  2   /* start_bzimage.S: 32-bit entry (code32_start), %esi = boot_params */
#define BOOT_BZIMAGE64  3   /* start_bzimage.S: 64-bit entry (+0x200), %rsi = boot_params */
#define BOOT_ELF64      4   /* start_elf64.S: 64-bit e_entry, %rsi = boot_params */

#endif
