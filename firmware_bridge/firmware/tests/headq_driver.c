/* Host driver of edgerl_headq over an exported policy.h, for tests/test_headq.py.
 * stdin: one observation per line, "reward terminated truncated v0 v1 ...". stdout: the action
 * sent for each non-terminal observation, then "theta" and the head's parameters (%.9g).
 * argv[1]: fixed exploration rate (-1: the header's schedule), argv[2]: seed. */
#include <stdio.h>
#include <stdlib.h>

#include "../edgerl_headq.h"
#include "policy.h"

static float mem[EDGERL_HEADQ_FLOATS(EDGE_RL_HEAD_IN, EDGE_RL_N_ACTIONS)];
static float trace[EDGERL_HEADQ_TRACE_SIZE];

int main(int argc, char **argv)
{
    static const edgerl_headq_params_t params = EDGERL_HEADQ_PARAMS_FROM_POLICY;
    edgerl_headq_t h;
    float obs[EDGE_RL_OBS_SIZE], reward;
    int terminated, truncated, k;
    unsigned i;
    uint32_t seed = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 1u;
    edgerl_headq_init(&h, &params, EDGE_RL_HEAD_IN, EDGE_RL_N_ACTIONS, EDGE_RL_HEAD_THETA0, mem,
                      EDGERL_HEADQ_TRACE(trace), seed);
    if (argc > 1) h.epsilon = atof(argv[1]);
    while (scanf("%f %d %d", &reward, &terminated, &truncated) == 3) {
        bool done = terminated || truncated;
        for (k = 0; k < EDGE_RL_OBS_SIZE; ++k)
            if (scanf("%f", &obs[k]) != 1) return 1;
        edge_rl_features(obs, edgerl_headq_input(&h));
        if (!done) printf("%u\n", (unsigned)edgerl_headq_act(&h));
        edgerl_headq_learn(&h, reward, done);
    }
    printf("theta %u %u\n", (unsigned)h.updates, (unsigned)h.divergences);
    for (i = 0; i < (unsigned)EDGE_RL_N_ACTIONS * (EDGE_RL_HEAD_IN + 1u); ++i) printf("%.9g\n", h.theta[i]);
    return 0;
}
