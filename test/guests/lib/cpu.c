#include "lib.h"

struct idt_gate {
    uint16_t off_lo, sel;
    uint8_t ist, type;
    uint16_t off_mid;
    uint32_t off_hi, zero;
} __attribute__((packed));

struct tss {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3, iomap_base;
    uint8_t iomap[8192 + 1];    /* all ports allowed; last byte must be 0xff */
} __attribute__((packed));

struct desc_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

extern char isr_table[], ud_entry[], user_trap_halt[], istack_top[];
extern uint64_t gdt[];

static struct idt_gate idt[256] __attribute__((aligned(16)));
static struct tss tss __attribute__((aligned(16)));
static irq_handler_t handlers[256];

static void set_gate(unsigned v, void *fn, unsigned dpl)
{
    uintptr_t a = (uintptr_t)fn;
    struct idt_gate *g = &idt[v];
    g->off_lo = (uint16_t)a;
    g->sel = SEL_KCODE;
    g->ist = 0;
    g->type = (uint8_t)(0x8e | (dpl << 5));    /* present, 64-bit interrupt gate */
    g->off_mid = (uint16_t)(a >> 16);
    g->off_hi = (uint32_t)(a >> 32);
    g->zero = 0;
}

static void idt_init(void)
{
    for (unsigned v = 0; v < 32; v++)
        set_gate(v, isr_table + 16 * v, 0);
    set_gate(3, isr_table + 16 * 3, 3);     /* #BP: int3 reports from ring 3 too */
    set_gate(6, ud_entry, 0);
    struct desc_ptr p = { sizeof(idt) - 1, (uintptr_t)idt };
    __asm__ volatile("lidt %0" :: "m"(p));
}

static void tss_init(void)
{
    uintptr_t b = (uintptr_t)&tss;
    uint64_t limit = sizeof(tss) - 1;
    tss.rsp[0] = (uintptr_t)istack_top;
    /*
     * Ring 3 runs with IOPL=3, which is enough on hardware VT-x/SVM and TCG.
     * KVM-PVM keeps no IOPL in the guest's RFLAGS; its emulator then checks
     * the TSS I/O permission bitmap, so provide one allowing every port.
     */
    tss.iomap_base = offsetof(struct tss, iomap);
    tss.iomap[8192] = 0xff;
    gdt[SEL_TSS / 8] = (limit & 0xffff) | ((b & 0xffffff) << 16) | (0x89ull << 40) |
                       ((limit >> 16) << 48) | (((b >> 24) & 0xff) << 56);
    gdt[SEL_TSS / 8 + 1] = b >> 32;
    __asm__ volatile("ltr %w0" :: "r"(SEL_TSS));
}

void idt_set_handler(unsigned v, irq_handler_t h)
{
    handlers[v & 0xff] = h;
    set_gate(v & 0xff, isr_table + 16 * (v & 0xff), 0);
}

void isr_dispatch(struct frame *f)
{
    irq_handler_t h = handlers[f->vector & 0xff];
    if (h) {
        h(f);
        return;
    }
    uint64_t cr2;
    __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
    printf("\nunexpected exception: vector=%lu error=0x%lx rip=0x%lx cs=0x%lx rflags=0x%lx rsp=0x%lx cr2=0x%lx\n",
           f->vector, f->error, f->rip, f->cs, f->rflags, f->rsp, cr2);
    guest_exit(STATUS_EXCEPTION);
}

void guest_exit(uint8_t status)
{
    outb(EXIT_PORT, status);
    if (cpl() == 0) {
        for (;;)
            __asm__ volatile("cli; hlt");
    }
    ((void (*)(void))user_trap_halt)();     /* ring 3: halt via #UD */
    __builtin_unreachable();
}

void die(int code, const char *msg)
{
    puts(msg);
    guest_exit((uint8_t)code);
}

/* Called by lib/entry.S in 64-bit mode with the protocol the entry stub
 * (lib/start_*.S) recorded (BOOT_*) and its boot structure (start_info or boot_params). */
void guest_start(unsigned protocol, const void *info)
{
    serial_init();
    idt_init();
    tss_init();
    const struct boot_info *bi = boot_info_init(protocol, info);
    cmdline_set(bi->cmdline);
    guest_exit((uint8_t)guest_main(bi));
}

/* ---- 8259 PIC ---- */
void pic_remap(uint8_t master_vec, uint8_t slave_vec, uint8_t master_mask, uint8_t slave_mask)
{
    outb(0x20, 0x11);           /* ICW1: edge, cascade, ICW4 */
    outb(0xa0, 0x11);
    outb(0x21, master_vec);     /* ICW2: vector base */
    outb(0xa1, slave_vec);
    outb(0x21, 0x04);           /* ICW3: slave on IRQ2 */
    outb(0xa1, 0x02);
    outb(0x21, 0x01);           /* ICW4: 8086 mode */
    outb(0xa1, 0x01);
    outb(0x21, master_mask);    /* OCW1 */
    outb(0xa1, slave_mask);
}

void pic_eoi(unsigned irq)
{
    if (irq >= 8)
        outb(0xa0, 0x20);
    outb(0x20, 0x20);
}

/* ---- local APIC: let the PIC's INTR reach the CPU through LINT0 ---- */
void lapic_enable_extint(void)
{
    mmio_write32(LAPIC_BASE + 0xf0, 0x1ff);     /* SVR: enable, spurious vector 0xff */
    mmio_write32(LAPIC_BASE + 0x350, 0x700);    /* LVT LINT0: ExtINT, unmasked */
}
