/* startup.c: vector table and reset handler of the STM32F411RE (Cortex-M4F), bare metal.
 *
 * The table sits in .isr_vector, which the linker script places at the start of flash:
 * word 0 is the initial stack pointer, word 1 the reset handler, then the 14 other core
 * exceptions and the chip's 86 interrupts (RM0383, table 37). Only SysTick and USART2 are
 * used. The core's fault vectors trap in Default_Handler, where a debugger shows which one
 * fired (the active exception number is in ICSR); the other interrupts are never enabled in
 * the NVIC, and their slots (like the reserved ones) hold 0. */
#include <stdint.h>

#include "board.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

void Reset_Handler(void);
void Default_Handler(void);

void Default_Handler(void)
{
    for (;;) {
    }
}

/* An entry is either the stack address or a handler; a union keeps both ISO C. */
typedef union {
    void (*handler)(void);
    uint32_t *stack;
} vector;

#define IRQ(n) (16 + (n))
#define N_VECTORS (16 + 86)

__attribute__((section(".isr_vector"), used)) static const vector vectors[N_VECTORS] = {
    [0] = {.stack = &_estack},
    [1] = {.handler = Reset_Handler},
    [2] = {.handler = Default_Handler},  /* NMI */
    [3] = {.handler = Default_Handler},  /* HardFault */
    [4] = {.handler = Default_Handler},  /* MemManage */
    [5] = {.handler = Default_Handler},  /* BusFault */
    [6] = {.handler = Default_Handler},  /* UsageFault */
    [11] = {.handler = Default_Handler}, /* SVCall */
    [12] = {.handler = Default_Handler}, /* DebugMonitor */
    [14] = {.handler = Default_Handler}, /* PendSV */
    [15] = {.handler = SysTick_Handler},
    [IRQ(38)] = {.handler = USART2_IRQHandler},
};

void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst;
    /* Grant CP10/CP11 (the FPU) before any floating-point instruction: the code is built
     * with -mfloat-abi=hard, and an FPU instruction with the FPU off is a UsageFault. */
    SCB_CPACR |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    for (dst = &_sdata; dst < &_edata;) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
    main();
    for (;;) {
    }
}
