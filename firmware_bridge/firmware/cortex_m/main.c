/* edge-rl inference firmware for QEMU's lm3s6965evb (Cortex-M3): an exported policy.h behind the edgerl
 * wire protocol. Built once per policy (Makefile: POLICY=path/to/policy.h).
 *
 * The *plant* is the environment: it sends OBS frames and expects one ACTION per non-terminal OBS
 * (a terminal OBS ends the episode; the plant's next OBS starts the next one). CONFIG `mode` says
 * who decides:
 *   local (0, at boot): the plant is on UART0 and the policy in this image answers;
 *   remote (1): the plant is on UART1; UART0 is an ordinary edgerl device link to a host daemon,
 *               which gets each OBS relayed and whose ACTION (or the deadman's safe action) answers.
 * At boot the golden self-test runs; if it fails, the device says so and never acts from the policy.
 * In local mode, CONFIG `learn` 1 adapts the policy's Q head on the device (edgerl_headq.h: stream
 * Q(lambda) over the frozen body) from the plant's rewards; the ACTION always goes out before the
 * learning step. `learn` 0 returns to the policy as exported. `epsilon` fixes the exploration rate
 * (-1: the header's schedule), `seed` the exploration draws of the next `learn` 1.
 */
#include <math.h>
#include <string.h>

#include "../edgerl.h"
#include "../edgerl_headq.h"
#include "board.h"
#include "plant.h"
#include "relay.h"

#ifndef POLICY_HEADER
#define POLICY_HEADER "policy.h"
#endif
#include POLICY_HEADER

#define DEVICE_ID "cortex-m3"
#define HEARTBEAT_MS 100u
/* How long a relayed OBS waits for the host's ACTION before the plant gets edgerl_device_decide's. */
#ifndef DEFAULT_DEADLINE_MS
#define DEFAULT_DEADLINE_MS 50u
#endif

typedef enum { MODE_LOCAL = 0, MODE_REMOTE = 1 } run_mode_t;

static const choice_t SAFE_CHOICE = {EDGE_RL_SAFE_ACTION, true};

/* This device as both links describe it, and the host session's transmit buffer (sized for our OBS). */
static edgerl_device_config_t device;
static uint8_t host_tx[EDGERL_DEVICE_TX_SIZE(EDGERL_OBS_F32_PAYLOAD(EDGE_RL_OBS_SIZE))];

#if EDGE_RL_HEAD_LEARNING
/* On-device learning (local mode): the learner and its static memory. */
static struct {
    bool on;
    float epsilon; /* < 0: the schedule */
    uint32_t seed;
} learner = {.epsilon = -1.0f, .seed = 1u};
static edgerl_headq_t head; /* apart from the initialised settings: zeroed RAM costs no flash */
static float learner_mem[EDGERL_HEADQ_FLOATS(EDGE_RL_HEAD_IN, EDGE_RL_N_ACTIONS)];
static float learner_trace[EDGERL_HEADQ_TRACE_SIZE];
#endif

static run_mode_t mode = MODE_LOCAL;
static uint32_t deadline_ms = DEFAULT_DEADLINE_MS;
static int self_test_failures;
/* "self-test: 3 of 64 golden actions differ", or empty when it passed */
static char self_test_text[EDGERL_MAX_ERROR_TEXT + 1];

/* ---- text without stdio ----------------------------------------------------------------------- */

/* Copies `text` to `at` without its NUL; returns the end. */
static char *append(char *at, const char *text) {
    while (*text) {
        *at++ = *text++;
    }
    return at;
}

static char *append_uint(char *at, unsigned v) {
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10u);
    } while ((v /= 10u) != 0);
    while (n > 0) {
        *at++ = digits[--n];
    }
    return at;
}

/* Our HELLO, followed by the self-test's complaint when it failed. */
static void plant_announce(void) {
    plant_send_hello(&device);
    if (self_test_failures != 0) {
        plant_send_error(EDGERL_ERR_SELF_TEST_FAILED, self_test_text);
    }
}

/* ---- deciding ------------------------------------------------------------------------------------ */

/* Whether the policy may act on `x`: it passed its self-test and every value is finite. */
static bool usable(const float *x) {
    if (self_test_failures != 0) {
        return false;
    }
    for (unsigned k = 0; k < EDGE_RL_OBS_SIZE; ++k) {
        if (!isfinite(x[k])) {
            return false;
        }
    }
    return true;
}

static choice_t act_locally(const float *x) {
    return usable(x) ? (choice_t){(uint16_t)edge_rl_act(x), false} : SAFE_CHOICE;
}

/* An observation the learner does not see (wrong size, non-finite, another mode) ends its chain. */
static void break_learning_chain(void) {
#if EDGE_RL_HEAD_LEARNING
    edgerl_headq_forget(&head);
#endif
}

#if EDGE_RL_HEAD_LEARNING
/* Local mode with learning: the adapted head chooses, the ACTION goes out, then the transition this
 * OBS completes is learnt. A non-finite observation gets the safe action and breaks the chain. */
static void act_and_learn(uint16_t seq, const float *x, const edgerl_obs_t *obs) {
    const bool terminal = obs->terminated || obs->truncated;
    if (!usable(x)) {
        break_learning_chain();
        if (!terminal) {
            plant_send_action(seq, SAFE_CHOICE);
        }
        return;
    }
    edge_rl_features(x, edgerl_headq_input(&head));
    if (!terminal) {
        plant_send_action(seq, (choice_t){edgerl_headq_act(&head), false});
    }
    edgerl_headq_learn(&head, obs->reward, terminal);
}
#endif

static void on_plant_obs(uint16_t seq, const edgerl_obs_t *obs) {
    const bool terminal = obs->terminated || obs->truncated;
    if (obs->count != EDGE_RL_OBS_SIZE) {
        plant_send_error(EDGERL_ERR_INCOMPATIBLE, "observation size differs from the policy's");
        break_learning_chain();
        if (!terminal) {
            plant_send_action(seq, SAFE_CHOICE);
        }
        return;
    }
    float x[EDGE_RL_OBS_SIZE];
    for (uint16_t k = 0; k < EDGE_RL_OBS_SIZE; ++k) {
        x[k] = edgerl_obs_value(obs, k);
    }
    choice_t choice = SAFE_CHOICE;
#if EDGE_RL_HEAD_LEARNING
    if (mode == MODE_LOCAL && learner.on) {
        act_and_learn(seq, x, obs);
        return;
    }
#endif
    if (mode == MODE_REMOTE) {
        const edgerl_decision_t d = relay(x, obs, deadline_ms); /* terminal OBS too: the host learns from them */
        choice = (choice_t){d.action, d.reason != EDGERL_REASON_POLICY};
    } else if (!terminal) {
        choice = act_locally(x);
    }
    if (!terminal) {
        plant_send_action(seq, choice);
    }
}

/* ---- CONFIG -------------------------------------------------------------------------------------- */

static void set_mode(float value) {
    const run_mode_t wanted = (run_mode_t)value;
    if (wanted == mode) {
        return;
    }
    mode = wanted;
    break_learning_chain(); /* the host acted meanwhile: no transition spans the change */
    if (mode == MODE_REMOTE) {
        relay_start(&device);
        plant_attach(BOARD_UART1);
    } else {
        plant_attach(BOARD_UART0);
    }
}

static void set_deadline_ms(float value) { deadline_ms = (uint32_t)value; }

#if EDGE_RL_HEAD_LEARNING
/* 1 starts from the exported head (again, if it was learning); 0 acts from the exported policy. */
static void set_learn(float value) {
    static const edgerl_headq_params_t params = EDGERL_HEADQ_PARAMS_FROM_POLICY;
    learner.on = value != 0.0f && edgerl_headq_init(&head, &params, EDGE_RL_HEAD_IN, EDGE_RL_N_ACTIONS,
                                                    EDGE_RL_HEAD_THETA0, learner_mem,
                                                    EDGERL_HEADQ_TRACE(learner_trace), learner.seed);
    head.epsilon = learner.epsilon;
}

static void set_epsilon(float value) {
    learner.epsilon = value < 0.0f ? -1.0f : value;
    head.epsilon = learner.epsilon;
}

static void set_seed(float value) { learner.seed = (uint32_t)value; }
#endif

/* Keys the plant may set, with their ranges (the learning keys only when the policy can learn). */
static const struct {
    const char *key;
    float min, max;
    bool integral;
    void (*apply)(float value);
} CONFIG_KEYS[] = {
    {"mode", 0.0f, 1.0f, true, set_mode},
    {"deadline_ms", 1.0f, 1000.0f, true, set_deadline_ms},
#if EDGE_RL_HEAD_LEARNING
    {"learn", 0.0f, 1.0f, true, set_learn},
    {"epsilon", -1.0f, 1.0f, false, set_epsilon},
    {"seed", 0.0f, 16777216.0f, true, set_seed},
#endif
};

static void on_plant_config(const edgerl_config_t *cfg) {
    for (size_t i = 0; i < sizeof CONFIG_KEYS / sizeof CONFIG_KEYS[0]; ++i) {
        const char *key = CONFIG_KEYS[i].key;
        if (strlen(key) != cfg->key_len || memcmp(key, cfg->key, cfg->key_len) != 0) {
            continue;
        }
        const float v = cfg->value;
        const bool in_range = isfinite(v) && v >= CONFIG_KEYS[i].min && v <= CONFIG_KEYS[i].max;
        if (!in_range || (CONFIG_KEYS[i].integral && v != (float)(int32_t)v)) {
            plant_send_config_error(EDGERL_ERR_BAD_CONFIG_VALUE, "bad value for config key ", cfg);
        } else {
            CONFIG_KEYS[i].apply(v);
        }
        return;
    }
    plant_send_config_error(EDGERL_ERR_UNKNOWN_CONFIG, "unknown config key ", cfg);
}

/* ---- start-up and the main loop ------------------------------------------------------------------ */

static void on_plant_message(const edgerl_msg_t *msg) {
    switch (msg->type) {
    case EDGERL_HELLO:
    case EDGERL_FOREIGN_HELLO:
        if (msg->flags & EDGERL_FLAG_HELLO_REPLY_REQUESTED) {
            plant_announce();
        }
        break;
    case EDGERL_OBS:
        on_plant_obs(msg->seq, &msg->u.obs);
        break;
    case EDGERL_CONFIG:
        on_plant_config(&msg->u.config);
        break;
    default:
        break; /* HEARTBEAT, RESET, ACTION, ERROR: nothing for the controller to do */
    }
}

static void run_self_test(void) {
    self_test_failures = edge_rl_self_test();
    if (self_test_failures != 0) {
        char *at = append(self_test_text, "self-test: ");
        at = append_uint(at, (unsigned)self_test_failures);
        at = append(at, " of ");
        at = append_uint(at, EDGE_RL_GOLDEN_N);
        *append(at, " golden actions differ") = '\0';
    }
}

static void describe_device(void) {
    edgerl_device_config_t *cfg = &device;
    edgerl_device_config_init(cfg);
    cfg->device_id = DEVICE_ID;
    cfg->obs_shape[0] = EDGE_RL_OBS_SIZE;
    cfg->obs_ndim = 1;
    cfg->n_actions = EDGE_RL_N_ACTIONS;
    cfg->safe_action = EDGE_RL_SAFE_ACTION;
    cfg->heartbeat_ms = HEARTBEAT_MS;
    cfg->capabilities = EDGERL_CAP_CONFIG | EDGERL_CAP_DEADMAN | EDGERL_CAP_POLICY |
                        (self_test_failures == 0 ? EDGERL_CAP_SELF_TEST_PASSED : 0u);
    cfg->tx_buf = host_tx;
    cfg->tx_cap = sizeof host_tx;
}

int main(void) {
    board_init();
    run_self_test();
    describe_device();
    plant_attach(BOARD_UART0);
    plant_announce();
    for (;;) {
        plant_poll(on_plant_message);
        if (mode == MODE_REMOTE) {
            relay_poll();
        }
    }
}
