"""DQN trainer: reproducibility, n-step bookkeeping, and learning CartPole in a small budget."""

import json
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

pytest.importorskip("torch")

from edge_rl.evaluate import evaluate
from edge_rl.train.config import DQNConfig, resolve_config
from edge_rl.train.dqn import train_dqn
from edge_rl.train.replay import NStepWriter, ReplayBuffer


def test_n_step_rows_discount_and_stop_at_episode_end() -> None:
    buf = ReplayBuffer(16, 1, np.random.default_rng(0))
    w = NStepWriter(buf, n=3, gamma=0.5)
    o = [np.array([float(i)], np.float32) for i in range(6)]
    w.push(o[0], 0, 1.0, o[1], False, False)
    w.push(o[1], 1, 2.0, o[2], False, False)
    assert buf.size == 0  # nothing complete yet
    w.push(o[2], 0, 4.0, o[3], False, False)
    assert buf.size == 1
    assert buf.ret[0, 0] == 1.0 + 0.5 * 2.0 + 0.25 * 4.0 and buf.discount[0, 0] == 0.125 and buf.next_obs[0, 0] == 3
    w.push(o[3], 1, 8.0, o[4], True, False)  # termination flushes every pending row, no bootstrap
    assert buf.size == 4
    np.testing.assert_allclose(buf.ret[1:4, 0], [2 + 0.5 * 4 + 0.25 * 8, 4 + 0.5 * 8, 8])
    np.testing.assert_array_equal(buf.discount[1:4, 0], [0, 0, 0])
    w.push(o[4], 0, 1.0, o[5], False, True)  # truncation still bootstraps from the final obs
    assert buf.discount[4, 0] == 0.5 and buf.next_obs[4, 0] == 5


def test_config_validation_and_precedence(tmp_path) -> None:
    with pytest.raises(ValueError, match="gamma"):
        DQNConfig(gamma=1.5)
    toml = tmp_path / "c.toml"
    toml.write_text("[dqn]\nlr = 0.01\nbatch_size = 32\n")
    cfg = resolve_config("CartPole-v1", toml, batch_size=16)
    assert (cfg.lr, cfg.batch_size, cfg.eval_every) == (0.01, 16, 2_500)  # file < flag; preset kept


def tiny(seed: int, **kw) -> DQNConfig:
    base = dict(steps=1_500, seed=seed, learning_starts=300, eval_every=750, eval_episodes=2, hidden=(16, 16))
    return resolve_config("CartPole-v1", **{**base, **kw})


def test_same_seed_same_policy(tmp_path) -> None:
    a, _ = train_dqn(tiny(5), tmp_path / "a", progress=False)
    b, _ = train_dqn(tiny(5), tmp_path / "b", progress=False)
    c, _ = train_dqn(tiny(6), tmp_path / "c", progress=False)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    np.testing.assert_array_equal(a.q_values(x), b.q_values(x))
    assert not np.array_equal(a.q_values(x), c.q_values(x))


@pytest.mark.parametrize(
    "variant",
    [dict(dueling=True, layernorm=True, activation="leaky_relu"), dict(double=False, n_step=1, tau=0.05, num_envs=2)],
)
def test_variants_run_and_write_a_loadable_run(tmp_path, variant: dict) -> None:
    policy, log = train_dqn(tiny(1, **variant), tmp_path, progress=False)
    run = json.loads((tmp_path / "train.json").read_text())
    assert run["config"]["dueling"] == variant.get("dueling", False)
    assert log.steps == 1_500 and run["updates"] > 0
    kinds = [layer.kind for layer in policy.layers]
    assert kinds.count("layernorm") == (2 if variant.get("layernorm") else 0) and kinds[-1] == "dense"
    assert np.isfinite(policy.observation.var).all() and (policy.observation.var > 0).all()


def first_ten_thousand_steps(seed: int) -> float:
    """Greedy mean return (20 fresh episodes) of the policy kept by the first 10k steps of the preset run.

    `steps=10_000, eps_fraction=0.5` is the preset's own 50k-step run cut at 10k: epsilon decays over
    the same 5k steps, so the trajectory is the one `edge-rl train CartPole-v1` takes.
    """
    cfg = resolve_config("CartPole-v1", steps=10_000, eps_fraction=0.5, seed=seed)
    with tempfile.TemporaryDirectory() as out:
        policy, _ = train_dqn(cfg, out, progress=False)
    return evaluate(policy.act, "CartPole-v1", episodes=20, seed=4242).mean_return


@pytest.mark.slow
@pytest.mark.learning
def test_learns_cartpole_in_a_small_budget() -> None:
    """At least 3 of seeds 0-4 hold the pole 200+ steps (greedy mean of 20) after 10k preset steps.

    Measured over 96 runs (seeds 0-31 x ATen avx512, ATen default, MKL_CBWR=COMPATIBLE; ATen avx2
    and OpenBLAS Haswell reproduce avx512 bit for bit): 156-500, median ~475, 3 below 200 (156,
    181, 184). Binomial tail at q = 3/96: three of five below the bar 3e-4 (4e-3 at q's 95 % upper
    bound, 0.079). Solving is no per-seed bar: ~52 % reach 475 and ~23 % confirm 500 by then (at
    the old 20k steps with epsilon over 2k: 45 % and 20 %). Broken updates stay far below 200:
    Adam lr ~0 scores ~10, a flipped TD sign ~9, a never-updated target network <= 103 (16 runs).
    """
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:  # no state forked
        scores = dict(zip(range(5), pool.map(first_ten_thousand_steps, range(5)), strict=True))
    assert sum(s >= 200 for s in scores.values()) >= 3, scores
