/* Stream Q(lambda) on a linear Q head: see edgerl_headq.h for the contract and the order of steps. */
#include "edgerl_headq.h"

#include <string.h>

static uint16_t row_len(const edgerl_headq_t *h) { return (uint16_t)(h->n_in + 1u); }

static uint32_t params(const edgerl_headq_t *h) { return (uint32_t)h->n_actions * row_len(h); }

/* xorshift32: exploration needs only a cheap uniform stream (the numpy learner's MT19937 would take
 * 2.5 KB of RAM); zero is its one fixed point, so a zero seed is moved off it. */
static uint32_t next_random(edgerl_headq_t *h)
{
    uint32_t x = h->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    h->rng = x;
    return x;
}

/* q = theta x, each row summed in order in float32 */
static void head_forward(const edgerl_headq_t *h, const float *x, float *q)
{
    uint16_t a, k, n = row_len(h);
    for (a = 0; a < h->n_actions; ++a) {
        const float *w = h->theta + (uint32_t)a * n;
        float s = 0.0f;
        for (k = 0; k < n; ++k) s += w[k] * x[k];
        q[a] = s;
    }
}

/* the first maximum, as Python's list.index(max(list)) */
static uint16_t greedy(const float *q, uint16_t n)
{
    uint16_t a, best = 0;
    for (a = 1; a < n; ++a)
        if (q[a] > q[best]) best = a;
    return best;
}

static bool finite(float v) { return v - v == 0.0f; }

static double at_least_one(double v) { return v > 1.0 ? v : 1.0; }

static void clear_trace(edgerl_headq_t *h)
{
    if (h->trace != NULL) memset(h->trace, 0, params(h) * sizeof *h->trace);
}

/* |v|_1 of n floats, summed in order in float32 */
static float l1(const float *v, uint32_t n)
{
    float sum = 0.0f;
    uint32_t i;
    for (i = 0; i < n; ++i) sum += v[i] < 0.0f ? -v[i] : v[i];
    return sum;
}

bool edgerl_headq_init(edgerl_headq_t *h, const edgerl_headq_params_t *p, uint16_t n_in, uint16_t n_actions,
                       const float *theta0, float *mem, float *trace, uint32_t seed)
{
    uint32_t size = (uint32_t)n_actions * (n_in + 1u);
    if (n_actions == 0 || n_in == UINT16_MAX || (trace == NULL && p->decay != 0.0f)) return false;
    memset(h, 0, sizeof *h);
    h->p = *p;
    h->n_in = n_in;
    h->n_actions = n_actions;
    h->theta0 = theta0;
    h->theta = mem;
    h->trace = trace;
    h->x = mem + size;
    h->x_next = h->x + n_in + 1u;
    h->q = h->x_next + n_in + 1u;
    h->q_next = h->q + n_actions;
    memcpy(h->theta, theta0, size * sizeof *h->theta);
    clear_trace(h);
    h->x[n_in] = h->x_next[n_in] = 1.0f;
    h->epsilon = -1.0;
    h->rng = seed ? seed : 0x9E3779B9u;
    return true;
}

float *edgerl_headq_input(edgerl_headq_t *h) { return h->x_next; }

double edgerl_headq_epsilon(const edgerl_headq_t *h)
{
    double frac, eps;
    if (h->epsilon >= 0.0) return h->epsilon;
    frac = (double)h->steps / (double)h->p.eps_decay_steps;
    eps = h->p.eps_start + (h->p.eps_end - h->p.eps_start) * frac;
    return eps > h->p.eps_end ? eps : h->p.eps_end;
}

uint16_t edgerl_headq_act(edgerl_headq_t *h)
{
    uint16_t action;
    head_forward(h, h->x_next, h->q_next);
    if (h->steps < UINT32_MAX) ++h->steps; /* a wrapped clock would restart the exploration schedule */
    action = greedy(h->q_next, h->n_actions);
    if ((double)(next_random(h) >> 8) * (1.0 / 16777216.0) < edgerl_headq_epsilon(h) && h->n_actions > 1) {
        uint32_t top = h->n_actions - 1u, mask = top, value;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        do value = next_random(h) & mask; /* masked rejection: uniform over 0..top */
        while (value > top);
        action = (uint16_t)value;
    }
    h->next_action = action;
    return action;
}

/* ObGD: z = decay z + grad Q(x, a) (row a only), step alpha / max(1, alpha kappa max(|delta|, 1) |z|_1).
 * Without a trace z is grad Q(x, a) itself: numpy's sums and products over the other, zero rows
 * change nothing, so touching row a alone gives the same numbers. */
static void update(edgerl_headq_t *h, float reward, bool done)
{
    uint32_t i, size = params(h);
    uint16_t k, n = row_len(h);
    uint32_t offset = (uint32_t)h->action * n;
    double target = reward, delta, alpha;
    float z_norm, step;
    if (!done) target += h->p.gamma * h->q_next[greedy(h->q_next, h->n_actions)];
    delta = target - h->q[h->action];
    if (h->trace != NULL) {
        for (i = 0; i < size; ++i) h->trace[i] *= h->p.decay;
        for (k = 0; k < n; ++k) h->trace[offset + k] += h->x[k];
        z_norm = l1(h->trace, size);
    } else {
        z_norm = l1(h->x, n);
    }
    alpha = h->p.lr / at_least_one(h->p.lr * h->p.kappa * at_least_one(delta < 0.0 ? -delta : delta) * z_norm);
    step = (float)(alpha * delta);
    if (h->trace != NULL) {
        for (i = 0; i < size; ++i) h->theta[i] += h->trace[i] * step;
    } else {
        for (k = 0; k < n; ++k) h->theta[offset + k] += h->x[k] * step;
    }
    ++h->updates;
}

void edgerl_headq_learn(edgerl_headq_t *h, float reward, bool done)
{
    uint16_t a;
    float *swap;
    if (h->pending && !finite(reward)) {
        edgerl_headq_forget(h); /* that transition is lost; the observation still starts the next one */
    } else if (h->pending) {
        update(h, reward, done);
        if (done || h->nongreedy) clear_trace(h);
    }
    h->pending = !done;
    if (done) return;
    swap = h->x; /* the newest state becomes the one acted in, its Q taken after the update */
    h->x = h->x_next;
    h->x_next = swap;
    h->action = h->next_action;
    head_forward(h, h->x, h->q);
    for (a = 0; a < h->n_actions; ++a)
        if (!finite(h->q[a])) break;
    if (a < h->n_actions) { /* diverged: back to the deployed head, nothing of the chain kept */
        memcpy(h->theta, h->theta0, params(h) * sizeof *h->theta);
        ++h->divergences;
        edgerl_headq_forget(h);
        return;
    }
    h->nongreedy = h->action != greedy(h->q, h->n_actions);
}

void edgerl_headq_forget(edgerl_headq_t *h)
{
    h->pending = false;
    clear_trace(h);
}
