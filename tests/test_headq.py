"""The C head learner (`firmware/edgerl_headq.c`) against the numpy head learner, compiled for this host.

Teacher-forced: both see the same recorded observations and rewards; the numpy learner takes the
C learner's actions. Equal when the greedy actions agree at every step and the heads agree within
1e-4 of their largest weight after 1,000 steps (float32 sums in another order differ by rounding).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from c_device import CFLAGS, FIRMWARE, assert_clean, compile_c
from head_learning import Frame, assert_equivalent, record
from policies import make

from export.c_header import to_c_header

STEPS = 1000


def build(tmp: Path, policy) -> Path:
    golden = record(policy, 64, seed=5)
    states = np.stack([f.obs for f in golden])
    (tmp / "policy.h").write_text(to_c_header(policy, states, policy.act(states)))
    exe = tmp / "headq"
    compile_c(*CFLAGS, "-I", tmp, "-o", exe, FIRMWARE / "tests" / "headq_driver.c", FIRMWARE / "edgerl_headq.c", "-lm")
    return exe


def run(exe: Path, frames: list[Frame], epsilon: float | None, seed: int = 1) -> tuple[list[int], np.ndarray, int]:
    lines = [
        f"{f.reward!r} {int(f.terminated)} {int(f.truncated)} " + " ".join(f"{v:.9g}" for v in f.obs) for f in frames
    ]
    out = subprocess.run(
        [str(exe), str(-1.0 if epsilon is None else epsilon), str(seed)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
    )
    assert_clean(out.returncode, out.stderr)
    out = out.stdout.split("\n")
    marker = next(i for i, line in enumerate(out) if line.startswith("theta"))
    updates = int(out[marker].split()[1])
    return [int(a) for a in out[:marker]], np.array(out[marker + 1 : -1], np.float64), updates


@pytest.mark.parametrize(
    ("env", "precision"), [("antijam", "int8"), ("antijam", "1bit"), ("antijam", "fp32"), ("cartpole", "int8")]
)
@pytest.mark.parametrize("epsilon", [0.0, 0.3, None])  # None: the header's schedule
def test_c_head_learner_matches_numpy(tmp_path: Path, env: str, precision: str, epsilon: float | None) -> None:
    policy = make(env, precision)
    frames = record(policy, STEPS, seed=11)
    actions, theta, updates = run(build(tmp_path, policy), frames, epsilon)
    assert updates == sum(1 for before in frames[:-1] if not before.done)  # every answered frame's transition
    assert_equivalent(policy, frames, actions, theta, epsilon)


def test_a_non_finite_reward_breaks_the_chain_and_never_reaches_the_head(tmp_path: Path) -> None:
    policy = make("antijam", "int8")
    frames = record(policy, 300, seed=3)
    bad = [
        f._replace(reward=float("nan")) if i == 50 else f._replace(reward=1e30) if i == 120 else f
        for i, f in enumerate(frames)
    ]
    actions, theta, updates = run(build(tmp_path, policy), bad, 0.0)
    _, _, clean_updates = run(tmp_path / "headq", frames, 0.0)
    assert np.isfinite(theta).all()
    assert updates == clean_updates - 1  # the NaN transition is skipped; 1e30 is finite and learnt, step-bounded
    assert len(actions) == sum(not f.done for f in frames)
