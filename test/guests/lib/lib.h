/* Freestanding support library for the kindling test guests. */
#ifndef GUEST_LIB_H
#define GUEST_LIB_H

#include <stdint.h>
#include <stddef.h>
#include <stdarg.h>
#include "layout.h"

/* ---- PVH boot ABI (xen/include/public/arch-x86/hvm/start_info.h) ---- */
#define HVM_START_MAGIC 0x336ec578u

struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;      /* version >= 1 */
    uint32_t memmap_entries;    /* version >= 1 */
    uint32_t reserved;
};

struct hvm_modlist_entry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};

struct hvm_memmap_table_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};

/* ---- Linux boot protocol: struct boot_params ("zero page"), lib/bootparam.h ---- */
#include "bootparam.h"

static inline uint8_t bp_u8(const void *bp, unsigned off) { return *((const uint8_t *)bp + off); }
static inline uint16_t bp_u16(const void *bp, unsigned off) { uint16_t v; __builtin_memcpy(&v, (const uint8_t *)bp + off, 2); return v; }
static inline uint32_t bp_u32(const void *bp, unsigned off) { uint32_t v; __builtin_memcpy(&v, (const uint8_t *)bp + off, 4); return v; }
static inline uint64_t bp_u64(const void *bp, unsigned off) { uint64_t v; __builtin_memcpy(&v, (const uint8_t *)bp + off, 8); return v; }

/* ---- what the loader handed over, whatever the protocol (lib/boot.c) ---- */
struct boot_e820 {
    uint64_t addr, size;
    uint32_t type;
};

#define BOOT_E820_MAX 128

struct boot_info {
    unsigned protocol;                      /* BOOT_PVH ... (lib/layout.h) */
    const char *protocol_name;              /* "pvh", "bzimage entry32", "bzimage entry64", "elf64" */
    const struct hvm_start_info *pvh;       /* BOOT_PVH (may be NULL) */
    const uint8_t *zero_page;               /* the others: struct boot_params (may be NULL) */
    const char *cmdline;                    /* never NULL ("" if none) */
    unsigned e820_count;                    /* at most BOOT_E820_MAX */
    struct boot_e820 e820[BOOT_E820_MAX];
    int have_initrd;
    uint64_t initrd_addr, initrd_size;
};

/* Converts start_info / boot_params into a struct boot_info; done by guest_start(). */
const struct boot_info *boot_info_init(unsigned protocol, const void *info);

/* ---- the guest program ---- */
/* Each guest defines guest_main(); returning from it exits with its value. */
int guest_main(const struct boot_info *bi);

/* ---- port I/O ---- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline void mmio_write32(uintptr_t addr, uint32_t v) { *(volatile uint32_t *)addr = v; }
static inline uint32_t mmio_read32(uintptr_t addr) { return *(volatile uint32_t *)addr; }

static inline unsigned cpl(void) { uint16_t cs; __asm__ volatile("mov %%cs, %0" : "=r"(cs)); return cs & 3; }

/* ---- serial (COM1, polled output) ---- */
#define COM1 0x3f8
void serial_init(void);
void serial_putc(char c);
void serial_write(const char *s, size_t n);

/* ---- formatting: %[0][width][l|ll|z](d|i|u|x|X|c|s|p|%) ---- */
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void puts(const char *s);       /* writes s and "\n" */

/* ---- strings ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
/* Parses an unsigned number: decimal, or hex with a 0x prefix (or always hex
 * if base == 16).  Returns the number of characters consumed (0 = error). */
size_t parse_u64(const char *s, size_t n, int base, uint64_t *out);

/* ---- command line: space-separated words, `key=value` or bare `key` ---- */
void cmdline_set(const char *cmdline);     /* done by guest_start() */
const char *cmdline(void);                 /* "" if none */
/* Finds the last word `key=...` (or bare `key`); sets *len to the value length. */
/* The next blank-separated word at or after *p (advancing *p past it) and its length; NULL at the end. */
const char *cmdline_word(const char **p, size_t *len);
const char *cmdline_get(const char *key, size_t *len);
uint64_t cmdline_u64(const char *key, uint64_t dflt);

/* ---- CRC-32/ISO-HDLC (zlib's crc32) ---- */
uint32_t crc32_update(uint32_t crc, const void *buf, size_t n);    /* start with crc = 0 */

/* ---- flood text (hello.flood, console.flood): 64-byte numbered lines (lib/flood.c) ---- */
#define FLOOD_LINE 64
/* Writes bytes [off, off+len) of the flood text into buf. */
void flood_text(char *buf, uint64_t off, size_t len);

/* ---- CPU: IDT, TSS, ring 3, exit ---- */
struct frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;      /* pushed by the CPU */
};
typedef void (*irq_handler_t)(struct frame *f);

/* Installs a handler for vector v (interrupt gate, DPL 0). Exceptions 0-31 are
 * pre-installed and report+exit(0xEE); others are absent until installed. */
void idt_set_handler(unsigned v, irq_handler_t h);

/* Runs fn(arg) in ring 3 (IOPL=3, IF=0) on stack_top (NULL: default user
 * stack); returns fn's result.  fn may use in/out and the serial/printf code. */
uint64_t run_user(uint64_t (*fn)(void *), void *arg, void *stack_top);

/* outb(0xF4, status); if the VM is still running, halt forever. */
void guest_exit(uint8_t status) __attribute__((noreturn));

/* puts(msg), then guest_exit(code): how the test guests report a failure. */
void die(int code, const char *msg) __attribute__((noreturn));

/* 8259 PIC / local APIC helpers (echo) */
void pic_remap(uint8_t master_vec, uint8_t slave_vec, uint8_t master_mask, uint8_t slave_mask);
void pic_eoi(unsigned irq);
#define LAPIC_BASE 0xfee00000u
void lapic_enable_extint(void);

#endif
