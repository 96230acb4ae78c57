"""Policy IR -> `policy.h`: portable C99 inference for microcontrollers, no dynamic allocation.

One header, everything `static`: weights as const arrays (flash), scratch buffers on the stack
sized at generation time, `edge_rl_q_values`, `edge_rl_act` and `edge_rl_self_test`, which runs
the recorded golden observations and returns how many greedy actions differ (0 = pass), so
firmware can check itself after flashing. int8 layers use the IR's integer arithmetic (int32
accumulators, TFLite's fixed-point requantization in int64); 1-bit layers keep their packed
sign bits and run XNOR/popcount after a fast Walsh-Hadamard transform (n log n additions and no
n x n matrix in flash), in the same operation order as the IR, so their signs match it exactly.
When the policy can adapt its Q head on the device (`edge_rl.stream` head mode), the header also
carries `edge_rl_features` (the frozen body the head learns on), the head's initial weights and
the learner's settings (`EDGE_RL_HEAD_*`), for `firmware_bridge/firmware/edgerl_headq.h`.
Needs <stdint.h> and <math.h> (link with -lm).
"""

from __future__ import annotations

import math

import numpy as np

from edge_rl.errors import BadInput
from edge_rl.layers import Activation, Dense, DuelingSum, Layer, LayerNorm
from edge_rl.policy import Policy
from edge_rl.qlayers import BINARY_SCALE, DenseBinary, DenseInt8, Dequantize, Quantize, reciprocal, unpack_signs
from edge_rl.stream.adapt import from_policy
from export import ExportError

PER_LINE = 8


def _f(v: float) -> str:
    """A float32 literal that round-trips exactly (9 significant digits)."""
    v = float(np.float32(v))
    if math.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    return f"{v:.9g}f" if ("." in f"{v:.9g}" or "e" in f"{v:.9g}") else f"{v:.9g}.0f"


def _array(ctype: str, name: str, values: np.ndarray, fmt=str) -> str:
    """A flat (row-major) const array: nested initializers would need braces per row."""
    flat = np.asarray(values).ravel()
    dims = f"[{flat.size}]"
    items = [fmt(v) for v in flat]
    lines = [", ".join(items[i : i + PER_LINE]) for i in range(0, len(items), PER_LINE)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}{dims} = {{\n    {body}\n}};\n"


class _Emitter:
    """Generates the arrays and statements of each layer; buffers `a` (float) / `qa` (int8) in, `b` / `qb` out.

    Arrays are named after the layer's index and kept once, so a function over a prefix of the
    layers (the head learner's features) shares them with the full forward.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.arrays: dict[str, str] = {}
        self.code: list[str] = []

    def _keep(self, ctype: str, name: str, values: np.ndarray, fmt=str) -> None:
        if name not in self.arrays:
            self.arrays[name] = _array(ctype, name, values, fmt)

    def function(self, layers: list[tuple[int, Layer]], width: int) -> tuple[list[str], int, bool]:
        """Statements running `layers` (index, layer) from `width` normalised inputs; (code, out width, int8 out)."""
        self.code = []
        int8_in = False
        for i, layer in layers:
            self.emit(i, layer, width, int8_in)
            width = layer.out_features(width)
            int8_in = layer.output_kind == "int8"
        return self.code, width, int8_in

    def emit(self, i: int, layer: Layer, width: int, int8_in: bool) -> None:
        src, out = ("qa" if int8_in else "a"), ("qb" if layer.output_kind == "int8" else "b")
        p = f"L{i}_"
        c = self.code
        if isinstance(layer, Dense):
            self._keep("float", p + "w", layer.weight, _f)
            self._keep("float", p + "b", layer.bias, _f)
            o, k = layer.weight.shape
            c.append(
                f"for (o = 0; o < {o}; ++o) {{ float s = {p}b[o];"
                f" for (k = 0; k < {k}; ++k) s += {src}[k] * {p}w[o * {k} + k]; {out}[o] = s; }}"
            )
        elif isinstance(layer, LayerNorm):
            c.append(f"{{ float mu = 0.0f, var = 0.0f; for (k = 0; k < {width}; ++k) mu += {src}[k]; mu /= {width}.0f;")
            c.append(f"  for (k = 0; k < {width}; ++k) {{ float d = {src}[k] - mu; var += d * d; }} var /= {width}.0f;")
            c.append(f"  for (k = 0; k < {width}; ++k) {out}[k] = ({src}[k] - mu) / sqrtf(var + {_f(layer.eps)}); }}")
            if layer.weight is not None:
                self._keep("float", p + "g", layer.weight, _f)
                self._keep("float", p + "beta", layer.bias, _f)
                c.append(f"for (k = 0; k < {width}; ++k) {out}[k] = {out}[k] * {p}g[k] + {p}beta[k];")
        elif isinstance(layer, Activation):
            expr = {
                "relu": f"{src}[k] > 0.0f ? {src}[k] : 0.0f",
                "leaky_relu": f"{src}[k] >= 0.0f ? {src}[k] : {src}[k] * {_f(layer.slope)}",
                "tanh": f"tanhf({src}[k])",
            }[layer.fn]
            c.append(f"for (k = 0; k < {width}; ++k) {out}[k] = {expr};")
        elif isinstance(layer, Quantize):
            inv = _f(reciprocal(layer.scale))
            c.append(
                f"for (k = 0; k < {width}; ++k) {out}[k] = edge_rl_sat8(rintf({src}[k] * {inv}) + "
                f"{_f(layer.zero_point)}, -128.0f);"
            )
        elif isinstance(layer, Dequantize):
            zp, scale = _f(layer.zero_point), _f(layer.scale)
            c.append(f"for (k = 0; k < {width}; ++k) {out}[k] = ((float){src}[k] - {zp}) * {scale};")
        elif isinstance(layer, DenseInt8):
            self._dense_int8(p, layer, src, out)
        elif isinstance(layer, DenseBinary):
            self._dense_binary(p, layer, src, out)
        elif isinstance(layer, DuelingSum):
            c.append(f"for (k = 0; k < {width - 1}; ++k) {out}[k] = {src}[0] + {src}[k + 1];")
        else:
            raise ExportError(f"no C form for layer kind {layer.kind!r}")
        c.append("edge_rl_swap(&a, &b, &qa, &qb);")

    def _dense_int8(self, p: str, layer: DenseInt8, src: str, out: str) -> None:
        o, k = layer.weight.shape
        self._keep("int8_t", p + "w", layer.weight)
        self._keep("int32_t", p + "b", layer.bias, lambda v: "INT32_MIN" if int(v) == -(2**31) else str(int(v)))
        zp = layer.input_zero_point
        acc = (
            f"int32_t acc = {p}b[o];"
            f" for (k = 0; k < {k}; ++k) acc += ((int32_t){src}[k] - ({zp})) * (int32_t){p}w[o * {k} + k];"
        )
        if layer.output_scale is None:
            self._keep("float", p + "s", layer.acc_scale, _f)
            store = f"{out}[o] = (float)acc * {p}s[o];"
        else:
            m0, shift = layer.requantization
            self._keep("int32_t", p + "m0", m0)
            self._keep("int8_t", p + "sh", shift)
            zp, low = layer.output_zero_point, layer.output_low
            store = f"{out}[o] = edge_rl_requant(acc, {p}m0[o], {p}sh[o], {zp}, {low});"
        self.code.append(f"for (o = 0; o < {o}; ++o) {{ {acc} {store} }}")

    def _dense_binary(self, p: str, layer: DenseBinary, src: str, out: str) -> None:
        n, o = layer.n, layer.bias.shape[0]
        d = unpack_signs(layer.diag_bits, n)
        self._keep("uint8_t", p + "wbits", layer.sign_bits)
        self._keep("float", p + "d", d, _f)
        self._keep("float", p + "sw", layer.weight_scale.astype(np.float32), _f)
        self._keep("float", p + "b", layer.bias, _f)
        inv_sqrt_n = _f(1.0 / math.sqrt(n))
        c = self.code
        c.append(f"{{ float r[{n}], sq[{n}], sx; uint8_t xbits[{(n + 7) // 8}]; int h;")
        c.append(f"  for (k = 0; k < {n}; ++k) r[k] = (k < {layer.in_features} ? {src}[k] : 0.0f) * {p}d[k];")
        c.append(f"  edge_rl_fwht(r, {n});")
        c.append(f"  for (k = 0; k < {n}; ++k) {{ r[k] *= {inv_sqrt_n}; sq[k] = r[k] * r[k]; }}")
        c.append(f"  for (h = {n // 2}; h >= 1; h >>= 1) for (k = 0; k < h; ++k) sq[k] = sq[k] + sq[k + h];")
        c.append(f"  sx = {_f(BINARY_SCALE)} * sqrtf(sq[0] * {_f(1.0 / n)});")
        c.append(f"  for (k = 0; k < {(n + 7) // 8}; ++k) xbits[k] = 0;")
        c.append(f"  for (k = 0; k < {n}; ++k) if (r[k] >= 0.0f) xbits[k >> 3] |= (uint8_t)(1u << (k & 7));")
        c.append(
            f"  for (o = 0; o < {o}; ++o) {{ int pc = 0; for (k = 0; k < {(n + 7) // 8}; ++k) "
            f"pc += edge_rl_popcount8((uint8_t)(xbits[k] ^ {p}wbits[o * {(n + 7) // 8} + k]));"
        )
        c.append(f"    {out}[o] = (float)({n} - 2 * pc) * (sx * {p}sw[o]) + {p}b[o]; }} }}")


PRELUDE = """\
static inline void edge_rl_swap(float **a, float **b, int8_t **qa, int8_t **qb) {
    float *t = *a; int8_t *qt = *qa;
    *a = *b; *b = t; *qa = *qb; *qb = qt;
}

static inline int8_t edge_rl_sat8(float v, float low) {
    if (v < low) v = low;
    if (v > 127.0f) v = 127.0f;
    return (int8_t)v;
}

/* floor(v / 2^n) for any int64 v, never shifting a negative value (implementation-defined in C99) */
static inline int64_t edge_rl_floor_shift(int64_t v, int n) {
    return v >= 0 ? v >> n : -(int64_t)((uint64_t)(-(v + 1)) >> n) - 1;
}

/* v as a 32-bit register holds it: two's complement wrap, computed on unsigned values */
static inline int64_t edge_rl_wrap32(int64_t v) {
    return (int64_t)(((uint64_t)v + UINT64_C(0x80000000)) & UINT64_C(0xFFFFFFFF)) - INT64_C(0x80000000);
}

/* TFLite's fixed-point requantization (LiteRT builtin, TFLite Micro, CMSIS-NN): int32 accumulator -> int8 */
static inline int8_t edge_rl_requant(int32_t acc, int32_t m0, int shift, int32_t zp, int32_t low) {
    int64_t a = shift > 0 ? edge_rl_wrap32((int64_t)acc * ((int64_t)1 << shift)) : (int64_t)acc;
    int64_t r = edge_rl_floor_shift(a * (int64_t)m0 + ((int64_t)1 << 30), 31);
    if (shift < 0) r = edge_rl_floor_shift(r + ((int64_t)1 << (-shift - 1)), -shift);
    r = edge_rl_wrap32(r + zp);
    return (int8_t)(r < low ? low : (r > 127 ? 127 : r));
}

static inline int edge_rl_popcount8(uint8_t v) {
    int c = 0;
    while (v) { v &= (uint8_t)(v - 1u); ++c; }
    return c;
}

/* in-place Walsh-Hadamard transform (Sylvester order, unnormalised), n a power of two */
static inline void edge_rl_fwht(float *x, int n) {
    int h, i, j;
    for (h = 1; h < n; h <<= 1)
        for (i = 0; i < n; i += h << 1)
            for (j = i; j < i + h; ++j) { float u = x[j], v = x[j + h]; x[j] = u + v; x[j + h] = u - v; }
}
"""


def _forward(name: str, out: str, size: str, code: list[str], max_w: int, clip: float) -> list[str]:
    """One C function: normalise the raw observation, run `code`, copy its `size` float results to `out`."""
    return [
        f"static inline int {name}(const float obs[EDGE_RL_OBS_SIZE], float {out}[{size}]) {{",
        f"    float buf0[{max_w}], buf1[{max_w}];",
        f"    int8_t qbuf0[{max_w}], qbuf1[{max_w}];",
        "    float *a = buf0, *b = buf1;",
        "    int8_t *qa = qbuf0, *qb = qbuf1;",
        "    int o, k;",
        "    (void)o; (void)qa; (void)qb;",
        "    for (k = 0; k < EDGE_RL_OBS_SIZE; ++k) {",
        "        float v = (obs[k] - EDGE_RL_OBS_MEAN[k]) * EDGE_RL_OBS_SCALE[k];",
        f"        a[k] = v < {_f(-clip)} ? {_f(-clip)} : (v > {_f(clip)} ? {_f(clip)} : v);",
        "    }",
        *(f"    {line}" for line in code),
        f"    for (k = 0; k < {size}; ++k) {out}[k] = a[k];",
        "    return 0;",
        "}",
        "",
    ]


def _head_learning(policy: Policy, emitter: _Emitter, max_w: int, clip: float) -> list[str]:
    """Stream Q(lambda) of `edge_rl.stream`'s head mode, for firmware that adapts its own Q head.

    The learner itself decides what the head sees (the frozen body, int8 codes mapped into
    [-1, 1]), its initial weights and its settings: the header records them, so a C learner
    (`firmware_bridge/firmware/edgerl_headq.h`) starts exactly where the numpy one does.
    """
    try:
        learner = from_policy(policy, "head")
    except BadInput as exc:
        return [f"/* no head learning: {exc} */", "#define EDGE_RL_HEAD_LEARNING 0", ""]
    index = {id(layer): i for i, layer in enumerate(policy.layers)}
    body = [(index.get(id(layer), len(policy.layers)), layer) for layer in learner.body]
    code, width, int8_out = emitter.function(body, policy.observation.size)
    if int8_out or width != learner.obs_dim:
        raise ExportError(f"the head learner's body gives {width} {'int8' if int8_out else 'float'} features")
    theta = learner.net.theta.reshape(learner.n_actions, learner.obs_dim + 1)
    return [
        "/* ---- head learning: edge_rl.stream head mode (frozen body, float Q head, stream Q(lambda)) ---- */",
        "#define EDGE_RL_HEAD_LEARNING 1",
        f"#define EDGE_RL_HEAD_IN {learner.obs_dim}",
        f"#define EDGE_RL_HEAD_GAMMA {learner.gamma!r}",
        f"#define EDGE_RL_HEAD_DECAY {_f(np.float32(learner.gamma * learner.lam))} /* float32(gamma * lambda) */",
        f"#define EDGE_RL_HEAD_TRACED {int(np.float32(learner.gamma * learner.lam) != 0)} /* needs a trace buffer */",
        f"#define EDGE_RL_HEAD_KAPPA {float(learner.kappa)!r}",
        f"#define EDGE_RL_HEAD_LR {float(learner.lr)!r}",
        f"#define EDGE_RL_HEAD_EPS_START {float(learner.eps_start)!r}",
        f"#define EDGE_RL_HEAD_EPS_END {float(learner.eps_end)!r}",
        f"#define EDGE_RL_HEAD_EPS_DECAY_STEPS {int(learner.eps_decay_steps)}",
        "/* initial [W | b] rows, one per action, as the numpy learner starts */",
        _array("float", "EDGE_RL_HEAD_THETA0", theta, _f),
        "/* the features the head learns on: the deployed body, as the numpy learner computes them */",
        *_forward("edge_rl_features", "feat", "EDGE_RL_HEAD_IN", code, max_w, clip),
    ]


def to_c_header(
    policy: Policy, golden_obs: np.ndarray, golden_actions: np.ndarray, guard: str = "EDGE_RL_POLICY_H"
) -> str:
    """The header's text; `golden_obs` (N, *obs_shape) with the numpy IR's `golden_actions` (N,)."""
    obs = policy.observation
    mean, scale, clip = obs.flat_normalization
    emitter = _Emitter(policy)
    code, _, _ = emitter.function(list(enumerate(policy.layers)), obs.size)
    widths, width = [obs.size], obs.size
    for layer in policy.layers:
        width = layer.out_features(width)
        widths.append(width)
    max_w = max(max(widths), max((getattr(lay, "n", 0) for lay in policy.layers), default=0))
    n_act = policy.action.n
    golden_obs = np.asarray(golden_obs, np.float32).reshape(len(golden_obs), obs.size)
    q_values = _forward("edge_rl_q_values", "q", "EDGE_RL_N_ACTIONS", code, max_w, clip)
    head = _head_learning(policy, emitter, max_w, clip)
    parts = [
        f"/* Generated by edge-rl: {len(policy.layers)} layers, {obs.size} observations -> {n_act} actions.",
        "   Portable C99, no dynamic allocation. Do not edit: re-export from the policy IR instead. */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "#include <math.h>",
        "#include <stdint.h>",
        "",
        f"#define EDGE_RL_OBS_SIZE {obs.size}",
        f"#define EDGE_RL_N_ACTIONS {n_act}",
        f"#define EDGE_RL_SAFE_ACTION {policy.action.safe}",
        f"#define EDGE_RL_GOLDEN_N {len(golden_obs)}",
        "",
        PRELUDE,
        _array("float", "EDGE_RL_OBS_MEAN", mean, _f),
        _array("float", "EDGE_RL_OBS_SCALE", scale, _f),
        *emitter.arrays.values(),
        _array("float", "EDGE_RL_GOLDEN_OBS", golden_obs, _f),
        _array("int", "EDGE_RL_GOLDEN_ACTIONS", np.asarray(golden_actions, np.int64)),
        "/* Q-values of one raw observation; returns 0 (non-finite inputs give the safe action in edge_rl_act) */",
        *q_values,
        "/* greedy action (first maximum); the safe action for NaN or infinite observations */",
        "static inline int edge_rl_act(const float obs[EDGE_RL_OBS_SIZE]) {",
        "    float q[EDGE_RL_N_ACTIONS];",
        "    int k, best = 0;",
        "    for (k = 0; k < EDGE_RL_OBS_SIZE; ++k) if (!(obs[k] - obs[k] == 0.0f)) return EDGE_RL_SAFE_ACTION;",
        "    edge_rl_q_values(obs, q);",
        "    for (k = 1; k < EDGE_RL_N_ACTIONS; ++k) if (q[k] > q[best]) best = k;",
        "    return best;",
        "}",
        "",
        "/* number of golden observations whose greedy action differs from the recorded one (0 = pass) */",
        "static inline int edge_rl_self_test(void) {",
        "    int i, bad = 0;",
        "    for (i = 0; i < EDGE_RL_GOLDEN_N; ++i)",
        "        if (edge_rl_act(&EDGE_RL_GOLDEN_OBS[i * EDGE_RL_OBS_SIZE]) != EDGE_RL_GOLDEN_ACTIONS[i]) ++bad;",
        "    return bad;",
        "}",
        "",
        *head,
        f"#endif /* {guard} */",
        "",
    ]
    return "\n".join(parts)
