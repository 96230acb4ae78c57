"""Export: ONNX / TFLite / C header against the numpy IR, on 10k held-out states per policy."""

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the exporters need the export extra (training box)")

from edge_rl.policy import ObservationError, Policy
from edge_rl.runtime import LiteRTBackend, NumpyBackend, OnnxBackend
from edge_rl.runtime.parity import compare, tolerance
from export.c_check import run_header
from export.c_header import to_c_header
from export.onnx_graph import to_onnx
from export.tflite_model import to_tflite
from tests.policies import ENVS, PRECISIONS, case_for


@pytest.fixture(params=[(e, p) for e in ENVS for p in PRECISIONS], ids=lambda x: "-".join(x))
def case(request) -> tuple[str, Policy, np.ndarray]:
    return case_for(*request.param)


def runtime_for(policy: Policy, backend: str):
    if backend == "onnxruntime":
        return OnnxBackend(to_onnx(policy), policy.observation, policy.action)
    return LiteRTBackend(to_tflite(policy), policy.observation, policy.action, backend == "litert-builtin")


@pytest.mark.parametrize("backend", ["onnxruntime", "litert-builtin"])
def test_backend_matches_the_ir_on_10k_held_out_states(case, backend: str) -> None:
    _, policy, states = case
    runtime = runtime_for(policy, backend)
    reference = policy.q_values(states)
    result = compare(reference, runtime.q_values(states), tolerance(policy, reference))
    assert result["passed"], result
    assert (runtime.act(states) == policy.act(states)).all()
    assert all(runtime.act(s) == policy.act(s) for s in states[:200])  # the single-observation fast path


@pytest.mark.parametrize("backend", ["onnxruntime", "litert-builtin"])
@pytest.mark.parametrize("env", list(ENVS))
@pytest.mark.parametrize("precision", ["int8", "1bit"])
def test_quantized_exports_are_bit_exact(env: str, precision: str, backend: str) -> None:
    """Integer arithmetic, butterfly rotations and halving sums in the IR's order: equal, not close."""
    _, policy, states = case_for(env, precision)
    np.testing.assert_array_equal(runtime_for(policy, backend).q_values(states), policy.q_values(states))


def test_c_header_compiles_strictly_and_reproduces_the_ir(case) -> None:
    """The C header's Q-values equal the IR's (quantized: exactly; fp32: to 1e-6 of max |Q|) on 2,000 states."""
    _, policy, states = case
    golden = states[:64]
    probe = np.concatenate([states[:2000], np.full((1, states.shape[1]), np.nan, np.float32)])
    failures, q_c, actions = run_header(to_c_header(policy, golden, policy.act(golden)), probe)
    assert failures == 0  # edge_rl_self_test: no golden action differs
    reference = policy.q_values(probe[:-1])
    assert compare(reference, q_c[:-1], tolerance(policy, reference))["passed"]
    np.testing.assert_array_equal(actions[:-1], policy.act(probe[:-1]))
    assert actions[-1] == policy.action.safe  # a NaN observation gets the safe action


def test_observation_checks_are_the_same_for_every_backend(case) -> None:
    _, policy, states = case
    for runtime in (NumpyBackend(policy), runtime_for(policy, "onnxruntime"), runtime_for(policy, "litert-builtin")):
        with pytest.raises(ObservationError, match="shape"):
            runtime.act(np.zeros(states.shape[1] + 1, np.float32))
        bad = states[0].copy()
        bad[0] = np.inf
        with pytest.raises(ObservationError, match="NaN or infinity"):
            runtime.act(bad)


def test_backends_are_context_managers_and_refuse_calls_once_closed() -> None:
    """A daemon swaps backends for weeks: close() releases the runtime, and a closed backend says so."""
    _, policy, states = case_for("cartpole", "int8")
    for runtime in (NumpyBackend(policy), runtime_for(policy, "onnxruntime"), runtime_for(policy, "litert-builtin")):
        with runtime as entered:
            assert entered is runtime and entered.act(states[0]) == policy.act(states[0])
        for call in (runtime.act, runtime.q_values):
            with pytest.raises(ValueError, match="closed"):
                call(states[0])
        runtime.close()  # idempotent


def one_hidden_int8_layer(multiplier: str, relu: bool, seed: int) -> Policy:
    """obs -> int8 codes -> int8 hidden layer (one requantization regime) -> float int8 head."""
    from edge_rl.policy import ActionSpec, ObservationSpec
    from edge_rl.qlayers import DenseInt8, Quantize

    rng = np.random.default_rng(seed)
    n_in, hidden, n_out = 12, 16, 3
    weight_scale = {
        "typical": rng.uniform(0.002, 0.02, hidden),  # with s_in 1 / s_out 1: M ~ 1e-2, double rounding everywhere
        "tiny": rng.uniform(4e-6, 2e-5, hidden),  # M ~ 2^-16: accumulators land on -6..6, ties near zero
        "dyadic": rng.integers(1, 64, hidden) / 2.0 ** rng.integers(6, 12, hidden),  # exact ties at both steps
        "above_one": rng.uniform(1.5, 6.0, hidden),  # M > 1: TFLite's left shift, then saturation
    }[multiplier].astype(np.float32)
    zp_out = -128 if relu else int(rng.integers(-20, 20))
    body = DenseInt8(
        rng.integers(-127, 128, (hidden, n_in)).astype(np.int8),
        weight_scale,
        rng.integers(-3000, 3000, hidden).astype(np.int32),
        input_scale=1.0,
        input_zero_point=int(rng.integers(-10, 10)),
        output_scale=1.0,
        output_zero_point=zp_out,
        relu=relu,
    )
    head = DenseInt8(
        rng.integers(-127, 128, (n_out, hidden)).astype(np.int8),
        np.full(n_out, 0.01, np.float32),
        np.zeros(n_out, np.int32),
        input_scale=1.0,
        input_zero_point=zp_out,
    )
    spec = ObservationSpec((n_in,), np.full(n_in, -np.inf), np.full(n_in, np.inf), np.zeros(n_in), np.ones(n_in), 500.0)
    return Policy(spec, ActionSpec(n_out), [Quantize(1.0, body.input_zero_point), body, head])


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("multiplier", ["typical", "tiny", "dyadic", "above_one"])
def test_fixed_point_requantization_is_bit_exact_in_every_regime(multiplier: str, relu: bool) -> None:
    """TFLite's integer requantization (the IR's) on every accumulator a layer can meet: LiteRT's builtin
    kernels, ONNX Runtime's int64 emulation and the C header's all give the IR's codes, ties and left shifts
    included. The head reads the codes exactly, so any differing code shows in the Q-values."""
    policy = one_hidden_int8_layer(multiplier, relu, seed=len(multiplier) + relu)
    states = np.random.default_rng(1).uniform(-200, 200, (5000, 12)).astype(np.float32)
    states[::7] = np.rint(states[::7] / 50)  # small codes too, where ties and rounding to zero happen
    reference = policy.q_values(states)
    assert len(np.unique(reference.round(6), axis=0)) > 100  # the states really exercise the layer
    for backend in ("onnxruntime", "litert-builtin"):
        np.testing.assert_array_equal(runtime_for(policy, backend).q_values(states), reference, err_msg=backend)
    _, q_c, _ = run_header(to_c_header(policy, states[:64], policy.act(states[:64])), states)
    np.testing.assert_array_equal(q_c, reference)


def test_a_model_xnnpack_cannot_prepare_is_not_a_damaged_file(tmp_path) -> None:
    """An int8 student from a real sweep (CartPole, lr 5e-4, seed 1): one requantization multiplier is 427,
    past XNNPACK's limit of 256. The file is fine (builtin kernels run it bit-exactly), so XNNPACK is an
    unavailable backend for it, and `edge-rl export` writes the bundle instead of calling it damaged."""
    from pathlib import Path

    from edge_rl.cli import main
    from edge_rl.runtime import BackendUnavailable

    policy = Policy.load(Path(__file__).parent / "data" / "xnnpack_refuses")
    model = to_tflite(policy)
    with pytest.raises(BackendUnavailable, match="XNNPACK cannot run this model"):
        LiteRTBackend(model, policy.observation, policy.action)
    builtin = LiteRTBackend(model, policy.observation, policy.action, builtin_kernels=True)
    states = np.random.default_rng(0).normal(size=(500, *policy.observation.shape)).astype(np.float32)
    assert np.array_equal(builtin.q_values(states), policy.q_values(states))
    assert main(["export", str(Path(__file__).parent / "data" / "xnnpack_refuses"), "--out", str(tmp_path / "b")]) == 0
    assert main(["verify", str(tmp_path / "b")]) == 0
