/* Cortex-M3 start-up: the vector table, Reset_Handler (.data and .bss set up, then main) and fault
 * handlers that name the fault over semihosting and stop QEMU with a failing exit status. */
#include <stdint.h>
#include <string.h>

#include "board.h"

extern uint32_t __stack_top, __data_start, __data_end, __data_load, __bss_start, __bss_end;
extern int main(void);

void Reset_Handler(void);

void Reset_Handler(void) {
    memcpy(&__data_start, &__data_load, (size_t)((char *)&__data_end - (char *)&__data_start));
    memset(&__bss_start, 0, (size_t)((char *)&__bss_end - (char *)&__bss_start));
    board_exit(main());
}

/* Names the active exception (IPSR) over semihosting and stops. */
__attribute__((noreturn, used)) static void report_fault(void) {
    static const char *const names[] = {"thread", "reset", "NMI", "HardFault", "MemManage", "BusFault", "UsageFault"};
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    ipsr &= 0x1FFu;
    board_fault(ipsr < sizeof names / sizeof names[0] ? names[ipsr] : "unexpected exception");
}

/* Every exception but SysTick. It never returns, so it first moves the stack pointer back to the top:
 * after a stack overflow, not one push may happen on the old one (naked: no compiler prologue). */
__attribute__((naked)) static void Fault_Handler(void) {
    __asm__ volatile("ldr r0, =__stack_top\n\tmsr msp, r0\n\tb report_fault");
}

typedef void (*vector_t)(void);

/* The 16 system exceptions; no peripheral interrupt is enabled, so the table stops at SysTick. */
__attribute__((section(".vectors"), used)) static const vector_t vectors[16] = {
    (vector_t)(uintptr_t)&__stack_top,
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    0,
    0,
    0,
    0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,
    Fault_Handler, /* PendSV */
    SysTick_Handler,
};
