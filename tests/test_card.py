"""Model card: hand-checked numbers for fp32, int8 and 1-bit layers, the CLI, and the comparison."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_rl.card import compare, format_card, model_card
from edge_rl.policy import ActionSpec, Activation, Dense, LayerNorm, ObservationSpec, Policy
from edge_rl.qlayers import DenseBinary, DenseInt8, Quantize

ROOT = Path(__file__).resolve().parents[1]


def obs_spec(size: int) -> ObservationSpec:
    return ObservationSpec.unnormalized(np.full(size, -5.0), np.full(size, 5.0))


def int8_policy() -> Policy:
    """Dense 4x8 -> relu -> quantize -> int8 8x6 (relu, int8 out) -> int8 6x2 (float Q-values)."""
    rng = np.random.default_rng(0)
    layers = [
        Dense(rng.normal(size=(8, 4)), rng.normal(size=8)),
        Activation("relu"),
        Quantize(0.05, -128),
        DenseInt8(
            rng.integers(-127, 128, (6, 8)).astype(np.int8),
            np.full(6, 0.01, np.float32),
            rng.integers(-100, 100, 6).astype(np.int32),
            input_scale=0.05,
            input_zero_point=-128,
            output_scale=0.1,
            output_zero_point=-128,
            relu=True,
        ),
        DenseInt8(
            rng.integers(-127, 128, (2, 6)).astype(np.int8),
            np.full(2, 0.02, np.float32),
            np.zeros(2, np.int32),
            input_scale=0.1,
            input_zero_point=-128,
        ),
    ]
    return Policy(obs_spec(4), ActionSpec(2), layers, {"env_id": "CartPole-v1"})


def binary_policy() -> Policy:
    """1-bit 5x3 (padded to n=8) -> affine layernorm -> tanh -> fake-quant -> Dense 3x2."""
    binary = DenseBinary(
        in_features=5,
        sign_bits=np.array([[0b10110010], [0b01011101], [0b11110000]], np.uint8),
        weight_scale=np.array([0.5, 0.25, 1.0], np.float16),
        bias=np.array([0.1, -0.2, 0.0], np.float32),
        diag_bits=np.array([0b01011010], np.uint8),
    )
    layers = [
        binary,
        LayerNorm(1e-5, np.ones(3), np.zeros(3)),
        Activation("tanh"),
        Dense(np.arange(6.0).reshape(2, 3) / 10, np.zeros(2)),
    ]
    return Policy(obs_spec(5), ActionSpec(2), layers)


# int8 policy, by hand:
#   0 dense 4x8:       params 32+8 = 40, bytes 40*4 = 160, fp32 160, MACs 4*8 = 32
#   3 dense_int8 8x6:  params 48 weights + 6 biases = 54, bytes 48*1 + 6*4 + 6*4 = 96,
#                      fp32 4*(48+6) = 216, MACs 48
#   4 dense_int8 6x2:  params 12+2 = 14 (scales are metadata), bytes 12 + 8 + 8 = 28, fp32 4*(12+2) = 56, MACs 12
#   totals: params 108, bytes 284, fp32 432, compression 432/284 = 1.521x, MACs 92
INT8_CARD = """\
CartPole-v1: 4 observations, 2 actions · precision fp32, int8
layer  kind        shape  precision  params  bytes  fp32 bytes  MACs
-----  ----------  -----  ---------  ------  -----  ----------  ----
    0  dense       4x8    fp32           40    160         160    32
    1  activation  8      -               0      0           0     0
    2  quantize    8      -               0      0           0     0
    3  dense_int8  8x6    int8           54     96         216    48
    4  dense_int8  6x2    int8           14     28          56    12
total params 108 · weights 284 B (fp32 432 B) · compression 1.52x · 92 MACs/decision"""

# binary policy, by hand (n = next power of two >= 5 = 8):
#   0 dense_binary 5x3: params 3*5 weights + 3 biases = 18 (scales are metadata),
#                       bytes 3 sign bytes + 3*2 fp16 scales + 3*4 bias + 1 diagonal byte = 22,
#                       fp32 4*(15+3) = 72, MACs 3*8 XNOR-popcount + 8*8 rotation = 88
#   1 layernorm (affine, 3): params 6, bytes 24, fp32 4*2*3 = 24, MACs 0
#   3 dense 3x2: params 6+2 = 8, bytes 32, fp32 32, MACs 6
#   totals: params 32, bytes 78, fp32 128, compression 128/78 = 1.641x, MACs 94
#   1-bit matrices: 3 sign bytes + 6 scale bytes = 9 B vs 4*3*5 = 60 B fp32: 6.667x
BINARY_CARD = """\
5 observations, 2 actions · precision 1-bit, fp32
layer  kind          shape      precision  params  bytes  fp32 bytes  MACs
-----  ------------  ---------  ---------  ------  -----  ----------  ----
    0  dense_binary  5x3 (n=8)  1-bit          18     22          72    88
    1  layernorm     3          fp32            6     24          24     0
    2  activation    3          -               0      0           0     0
    3  dense         3x2        fp32            8     32          32     6
total params 32 · weights 78 B (fp32 128 B) · compression 1.64x · 94 MACs/decision
1-bit weight matrices 9 B (fp32 60 B) · compression 6.67x"""


def test_int8_card_snapshot() -> None:
    assert format_card(model_card(int8_policy())) == INT8_CARD


def test_binary_card_snapshot() -> None:
    card = model_card(binary_policy())
    assert format_card(card) == BINARY_CARD
    assert (card["binary_weight_bytes"], card["binary_fp32_bytes"]) == (9, 60)


def test_fp32_card_params_match_policy_and_do_not_compress() -> None:
    layers = [Dense(np.ones((8, 4)), np.ones(8)), LayerNorm(), Activation("leaky_relu"), Dense(np.ones((2, 8)), [0, 1])]
    policy = Policy(obs_spec(4), ActionSpec(2), layers)
    card = model_card(policy)
    assert card["params"] == policy.n_params
    assert card["weight_bytes"] == card["fp32_bytes"] == 4 * policy.n_params
    assert card["compression_ratio"] == 1.0
    assert card["binary_compression_ratio"] is None


def constant_policy(action: int) -> Policy:
    """A CartPole policy that always picks `action` (zero weights, bias favouring it)."""
    return Policy(obs_spec(4), ActionSpec(2), [Dense(np.zeros((2, 4)), np.eye(2)[action])], {"env_id": "CartPole-v1"})


def balancing_policy() -> Policy:
    """Push towards where the pole is falling: a real CartPole controller, so states vary."""
    return Policy(obs_spec(4), ActionSpec(2), [Dense([[0, 0, -1, -1], [0, 0, 1, 1]], np.zeros(2))])


def test_policy_agrees_with_itself() -> None:
    result = compare(balancing_policy(), balancing_policy(), "CartPole-v1", None, episodes=3, seed=0)
    assert result["agreement"] == 1.0
    assert result["return_ratio"] == 1.0
    assert result["return"] == result["reference_return"] > 30
    assert result["states"] == pytest.approx(result["reference_return"] * 3)  # CartPole pays 1 per step


def test_opposite_constant_policies_never_agree() -> None:
    result = compare(constant_policy(0), constant_policy(1), "CartPole-v1", None, episodes=4, seed=7)
    assert result["agreement"] == 0.0
    assert result["states"] == pytest.approx(result["reference_return"] * 4)
    given = compare(constant_policy(0), constant_policy(0), "CartPole-v1", None, 1, 0, states=np.zeros((5, 4)))
    assert (given["agreement"], given["states"]) == (1.0, 5)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edge_rl.cli", *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )


def test_cli_json(tmp_path: Path) -> None:
    int8_policy().save(tmp_path)
    result = cli("card", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    expected = {"params": 108, "weight_bytes": 284, "fp32_bytes": 432, "macs": 92, "env_id": "CartPole-v1"}
    assert {k: doc[k] for k in expected} == expected
    assert doc["compression_ratio"] == pytest.approx(432 / 284)
    assert doc["precisions"] == ["fp32", "int8"]
    assert [row["kind"] for row in doc["layers"]] == ["dense", "activation", "quantize", "dense_int8", "dense_int8"]
    assert doc["layers"][3] == {
        "index": 3,
        "kind": "dense_int8",
        "shape": "8x6",
        "precision": "int8",
        "params": 54,
        "bytes": 96,
        "fp32_bytes": 216,
        "macs": 48,
        "matrix_bytes": 48 + 6 * 4,  # int8 codes + float32 row scales
        "matrix_fp32_bytes": 4 * 8 * 6,
    }
    # weights proper: 4x8 fp32 (128 B) + 8x6 int8 (72 B) + 6x2 int8 (12 + 8 B) against 128 + 192 + 48 B
    assert (doc["matrix_bytes"], doc["matrix_fp32_bytes"]) == (220, 368)
    assert "comparison" not in doc


def test_cli_compares_with_recorded_teacher(tmp_path: Path) -> None:
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    constant_policy(1).save(teacher)
    policy = constant_policy(0)
    policy.metadata["teacher_dir"] = str(teacher)
    policy.save(student)
    result = cli("card", str(student), "--json", "--env", "CartPole-v1", "--episodes", "2")
    assert result.returncode == 0, result.stderr
    comparison = json.loads(result.stdout)["comparison"]
    assert comparison["reference_dir"] == str(teacher)
    assert comparison["agreement"] == 0.0
    assert comparison["return_ratio"] == pytest.approx(comparison["return"] / comparison["reference_return"])
    text = cli("card", str(student), "--env", "CartPole-v1", "--episodes", "2").stdout
    assert "agreement" in text and "return ratio" in text and str(teacher) in text


@pytest.mark.parametrize("teacher_dir", [None, "/nonexistent/teacher"])
def test_cli_missing_reference_is_one_line(tmp_path: Path, teacher_dir: str | None) -> None:
    policy = constant_policy(0)
    if teacher_dir:
        policy.metadata["teacher_dir"] = teacher_dir
    policy.save(tmp_path)
    result = cli("card", str(tmp_path), "--env", "CartPole-v1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--reference" in lines[0], result.stderr


def test_card_never_imports_torch(tmp_path: Path) -> None:
    int8_policy().save(tmp_path)
    code = (
        "import sys; from edge_rl.cli import main; "
        f"rc = main(['card', {str(tmp_path)!r}, '--env', 'CartPole-v1', '--reference', {str(tmp_path)!r}, "
        "'--episodes', '1']); assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "agreement" in result.stdout
