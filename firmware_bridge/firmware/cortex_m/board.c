/* Board support for QEMU's lm3s6965evb: see board.h. */
#include "board.h"

#define REG(addr) (*(volatile uint32_t *)(addr))

/* PL011 registers and bits */
#define UART_DR(u) REG((u) + 0x000u)
#define UART_FR(u) REG((u) + 0x018u)
#define UART_LCRH(u) REG((u) + 0x02Cu)
#define UART_CR(u) REG((u) + 0x030u)
#define FR_RXFE (1u << 4)
#define FR_TXFF (1u << 5)
#define LCRH_FEN (1u << 4)
#define LCRH_WLEN_8 (3u << 5)
#define CR_UARTEN (1u << 0)
#define CR_TXE (1u << 8)
#define CR_RXE (1u << 9)

/* System control: clock gating of UART0 and UART1 (a no-op under QEMU, needed on silicon) */
#define SYSCTL_RCGC1 REG(0x400FE104u)
#define RCGC1_UART0_UART1 (3u << 0)

/* SysTick (ARMv7-M system timer) */
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define CSR_ENABLE_TICKINT_CORECLK 7u

/* Fault status registers */
#define SCB_CFSR REG(0xE000ED28u)
#define SCB_HFSR REG(0xE000ED2Cu)

static volatile uint32_t millis;

void SysTick_Handler(void) { ++millis; }

static void uart_enable(board_uart_t uart) {
    UART_LCRH(uart) = LCRH_FEN | LCRH_WLEN_8;
    UART_CR(uart) = CR_UARTEN | CR_TXE | CR_RXE;
}

void board_init(void) {
    SYSCTL_RCGC1 |= RCGC1_UART0_UART1;
    uart_enable(BOARD_UART0);
    uart_enable(BOARD_UART1);
    SYST_RVR = BOARD_CPU_HZ / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = CSR_ENABLE_TICKINT_CORECLK;
}

uint32_t board_millis(void) { return millis; /* one aligned word: read atomically */ }

bool board_uart_readable(board_uart_t uart) { return (UART_FR(uart) & FR_RXFE) == 0; }

uint8_t board_uart_get(board_uart_t uart) { return (uint8_t)UART_DR(uart); }

void board_uart_write(board_uart_t uart, const uint8_t *data, size_t len) {
    for (size_t i = 0; i < len; ++i) {
        while (UART_FR(uart) & FR_TXFF) {
        }
        UART_DR(uart) = data[i];
    }
}

/* ---- semihosting: `bkpt 0xab` with the operation in r0 and its argument in r1 ------------------- */

#define SYS_WRITE0 0x04u
#define SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static void semihost(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
}

void board_print(const char *text) { semihost(SYS_WRITE0, text); }

/* SYS_EXIT_EXTENDED: the 32-bit SYS_EXIT carries only "success or not"; this one carries the status. */
void board_exit(int status) {
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    semihost(SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}

static void put_hex(char *out, uint32_t v) {
    for (int i = 7; i >= 0; --i, v >>= 4) out[i] = "0123456789abcdef"[v & 0xFu];
}

void board_fault(const char *what) {
    char regs[] = " CFSR=00000000 HFSR=00000000\n";
    put_hex(regs + 6, SCB_CFSR);
    put_hex(regs + 20, SCB_HFSR);
    board_print("fault: ");
    board_print(what);
    board_print(regs);
    board_exit(128);
}
