/* Instruction counts of one policy.h on the Cortex-M3, for benchmarks/mcu.py.
 *
 * Boot under `qemu-system-arm -icount shift=0`: the virtual clock then advances 1 ns per executed
 * instruction, so the SysTick milliseconds elapsed over N repetitions, times 1e6 / N, are the
 * instructions of one repetition (the 1 kHz SysTick interrupt adds ~20 per million). A loop of
 * exactly 10 million instructions checks that scale first (calibrate_ms, expected 10). Prints one
 * line over semihosting and exits: "bench n=N calibrate_ms=K decide_ms=A features_ms=B learn_ms=C". decide is
 * edge_rl_act on the golden observations; features is edge_rl_features plus the head's forward and
 * action choice; learn adds edgerl_headq_learn (the whole on-device learning step). */
#include <stdio.h>

#include "../edgerl_headq.h"
#include "board.h"

#ifndef POLICY_HEADER
#define POLICY_HEADER "policy.h"
#endif
#include POLICY_HEADER

#ifndef BENCH_N
#define BENCH_N 4000u
#endif

static const float *golden(uint32_t i) { return &EDGE_RL_GOLDEN_OBS[(i % EDGE_RL_GOLDEN_N) * EDGE_RL_OBS_SIZE]; }

/* 5 million iterations of a two-instruction loop (subs, bne) */
static uint32_t time_calibration(void) {
    uint32_t n = 5000000u;
    const uint32_t start = board_millis();
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
    return board_millis() - start;
}

static uint32_t time_decisions(void) {
    volatile int sink = 0;
    const uint32_t start = board_millis();
    for (uint32_t i = 0; i < BENCH_N; ++i) {
        sink += edge_rl_act(golden(i));
    }
    (void)sink;
    return board_millis() - start;
}

#if EDGE_RL_HEAD_LEARNING
static float mem[EDGERL_HEADQ_FLOATS(EDGE_RL_HEAD_IN, EDGE_RL_N_ACTIONS)];
static float trace[EDGERL_HEADQ_TRACE_SIZE];

/* BENCH_N steps of the on-device learner on the golden stream (reward 1 every other step);
 * `learn` false stops after choosing the action: the part the control loop waits for. */
static uint32_t time_learning(bool learn) {
    static const edgerl_headq_params_t params = EDGERL_HEADQ_PARAMS_FROM_POLICY;
    static edgerl_headq_t h;
    volatile int sink = 0;
    edgerl_headq_init(&h, &params, EDGE_RL_HEAD_IN, EDGE_RL_N_ACTIONS, EDGE_RL_HEAD_THETA0, mem,
                      EDGERL_HEADQ_TRACE(trace), 1u);
    const uint32_t start = board_millis();
    for (uint32_t i = 0; i < BENCH_N; ++i) {
        edge_rl_features(golden(i), edgerl_headq_input(&h));
        sink += edgerl_headq_act(&h);
        if (learn) {
            edgerl_headq_learn(&h, (float)(i & 1u), false);
        }
    }
    (void)sink;
    return board_millis() - start;
}
#endif

int main(void) {
    char line[128];
    uint32_t features_ms = 0, learn_ms = 0;
    board_init();
    const uint32_t calibrate_ms = time_calibration();
    const uint32_t decide_ms = time_decisions();
#if EDGE_RL_HEAD_LEARNING
    features_ms = time_learning(false);
    learn_ms = time_learning(true);
#endif
    snprintf(line, sizeof line, "bench n=%lu calibrate_ms=%lu decide_ms=%lu features_ms=%lu learn_ms=%lu\n",
             (unsigned long)BENCH_N, (unsigned long)calibrate_ms, (unsigned long)decide_ms, (unsigned long)features_ms,
             (unsigned long)learn_ms);
    board_print(line);
    board_exit(0);
}
