/* edgerl_headq: stream Q(lambda) on a float linear Q head over a frozen body (C99, no allocation).
 *
 * The device-side twin of `edge_rl.stream`'s head mode (`HeadStreamQ`): a microcontroller keeps its
 * quantized body as exported and adapts a float32 head [W | b] (one row per action) on the body's
 * features, one transition at a time, with ObGD's bounded step and an accumulating trace
 * (Elsayed, Vasan & Mahmood 2024). An exported `policy.h` with EDGE_RL_HEAD_LEARNING 1 supplies the
 * features function, the initial head and every setting (`EDGERL_HEADQ_PARAMS_FROM_POLICY`).
 *
 * One difference of order, on purpose: the action is chosen from the head as it is BEFORE the
 * update the same observation completes, so the ACTION goes out first and learning follows (the
 * control loop never waits for learning). The update itself is the numpy learner's `behave` step
 * exactly: the TD error and the trace cut use the head after the previous update.
 *
 * Per observation (features of it written into edgerl_headq_input() first):
 *     if (!done) { action = edgerl_headq_act(&h); send(action); }
 *     edgerl_headq_learn(&h, reward, done);
 * Arithmetic mirrors numpy's: float32 parameters, trace and products; the TD error, target, gamma
 * and ObGD's step size in double. Build with -ffp-contract=off (GCC's -std=c99 implies it, clang
 * does not): a fused multiply-add rounds once where numpy rounds twice.
 */
#ifndef EDGERL_HEADQ_H
#define EDGERL_HEADQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double gamma, kappa, lr;
    float decay; /* float32(gamma * lambda): the trace's decay, rounded as numpy stores it */
    double eps_start, eps_end;
    uint32_t eps_decay_steps;
} edgerl_headq_params_t;

/* The settings an exported policy.h (EDGE_RL_HEAD_LEARNING 1) records. */
#define EDGERL_HEADQ_PARAMS_FROM_POLICY                                                                     \
    {EDGE_RL_HEAD_GAMMA,     EDGE_RL_HEAD_KAPPA,   EDGE_RL_HEAD_LR, EDGE_RL_HEAD_DECAY, EDGE_RL_HEAD_EPS_START, \
     EDGE_RL_HEAD_EPS_END, EDGE_RL_HEAD_EPS_DECAY_STEPS}

/* Floats of static memory a learner needs: the head, two feature vectors, two Q vectors. */
#define EDGERL_HEADQ_FLOATS(n_in, n_actions) ((n_actions) * ((n_in) + 1u) + 2u * ((n_in) + 1u) + 2u * (n_actions))
/* and, when gamma * lambda > 0 (policy.h: EDGE_RL_HEAD_TRACED), the trace: as many floats as the head.
 * With lambda 0 the trace is the last gradient, one row: no memory, and one row's work per update. */
#define EDGERL_HEADQ_TRACE_FLOATS(n_in, n_actions) ((n_actions) * ((n_in) + 1u))
/* The trace buffer for an exported policy.h (one float, unused, when it needs none) and init's argument:
 *     static float trace[EDGERL_HEADQ_TRACE_SIZE];  ...  edgerl_headq_init(..., EDGERL_HEADQ_TRACE(trace), seed) */
#define EDGERL_HEADQ_TRACE_SIZE (EDGE_RL_HEAD_TRACED ? EDGERL_HEADQ_TRACE_FLOATS(EDGE_RL_HEAD_IN, EDGE_RL_N_ACTIONS) : 1u)
#define EDGERL_HEADQ_TRACE(buffer) (EDGE_RL_HEAD_TRACED ? (buffer) : NULL)

typedef struct {
    edgerl_headq_params_t p;
    uint16_t n_in, n_actions;
    const float *theta0; /* the deployed head: restored when an update diverges */
    float *theta;        /* n_actions rows [W | b] of n_in + 1 */
    float *trace;        /* same layout; NULL without a trace (decay 0) */
    float *x, *x_next;   /* features with their trailing 1: the state acted in, the newest one */
    float *q, *q_next;   /* Q of x (after the last update), Q of x_next (before the next one) */
    double epsilon;      /* < 0: the schedule; otherwise this fixed exploration rate */
    uint32_t rng;
    bool pending;         /* `action` was taken in x and its transition is not learnt yet */
    uint16_t action;      /* taken in x */
    uint16_t next_action; /* chosen for x_next by act() */
    bool nongreedy;
    uint32_t steps;       /* actions chosen (the exploration schedule's clock; stops at 2^32 - 1) */
    uint32_t updates;     /* transitions learnt */
    uint32_t divergences; /* updates that made a Q-value non-finite: the head was reset */
} edgerl_headq_t;

/* `mem`: EDGERL_HEADQ_FLOATS(n_in, n_actions) floats; `trace`: EDGERL_HEADQ_TRACE_FLOATS of them, or
 * NULL when p->decay is 0; `theta0`: n_actions * (n_in + 1) floats. False (nothing set) for no
 * actions, n_in 65535 or more, or no trace where the settings need one. */
bool edgerl_headq_init(edgerl_headq_t *h, const edgerl_headq_params_t *p, uint16_t n_in, uint16_t n_actions,
                       const float *theta0, float *mem, float *trace, uint32_t seed);
/* Where the caller writes the features (n_in floats) of each new observation. */
float *edgerl_headq_input(edgerl_headq_t *h);
/* Epsilon-greedy action on the input's features, from the head as it is now; counts a step. */
uint16_t edgerl_headq_act(edgerl_headq_t *h);
/* Learn the transition the input completes (if an action is pending), then make it the current
 * state: act() must have been called on it unless `done`. A non-finite reward drops that one
 * transition (and the trace); an update that makes a Q-value non-finite restores the deployed head. */
void edgerl_headq_learn(edgerl_headq_t *h, float reward, bool done);
/* Drop the pending transition and the trace (a lost or invalid observation breaks the chain). */
void edgerl_headq_forget(edgerl_headq_t *h);
/* The current exploration rate. */
double edgerl_headq_epsilon(const edgerl_headq_t *h);

#ifdef __cplusplus
}
#endif

#endif /* EDGERL_HEADQ_H */
