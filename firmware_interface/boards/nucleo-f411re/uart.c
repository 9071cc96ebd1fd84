/* uart.c: USART2 at 115200 8N1, interrupt-driven, with a receive ring and a transmit ring.
 *
 * The interrupt handler moves received bytes into rx_ring and feeds the data register
 * from tx_ring. The receive ring has one writer per index (head: the interrupt, tail: the
 * main loop) and 16-bit aligned stores are atomic on the Cortex-M4, so it needs no lock; the
 * transmit ring's tail and CR1 are also touched by the main loop (tx_pump), with interrupts off. */
#include "board.h"

#define RX_SIZE 512u  /* powers of two */
#define TX_SIZE 2048u /* several frames of the negotiated payload: a whole sample queues at once */

static volatile uint8_t rx_ring[RX_SIZE], tx_ring[TX_SIZE];
static volatile uint16_t rx_head, rx_tail, tx_head, tx_tail;
static volatile uint32_t rx_lost;

void uart_init(void)
{
    RCC_AHB1ENR |= RCC_AHB1ENR_GPIOAEN;
    RCC_APB1ENR |= RCC_APB1ENR_USART2EN;
    GPIOA_MODER = (GPIOA_MODER & ~(0xFu << 4)) | (0xAu << 4);      /* PA2, PA3: alternate function */
    GPIOA_AFRL = (GPIOA_AFRL & ~(0xFFu << 8)) | (0x77u << 8);      /* AF7: USART2 */
    USART2_BRR = (CORE_HZ + UART_BAUD / 2u) / UART_BAUD;           /* 16x oversampling: BRR = f / baud */
    USART2_CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE | USART_CR1_RXNEIE;
    NVIC_ISER(USART2_IRQN / 32u) = 1u << (USART2_IRQN % 32u);
}

/* Moves queued bytes into the data register while it is free; call with interrupts off.
 * The TXE interrupt calls it on hardware, where the register frees one byte time after each
 * write; uart_write and uart_read call it too, which changes nothing there but drains the
 * ring under QEMU 7.2, whose USART model keeps TXE set and raises no TXE interrupt. */
static void tx_pump(void)
{
    while (tx_tail != tx_head && (USART2_SR & USART_SR_TXE)) {
        USART2_DR = tx_ring[tx_tail % TX_SIZE];
        tx_tail++;
    }
    if (tx_tail == tx_head) {
        USART2_CR1 &= ~USART_CR1_TXEIE;
    } else {
        USART2_CR1 |= USART_CR1_TXEIE;
    }
}

void USART2_IRQHandler(void)
{
    uint32_t sr = USART2_SR;
    if (sr & (USART_SR_RXNE | USART_SR_ORE)) {
        uint8_t byte = (uint8_t)USART2_DR; /* reading SR then DR also clears an overrun */
        if ((uint16_t)(rx_head - rx_tail) < RX_SIZE) {
            rx_ring[rx_head % RX_SIZE] = byte;
            rx_head++;
        } else {
            rx_lost++;
        }
    }
    if ((USART2_CR1 & USART_CR1_TXEIE) && (sr & USART_SR_TXE)) {
        tx_pump();
    }
}

static void tx_pump_main(void)
{
    __asm__ volatile("cpsid i" ::: "memory");
    tx_pump();
    __asm__ volatile("cpsie i" ::: "memory");
}

size_t uart_room(void)
{
    return TX_SIZE - (uint16_t)(tx_head - tx_tail);
}

int uart_write(const uint8_t *data, size_t n)
{
    size_t i;
    if (n > uart_room()) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        tx_ring[(uint16_t)(tx_head + i) % TX_SIZE] = data[i];
    }
    tx_head = (uint16_t)(tx_head + n);
    tx_pump_main();
    return 0;
}

size_t uart_read(uint8_t *data, size_t cap)
{
    size_t n = 0;
    tx_pump_main();
    while (n < cap && rx_tail != rx_head) {
        data[n++] = rx_ring[rx_tail % RX_SIZE];
        rx_tail++;
    }
    return n;
}

uint32_t uart_rx_lost(void)
{
    return rx_lost;
}
