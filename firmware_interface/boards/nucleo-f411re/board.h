/* board.h: the few STM32F411 registers this example touches (RM0383), the UART transport
 * and the millisecond clock. Addresses are written out rather than taken from ST's CMSIS
 * headers so the example builds with nothing but arm-none-eabi-gcc and newlib. */
#ifndef BOARD_H
#define BOARD_H

#include <stddef.h>
#include <stdint.h>

#define REG(addr) (*(volatile uint32_t *)(addr))

/* Reset and clock control */
#define RCC_AHB1ENR REG(0x40023830u)
#define RCC_APB1ENR REG(0x40023840u)
#define RCC_AHB1ENR_GPIOAEN (1u << 0)
#define RCC_APB1ENR_USART2EN (1u << 17)

/* GPIOA: PA2 = USART2_TX, PA3 = USART2_RX (alternate function 7), wired to the ST-LINK's
 * virtual COM port on the NUCLEO-F411RE */
#define GPIOA_MODER REG(0x40020000u)
#define GPIOA_AFRL REG(0x40020020u)

/* USART2 */
#define USART2_SR REG(0x40004400u)
#define USART2_DR REG(0x40004404u)
#define USART2_BRR REG(0x40004408u)
#define USART2_CR1 REG(0x4000440Cu)
#define USART_SR_ORE (1u << 3)
#define USART_SR_RXNE (1u << 5)
#define USART_SR_TXE (1u << 7)
#define USART_CR1_RE (1u << 2)
#define USART_CR1_TE (1u << 3)
#define USART_CR1_RXNEIE (1u << 5)
#define USART_CR1_TXEIE (1u << 7)
#define USART_CR1_UE (1u << 13)
#define USART2_IRQN 38u

/* Cortex-M4 core peripherals */
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER(n) REG(0xE000E100u + 4u * (n))
#define SCB_CPACR REG(0xE000ED88u)

/* After reset the core runs from the 16 MHz internal RC oscillator (HSI), and so do the
 * buses; this example keeps that clock. */
#define CORE_HZ 16000000u
#define UART_BAUD 115200u

void SysTick_Handler(void);
void USART2_IRQHandler(void);

/* The transport: the only part to replace for another UART, or for USB CDC (see README.md). */
void uart_init(void);
/* Queues all n bytes for sending and returns 0, or queues nothing and returns -1. */
int uart_write(const uint8_t *data, size_t n);
/* Bytes uart_write accepts right now. */
size_t uart_room(void);
/* Moves up to cap received bytes into data; returns how many. */
size_t uart_read(uint8_t *data, size_t cap);
/* Received bytes lost because the receive ring was full. */
uint32_t uart_rx_lost(void);

void clock_init(void);
uint32_t millis(void);

#endif /* BOARD_H */
