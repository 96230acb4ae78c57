/* Board support for TI's LM3S6965 as QEMU's lm3s6965evb models it: two polled PL011 UARTs, a SysTick
 * millisecond clock and ARM semihosting (text and exit status to the QEMU process). */
#ifndef BOARD_H
#define BOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A UART is the base address of its PL011 register block. */
typedef uintptr_t board_uart_t;
#define BOARD_UART0 ((board_uart_t)0x4000C000u)
#define BOARD_UART1 ((board_uart_t)0x4000D000u)

/* SysTick's clock under QEMU 7.2 (measured, see README.md): the 12.5 MHz system clock at reset. */
#define BOARD_CPU_HZ 12500000u

/* Starts the millisecond clock and enables both UARTs (8N1, FIFOs on). */
void board_init(void);
/* Milliseconds since board_init, wrapping at 2^32. */
uint32_t board_millis(void);

bool board_uart_readable(board_uart_t uart);
/* The next received byte; call only when board_uart_readable() said so. */
uint8_t board_uart_get(board_uart_t uart);
/* Blocks while the transmit FIFO is full. */
void board_uart_write(board_uart_t uart, const uint8_t *data, size_t len);

/* Semihosting: a NUL-terminated text on QEMU's console; the guest's exit status as QEMU's. */
void board_print(const char *text);
__attribute__((noreturn)) void board_exit(int status);
/* Names the fault with its status registers and exits with status 128. */
__attribute__((noreturn)) void board_fault(const char *what);

void SysTick_Handler(void);

#endif /* BOARD_H */
