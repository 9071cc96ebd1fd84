/* semihost_start.c: lets the host test programs (test_ecal_table.c, test_ecal_link.c) run on an
 * emulated Cortex-M, QEMU's mps2-an386, with newlib's rdimon (stdio, files, argv and exit
 * through semihosting).
 *
 * The vector table starts newlib's _start after setting CCR.UNALIGN_TRP, so every unaligned
 * load or store traps, as it does on a Cortex-M0+; the programs are built for the M0+ instruction
 * set, so neither they nor newlib make such an access on purpose. A fault exits with status 99. */
#include <stdint.h>

#define SCB_CCR (*(volatile uint32_t *)0xE000ED14u)
#define CCR_UNALIGN_TRP (1u << 3)

extern uint32_t __stack_top;
void _start(void);
void _exit(int status);
void semihost_reset(void);
void semihost_fault(void);

void semihost_fault(void)
{
    _exit(99);
}

void semihost_reset(void)
{
    SCB_CCR |= CCR_UNALIGN_TRP;
    _start();
}

typedef union {
    void (*handler)(void);
    uint32_t *stack;
} vector;

__attribute__((section(".vectors"), used)) static const vector vectors[16] = {
    [0] = {.stack = &__stack_top},
    [1] = {.handler = semihost_reset},
    [2] = {.handler = semihost_fault}, /* NMI */
    [3] = {.handler = semihost_fault}, /* HardFault (an M0+ has only this one) */
    [4] = {.handler = semihost_fault}, /* MemManage */
    [5] = {.handler = semihost_fault}, /* BusFault */
    [6] = {.handler = semihost_fault}, /* UsageFault: where an unaligned access lands */
};
