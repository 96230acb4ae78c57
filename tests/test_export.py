"""Export: ONNX / TFLite / C header against the numpy IR, on 10k held-out states per policy."""

import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the exporters need the export extra (training box)")

from edge_rl.policy import ObservationError, Policy
from edge_rl.runtime import LiteRTBackend, NumpyBackend, OnnxBackend
from edge_rl.runtime.parity import compare, tolerance
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


def test_c_header_compiles_strictly_and_reproduces_the_ir(case, tmp_path: Path) -> None:
    """The C header's Q-values equal the IR's (quantized: exactly; fp32: to 1e-6 of max |Q|) on 2,000 states."""
    _, policy, states = case
    golden = states[:64]
    (tmp_path / "policy.h").write_text(to_c_header(policy, golden, policy.act(golden)))
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "policy.h"\n'
        "int main(void) { float obs[EDGE_RL_OBS_SIZE], q[EDGE_RL_N_ACTIONS]; int k;\n"
        '  printf("%d\\n", edge_rl_self_test());\n'
        '  for (;;) { for (k = 0; k < EDGE_RL_OBS_SIZE; ++k) if (scanf("%f", &obs[k]) != 1) return 0;\n'
        '    edge_rl_q_values(obs, q); for (k = 0; k < EDGE_RL_N_ACTIONS; ++k) printf("%.9g ", q[k]);\n'
        '    printf("%d\\n", edge_rl_act(obs)); } }\n'
    )
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
    build = subprocess.run(["cc", *flags, "-o", "run", "main.c", "-lm"], cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    probe = states[:2000]
    text = "\n".join(" ".join(f"{v:.9g}" for v in row) for row in probe) + "\n" + " ".join(["nan"] * states.shape[1])
    lines = subprocess.run([str(tmp_path / "run")], input=text, capture_output=True, text=True, timeout=60).stdout
    first, *rows = lines.splitlines()
    assert first == "0"  # edge_rl_self_test: no golden action differs
    table = np.array([row.split() for row in rows], dtype=np.float64)
    q_c, actions = table[:-1, :-1].astype(np.float32), table[:, -1].astype(int)
    reference = policy.q_values(probe)
    assert compare(reference, q_c, tolerance(policy, reference))["passed"]
    np.testing.assert_array_equal(actions[:-1], policy.act(probe))
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
