"""Policy IR -> a .tflite flatbuffer written directly (flatbuffers + LiteRT's schema module, no converter).

The graph takes `obs` float32 [1, *obs_shape] and gives `q_values` float32 [1, n] and `action`
int64 [1]; normalisation is in the graph. Precisions:

- fp32: FULLY_CONNECTED (and the elementwise ops of LayerNorm and activations).
- int8: full-integer as TFLite's converter emits it: int8 input codes (rounded half to even like
  the IR, see `quantize`), int8 FULLY_CONNECTED with
  per-channel int8 weights (quantized_dimension 0), int32 biases at scale s_in * s_w, int8
  activations with fused ReLU. The interpreter's builtin kernels requantize with the fixed-point
  arithmetic the IR computes (`edge_rl.fixedpoint`), bit for bit; the XNNPACK delegate
  requantizes in float32 and differs on a fraction of a percent of codes (reported by `verify`,
  never run). A float-output int8 layer (the Q head, whose gaps an int8 output
  grid would blur, or one feeding a 1-bit layer) runs as float-carried integers: CAST the codes,
  float FC with integer-valued weights (exact below 2**24), int32 bias add, float32 scale; the
  IR's result bit for bit, with that layer's weights stored as float32.
- 1-bit: no stock TFLite kernel computes W1A1 exactly (LiteRT's INT2 weights quantize float
  inputs on the fly), so a binary layer runs as float ops with +-1 constants in the IR's order:
  butterfly Walsh-Hadamard stages, halving mean square, sign, +-1 matmul (exact), the IR's
  scales. The compact bit-packed form lives in the IR and the C header.

Checklist from the reference note: model version 3, identifier TFL3, buffer 0 empty, both
builtin code fields set, FC version 1 (float) / 4 (int8), weight buffers 16-byte aligned.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_rl.layers import Activation, Dense, DuelingSum, Layer, LayerNorm
from edge_rl.policy import Policy
from edge_rl.qlayers import BINARY_SCALE, DenseBinary, DenseInt8, Dequantize, Quantize, reciprocal
from export import ExportError

FLOAT32, INT32, INT64, BOOL, INT8 = 0, 2, 4, 6, 9
NUMPY_TYPES = {
    np.dtype(np.float32): FLOAT32,
    np.dtype(np.int32): INT32,
    np.dtype(np.int64): INT64,
    np.dtype(np.int8): INT8,
}
OPTIONS = {  # builtin op -> its options table, for ops that have one we set
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "ADD": "AddOptions",
    "SUB": "SubOptions",
    "MUL": "MulOptions",
    "DIV": "DivOptions",
    "MEAN": "ReducerOptions",
    "ARG_MAX": "ArgMaxOptions",
    "LEAKY_RELU": "LeakyReluOptions",
    "RESHAPE": "ReshapeOptions",
    "PAD": "PadOptions",
    "SLICE": "SliceOptions",
    "CONCATENATION": "ConcatenationOptions",
}


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise ExportError(
            "writing .tflite needs the TFLite schema from ai-edge-litert: pip install ai-edge-litert"
        ) from None
    return schema


class _Builder:
    """Tensors, buffers and operators of one subgraph; helpers return tensor indices."""

    def __init__(self) -> None:
        self.s = _schema()
        self.tensors: list = []
        self.buffers: list = [self.s.BufferT()]  # buffer 0: the empty buffer of every non-constant tensor
        self.operators: list = []
        self.opcodes: dict[tuple[int, int], int] = {}

    def tensor(self, name: str, shape: tuple[int, ...], ttype: int, quant: tuple | None = None) -> int:
        t = self.s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), ttype, 0
        if quant is not None:
            scale, zero_point, axis = quant
            q = self.s.QuantizationParametersT()
            q.scale = [float(v) for v in np.atleast_1d(scale)]
            q.zeroPoint = [int(v) for v in np.atleast_1d(zero_point)]
            q.quantizedDimension = axis
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, name: str, value: np.ndarray, quant: tuple | None = None) -> int:
        value = np.ascontiguousarray(value)
        index = self.tensor(name, value.shape, NUMPY_TYPES[value.dtype], quant)
        buffer = _AlignedBuffer()
        buffer.data = value.tobytes()
        self.buffers.append(buffer)
        self.tensors[index].buffer = len(self.buffers) - 1
        return index

    def op(self, name: str, inputs: list[int], outputs: list[int], version: int = 1, **options: Any) -> None:
        code = getattr(self.s.BuiltinOperator, name)
        key = (code, version)
        if key not in self.opcodes:
            self.opcodes[key] = len(self.opcodes)
        o = self.s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.opcodes[key], inputs, outputs
        if name in OPTIONS:
            o.builtinOptionsType = getattr(self.s.BuiltinOptions, OPTIONS[name])
            o.builtinOptions = getattr(self.s, OPTIONS[name] + "T")()
            for k, v in options.items():
                setattr(o.builtinOptions, k, v)
        self.operators.append(o)

    def unary(self, name: str, x: int, shape: tuple[int, ...], **options: Any) -> int:
        out = self.tensor(name.lower(), shape, FLOAT32)
        self.op(name, [x], [out], **options)
        return out

    def binary(self, name: str, a: int, b: int, shape: tuple[int, ...], ttype: int = FLOAT32) -> int:
        out = self.tensor(name.lower(), shape, ttype)
        self.op(name, [a, b], [out])
        return out

    def finish(self, inputs: list[int], outputs: list[int], description: str) -> bytes:
        import flatbuffers

        s = self.s
        codes = []
        for code, version in sorted(self.opcodes, key=self.opcodes.__getitem__):
            c = s.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), version
            codes.append(c)
        sub = s.SubGraphT()
        sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = (
            self.tensors,
            inputs,
            outputs,
            self.operators,
            "main",
        )
        model = s.ModelT()
        model.version, model.operatorCodes, model.subgraphs = 3, codes, [sub]
        model.buffers, model.description = self.buffers, description
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


class _AlignedBuffer:
    """A BufferT whose bytes start on a 16-byte boundary (kernels may read weights in place)."""

    data: bytes = b""

    def Pack(self, builder: Any) -> int:
        s = _schema()
        builder.StartVector(1, len(self.data), 16)
        builder.head -= len(self.data)
        builder.Bytes[builder.head : builder.head + len(self.data)] = self.data
        data = builder.EndVector()
        s.BufferStart(builder)
        s.BufferAddData(builder, data)
        return s.BufferEnd(builder)


class _Writer:
    """Walks the IR layers, keeping track of the current tensor, its width and whether it is int8."""

    def __init__(self, policy: Policy) -> None:
        self.b = _Builder()
        self.policy = policy

    def fc(self, x: int, weight: int, bias: int, width: int, out_type: int = FLOAT32, **kw: Any) -> int:
        quant = kw.pop("quant", None)
        out = self.b.tensor("fc", (1, width), out_type, quant)
        version = 4 if out_type == INT8 else 1
        self.b.op("FULLY_CONNECTED", [x, weight, bias], [out], version=version, **kw)
        return out

    def dense(self, x: int, layer: Dense, relu: bool) -> int:
        act = 1 if relu else 0
        w, b = self.b.const("w", layer.weight), self.b.const("b", layer.bias)
        return self.fc(x, w, b, layer.weight.shape[0], fusedActivationFunction=act)

    def layernorm(self, x: int, layer: LayerNorm, width: int) -> int:
        shape, b = (1, width), self.b
        axis = b.const("axis", np.array([1], np.int32))
        mean = b.tensor("mean", (1, 1), FLOAT32)
        b.op("MEAN", [x, axis], [mean], keepDims=True)
        centred = b.binary("SUB", x, mean, shape)
        var = b.tensor("var", (1, 1), FLOAT32)
        b.op("MEAN", [b.binary("MUL", centred, centred, shape), axis], [var], keepDims=True)
        std = b.unary("SQRT", b.binary("ADD", var, b.const("eps", np.array([layer.eps], np.float32)), (1, 1)), (1, 1))
        y = b.binary("DIV", centred, std, shape)
        if layer.weight is not None:
            y = b.binary(
                "ADD", b.binary("MUL", y, b.const("ln_w", layer.weight), shape), b.const("ln_b", layer.bias), shape
            )
        return y

    def activation(self, x: int, layer: Activation, width: int) -> int:
        if layer.fn == "leaky_relu":
            return self.b.unary("LEAKY_RELU", x, (1, width), alpha=float(layer.slope))
        return self.b.unary("RELU" if layer.fn == "relu" else "TANH", x, (1, width))

    def quantize(self, x: int, layer: Quantize, width: int) -> int:
        """float -> int8 codes rounded half to even, as the IR rounds them.

        QUANTIZE alone does not round like the IR: the builtin kernel rounds ties away from zero on
        the elements past the last full block of 8 (and to even within blocks), and exact ties are
        common after 1-bit layers, whose outputs lie on a grid. So the rounding happens in float first,
        ROUND (banker's) of x * (1 / s) clamped to the code range, and QUANTIZE then only meets
        values within an ulp of a code: v * s quantizes back to v in any rounding mode.
        """
        b, shape, zp = self.b, (1, width), layer.zero_point

        def scalar(name: str, value: float) -> int:
            return b.const(name, np.array([value], np.float32))

        v = b.unary("ROUND", b.binary("MUL", x, scalar("inv_scale", reciprocal(layer.scale)), shape), shape)
        v = b.binary("MINIMUM", b.binary("MAXIMUM", v, scalar("lo", -128 - zp), shape), scalar("hi", 127 - zp), shape)
        out = b.tensor("q", shape, INT8, (layer.scale, zp, 0))
        b.op("QUANTIZE", [b.binary("MUL", v, scalar("scale", layer.scale), shape)], [out], version=2)
        return out

    def dequantize(self, x: int, layer: Dequantize, width: int) -> int:
        """(codes - zp) * scale with CAST, SUB, MUL: the IR's float32 operations (DEQUANTIZE may fuse them)."""
        b, shape = self.b, (1, width)
        codes = b.tensor("codes", shape, FLOAT32)
        b.op("CAST", [x], [codes])
        centred = b.binary("SUB", codes, b.const("zp", np.array([layer.zero_point], np.float32)), shape)
        return b.binary("MUL", centred, b.const("scale", np.array([layer.scale], np.float32)), shape)

    def dense_int8(self, x: int, layer: DenseInt8) -> int:
        b, out_width = self.b, layer.weight.shape[0]
        w_quant = (layer.weight_scale, np.zeros(out_width, np.int64), 0)
        acc_scale = np.float32(layer.input_scale) * layer.weight_scale
        if layer.output_scale is not None:  # int8 -> int8, the integer kernel
            w = b.const("w_q", layer.weight, w_quant)
            bias = b.const("b_q", layer.bias, (acc_scale, np.zeros(out_width, np.int64), 0))
            out_q = (layer.output_scale, layer.output_zero_point, 0)
            return self.fc(x, w, bias, out_width, INT8, quant=out_q, fusedActivationFunction=int(layer.relu))
        # float output (the Q head, or an int8 layer feeding a 1-bit one): float-carried integers, so
        # the result is the IR's float32(acc) * m bit for bit. Codes and products are integers below
        # 2**24, exact in float32 whatever order the FC kernel sums them in.
        in_width = layer.weight.shape[1]
        codes = b.tensor("codes", (1, in_width), FLOAT32)
        b.op("CAST", [x], [codes])
        centred = b.binary(
            "SUB", codes, b.const("zp_in", np.array([layer.input_zero_point], np.float32)), (1, in_width)
        )
        w = b.const("w_codes", layer.weight.astype(np.float32))
        acc_f = self.fc(centred, w, b.const("zero_b", np.zeros(out_width, np.float32)), out_width)
        acc = b.tensor("acc", (1, out_width), INT32)
        b.op("CAST", [acc_f], [acc])
        acc = b.binary("ADD", acc, b.const("b_q", layer.bias), (1, out_width), INT32)
        acc_out = b.tensor("acc_f", (1, out_width), FLOAT32)
        b.op("CAST", [acc], [acc_out])
        return b.binary("MUL", acc_out, b.const("acc_scale", layer.acc_scale), (1, out_width))

    def slice_(self, x: int, begin: list[int], size: list[int]) -> int:
        b = self.b
        out = b.tensor("slice", tuple(size), FLOAT32)
        b.op(
            "SLICE", [x, b.const("begin", np.array(begin, np.int32)), b.const("size", np.array(size, np.int32))], [out]
        )
        return out

    def reshape(self, x: int, shape: list[int]) -> int:
        out = self.b.tensor("reshaped", tuple(shape), FLOAT32)
        self.b.op("RESHAPE", [x, self.b.const("shape", np.array(shape, np.int32))], [out], newShape=shape)
        return out

    def fwht(self, x: int, n: int) -> int:
        """`edge_rl.qlayers.fwht`, stage by stage: the same additions in the same order."""
        b, h = self.b, 1
        while h < n:
            half = [1, n // (2 * h), 1, h]
            pairs = self.reshape(x, [1, n // (2 * h), 2, h])
            low, high = self.slice_(pairs, [0, 0, 0, 0], half), self.slice_(pairs, [0, 0, 1, 0], half)
            merged = b.tensor("stage", (1, n // (2 * h), 2, h), FLOAT32)
            sums = [b.binary("ADD", low, high, tuple(half)), b.binary("SUB", low, high, tuple(half))]
            b.op("CONCATENATION", sums, [merged], axis=2)
            x = self.reshape(merged, [1, n])
            h *= 2
        return x

    def halving_sum(self, x: int, n: int) -> int:
        """`edge_rl.qlayers.halving_sum`: add the second half onto the first until one value is left."""
        while n > 1:
            n //= 2
            x = self.b.binary("ADD", self.slice_(x, [0, 0], [1, n]), self.slice_(x, [0, n], [1, n]), (1, n))
        return x

    def dense_binary(self, x: int, layer: DenseBinary) -> int:
        b, n, out_width = self.b, layer.n, layer.bias.shape[0]
        if n > layer.in_features:
            padded = b.tensor("padded", (1, n), FLOAT32)
            b.op("PAD", [x, b.const("pads", np.array([[0, 0], [0, n - layer.in_features]], np.int32))], [padded])
            x = padded
        x = b.binary("MUL", x, b.const("diag", layer.diagonal), (1, n))
        rotated = b.binary("MUL", self.fwht(x, n), b.const("inv_sqrt_n", np.array([layer.inv_sqrt_n])), (1, n))
        squares = b.binary("MUL", rotated, rotated, (1, n))
        inv_n = b.const("inv_n", np.array([1 / n], np.float32))
        mean_sq = b.binary("MUL", self.halving_sum(squares, n), inv_n, (1, 1))
        c1 = b.const("c1", np.array([BINARY_SCALE], np.float32))
        s_x = b.binary("MUL", c1, b.unary("SQRT", mean_sq, (1, 1)), (1, 1))
        positive = b.binary("GREATER_EQUAL", rotated, b.const("zero", np.array([0], np.float32)), (1, n), BOOL)
        signs = b.tensor("signs", (1, n), FLOAT32)
        plus, minus = b.const("one", np.array([1], np.float32)), b.const("minus_one", np.array([-1], np.float32))
        b.op("SELECT_V2", [positive, plus, minus], [signs])
        zero_bias = b.const("zero_b", np.zeros(out_width, np.float32))
        count = self.fc(signs, b.const("w_pm1", layer.weight_signs), zero_bias, out_width)  # exact: sums of +-1
        scale = b.binary("MUL", s_x, b.const("s_w", layer.scales), (1, out_width))
        return b.binary("ADD", b.binary("MUL", count, scale, (1, out_width)), b.const("b", layer.bias), (1, out_width))

    def dueling_sum(self, x: int, width: int) -> int:
        b = self.b

        def cols(start: int, size: int) -> int:
            out = b.tensor("slice", (1, size), FLOAT32)
            begin, sizes = (
                b.const("begin", np.array([0, start], np.int32)),
                b.const("size", np.array([1, size], np.int32)),
            )
            b.op("SLICE", [x, begin, sizes], [out])
            return out

        return b.binary("ADD", cols(0, 1), cols(1, width - 1), (1, width - 1))

    def write(self) -> bytes:
        b, policy = self.b, self.policy
        obs = policy.observation
        mean, scale, clip = obs.flat_normalization
        x = inp = b.tensor("obs", (1, *obs.shape), FLOAT32)
        width = obs.size
        if len(obs.shape) != 1:
            flat = b.tensor("flat", (1, width), FLOAT32)
            b.op("RESHAPE", [x, b.const("shape", np.array([1, width], np.int32))], [flat], newShape=[1, width])
            x = flat
        x = b.binary(
            "MUL", b.binary("SUB", x, b.const("obs_mean", mean), (1, width)), b.const("obs_scale", scale), (1, width)
        )
        x = b.binary("MINIMUM", x, b.const("clip_hi", np.array([clip], np.float32)), (1, width))
        x = b.binary("MAXIMUM", x, b.const("clip_lo", np.array([-clip], np.float32)), (1, width))
        layers = policy.layers
        i = 0
        while i < len(layers):
            layer = layers[i]
            fuse = isinstance(layer, Dense) and i + 1 < len(layers) and _is_relu(layers[i + 1])
            x = self.layer(x, layer, width, fuse)
            width = layer.out_features(width)
            i += 2 if fuse else 1
        q = x
        b.tensors[q].name = "q_values"
        action = b.tensor("action", (1,), INT64)
        b.op("ARG_MAX", [q, b.const("argmax_axis", np.array([1], np.int32))], [action], version=2, outputType=INT64)
        return b.finish([inp], [q, action], "edge-rl policy: obs -> q_values, action")

    def layer(self, x: int, layer: Layer, width: int, fuse_relu: bool) -> int:
        if isinstance(layer, Dense):
            return self.dense(x, layer, fuse_relu)
        if isinstance(layer, LayerNorm):
            return self.layernorm(x, layer, width)
        if isinstance(layer, Activation):
            return self.activation(x, layer, width)
        if isinstance(layer, Quantize):
            return self.quantize(x, layer, width)
        if isinstance(layer, Dequantize):
            return self.dequantize(x, layer, width)
        if isinstance(layer, DenseInt8):
            return self.dense_int8(x, layer)
        if isinstance(layer, DenseBinary):
            return self.dense_binary(x, layer)
        if isinstance(layer, DuelingSum):
            return self.dueling_sum(x, width)
        raise ExportError(f"no TFLite form for layer kind {layer.kind!r}")


def _is_relu(layer: Layer) -> bool:
    return isinstance(layer, Activation) and layer.fn == "relu"


def to_tflite(policy: Policy) -> bytes:
    """The .tflite flatbuffer of `policy` (batch 1)."""
    return _Writer(policy).write()
