"""Adapting deployed policies: from_policy (full / head) and back to the IR, the adapt command, a jammer switch."""

import json
import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from edge_rl.agent import FrozenAgent
from edge_rl.cli import main
from edge_rl.layers import Activation, Dense
from edge_rl.policy import ActionSpec, ObservationSpec, Policy
from edge_rl.rollout import collect_states
from edge_rl.stream import StreamQ, from_policy, load_state, restore
from edge_rl.stream.simulate import run_stream
from quantize.convert import default_plan, quantize_policy


def relu_mlp(sizes, seed: int, states: np.ndarray) -> Policy:
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(Dense(rng.normal(size=(b, a)) / math.sqrt(a), rng.normal(size=b) * 0.1))
        if i < len(sizes) - 2:
            layers.append(Activation("relu"))
    spec = ObservationSpec(
        (sizes[0],), np.full(sizes[0], -np.inf), np.full(sizes[0], np.inf), states.mean(0), states.var(0) + 1e-6
    )
    return Policy(spec, ActionSpec(sizes[-1], safe=1), layers, {"env_id": "CartPole-v1", "gamma": 0.97})


# The jammer switch is judged over teachers x runs: a teacher is a DQN whose float results (so its
# weights) depend on the CPU's torch kernels, and a run's last bits on numpy's BLAS kernels, so one
# teacher and one run are one draw. Measured (teachers: seeds 0-9 under ATEN_CPU_CAPABILITY default
# and avx512; runs 0-4; OpenBLAS Haswell and SkylakeX): head runs 0.93-0.99 late success, full
# 0.49-0.99 (one below 0.9), frozen 0.005-0.90; over all 1,140 choices of 3 of those teachers x runs
# 0-2 the mean is >= 0.959 (head) and 0.955 (full), the frozen mean <= 0.585. lr 0 or a flipped
# update: <= 0.17.
RUN_SEEDS = (0, 1, 2)  # the teachers: conftest's antijam_int8 (seeds 0, 1, 2)


def jammer_switch(teachers: list[Policy], mode: str, **kwargs) -> tuple[float, float, list[float]]:
    """Mean late success of `mode` (12k steps, the jammer turns reactive at 2,000; the episodes ending
    after 8,000) and of the frozen policies, over teachers x RUN_SEEDS; and the adapted runs'."""
    env_kwargs, shift = {"jammer": "sweeping"}, (2_000, {"jammer": "reactive"})

    def late(agent, seed: int) -> float:
        run = run_stream(agent, "edge_rl/AntiJam-v0", 12_000, seed + 1, env_kwargs, shift=shift)
        return float(np.mean([s for s, e in zip(run.successes, run.end_steps, strict=True) if e > 8_000]))

    runs = [late(from_policy(p, mode, seed=k, **kwargs), k) for p in teachers for k in RUN_SEEDS]
    frozen = [late(FrozenAgent(p.act), k) for p in teachers for k in RUN_SEEDS]
    return float(np.mean(runs)), float(np.mean(frozen)), runs


@pytest.fixture(scope="module")
def cartpole_states() -> np.ndarray:
    rng = np.random.default_rng(0)
    return collect_states(lambda o: rng.integers(0, 2, len(o)), "CartPole-v1", 2000, 0, 1.0)


@pytest.mark.parametrize("mode", ["full", "head"])
def test_fp32_policy_starts_as_itself(cartpole_states, mode: str) -> None:
    policy = relu_mlp((4, 32, 32, 2), 0, cartpole_states)
    learner = from_policy(policy, mode)
    assert learner.gamma == 0.97 and not learner.scale_rewards and learner.epsilon <= 0.05
    states = np.concatenate([cartpole_states[:300], cartpole_states[:30] * 50])  # and far out: the policy's clip
    q = np.stack([learner.q_values(s) for s in states])
    np.testing.assert_allclose(q, policy.q_values(states), rtol=1e-4, atol=1e-4)
    back = learner.to_policy()
    np.testing.assert_allclose(back.q_values(states), q, rtol=1e-4, atol=1e-4)
    assert back.metadata["adapted"] == mode and back.action.safe == 1


def test_int8_body_runs_as_deployed_under_a_float_head(cartpole_states) -> None:
    policy = quantize_policy(relu_mlp((4, 32, 32, 2), 1, cartpole_states), cartpole_states, default_plan(3, "int8"))
    learner = from_policy(policy, "head")
    assert learner.lam == 0.0 and np.abs(np.stack([learner.features(s) for s in cartpole_states[:300]])).max() <= 1.0
    q = np.stack([learner.q_values(s) for s in cartpole_states[:300]])
    reference = policy.q_values(cartpole_states[:300])
    np.testing.assert_allclose(q, reference, rtol=1e-5, atol=1e-4)  # the same integer body, float head
    adapted = learner.to_policy()
    assert [layer.kind for layer in adapted.layers][-2:] == ["dequantize", "dense"]
    np.testing.assert_allclose(adapted.q_values(cartpole_states[:300]), q, rtol=1e-5, atol=1e-4)
    full = from_policy(policy, "full")  # int8 dequantized into float master weights
    agree = np.mean([full.q_values(s).argmax() for s in cartpole_states[:300]] == reference.argmax(1))
    assert agree > 0.9
    assert all(spec.activation in ("relu", None) for spec in full.net.specs)


def test_one_bit_policies_adapt_their_head_only(cartpole_states) -> None:
    policy = quantize_policy(relu_mlp((4, 32, 32, 32, 2), 2, cartpole_states), cartpole_states, default_plan(4, "1bit"))
    with pytest.raises(ValueError, match="mode='head'"):
        from_policy(policy, "full")
    learner = from_policy(policy, "head")
    np.testing.assert_allclose(learner.q_values(cartpole_states[0]), policy.q_values(cartpole_states[0]), atol=1e-4)


def test_scratch_learner_round_trips_through_the_ir() -> None:
    learner = StreamQ(5, 2, raw_tail=1, seed=0)
    run_stream(learner, "CartPole-v1", 3000, 0, time_limit=10_000, time_feature=True)
    policy = learner.to_policy()
    rng = np.random.default_rng(0)
    xs = [np.append(rng.normal(size=4) * [1, 1, 0.1, 1], rng.uniform(-0.5, 0.5)) for _ in range(200)]
    got = policy.q_values(np.asarray(xs, np.float32))
    want = np.stack([learner.q_values(x) for x in xs])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # LayerNorm + LeakyReLU in the IR, raw time feature


@pytest.mark.learning
@pytest.mark.parametrize("mode", ["head", "full"])
def test_adaptation_recovers_after_a_jammer_switch(antijam_int8: list[Policy], mode: str) -> None:
    """int8 policies trained against the sweeping jammer meet a reactive one at step 2,000: frozen they
    collapse, adapted (head on the integer body, or every layer in float) they recover, on average
    over 3 teachers x 3 runs (bars below the measured worst: mean 0.955 vs 0.9, gap 0.38 vs 0.3)."""
    adapted, frozen, runs = jammer_switch(antijam_int8, mode)
    assert adapted >= 0.9 and adapted - frozen >= 0.3, (adapted, frozen, runs)


def test_adapt_command_writes_policy_state_curve(tmp_path: Path, cartpole_states) -> None:
    src = tmp_path / "src"
    relu_mlp((4, 16, 16, 2), 3, cartpole_states).save(src)
    out = tmp_path / "adapted"
    args = ["adapt", str(src), "--steps", "3000", "--mode", "full", "--out", str(out), "--window", "500"]
    assert main(args) == 0
    report = json.loads((out / "adapt.json").read_text())
    assert report["mode"] == "full" and len(report["curve"]["step"]) == 6 and report["episodes"] > 0
    assert Policy.load(out).metadata["stream_steps"] == 3000
    with pytest.raises(ValueError, match="pass that policy"):
        load_state(out)
    restored = load_state(out, Policy.load(src))
    assert restored.steps == 3000 and restored.mode == "full"
    assert restored.to_policy().digest() == Policy.load(out).digest()  # the source's spec, clip and action kept
    other = tmp_path / "other"
    relu_mlp((4, 16, 16, 2), 4, cartpole_states).save(other)
    with pytest.raises(ValueError, match="another policy"):
        load_state(out, Policy.load(other))
    for bad in (["--steps", "0"], ["--steps", "10", "--shift", "soon"]):  # argparse refuses them with one line
        with pytest.raises(SystemExit) as exit_info:
            main(["adapt", str(src), "--mode", "head", "--out", str(out), *bad])
        assert exit_info.value.code == 2


def test_head_adapted_int8_policy_exports_and_verifies(cartpole_states, tmp_path: Path) -> None:
    """body + dequantize + float head: a new layer kind every exporter must carry (ONNX, TFLite, C)."""
    pytest.importorskip("onnx", reason="the exporters need the export extra (training box)")
    from edge_rl.bundle import open_bundle
    from edge_rl.runtime import verify_bundle
    from edge_rl.runtime.parity import compare, tolerance
    from export.c_check import run_header
    from export.exporter import export_bundle

    policy = quantize_policy(relu_mlp((4, 32, 32, 2), 4, cartpole_states), cartpole_states, default_plan(3, "int8"))
    learner = from_policy(policy, "head")
    run_stream(learner, "CartPole-v1", 2000, 0)
    adapted = learner.to_policy()
    out, report = export_bundle(adapted, tmp_path / "bundle", ["onnx", "tflite", "c"], cartpole_states[:64])
    assert report["passed"] and all(report["backends"][n]["passed"] for n in ("numpy", "onnxruntime", "litert-builtin"))
    again = verify_bundle(open_bundle(out), states=cartpole_states)
    assert again["passed"] and again["backends"]["litert-builtin"]["extra"]["agreement"] == 1.0
    failures, q_c, _ = run_header((out / "policy.h").read_text(), cartpole_states[:500])
    reference = adapted.q_values(cartpole_states[:500])
    assert failures == 0 and compare(reference, q_c, tolerance(adapted, reference))["passed"]


def test_head_learner_state_restores_on_its_policy_bit_for_bit(cartpole_states) -> None:
    from edge_rl.stream.adapt import HeadStreamQ

    policy = quantize_policy(relu_mlp((4, 32, 32, 2), 5, cartpole_states), cartpole_states, default_plan(3, "int8"))
    a = from_policy(policy, "head")
    run_stream(a, "CartPole-v1", 1000, 0)
    state = a.state_dict()
    with pytest.raises(ValueError, match="pass that policy"):
        restore(state)
    other = quantize_policy(relu_mlp((4, 32, 32, 2), 6, cartpole_states), cartpole_states, default_plan(3, "int8"))
    with pytest.raises(ValueError, match="another policy"):
        restore(state, other)  # same layer kinds and sizes, other weights
    b = restore(state, policy)
    assert isinstance(b, HeadStreamQ)
    for s in cartpole_states[:100]:
        assert a.act(s) == b.act(s)
        assert a.observe(1.0, s, False, False) == b.observe(1.0, s, False, False)
    np.testing.assert_array_equal(a.net.theta, b.net.theta)
