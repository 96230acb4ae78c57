"""int8 and 1-bit layers: integer exactness, bit packing, QuEST constants, PTQ of whole policies."""

import math
from itertools import pairwise

import numpy as np
import pytest

from edge_rl.layers import Activation, Dense
from edge_rl.policy import ActionSpec, ObservationSpec, Policy
from edge_rl.qlayers import BINARY_SCALE, DenseBinary, DenseInt8, Quantize, hadamard, pack_signs, unpack_signs
from quantize.binary import binary_dense, random_diagonal, rotated_weight
from quantize.convert import default_plan, quantize_policy
from quantize.equalize import equalize_ranges
from quantize.int8 import activation_qparams, int8_dense, quantize_weights, split_value_row


def mlp(rng: np.random.Generator, sizes=(6, 32, 32, 3)) -> Policy:
    layers = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(Dense(rng.normal(size=(b, a)) / math.sqrt(a), rng.normal(size=b) * 0.1))
        if i < len(sizes) - 2:
            layers.append(Activation("relu"))
    obs = ObservationSpec.unnormalized(np.full(sizes[0], -5.0), np.full(sizes[0], 5.0))
    return Policy(obs, ActionSpec(sizes[-1]), layers)


def reference_int8_dense(layer: DenseInt8, x_q: np.ndarray) -> np.ndarray:
    """Independent per-element integer arithmetic in Python ints (no numpy matmul)."""
    out = np.empty((x_q.shape[0], layer.weight.shape[0]), np.float32)
    for n in range(x_q.shape[0]):
        for c in range(layer.weight.shape[0]):
            acc = int(layer.bias[c])
            for k in range(layer.weight.shape[1]):
                acc += (int(x_q[n, k]) - layer.input_zero_point) * int(layer.weight[c, k])
            scale = np.float32(layer.input_scale) * layer.weight_scale[c]
            if layer.output_scale is None:
                out[n, c] = np.float32(acc) * scale
            else:
                y = int(np.rint(np.float32(acc) * (scale / np.float32(layer.output_scale)))) + layer.output_zero_point
                out[n, c] = min(max(y, layer.output_zero_point if layer.relu else -128), 127)
    return out


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("float_out", [True, False])
def test_int8_dense_is_integer_exact(relu: bool, float_out: bool) -> None:
    rng = np.random.default_rng(0)
    dense = Dense(rng.normal(size=(12, 20)), rng.normal(size=12))
    x = rng.normal(size=(16, 20)).astype(np.float32)
    in_q = activation_qparams(x, "minmax")
    out_q = None if float_out else activation_qparams(np.maximum(x @ dense.weight.T + dense.bias, 0), "minmax")
    layer = int8_dense(dense, in_q, out_q, relu=relu)
    x_q = Quantize(*in_q).forward(x)
    got = layer.forward(x_q)
    np.testing.assert_array_equal(got.astype(np.float32), reference_int8_dense(layer, x_q))
    assert got.dtype == (np.float32 if float_out else np.int8)


def test_int8_matches_float_within_one_quantization_step() -> None:
    rng = np.random.default_rng(1)
    dense = Dense(rng.normal(size=(8, 16)), rng.normal(size=8))
    x = rng.uniform(-2, 2, size=(256, 16)).astype(np.float32)
    in_q = activation_qparams(x, "minmax")
    out_q = activation_qparams(x @ dense.weight.T + dense.bias, "minmax")
    layer = int8_dense(dense, in_q, out_q, relu=False)
    x_q = Quantize(*in_q).forward(x)
    deq = (layer.forward(x_q).astype(np.float64) - out_q[1]) * out_q[0]
    # float reference on the same quantized operands: only the output rounding may differ
    x_deq = (x_q.astype(np.float64) - in_q[1]) * in_q[0]
    w_deq = layer.weight.astype(np.float64) * layer.weight_scale[:, None]
    reference = x_deq @ w_deq.T + dense.bias
    assert np.abs(deq - reference).max() <= out_q[0]
    # against the unquantized layer: input and weight rounding bounded through |W|
    bound = out_q[0] + in_q[0] / 2 * np.abs(dense.weight).sum(1) + (np.abs(x).max() * layer.weight_scale / 2 * 16)
    assert (np.abs(deq - (x @ dense.weight.T + dense.bias)) <= bound).all()


def test_weight_codes_are_symmetric_per_channel() -> None:
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -3.0]], np.float32)
    codes, scale = quantize_weights(w)
    np.testing.assert_array_equal(codes[0], [64, -127, 32])
    np.testing.assert_array_equal(codes[2], [127, 64, -127])
    assert (codes[1] == 0).all() and scale[1] > 0
    np.testing.assert_allclose(scale[[0, 2]], [1 / 127, 3 / 127], rtol=1e-6)


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse"])
def test_activation_qparams_cover_zero_exactly(method: str) -> None:
    v = np.random.default_rng(2).gamma(2.0, size=10_000)
    scale, zp = activation_qparams(v, method)
    assert zp == -128  # non-negative data: 0 maps to the lowest code
    assert (v.max() * 0.5) / scale < 256
    with pytest.raises(ValueError, match="calibration"):
        activation_qparams(v, "guess")


def test_bit_packing_round_trip() -> None:
    rng = np.random.default_rng(3)
    for n in (4, 8, 13, 64):
        signs = rng.random((5, n)) < 0.5
        bits = pack_signs(signs)
        assert bits.dtype == np.uint8 and bits.shape == (5, (n + 7) // 8)
        np.testing.assert_array_equal(unpack_signs(bits, n) > 0, signs)
    assert pack_signs(np.array([True, False, False, False, False, False, False, True]))[0] == 0b10000001


def test_quest_constants_and_hadamard() -> None:
    assert BINARY_SCALE == pytest.approx(0.7978845608, abs=1e-10)  # sqrt(2/pi), MSE-optimal for N(0,1)
    g = np.random.default_rng(4).normal(size=2_000_000)
    mse = lambda a: np.mean((np.sign(g) * a - g) ** 2)  # noqa: E731
    assert mse(BINARY_SCALE) < min(mse(BINARY_SCALE * 0.97), mse(BINARY_SCALE * 1.03))
    assert mse(BINARY_SCALE) == pytest.approx(1 - 2 / math.pi, abs=2e-3)  # 0.3634
    h = hadamard(16)
    np.testing.assert_allclose(h @ h.T, np.eye(16), atol=1e-6)
    d = random_diagonal(16, seed=5)
    assert set(np.unique(d)) == {-1.0, 1.0}
    np.testing.assert_array_equal(d, random_diagonal(16, seed=5))


def test_binary_layer_forward_forms_agree_and_approximate_float() -> None:
    rng = np.random.default_rng(6)
    dense = Dense(rng.normal(size=(24, 20)), rng.normal(size=24) * 0.1)  # 20 inputs pad to 32
    layer = binary_dense(dense, seed=7)
    assert layer.n == 32 and layer.sign_bits.shape == (24, 4) and layer.weight_scale.dtype == np.float16
    x = np.maximum(rng.normal(size=(200, 20)), 0).astype(np.float32)  # ReLU-like inputs
    np.testing.assert_allclose(layer.forward(x), layer.forward_popcount(x), rtol=1e-6, atol=1e-6)
    # the rotated-basis identity x W^T = (x D H)(W D H)^T holds before binarisation
    rot = rotated_weight(dense.weight, seed=7)
    np.testing.assert_allclose(layer.rotate(x) @ rot.T, x @ dense.weight.T, atol=1e-4)
    # 1-bit W and x keep the direction: correlation with the float layer stays high
    corr = np.corrcoef(layer.forward(x).ravel(), (x @ dense.weight.T + dense.bias).ravel())[0, 1]
    assert corr > 0.5


def test_sign_zero_is_plus_one() -> None:
    layer = binary_dense(Dense(np.eye(8, dtype=np.float32), np.zeros(8)), seed=0)
    s_x, signs = layer.binarize_input(np.zeros((1, 8), np.float32))
    assert (signs == 1).all() and s_x[0] == 0


def test_ptq_policy_round_trip_and_agreement(tmp_path) -> None:
    rng = np.random.default_rng(8)
    policy = mlp(rng)
    states = rng.normal(size=(4000, 6)).astype(np.float32)
    q = quantize_policy(policy, states[:2000], default_plan(3, "int8"))
    kinds = [layer.kind for layer in q.layers]
    assert kinds == ["quantize", "dense_int8", "dense_int8", "dense_int8", "dueling_sum"]
    assert q.layers[1].relu and q.layers[1].output_kind == "int8" and q.layers[3].output_kind == "float"
    assert q.layers[3].weight.shape == (4, 32)  # shared value row + 3 action rows
    held_out = states[2000:]
    assert (q.act(held_out) == policy.act(held_out)).mean() > 0.95
    q.save(tmp_path)
    np.testing.assert_array_equal(Policy.load(tmp_path).q_values(held_out), q.q_values(held_out))
    assert q.metadata["quantization"]["plan"] == ["int8"] * 3


def test_one_bit_plan_keeps_first_and_last_int8(tmp_path) -> None:
    rng = np.random.default_rng(9)
    policy = mlp(rng, (6, 32, 32, 32, 3))
    q = quantize_policy(policy, rng.normal(size=(500, 6)).astype(np.float32), default_plan(4, "1bit"))
    kinds = [layer.kind for layer in q.layers]
    assert kinds == [
        "quantize",
        "dense_int8",
        "activation",
        "dense_binary",
        "activation",
        "dense_binary",
        "activation",
        "quantize",
        "dense_int8",
        "dueling_sum",
    ]
    q.save(tmp_path)
    loaded = Policy.load(tmp_path)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded.q_values(x), q.q_values(x))
    assert isinstance(loaded.layers[3], DenseBinary)


def test_fixed_input_ranges_override_calibration() -> None:
    """After QAT the deployed ranges are the trained ones, not a fresh calibration."""
    rng = np.random.default_rng(10)
    policy = mlp(rng)
    states = rng.normal(size=(300, 6)).astype(np.float32)
    fixed = {0: (0.05, 3), 1: (0.02, -128), 2: (0.03, -128)}
    q = quantize_policy(policy, states, default_plan(3, "int8"), input_qparams=fixed)
    assert (q.layers[0].scale, q.layers[0].zero_point) == fixed[0]
    assert (q.layers[1].output_scale, q.layers[1].output_zero_point) == fixed[1]
    assert (q.layers[2].input_scale, q.layers[2].input_zero_point) == fixed[1]
    assert (q.layers[3].input_scale, q.layers[3].input_zero_point) == fixed[2]
    calibrated = quantize_policy(policy, states, default_plan(3, "int8"))
    assert calibrated.layers[0].scale != 0.05


def test_split_head_keeps_small_q_gaps_that_full_rows_round_away() -> None:
    """Q ~ 40 with gaps ~ 0.05: one int8 scale per full row cannot resolve the gap, the split head can."""
    rng = np.random.default_rng(11)
    shared = rng.uniform(0.5, 1.5, size=(1, 32))
    weight = (shared + rng.normal(size=(3, 32)) * 2e-3).astype(np.float32)
    bias = np.zeros(3, np.float32)
    split_w, split_b = split_value_row(weight, bias)
    np.testing.assert_allclose(split_w[:1] + split_w[1:], weight, atol=1e-6)
    np.testing.assert_allclose(split_b[:1] + split_b[1:], bias, atol=1e-6)
    x = rng.uniform(0, 2, size=(2000, 32)).astype(np.float32)
    gaps = x @ weight.T
    in_q = activation_qparams(x, "minmax")
    x_q = Quantize(*in_q).forward(x)
    full = int8_dense(Dense(weight, bias), in_q, None, relu=False).forward(x_q)
    split = int8_dense(Dense(split_w, split_b), in_q, None, relu=False).forward(x_q)
    split_q = split[:, :1] + split[:, 1:]
    agree_full = (full.argmax(1) == gaps.argmax(1)).mean()
    agree_split = (split_q.argmax(1) == gaps.argmax(1)).mean()
    assert agree_split > 0.95 and agree_full < 0.8, (agree_split, agree_full)


def test_equalization_preserves_the_function_and_equalises_ranges() -> None:
    rng = np.random.default_rng(12)
    policy = mlp(rng, (6, 32, 32, 3))
    wide = policy.layers[0]
    wide.weight[:8] *= 20.0  # a few channels dominate the per-tensor range
    wide.bias[:8] *= 20.0
    policy = Policy(policy.observation, policy.action, policy.layers)
    states = (rng.normal(size=(3000, 6)) * np.array([1, 1, 1, 1, 1.8, 0.2])).astype(np.float32)
    eq = equalize_ranges(policy, states)
    np.testing.assert_allclose(eq.q_values(states), policy.q_values(states), rtol=1e-4, atol=1e-4)
    x = eq.observation.normalize(states)
    in_ranges = np.percentile(np.abs(x), 99.99, axis=0)
    hidden = eq.layers[1].forward(eq.layers[0].forward(x))
    live = np.percentile(hidden, 99.99, axis=0)
    live = live[live > 0]
    assert in_ranges.max() / in_ranges.min() < 1.01 and live.max() / live.min() < 1.01
    before = quantize_policy(policy, states, default_plan(3, "int8"))
    after = quantize_policy(eq, states, default_plan(3, "int8"))
    err_before = np.abs(before.q_values(states) - policy.q_values(states)).mean()
    err_after = np.abs(after.q_values(states) - policy.q_values(states)).mean()
    assert err_after < 0.8 * err_before, (err_after, err_before)


def test_equalization_leaves_one_bit_inputs_alone() -> None:
    rng = np.random.default_rng(13)
    policy = mlp(rng, (6, 32, 32, 32, 3))
    states = rng.normal(size=(500, 6)).astype(np.float32)
    eq = equalize_ranges(policy, states, default_plan(4, "1bit"))
    # plan int8, 1bit, 1bit, int8: the 1-bit layers' inputs (outputs of dense 0 and 1) keep their scale,
    # the int8 head's input (output of dense 2) and the observation (into int8 dense 0) are equalised
    np.testing.assert_array_equal(eq.layers[0].bias, policy.layers[0].bias)
    np.testing.assert_array_equal(eq.layers[2].weight, policy.layers[2].weight)
    assert not np.array_equal(eq.layers[4].bias, policy.layers[4].bias)
    assert not np.array_equal(eq.observation.var, policy.observation.var)
    np.testing.assert_allclose(eq.q_values(states), policy.q_values(states), rtol=1e-4, atol=1e-4)


def test_bias_correction_removes_the_mean_output_error() -> None:
    rng = np.random.default_rng(14)
    policy = mlp(rng, (6, 16, 16, 3))
    states = rng.normal(size=(4000, 6)).astype(np.float32)
    plain = quantize_policy(policy, states, default_plan(3, "int8"))
    corrected = quantize_policy(policy, states, default_plan(3, "int8"), correct_bias=True)
    ref = policy.q_values(states)
    mean_plain = np.abs((plain.q_values(states) - ref).mean(0))
    mean_corrected = np.abs((corrected.q_values(states) - ref).mean(0))
    step = np.float32(corrected.layers[-2].input_scale) * corrected.layers[-2].weight_scale
    assert (mean_corrected <= np.maximum(step[1:] + step[0], 0.02 * mean_plain.max())).all()
    assert mean_corrected.max() < mean_plain.max()
    assert corrected.metadata["quantization"]["bias_correction"] is True
