/* antijam_device: a simulated AntiJam radio speaking the edge-rl protocol over a serial line.
 *
 * It mirrors edge_rl/envs/antijam.py (8 channels, 4 scans of history by default, the five jammer kinds; its own
 * random numbers, so trajectories differ from the Python environment's) and runs the device side of
 * the session with edgerl: HELLO on start, one OBS per slot, the latest valid ACTION applied, the safe
 * action (channel 0) under the deadman or a version mismatch. Every applied action is logged with
 * its slot and reason; the counters are logged at exit (SIGINT/SIGTERM, --steps, or the link closing).
 * --switch-at changes the jammer mid-run (a scripted shift); --window logs the true delivery rate.
 *
 *   antijam_device [options] [DEVICE|-]     DEVICE: a tty put in raw mode; - (default): stdin/stdout
 */
#define _POSIX_C_SOURCE 200809L

#include "../edgerl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* ---- AntiJam dynamics (defaults of AntiJamEnv, history 8) --------------------------------------------- */

#define N_CHANNELS 8
#define MAX_HISTORY 8                                /* --history: scans in the observation, 1..8 */
#define OBS_SIZE(history) (((history) + 1) * N_CHANNELS) /* newest scan first, then older ones, one-hot channel */
#define MAX_OBS_SIZE OBS_SIZE(MAX_HISTORY)
#define EPISODE_STEPS 100                       /* the registered TimeLimit */
#define SAFE_CHANNEL 0                          /* AntiJamEnv.safe_action: the home channel */
#define JAM_POWER 0.9
#define FLOOR_POWER 0.1
#define WIDTH 3
#define SWEEP_WIDTH 3
#define SWEEP_SPEED 2
#define REACTIVE_WIDTH 3 /* reactive_delay is 1: the jammer follows the channel used one slot ago */
#define SWITCH_EVERY 25
#define HOP_COST 0.05
#define SENSE_NOISE 0.05
#define N_BASE_KINDS 4 /* the kinds a switching jammer cycles through */

typedef enum { JAM_CONSTANT, JAM_RANDOM, JAM_SWEEPING, JAM_REACTIVE, JAM_SWITCHING } jammer_t;
static const char *const JAMMER_NAMES[] = {"constant", "random", "sweeping", "reactive", "switching"};

typedef struct {
    uint64_t state; /* splitmix64 */
} rng_t;

static uint64_t rng_next(rng_t *rng)
{
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1]: safe for log(). */
static double rng_unit(rng_t *rng) { return (double)((rng_next(rng) >> 11) + 1) / 9007199254740992.0; }

static int rng_below(rng_t *rng, int n) { return (int)(rng_next(rng) % (uint64_t)n); }

static double rng_normal(rng_t *rng) /* Box-Muller */
{
    const double r = sqrt(-2.0 * log(rng_unit(rng)));
    return r * cos(6.283185307179586 * rng_unit(rng));
}

static void rng_shuffle(rng_t *rng, int *items, int n)
{
    int i;
    for (i = n - 1; i > 0; i--) {
        const int j = rng_below(rng, i + 1);
        const int tmp = items[i];
        items[i] = items[j];
        items[j] = tmp;
    }
}

typedef struct {
    jammer_t jammer;
    rng_t rng;
    float frames[MAX_HISTORY][N_CHANNELS];
    int history, channel, const_start, sweep_pos, used_last, t;
    int schedule[N_BASE_KINDS];
    int episode_step;
} env_t;

static jammer_t active_kind(const env_t *env)
{
    if (env->jammer != JAM_SWITCHING) {
        return env->jammer;
    }
    return (jammer_t)env->schedule[(env->t / SWITCH_EVERY) % N_BASE_KINDS];
}

/* `width` contiguous channels from `start`, wrapping. */
static void band(bool mask[N_CHANNELS], int start, int width)
{
    int ch;
    for (ch = 0; ch < N_CHANNELS; ch++) {
        mask[ch] = ((ch - start) % N_CHANNELS + N_CHANNELS) % N_CHANNELS < width;
    }
}

/* The jammed channels of this slot; the sweeper moves every slot, whichever kind is active. */
static void jam_mask(env_t *env, jammer_t kind, bool mask[N_CHANNELS])
{
    int order[N_CHANNELS], ch;
    switch (kind) {
    case JAM_CONSTANT:
        band(mask, env->const_start, WIDTH);
        break;
    case JAM_RANDOM:
        for (ch = 0; ch < N_CHANNELS; ch++) {
            order[ch] = ch;
            mask[ch] = false;
        }
        rng_shuffle(&env->rng, order, N_CHANNELS);
        for (ch = 0; ch < WIDTH; ch++) {
            mask[order[ch]] = true;
        }
        break;
    case JAM_SWEEPING:
        band(mask, env->sweep_pos, SWEEP_WIDTH);
        break;
    default: /* reactive */
        band(mask, env->used_last - REACTIVE_WIDTH / 2, REACTIVE_WIDTH);
        break;
    }
    env->sweep_pos = (env->sweep_pos + SWEEP_SPEED) % N_CHANNELS;
}

/* One noisy spectral scan pushed into the history, newest first. */
static void sense(env_t *env, const bool mask[N_CHANNELS])
{
    int ch;
    memmove(env->frames[1], env->frames[0], (size_t)(env->history - 1) * sizeof env->frames[0]);
    for (ch = 0; ch < N_CHANNELS; ch++) {
        const double power = FLOOR_POWER + (JAM_POWER - FLOOR_POWER) * mask[ch] + SENSE_NOISE * rng_normal(&env->rng);
        env->frames[0][ch] = (float)(power < 0.0 ? 0.0 : power > 1.0 ? 1.0 : power);
    }
}

static void env_reset(env_t *env)
{
    bool mask[N_CHANNELS];
    int i;
    env->channel = rng_below(&env->rng, N_CHANNELS);
    env->const_start = rng_below(&env->rng, N_CHANNELS);
    env->sweep_pos = rng_below(&env->rng, N_CHANNELS);
    for (i = 0; i < N_BASE_KINDS; i++) {
        env->schedule[i] = i;
    }
    rng_shuffle(&env->rng, env->schedule, N_BASE_KINDS);
    env->used_last = env->channel;
    env->t = 0;
    env->episode_step = 0;
    memset(env->frames, 0, sizeof env->frames);
    for (i = 0; i < env->history; i++) { /* the jammer ran before the episode: the first scan history is full */
        jam_mask(env, active_kind(env), mask);
        sense(env, mask);
    }
}

/* Transmit on `action` for one slot; the reward is 1 if the packet got through, minus the hop cost. */
static double env_step(env_t *env, int action, bool *delivered)
{
    bool mask[N_CHANNELS];
    double reward;
    jam_mask(env, active_kind(env), mask);
    *delivered = !mask[action];
    reward = (*delivered ? 1.0 : 0.0) - (action != env->channel ? HOP_COST : 0.0);
    sense(env, mask);
    env->used_last = action;
    env->channel = action;
    env->t++;
    env->episode_step++;
    return reward;
}

static void env_obs(const env_t *env, float obs[MAX_OBS_SIZE])
{
    int ch;
    memcpy(obs, env->frames, (size_t)env->history * sizeof env->frames[0]);
    for (ch = 0; ch < N_CHANNELS; ch++) {
        obs[env->history * N_CHANNELS + ch] = ch == env->channel ? 1.0f : 0.0f;
    }
}

/* ---- options ---------------------------------------------------------------------------------------------- */

typedef struct {
    uint32_t period_ms, valid_timeout_ms, host_timeout_ms, major, schema_hash, history;
    uint64_t seed, steps;  /* steps 0: until a signal */
    uint64_t switch_at;    /* the slot from which `then` jams; 0: never */
    uint64_t window;       /* slots per logged window of true delivery; 0: none */
    jammer_t jammer, then;
    bool then_given;
    const char *log_path, *device;
} options_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: antijam_device [options] [DEVICE|-]\n"
            "  --period-ms N          slot period (default 10)\n"
            "  --valid-timeout-ms N   cap on an ACTION's validity (default 1000)\n"
            "  --host-timeout-ms N    host silence that trips the deadman (default 500)\n"
            "  --seed N               environment seed (default 0)\n"
            "  --steps N              slots to run, 0 = until SIGINT/SIGTERM (default 0)\n"
            "  --jammer KIND          constant|random|sweeping|reactive|switching (default sweeping)\n"
            "  --switch-at N          from slot N on (0-based, counted over episodes) --then jams (default 0 = never)\n"
            "  --then KIND            the jammer after --switch-at, a kind as --jammer (required with --switch-at)\n"
            "  --window N             log the true delivery rate of every N slots (default 0 = no window lines)\n"
            "  --history N            scans in the observation, 1-8: (N + 1) x 8 floats (default 4, as AntiJam-v0)\n"
            "  --major N              protocol major to announce (mismatch tests; default %u)\n"
            "  --schema-hash HEX      schema hash to announce (mismatch tests; default %08lx)\n"
            "  --log PATH             log file (default stderr)\n",
            EDGERL_MAJOR, (unsigned long)EDGERL_SCHEMA_HASH);
}

static bool parse_number(const char *text, int base, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long value;
    errno = 0;
    value = strtoull(text, &end, base);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || value > max) {
        return false;
    }
    *out = value;
    return true;
}

static bool parse_jammer(const char *name, jammer_t *out)
{
    int i;
    for (i = 0; i <= JAM_SWITCHING; i++) {
        if (strcmp(name, JAMMER_NAMES[i]) == 0) {
            *out = (jammer_t)i;
            return true;
        }
    }
    return false;
}

/* One "--name value" pair; false if the name is unknown or the value invalid. */
static bool parse_option(options_t *opt, const char *name, const char *value)
{
    uint64_t n;
    if (strcmp(name, "--jammer") == 0) {
        return parse_jammer(value, &opt->jammer);
    }
    if (strcmp(name, "--then") == 0) {
        opt->then_given = true;
        return parse_jammer(value, &opt->then);
    }
    if (strcmp(name, "--switch-at") == 0) {
        return parse_number(value, 10, UINT64_MAX, &opt->switch_at);
    }
    if (strcmp(name, "--window") == 0) {
        return parse_number(value, 10, UINT64_MAX, &opt->window);
    }
    if (strcmp(name, "--log") == 0) {
        opt->log_path = value;
        return true;
    }
    if (strcmp(name, "--schema-hash") == 0) {
        if (!parse_number(value, 16, UINT32_MAX, &n)) {
            return false;
        }
        opt->schema_hash = (uint32_t)n;
        return true;
    }
    if (strcmp(name, "--seed") == 0) {
        return parse_number(value, 10, UINT64_MAX, &opt->seed);
    }
    if (strcmp(name, "--steps") == 0) {
        return parse_number(value, 10, UINT64_MAX, &opt->steps);
    }
    if (!parse_number(value, 10, UINT16_MAX, &n)) {
        return false;
    }
    if (strcmp(name, "--period-ms") == 0 && n > 0) {
        opt->period_ms = (uint32_t)n;
    } else if (strcmp(name, "--valid-timeout-ms") == 0 && n > 0) {
        opt->valid_timeout_ms = (uint32_t)n;
    } else if (strcmp(name, "--host-timeout-ms") == 0 && n > 0) {
        opt->host_timeout_ms = (uint32_t)n;
    } else if (strcmp(name, "--history") == 0 && n >= 1 && n <= MAX_HISTORY) {
        opt->history = (uint32_t)n;
    } else if (strcmp(name, "--major") == 0 && n <= UINT8_MAX) {
        opt->major = (uint32_t)n;
    } else {
        return false;
    }
    return true;
}

static bool parse_args(int argc, char **argv, options_t *opt)
{
    int i;
    opt->period_ms = 10;
    opt->valid_timeout_ms = 1000;
    opt->host_timeout_ms = 500;
    opt->history = 4;
    opt->major = EDGERL_MAJOR;
    opt->schema_hash = EDGERL_SCHEMA_HASH;
    opt->seed = 0;
    opt->steps = 0;
    opt->jammer = JAM_SWEEPING;
    opt->switch_at = 0;
    opt->window = 0;
    opt->then = JAM_SWEEPING;
    opt->then_given = false;
    opt->log_path = NULL;
    opt->device = "-";
    for (i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) != 0) {
            opt->device = argv[i];
        } else if (i + 1 >= argc || !parse_option(opt, argv[i], argv[i + 1])) {
            fprintf(stderr, "antijam_device: bad option %s\n", argv[i]);
            return false;
        } else {
            i++;
        }
    }
    if ((opt->switch_at > 0) != opt->then_given) {
        fprintf(stderr, "antijam_device: --switch-at and --then go together\n");
        return false;
    }
    return true;
}

/* ---- clock, log, signals ------------------------------------------------------------------------------- */

static uint64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static FILE *log_file;

/* One line, stamped with the monotonic clock in seconds (Python's time.monotonic() on Linux). */
static void log_line(const char *fmt, ...)
{
    const uint64_t now = monotonic_us();
    va_list args;
    fprintf(log_file, "t=%" PRIu64 ".%06" PRIu64 " ", now / 1000000u, now % 1000000u);
    va_start(args, fmt);
    vfprintf(log_file, fmt, args);
    va_end(args);
    fputc('\n', log_file);
}

static volatile sig_atomic_t stop_signal;

static void on_signal(int signo) { stop_signal = signo; }

/* SIGINT/SIGTERM stay blocked except inside pselect, so none slips in between check and wait. */
static void install_signals(sigset_t *wait_mask)
{
    struct sigaction sa;
    sigset_t blocked;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a closed link shows as EPIPE */
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGTERM);
    sigprocmask(SIG_BLOCK, &blocked, wait_mask);
}

/* ---- the serial link: raw mode, non-blocking, whole frames queued ------------------------------------------ */

typedef struct {
    int in_fd, out_fd;
    bool own_fd;
    bool is_tty;
    struct termios saved;
    int saved_in_flags, saved_out_flags;
    uint8_t queue[16384]; /* frames waiting for the line; a frame that does not fit is dropped whole */
    size_t queued;
    uint32_t dropped;
    bool closed;
} link_t;

static void make_raw(struct termios *t)
{
    t->c_iflag &= (tcflag_t) ~(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON | IXOFF);
    t->c_oflag &= (tcflag_t)~OPOST;
    t->c_lflag &= (tcflag_t) ~(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t->c_cflag &= (tcflag_t) ~(CSIZE | PARENB);
    t->c_cflag |= CS8 | CREAD | CLOCAL;
    t->c_cc[VMIN] = 1;
    t->c_cc[VTIME] = 0;
}

static bool link_open(link_t *link, const char *device)
{
    struct termios raw;
    link->queued = 0;
    link->dropped = 0;
    link->closed = false;
    link->own_fd = strcmp(device, "-") != 0;
    if (link->own_fd) {
        link->in_fd = link->out_fd = open(device, O_RDWR | O_NOCTTY);
        if (link->in_fd < 0) {
            perror(device);
            return false;
        }
    } else {
        link->in_fd = STDIN_FILENO;
        link->out_fd = STDOUT_FILENO;
    }
    link->is_tty = tcgetattr(link->in_fd, &link->saved) == 0;
    if (link->is_tty) {
        raw = link->saved;
        make_raw(&raw);
        tcsetattr(link->in_fd, TCSANOW, &raw);
    }
    link->saved_in_flags = fcntl(link->in_fd, F_GETFL);
    link->saved_out_flags = fcntl(link->out_fd, F_GETFL);
    fcntl(link->in_fd, F_SETFL, link->saved_in_flags | O_NONBLOCK);
    fcntl(link->out_fd, F_SETFL, link->saved_out_flags | O_NONBLOCK);
    return true;
}

static void link_close(link_t *link)
{
    if (link->is_tty) {
        tcsetattr(link->in_fd, TCSANOW, &link->saved);
    }
    fcntl(link->in_fd, F_SETFL, link->saved_in_flags);
    fcntl(link->out_fd, F_SETFL, link->saved_out_flags);
    if (link->own_fd) {
        close(link->in_fd);
    }
}

/* edgerl's write callback: one whole frame per call. */
static void link_write(void *ctx, const uint8_t *frame, size_t len)
{
    link_t *link = (link_t *)ctx;
    if (link->queued + len > sizeof link->queue) {
        link->dropped++; /* the host is not reading: drop telemetry rather than block the loop */
        return;
    }
    memcpy(link->queue + link->queued, frame, len);
    link->queued += len;
}

static void link_flush(link_t *link)
{
    while (link->queued > 0 && !link->closed) {
        const ssize_t n = write(link->out_fd, link->queue, link->queued);
        if (n > 0) {
            link->queued -= (size_t)n;
            memmove(link->queue, link->queue + n, link->queued);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            link->closed = true;
        }
    }
}

/* ---- the device ------------------------------------------------------------------------------------------- */

typedef struct {
    options_t opt;
    env_t env;
    link_t link;
    edgerl_device_t device;
    uint8_t tx[EDGERL_DEVICE_TX_SIZE(EDGERL_OBS_F32_PAYLOAD(MAX_OBS_SIZE))];
    uint64_t slot, policy_slots, safe_slots, late_slots, delivered;
    uint64_t window_slots, window_delivered; /* the current --window */
    double window_reward;
    uint32_t trips_logged, ignored_logged;
    char mismatch_logged[EDGERL_MISMATCH_TEXT_SIZE]; /* one line per incompatible host version */
} sim_t;

static bool send_obs(sim_t *s, double reward, bool truncated)
{
    float values[MAX_OBS_SIZE];
    edgerl_obs_t obs;
    memset(&obs, 0, sizeof obs);
    env_obs(&s->env, values);
    obs.t_us = (uint32_t)monotonic_us();
    obs.reward = (float)reward;
    obs.truncated = truncated;
    obs.count = (uint16_t)OBS_SIZE(s->env.history);
    obs.values = values;
    return edgerl_device_send_obs(&s->device, &obs);
}

static void log_hello(sim_t *s)
{
    const edgerl_device_t *d = &s->device;
    char text[EDGERL_MISMATCH_TEXT_SIZE];
    edgerl_device_mismatch_text(d, text, sizeof text);
    if (d->host_compatible) {
        char version[EDGERL_VERSION_TEXT_SIZE];
        edgerl_format_version(version, sizeof version, d->host_major, d->host_minor, d->host_schema_hash);
        log_line("hello host %s", version);
        s->mismatch_logged[0] = '\0';
    } else if (strcmp(text, s->mismatch_logged) != 0) {
        log_line("incompatible %s: no actuation", text);
        memcpy(s->mismatch_logged, text, sizeof text);
    }
}

static void on_message(void *ctx, const edgerl_msg_t *msg)
{
    sim_t *s = (sim_t *)ctx;
    const edgerl_device_t *d = &s->device;
    if (msg->type == EDGERL_HELLO || msg->type == EDGERL_FOREIGN_HELLO) {
        log_hello(s);
    } else if (msg->type == EDGERL_ACTION && d->counters.actions_ignored != s->ignored_logged) {
        s->ignored_logged = d->counters.actions_ignored;
        log_line("ignored action=%u reason=%s", msg->u.action.action, edgerl_reason_name(d->safe_reason));
    } else if (msg->type == EDGERL_RESET) {
        if (msg->u.reset.has_seed) {
            s->env.rng.state = msg->u.reset.seed;
        }
        env_reset(&s->env);
        log_line("reset seed=%" PRIu32 " has_seed=%d", msg->u.reset.seed, msg->u.reset.has_seed);
        send_obs(s, 0.0, false);
    } else if (msg->type == EDGERL_ERROR) {
        log_line("error from host code=%u text=%.*s", msg->u.error.code, (int)msg->u.error.text_len,
                 msg->u.error.text);
    }
}

/* Logs each deadman trip once, with what tripped it. */
static void log_trips(sim_t *s, uint32_t now_ms)
{
    const edgerl_device_t *d = &s->device;
    const uint32_t trips = d->counters.deadman_trips + d->counters.host_quiet_trips;
    if (trips == s->trips_logged) {
        return;
    }
    s->trips_logged = trips;
    if (d->safe_reason == EDGERL_REASON_DEADMAN) {
        log_line("deadman tripped: action expired action_age_ms=%" PRIu32 " valid_ms=%u", now_ms - d->action_rx_ms,
                 d->action.valid_ms < d->cfg.max_valid_ms ? d->action.valid_ms : d->cfg.max_valid_ms);
    } else {
        log_line("deadman tripped: host quiet quiet_ms=%" PRIu32, now_ms - d->last_rx_ms);
    }
}

/* The scripted shift: from slot --switch-at on, the --then jammer (mid-episode; the history it sensed stays). */
static void maybe_switch(sim_t *s)
{
    if (s->opt.switch_at == 0 || s->slot != s->opt.switch_at) {
        return;
    }
    log_line("switch slot=%" PRIu64 " jammer=%s then=%s", s->slot, JAMMER_NAMES[s->env.jammer],
             JAMMER_NAMES[s->opt.then]);
    s->env.jammer = s->opt.then;
}

/* One line per --window slots: the true delivery rate and mean reward, whoever chose the actions. */
static void count_window(sim_t *s, double reward, bool delivered)
{
    s->window_slots++;
    s->window_delivered += delivered;
    s->window_reward += reward;
    if (s->opt.window == 0 || s->window_slots < s->opt.window) {
        return;
    }
    log_line("window slots=%" PRIu64 "-%" PRIu64 " jammer=%s delivered=%" PRIu64 " success=%.4f reward=%.4f",
             s->slot + 1 - s->window_slots, s->slot, JAMMER_NAMES[s->env.jammer], s->window_delivered,
             (double)s->window_delivered / (double)s->window_slots, s->window_reward / (double)s->window_slots);
    s->window_slots = 0;
    s->window_delivered = 0;
    s->window_reward = 0.0;
}

static void run_slot(sim_t *s, uint64_t now_us)
{
    const uint32_t now_ms = (uint32_t)(now_us / 1000u);
    const edgerl_decision_t decision = edgerl_device_decide(&s->device, now_ms);
    const bool policy = decision.reason == EDGERL_REASON_POLICY || decision.reason == EDGERL_REASON_HOST_FALLBACK;
    double reward;
    bool truncated, delivered;
    log_trips(s, now_ms);
    maybe_switch(s);
    reward = env_step(&s->env, decision.action, &delivered);
    s->delivered += delivered;
    count_window(s, reward, delivered);
    truncated = s->env.episode_step >= EPISODE_STEPS;
    log_line("slot=%" PRIu64 " action=%u reason=%s reward=%.2f", s->slot, decision.action,
             edgerl_reason_name(decision.reason), reward);
    if (policy) {
        s->policy_slots++;
    } else {
        s->safe_slots++;
    }
    s->slot++;
    send_obs(s, reward, truncated);
    if (truncated) { /* a new episode: its first observation follows at once */
        env_reset(&s->env);
        send_obs(s, 0.0, false);
    }
}

static bool sim_start(sim_t *s)
{
    edgerl_device_config_t cfg;
    char version[EDGERL_VERSION_TEXT_SIZE];
    edgerl_device_config_init(&cfg);
    cfg.device_id = "antijam-sim";
    cfg.obs_shape[0] = (uint16_t)OBS_SIZE(s->opt.history);
    cfg.obs_ndim = 1;
    cfg.obs_dtype = EDGERL_DTYPE_FLOAT32;
    cfg.n_actions = N_CHANNELS;
    cfg.safe_action = SAFE_CHANNEL;
    cfg.capabilities = EDGERL_CAP_DEADMAN | EDGERL_CAP_RESET;
    cfg.max_valid_ms = (uint16_t)s->opt.valid_timeout_ms;
    cfg.host_timeout_ms = s->opt.host_timeout_ms;
    cfg.major = (uint8_t)s->opt.major;
    cfg.schema_hash = s->opt.schema_hash;
    cfg.tx_buf = s->tx;
    cfg.tx_cap = sizeof s->tx;
    cfg.write = link_write;
    cfg.write_ctx = &s->link;
    cfg.on_message = on_message;
    cfg.message_ctx = s;
    if (!edgerl_device_init(&s->device, &cfg, (uint32_t)(monotonic_us() / 1000u))) {
        return false;
    }
    s->env.jammer = s->opt.jammer;
    s->env.history = (int)s->opt.history;
    s->env.rng.state = s->opt.seed;
    env_reset(&s->env);
    edgerl_format_version(version, sizeof version, cfg.major, EDGERL_MINOR, cfg.schema_hash);
    log_line("start device=%s version=%s jammer=%s history=%" PRIu32 " seed=%" PRIu64 " period_ms=%" PRIu32
             " valid_timeout_ms=%" PRIu32 " host_timeout_ms=%" PRIu32,
             cfg.device_id, version, JAMMER_NAMES[s->opt.jammer], s->opt.history, s->opt.seed, s->opt.period_ms,
             s->opt.valid_timeout_ms, s->opt.host_timeout_ms);
    if (s->opt.switch_at > 0) {
        log_line("scheduled switch_at=%" PRIu64 " then=%s", s->opt.switch_at, JAMMER_NAMES[s->opt.then]);
    }
    edgerl_device_send_hello(&s->device, true);
    send_obs(s, 0.0, false);
    return true;
}

static void receive(sim_t *s)
{
    uint8_t chunk[1024];
    const ssize_t n = read(s->link.in_fd, chunk, sizeof chunk);
    if (n > 0) {
        const uint32_t now_ms = (uint32_t)(monotonic_us() / 1000u);
        edgerl_device_feed(&s->device, chunk, (size_t)n, now_ms);
        log_trips(s, now_ms);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
        s->link.closed = true; /* end of input, or EIO: the other end of the pty closed */
    }
}

/* Waits for input, room to write, the next slot or heartbeat, or a signal. */
static void wait_io(sim_t *s, uint64_t until_us, const sigset_t *wait_mask)
{
    const uint64_t now = monotonic_us();
    const uint64_t wait = until_us > now ? until_us - now : 0;
    struct timespec timeout;
    fd_set readable, writable;
    int nfds = (s->link.in_fd > s->link.out_fd ? s->link.in_fd : s->link.out_fd) + 1;
    FD_ZERO(&readable);
    FD_ZERO(&writable);
    FD_SET(s->link.in_fd, &readable);
    if (s->link.queued > 0) {
        FD_SET(s->link.out_fd, &writable);
    }
    timeout.tv_sec = (time_t)(wait / 1000000u);
    timeout.tv_nsec = (long)(wait % 1000000u) * 1000L;
    if (pselect(nfds, &readable, &writable, NULL, &timeout, wait_mask) <= 0) {
        return;
    }
    if (FD_ISSET(s->link.in_fd, &readable)) {
        receive(s);
    }
    if (FD_ISSET(s->link.out_fd, &writable)) {
        link_flush(&s->link);
    }
}

static const char *run(sim_t *s, const sigset_t *wait_mask)
{
    const uint64_t period = (uint64_t)s->opt.period_ms * 1000u;
    const uint64_t heartbeat = (uint64_t)s->device.cfg.heartbeat_ms * 1000u;
    uint64_t next_slot = monotonic_us() + period, next_heartbeat = next_slot;
    for (;;) {
        uint64_t now = monotonic_us();
        if (stop_signal) {
            return stop_signal == SIGINT ? "SIGINT" : "SIGTERM";
        }
        if (s->link.closed) {
            return "link-closed";
        }
        if (s->opt.steps > 0 && s->slot >= s->opt.steps) {
            return "steps";
        }
        if (now >= next_slot) {
            run_slot(s, now);
            next_slot += period;
            if (next_slot <= now) { /* overran a whole period: skip, never run slots back to back */
                s->late_slots++;
                next_slot = now + period;
            }
        }
        if (now >= next_heartbeat) {
            edgerl_device_send_heartbeat(&s->device, (uint32_t)now);
            next_heartbeat += heartbeat;
        }
        link_flush(&s->link);
        wait_io(s, next_slot < next_heartbeat ? next_slot : next_heartbeat, wait_mask);
    }
}

static void log_counters(const sim_t *s, const char *why)
{
    const edgerl_counters_t *c = &s->device.parser.counters;
    const edgerl_device_counters_t *d = &s->device.counters;
    log_line("exit reason=%s slots=%" PRIu64 " policy_slots=%" PRIu64 " safe_slots=%" PRIu64 " late_slots=%" PRIu64
             " delivered=%" PRIu64
             " frames=%" PRIu32 " crc_errors=%" PRIu32 " malformed=%" PRIu32 " oversize=%" PRIu32
             " unknown_type=%" PRIu32 " foreign_version=%" PRIu32 " seq_gaps=%" PRIu32 " duplicates=%" PRIu32
             " reorders=%" PRIu32 " actions_accepted=%" PRIu32 " actions_ignored=%" PRIu32
             " actions_out_of_range=%" PRIu32 " deadman_trips=%" PRIu32 " host_quiet_trips=%" PRIu32
             " incompatible_hellos=%" PRIu32 " tx_frames=%" PRIu32 " tx_failed=%" PRIu32 " tx_dropped=%" PRIu32,
             why, s->slot, s->policy_slots, s->safe_slots, s->late_slots, s->delivered, c->frames, c->crc_errors, c->malformed,
             c->oversize, c->unknown_type, c->foreign_version, c->seq_gaps, c->duplicates, c->reorders,
             d->actions_accepted, d->actions_ignored, d->actions_out_of_range, d->deadman_trips, d->host_quiet_trips,
             d->incompatible_hellos, d->tx_frames, d->tx_failed, s->link.dropped);
}

int main(int argc, char **argv)
{
    static sim_t sim;
    sigset_t wait_mask;
    const char *why;
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    if (!parse_args(argc, argv, &sim.opt)) {
        usage(stderr);
        return 2;
    }
    log_file = sim.opt.log_path ? fopen(sim.opt.log_path, "w") : stderr;
    if (log_file == NULL) {
        perror(sim.opt.log_path);
        return 2;
    }
    setvbuf(log_file, NULL, _IOLBF, 0);
    install_signals(&wait_mask);
    if (!link_open(&sim.link, sim.opt.device)) {
        return 2;
    }
    if (!sim_start(&sim)) {
        fprintf(stderr, "antijam_device: invalid device configuration\n");
        link_close(&sim.link);
        return 2;
    }
    why = run(&sim, &wait_mask);
    link_flush(&sim.link);
    log_counters(&sim, why);
    link_close(&sim.link);
    return 0;
}
