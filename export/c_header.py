"""Policy IR -> `policy.h`: portable C99 inference for microcontrollers, no dynamic allocation.

One header, everything `static`: weights as const arrays (flash), scratch buffers on the stack
sized at generation time, `edge_rl_q_values`, `edge_rl_act` and `edge_rl_self_test`, which runs
the recorded golden observations and returns how many greedy actions differ (0 = pass), so
firmware can check itself after flashing. int8 layers use the IR's integer arithmetic (int32
accumulators, TFLite's fixed-point requantization in int64); 1-bit layers keep their packed
sign bits and run XNOR/popcount after a fast Walsh-Hadamard transform (n log n additions and no
n x n matrix in flash), in the same operation order as the IR, so their signs match it exactly.
Needs <stdint.h> and <math.h> (link with -lm).
"""

from __future__ import annotations

import math

import numpy as np

from edge_rl.layers import Activation, Dense, DuelingSum, Layer, LayerNorm
from edge_rl.policy import Policy
from edge_rl.qlayers import BINARY_SCALE, DenseBinary, DenseInt8, Dequantize, Quantize, reciprocal, unpack_signs
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
    """Generates the arrays and statements of each layer; buffers `a` (float) / `qa` (int8) in, `b` / `qb` out."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.arrays: list[str] = []
        self.code: list[str] = []

    def emit(self, i: int, layer: Layer, width: int, int8_in: bool) -> None:
        src, out = ("qa" if int8_in else "a"), ("qb" if layer.output_kind == "int8" else "b")
        p = f"L{i}_"
        c = self.code
        if isinstance(layer, Dense):
            self.arrays += [_array("float", p + "w", layer.weight, _f), _array("float", p + "b", layer.bias, _f)]
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
                self.arrays += [_array("float", p + "g", layer.weight, _f), _array("float", p + "beta", layer.bias, _f)]
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
        self.arrays += [
            _array("int8_t", p + "w", layer.weight),
            _array("int32_t", p + "b", layer.bias, lambda v: "INT32_MIN" if int(v) == -(2**31) else str(int(v))),
        ]
        zp = layer.input_zero_point
        acc = (
            f"int32_t acc = {p}b[o];"
            f" for (k = 0; k < {k}; ++k) acc += ((int32_t){src}[k] - ({zp})) * (int32_t){p}w[o * {k} + k];"
        )
        if layer.output_scale is None:
            self.arrays.append(_array("float", p + "s", layer.acc_scale, _f))
            store = f"{out}[o] = (float)acc * {p}s[o];"
        else:
            m0, shift = layer.requantization
            self.arrays += [_array("int32_t", p + "m0", m0), _array("int8_t", p + "sh", shift)]
            zp, low = layer.output_zero_point, layer.output_low
            store = f"{out}[o] = edge_rl_requant(acc, {p}m0[o], {p}sh[o], {zp}, {low});"
        self.code.append(f"for (o = 0; o < {o}; ++o) {{ {acc} {store} }}")

    def _dense_binary(self, p: str, layer: DenseBinary, src: str, out: str) -> None:
        n, o = layer.n, layer.bias.shape[0]
        d = unpack_signs(layer.diag_bits, n)
        self.arrays += [
            _array("uint8_t", p + "wbits", layer.sign_bits),
            _array("float", p + "d", d, _f),
            _array("float", p + "sw", layer.weight_scale.astype(np.float32), _f),
            _array("float", p + "b", layer.bias, _f),
        ]
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


def to_c_header(
    policy: Policy, golden_obs: np.ndarray, golden_actions: np.ndarray, guard: str = "EDGE_RL_POLICY_H"
) -> str:
    """The header's text; `golden_obs` (N, *obs_shape) with the numpy IR's `golden_actions` (N,)."""
    obs = policy.observation
    mean, scale, clip = obs.flat_normalization
    widths, width, int8_in = [obs.size], obs.size, False
    emitter = _Emitter(policy)
    for i, layer in enumerate(policy.layers):
        emitter.emit(i, layer, width, int8_in)
        width = layer.out_features(width)
        widths.append(width)
        int8_in = layer.output_kind == "int8"
    max_w = max(max(widths), max((getattr(lay, "n", 0) for lay in policy.layers), default=0))
    n_act = policy.action.n
    golden_obs = np.asarray(golden_obs, np.float32).reshape(len(golden_obs), obs.size)
    body = "\n    ".join(emitter.code)
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
        *emitter.arrays,
        _array("float", "EDGE_RL_GOLDEN_OBS", golden_obs, _f),
        _array("int", "EDGE_RL_GOLDEN_ACTIONS", np.asarray(golden_actions, np.int64)),
        "/* Q-values of one raw observation; returns 0 (non-finite inputs give the safe action in edge_rl_act) */",
        "static inline int edge_rl_q_values(const float obs[EDGE_RL_OBS_SIZE], float q[EDGE_RL_N_ACTIONS]) {",
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
        f"    {body}",
        "    for (k = 0; k < EDGE_RL_N_ACTIONS; ++k) q[k] = a[k];",
        "    return 0;",
        "}",
        "",
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
        f"#endif /* {guard} */",
        "",
    ]
    return "\n".join(parts)
