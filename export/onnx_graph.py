"""Policy IR -> one self-contained ONNX file, built with `onnx.helper` (no torch).

Inputs and outputs: `obs` float32 [batch, *obs_shape] -> `q_values` float32 [batch, n_actions]
and `action` int64 [batch] (first maximum, as `numpy.argmax`). The observation normalisation
(mean, scale, clip) is the first part of the graph, so a device needs nothing but the file.

int8 layers run as *float-carried integers*: int8 codes are stored as int8 initializers, cast to
float32 and multiplied with a float MatMul. Every product and partial sum is an integer below
2**24 (|x_q - zp| <= 255, |w| <= 127, at most 518 inputs), which float32 represents exactly in
any summation order, so the int32 accumulator is reproduced bit for bit. The int32 bias add and
TFLite's fixed-point requantization (`edge_rl.fixedpoint`) follow in int64 integer ops: Mul by the
multiplier, floor division by powers of two as Div(v - Mod(v, 2^k), 2^k) (Mod with fmod=0 is
floored and exact on int64; BitShift takes unsigned types only), the int32 wraps as Mod(v + 2^31,
2^32) - 2^31. This sidesteps ONNX Runtime's fused int8 kernels, which saturate int16 pair sums on
x86 without VNNI, round differently and whose QLinearMatMul has no bias input.
1-bit layers keep their W1A1 semantics and the IR's operation order: the butterfly Walsh-Hadamard
stages and the halving mean square as explicit Add/Sub nodes, the signs (`Where`) times +-1
weights (stored as int8) as an exact count, scaled as the IR does; so they match bit for bit.
"""

from __future__ import annotations

import numpy as np

from edge_rl.layers import Activation, Dense, DuelingSum, Layer, LayerNorm
from edge_rl.policy import Policy
from edge_rl.qlayers import BINARY_SCALE, INT8_MAX, INT8_MIN, DenseBinary, DenseInt8, Dequantize, Quantize, reciprocal
from export import ExportError

OPSET = 17  # LayerNormalization; ORT >= 1.14
IR_VERSION = 8
MAX_EXACT_INT8_INPUTS = (1 << 24) // (255 * 127)  # 518: float32 accumulators stay exact below this


class _Graph:
    """Collects nodes and initializers; every helper returns the name of the tensor it made."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self._name(hint)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, output: str | None = None, **attrs) -> str:
        out = output or self._name(hint or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _dense(g: _Graph, x: str, layer: Dense) -> str:
    return g.op("Gemm", [x, g.const("w", layer.weight), g.const("b", layer.bias)], "dense", transB=1)


def _layernorm(g: _Graph, x: str, layer: LayerNorm, width: int) -> str:
    ones, zeros = np.ones(width, np.float32), np.zeros(width, np.float32)
    weight = layer.weight if layer.weight is not None else ones
    bias = layer.bias if layer.bias is not None else zeros
    return g.op(
        "LayerNormalization", [x, g.const("ln_w", weight), g.const("ln_b", bias)], "ln", axis=-1, epsilon=layer.eps
    )


def _activation(g: _Graph, x: str, layer: Activation) -> str:
    if layer.fn == "relu":
        return g.op("Relu", [x])
    if layer.fn == "leaky_relu":
        return g.op("LeakyRelu", [x], alpha=float(layer.slope))
    return g.op("Tanh", [x])


def _saturate(g: _Graph, x: str, low: float) -> str:
    """Clip rounded values to [low, 127]: the int8 codes, still carried as float32."""
    return g.op("Clip", [x, g.const("lo", np.float32(low)), g.const("hi", np.float32(INT8_MAX))], "codes")


def _quantize(g: _Graph, x: str, layer: Quantize) -> str:
    scaled = g.op("Mul", [x, g.const("inv_scale", reciprocal(layer.scale))])
    shifted = g.op("Add", [g.op("Round", [scaled]), g.const("zp", np.float32(layer.zero_point))])
    return _saturate(g, shifted, INT8_MIN)


def _floor_div(g: _Graph, v: str, divisor: str) -> str:
    """floor(v / d) for int64 v and positive d: exact, whatever the sign of v."""
    return g.op("Div", [g.op("Sub", [v, g.op("Mod", [v, divisor], fmod=0)]), divisor])


def _wrap32(g: _Graph, v: str) -> str:
    """int64 values as an int32 register holds them (two's complement wrap)."""
    half, full = g.const("two31", np.int64(2**31)), g.const("two32", np.int64(2**32))
    return g.op("Sub", [g.op("Mod", [g.op("Add", [v, half]), full], fmod=0), half])


def _requantize(g: _Graph, acc: str, layer: DenseInt8) -> str:
    """int32 accumulators -> int8 codes carried as float32, exactly as `edge_rl.fixedpoint.requantize`."""
    m0, shift = (a.astype(np.int64) for a in layer.requantization)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    x = g.op("Cast", [acc], "acc64", to=7)
    if left.any():
        x = _wrap32(g, g.op("Mul", [x, g.const("pow2_left", np.int64(2) ** left)]))
    product = g.op("Add", [g.op("Mul", [x, g.const("m0", m0)]), g.const("half31", np.int64(2**30))])
    r1 = _floor_div(g, product, g.const("two31", np.int64(2**31)))
    nudge = np.where(right > 0, np.int64(2) ** np.maximum(right - 1, 0), 0).astype(np.int64)
    r = _floor_div(g, g.op("Add", [r1, g.const("nudge", nudge)]), g.const("pow2_right", np.int64(2) ** right))
    y = _wrap32(g, g.op("Add", [r, g.const("zp_out", np.int64(layer.output_zero_point))]))
    y = g.op("Clip", [y, g.const("lo", np.int64(layer.output_low)), g.const("hi", np.int64(INT8_MAX))])
    return g.op("Cast", [y], "codes", to=1)


def _dense_int8(g: _Graph, x: str, layer: DenseInt8) -> str:
    if layer.weight.shape[1] > MAX_EXACT_INT8_INPUTS:
        raise ExportError(
            f"int8 layer with {layer.weight.shape[1]} inputs: exact float32 accumulation allows at most "
            f"{MAX_EXACT_INT8_INPUTS}"
        )
    centred = g.op("Sub", [x, g.const("zp_in", np.float32(layer.input_zero_point))])
    weight = g.op("Cast", [g.const("w_q", np.ascontiguousarray(layer.weight.T))], "w_f", to=1)
    acc = g.op("Cast", [g.op("MatMul", [centred, weight])], "acc", to=6)  # exact integers -> int32
    acc = g.op("Add", [acc, g.const("b_q", layer.bias)])
    if layer.output_scale is not None:
        return _requantize(g, acc, layer)
    return g.op("Mul", [g.op("Cast", [acc], "acc_f", to=1), g.const("acc_scale", layer.acc_scale)])


def _slice(g: _Graph, x: str, start: int, end: int, axis: int) -> str:
    def ints(hint: str, v: int) -> str:
        return g.const(hint, np.array([v], np.int64))

    return g.op("Slice", [x, ints("start", start), ints("end", end), ints("axis", axis)])


def _fwht(g: _Graph, x: str, n: int) -> str:
    """The butterfly stages of `edge_rl.qlayers.fwht`, one Add and one Sub per stage, same order."""
    h = 1
    while h < n:
        pairs = g.op("Reshape", [x, g.const("shape", np.array([-1, n // (2 * h), 2, h], np.int64))], "pairs")
        low, high = _slice(g, pairs, 0, 1, 2), _slice(g, pairs, 1, 2, 2)
        merged = g.op("Concat", [g.op("Add", [low, high]), g.op("Sub", [low, high])], "stage", axis=2)
        x = g.op("Reshape", [merged, g.const("shape", np.array([-1, n], np.int64))], "fwht")
        h *= 2
    return x


def _halving_sum(g: _Graph, x: str, n: int) -> str:
    """Row sums as `edge_rl.qlayers.halving_sum` adds them; keeps the (batch, 1) shape."""
    while n > 1:
        n //= 2
        x = g.op("Add", [_slice(g, x, 0, n, 1), _slice(g, x, n, 2 * n, 1)], "halves")
    return x


def _dense_binary(g: _Graph, x: str, layer: DenseBinary) -> str:
    n = layer.n
    if n > layer.in_features:
        x = g.op("Pad", [x, g.const("pads", np.array([0, 0, 0, n - layer.in_features], np.int64))], "padded")
    x = g.op("Mul", [x, g.const("diag", layer.diagonal)], "signed")
    rotated = g.op("Mul", [_fwht(g, x, n), g.const("inv_sqrt_n", layer.inv_sqrt_n)], "rotated")
    mean_sq = g.op("Mul", [_halving_sum(g, g.op("Mul", [rotated, rotated]), n), g.const("inv_n", np.float32(1 / n))])
    s_x = g.op("Mul", [g.const("c1", np.float32(BINARY_SCALE)), g.op("Sqrt", [mean_sq])], "s_x")
    positive = g.op("GreaterOrEqual", [rotated, g.const("zero", np.float32(0))])
    signs = g.op("Where", [positive, g.const("one", np.float32(1)), g.const("minus_one", np.float32(-1))], "signs")
    w_signs = g.op(
        "Cast", [g.const("w_sign", np.ascontiguousarray(layer.weight_signs.T).astype(np.int8))], "w_pm1", to=1
    )
    count = g.op("MatMul", [signs, w_signs], "count")  # sums of +-1: exact in any order
    scale = g.op("Mul", [s_x, g.const("s_w", layer.scales)], "scale")
    return g.op("Add", [g.op("Mul", [count, scale]), g.const("b", layer.bias)])


def _dueling_sum(g: _Graph, x: str, width: int) -> str:
    return g.op("Add", [_slice(g, x, 0, 1, 1), _slice(g, x, 1, width, 1)], "q")


def _layer(g: _Graph, x: str, layer: Layer, width: int) -> str:
    if isinstance(layer, Dense):
        return _dense(g, x, layer)
    if isinstance(layer, LayerNorm):
        return _layernorm(g, x, layer, width)
    if isinstance(layer, Activation):
        return _activation(g, x, layer)
    if isinstance(layer, Quantize):
        return _quantize(g, x, layer)
    if isinstance(layer, Dequantize):  # codes are carried as float32 already: exact
        centred = g.op("Sub", [x, g.const("zp", np.float32(layer.zero_point))])
        return g.op("Mul", [centred, g.const("scale", np.float32(layer.scale))], "dequantized")
    if isinstance(layer, DenseInt8):
        return _dense_int8(g, x, layer)
    if isinstance(layer, DenseBinary):
        return _dense_binary(g, x, layer)
    if isinstance(layer, DuelingSum):
        return _dueling_sum(g, x, width)
    raise ExportError(f"no ONNX form for layer kind {layer.kind!r}")


def to_onnx(policy: Policy) -> bytes:
    """The serialized ONNX model of `policy`, checked by `onnx.checker`."""
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    obs = policy.observation
    mean, scale, clip = obs.flat_normalization
    x = g.op("Flatten", ["obs"], "flat", axis=1)
    x = g.op("Mul", [g.op("Sub", [x, g.const("obs_mean", mean)]), g.const("obs_scale", scale)], "normed")
    x = g.op("Clip", [x, g.const("clip_lo", -clip), g.const("clip_hi", clip)], "clipped")
    width = obs.size
    for layer in policy.layers:
        x = _layer(g, x, layer, width)
        width = layer.out_features(width)
    g.op("Identity", [x], output="q_values")
    g.op("ArgMax", ["q_values"], output="action", axis=1, keepdims=0, select_last_index=0)
    graph = helper.make_graph(
        g.nodes,
        "edge_rl_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", *obs.shape])],
        [
            helper.make_tensor_value_info("q_values", TensorProto.FLOAT, ["batch", policy.action.n]),
            helper.make_tensor_value_info("action", TensorProto.INT64, ["batch"]),
        ],
        g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="edge-rl",
        doc_string="edge-rl policy: obs -> q_values, action",
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()
