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
