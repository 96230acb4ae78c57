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
    """The first of seeds 0-9 whose preset run confirms 500 (40 episodes) within 20k steps.

    `eps_fraction=0.25` keeps the preset's own exploration schedule (its 50k-step run cut at 20k).
    Measured under ATen avx512 and default: 18 of 32 seeds confirm, most by 5-7.5k steps, so ten
    failing in a row has probability ~3e-4. The bars below are measured on 19 such teachers (two
    distillation seeds each: 38 runs), not on one lucky seed; all bars hold with margin.
    """
    from edge_rl.train.config import resolve_config
    from edge_rl.train.dqn import train_dqn

    tried = {}
    for seed in range(10):
        out = tmp_path_factory.mktemp(f"teacher{seed}")
        cfg = resolve_config("CartPole-v1", steps=20_000, eps_fraction=0.25, seed=seed)
        policy, log = train_dqn(cfg, out, progress=False)
        tried[seed] = evaluate(policy.act, "CartPole-v1", 10, 77).mean_return
        if log.stopped_early and tried[seed] >= 475:
            return out
    pytest.fail(f"no seed confirmed 500 within 20k steps (returns on 10 more episodes: {tried})")


def clear_half_agreement(teacher: Policy, act, states: np.ndarray) -> float:
    """Agreement on the half of `states` where the teacher's best action leads its runner-up the most.

    CartPole's states are full of near-ties, where either action is fine and the overall agreement
    measures the teacher's tie count as much as the student; the clear half measures the student.
    """
    q = np.sort(teacher.q_values(states), axis=1)
    clear = q[:, -1] - q[:, -2] >= np.median(q[:, -1] - q[:, -2])
    return float((act(states[clear]) == teacher.act(states[clear])).mean())


@pytest.mark.slow
@pytest.mark.learning
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
    t = Policy.load(teacher)
    student, report = distill(t, "CartPole-v1", cfg, tmp_path, teacher_dir=str(teacher), progress=False)
    final = report["final"]
    assert final["params"] < final["teacher_params"] / 8
    # measured (38 runs): return ratio >= 0.97, agreement 0.89-0.97, clear-half agreement >= 0.975
    assert final["return"] >= 0.9 * final["teacher_return"]
    assert final["agreement"] >= 0.8  # CartPole has many near-ties; a random student agrees ~50%
    states = collect_states(t.act, "CartPole-v1", 3_000, 7_919)
    assert clear_half_agreement(t, student.act, states) >= 0.95
    assert len(report["rounds"]) == 2 and report["rounds"][1]["states"] == 7_500
    assert Policy.load(tmp_path).metadata["teacher_dir"] == str(teacher)
    assert json.loads((tmp_path / "distill.json").read_text())["final"] == final


@pytest.mark.slow
@pytest.mark.learning
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
    # well above chance (~0.5) even with int8 ends and 1-bit middle; measured 0.64-0.89 (38 runs), median 0.83
    assert report["final"]["agreement"] > 0.6


@pytest.mark.learning
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
    # measured over 19 teachers: overall 0.83-0.98 (near-ties flip), clear half >= 0.98
    assert (q.act(states) == fp.act(states)).mean() > 0.7
    assert clear_half_agreement(fp, q.act, states) >= 0.95
    card = subprocess.run(
        [sys.executable, "-c", probe, "card", str(out), "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert card.returncode == 0, card.stderr
    doc = json.loads(card.stdout)
    assert doc["compression_ratio"] > 3.0 and doc["weight_bytes"] < doc["fp32_bytes"]
    assert q.layers[1].weight.dtype == np.int8
