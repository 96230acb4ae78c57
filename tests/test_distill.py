"""Distillation and the quantize command on a real CartPole teacher (trained once per session)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from edge_rl.evaluate import evaluate
from edge_rl.policy import Policy
from edge_rl.rollout import collect_states

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def teacher(tmp_path_factory) -> Path:
    from edge_rl.train.config import resolve_config
    from edge_rl.train.dqn import train_dqn

    out = tmp_path_factory.mktemp("teacher")
    policy, _ = train_dqn(resolve_config("CartPole-v1", steps=20_000, seed=0), out, progress=False)
    assert evaluate(policy.act, "CartPole-v1", 10, 77).mean_return >= 475
    return out


@pytest.mark.slow
def test_fp32_student_retains_the_teacher(teacher: Path, tmp_path: Path) -> None:
    from edge_rl.train.distill import DistillConfig, distill

    cfg = DistillConfig(
        hidden=(16, 16),
        steps=3_000,
        rounds=2,
        teacher_states=5_000,
        dagger_states=2_500,
        validation_states=3_000,
        eval_episodes=10,
    )
    _, report = distill(Policy.load(teacher), "CartPole-v1", cfg, tmp_path, teacher_dir=str(teacher), progress=False)
    final = report["final"]
    assert final["params"] < final["teacher_params"] / 8
    assert final["return"] >= 0.95 * final["teacher_return"]
    assert final["agreement"] >= 0.85  # CartPole has many near-ties; a random student agrees ~50%
    assert len(report["rounds"]) == 2 and report["rounds"][1]["states"] == 7_500
    assert Policy.load(tmp_path).metadata["teacher_dir"] == str(teacher)
    assert json.loads((tmp_path / "distill.json").read_text())["final"] == final


@pytest.mark.slow
def test_one_bit_student_trains_through_its_deploy_form(teacher: Path, tmp_path: Path) -> None:
    from edge_rl.train.distill import DistillConfig, distill

    cfg = DistillConfig(
        hidden=(32, 32, 32),
        quant="1bit",
        steps=3_000,
        rounds=2,
        teacher_states=5_000,
        dagger_states=2_500,
        validation_states=2_000,
        eval_episodes=5,
    )
    student, report = distill(Policy.load(teacher), "CartPole-v1", cfg, tmp_path, progress=False)
    assert [layer.kind for layer in student.layers].count("dense_binary") == 2
    assert report["final"]["agreement"] > 0.6  # well above chance even with int8 ends and 1-bit middle


def test_quantize_command_needs_no_torch(teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    probe = (
        "import sys; import edge_rl.cli as c; rc = c.main(sys.argv[1:]);"
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["quantize", str(teacher), "--to", "int8", "--out", str(out), "--n-states", "2000"]
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    q, fp = Policy.load(out), Policy.load(teacher)
    assert [layer.kind for layer in q.layers] == ["quantize", "dense_int8", "dense_int8", "dense_int8", "dueling_sum"]
    states = collect_states(fp.act, "CartPole-v1", 2_000, seed=5)
    assert (q.act(states) == fp.act(states)).mean() > 0.8
    card = subprocess.run(
        [sys.executable, "-c", probe, "card", str(out), "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert card.returncode == 0, card.stderr
    doc = json.loads(card.stdout)
    assert doc["compression_ratio"] > 3.0 and doc["weight_bytes"] < doc["fp32_bytes"]
    assert q.layers[1].weight.dtype == np.int8
