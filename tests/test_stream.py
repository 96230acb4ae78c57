"""Stream Q(lambda): numpy learner against the torch oracle (teacher-forced), statistics, init, actions, learning."""

import math
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from edge_rl.stream import StreamQ, restore
from edge_rl.stream.normalize import ObservationNormalizer, RewardScaler
from edge_rl.stream.simulate import stream_cartpole
from edge_rl.stream.state import STATE_FILE, load_state, save_state


def torch_oracle(*args, **kwargs):
    """The torch learner of the same spec (the training box's `train` extra); numpy-only tests run without it."""
    pytest.importorskip("torch")
    from edge_rl.train.stream_torch import TorchStreamQ

    return TorchStreamQ(*args, **kwargs)


def flat(tensors) -> np.ndarray:
    return np.concatenate([t.detach().numpy().ravel() for t in tensors]).astype(np.float32)


def test_sparse_init_zeroes_ceil_ninety_percent_per_unit() -> None:
    learner = StreamQ(5, 2, hidden=(32, 32), seed=3)
    net = learner.net
    for i, spec in enumerate(net.specs):
        w, b = net.weight(i), net.bias(i)
        zeros = math.ceil(0.9 * spec.n_in)
        assert ((w == 0).sum(axis=1) == zeros).all()
        assert np.abs(w).max() <= 1 / math.sqrt(spec.n_in)
        assert (b == 0).all()
    assert (net.weight(0) == 0).all()  # CartPole's first layer: ceil(4.5) = 5 = fan_in
    q, _ = net.forward(np.random.default_rng(0).normal(size=5).astype(np.float32))
    assert (q == 0).all()


@pytest.mark.parametrize("features", [3, 24])  # the scalar path (<= 16 features) and the array path
def test_normaliser_and_reward_scaler_match_prefix_statistics(features: int) -> None:
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(400, features)) * rng.uniform(0.1, 10.0, features) + rng.uniform(-5, 5, features)
    rewards = rng.normal(size=400)
    dones = rng.random(400) < 0.05
    normalizer, scaler = ObservationNormalizer(features + 1, raw_tail=1), RewardScaler(0.99)
    u, us = 0.0, []
    for i in range(400):
        x = np.append(obs[i], 0.25)
        got = normalizer(x)
        assert got.dtype == np.float32 and got.shape == (features + 1,)
        prefix = obs[: i + 1]
        var = prefix.var(axis=0, ddof=1) if i >= 1 else np.ones(features)
        want = (obs[i] - prefix.mean(axis=0)) / np.sqrt(var + 1e-8)
        np.testing.assert_allclose(got[:features], want, rtol=1e-6, atol=1e-6)
        assert got[features] == np.float32(0.25)  # the raw tail passes untouched
        u = 0.99 * (1 - dones[i]) * u + rewards[i]
        us.append(u)
        u_var = np.var(us, ddof=1) if i >= 1 else 1.0
        assert abs(scaler(rewards[i], bool(dones[i])) - rewards[i] / math.sqrt(u_var + 1e-8)) <= 1e-9
    np.testing.assert_allclose(normalizer.stats.mean, obs.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(normalizer.stats.var, obs.var(axis=0, ddof=1), rtol=1e-10)


@pytest.mark.parametrize("n_actions", [2, 3, 6])  # 3 and 6 exercise the integer draw's rejection
def test_action_streams_are_identical(n_actions: int) -> None:
    torch = pytest.importorskip("torch")

    oracle = torch_oracle(5, n_actions, raw_tail=1, seed=4)
    with torch.no_grad():
        for linear in oracle.net.linears:  # random weights instead of sparse zeros, so greedy actions vary
            linear.weight.normal_()
    learner = StreamQ(5, n_actions, raw_tail=1, seed=4)
    learner.net.load_torch_order(flat(oracle.net.parameters()))
    rng = np.random.default_rng(0)
    streams = ([], [])
    for _ in range(3000):
        x = np.append(rng.normal(size=4), 0.0)
        streams[0].append((learner.act(x), learner._pending[3]))
        streams[1].append((oracle.act(x), oracle.pending[2]))
    assert streams[0] == streams[1]
    counts = np.bincount([a for a, _ in streams[0]], minlength=n_actions)
    assert (counts > 0).all() and any(n for _, n in streams[0])


def near_kink(learner: StreamQ, state: np.ndarray) -> bool:
    """A pre-activation within 1e-6 of LeakyReLU's kink, not on it: exactly 0 (the zero layer) is no ambiguity."""
    _, cache = learner.net.forward(state)
    return any(((np.abs(y) < 1e-6) & (y != 0)).any() for y in learner.net.activation_inputs(cache))


def test_teacher_forced_one_step_updates_match_the_torch_oracle() -> None:
    """Captured torch steps of a 20k-step run (pre-state + transition) replayed by the numpy update, one at a time.

    Captured: the first 50 steps, episode ends, exploratory resets and every 25th step, early
    (epsilon ~1) and late (steps 19k-20k: small alpha_eff, long traces).
    """
    oracle = torch_oracle(5, 2, raw_tail=1, seed=0, record=True)
    records = []

    def capture(step: int, learner) -> None:
        if learner.record:
            r = learner.step_record
            if step < 50 or r["done"] or (r["nongreedy"] and len(records) < 300) or step % 25 == 0:
                records.append((step, r))
        learner.record = step < 2_999 or step >= 18_999  # recording costs: only the two windows

    stream_cartpole(oracle, 20_000, seed=0, on_step=capture)
    late = [r for step, r in records if step >= 19_000]
    assert len(late) >= 40 and max(r["alpha"] for r in late) < 0.05  # the late phase: small steps
    records = [r for _, r in records]
    assert sum(r["done"] for r in records) >= 20 and sum(r["nongreedy"] for r in records) >= 20
    learner = StreamQ(5, 2, raw_tail=1, seed=0)
    checked = exempt = 0
    for r in records:
        learner.net.load_torch_order(flat(r["theta"]))
        learner.net.load_torch_order(flat(r["trace"]), learner.trace)
        state = r["state"].numpy()
        if near_kink(learner, state):
            exempt += 1
            continue
        q, cache = learner.net.forward(state)
        want_q = r["q"].numpy()
        if abs(float(want_q[0] - want_q[1])) >= 1e-5:  # the greedy action, except on near-ties
            assert int(np.argmax(q)) == int(np.argmax(want_q))
        got = learner.update(q, cache, r["action"], r["reward"], r["next_state"].numpy(), r["done"], r["nongreedy"])
        want_theta = flat(r["theta_after"])
        err = np.abs(learner.net.torch_order() - want_theta)
        assert (err <= np.maximum(2e-6, 1e-5 * np.abs(want_theta))).all(), err.max()
        assert abs(got["delta"] - r["delta"]) <= 1e-5
        assert abs(got["alpha"] - r["alpha"]) <= 1e-5 * r["alpha"]
        assert (learner.trace == 0).all() == (r["done"] or r["nongreedy"])
        want_trace = flat(r["trace_after"])  # gradients through LayerNorm reach ~1e2: compare at their scale
        got_trace = learner.net.torch_order(learner.trace)
        np.testing.assert_allclose(got_trace, want_trace, atol=1e-5 * max(1.0, np.abs(want_trace).max()))
        checked += 1
    assert checked >= 200 and exempt <= 2


def learning_run(seed: int) -> tuple[float, float | None]:
    learner = StreamQ(5, 2, raw_tail=1, seed=seed)
    run = stream_cartpole(learner, 60_000, seed)
    solved = [s for r, s in zip(run.returns, run.end_steps, strict=True) if r >= 10_000]
    return run.window_mean(0, 10_000), solved[0] if solved else None


@pytest.mark.learning
def test_cartpole_reference_protocol_learns() -> None:
    """6 seeds x 60k steps, >= 3 must solve. Measured per seed: 91/100 solve under OpenBLAS SkylakeX
    kernels, 95/100 under Haswell (each seed's run differs between the two), so a correct learner
    fails with probability ~8e-4 at 91 % (6e-3 at its 95 % lower bound, 85 %); 5 seeds needing 3
    failed at 6e-3. A broken learner solves none. Six seeds take the wall time of five on two
    workers. Early returns (30.6-37.8 over those 200 runs) must sit near the reference's ~33."""
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(learning_run, range(6)))
    early = [m for m, _ in results]
    assert all(25 <= m <= 45 for m in early), early
    assert sum(s is not None for _, s in results) >= 3, results


def test_saved_state_continues_bit_for_bit(tmp_path) -> None:
    """Saved to disk mid-episode (npz + JSON), loaded, and both learners run on in the same env."""
    a = StreamQ(5, 2, raw_tail=1, seed=7)
    stream_cartpole(a, 1500, seed=7)
    a.act(np.append(np.zeros(4), -0.5))
    a.observe(1.0, np.append(np.full(4, 0.01), -0.4999), False, False)  # mid-episode: the next act reuses it
    save_state(a, tmp_path)
    b = load_state(tmp_path)
    assert b.state_dict()["scalars"] == a.state_dict()["scalars"]
    rng = np.random.default_rng(0)
    x = np.append(np.full(4, 0.01), -0.4999)
    for _ in range(300):
        actions = a.act(x), b.act(x)
        assert actions[0] == actions[1]
        nxt = np.append(rng.normal(size=4), -0.5)
        done = bool(rng.random() < 0.05)
        assert a.observe(1.0, nxt, done, False) == b.observe(1.0, nxt, done, False)
        x = nxt
    np.testing.assert_array_equal(a.net.theta, b.net.theta)
    np.testing.assert_array_equal(a.trace, b.trace)
    assert a.normalizer.stats.count == b.normalizer.stats.count
    assert a.to_policy().digest() == b.to_policy().digest()
    (tmp_path / STATE_FILE).write_bytes((tmp_path / STATE_FILE).read_bytes()[:-40])  # truncated
    with pytest.raises(ValueError, match="damaged"):
        load_state(tmp_path)


def test_learner_state_is_one_atomic_unit(tmp_path, monkeypatch) -> None:
    """One file: a save that dies mid-write leaves the previous state whole, never a mismatched pair."""
    import os

    a = StreamQ(5, 2, raw_tail=1, seed=3)
    stream_cartpole(a, 500, seed=3)
    save_state(a, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]
    saved = a.state_dict()
    stream_cartpole(a, 500, seed=4)

    def power_cut(fd: int) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "fsync", power_cut)
    with pytest.raises(OSError, match="power cut"):
        save_state(a, tmp_path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]  # no temp file left behind
    b = load_state(tmp_path)
    assert b.steps == saved["scalars"]["steps"] == 500
    np.testing.assert_array_equal(b.net.theta, saved["arrays"]["theta"])


def test_tampered_learner_state_is_refused() -> None:
    state = StreamQ(5, 2, raw_tail=1, seed=0).state_dict()
    tampered = [
        ("obs_mean", np.zeros(5), "need 4 features"),
        ("obs_m2", np.array([0, np.nan, 0, 0.0]), "must be finite"),
        ("theta", np.zeros(7), "sizes do not match"),
    ]
    for key, value, message in tampered:
        bad = {"scalars": state["scalars"], "arrays": {**state["arrays"], key: value}}
        with pytest.raises(ValueError, match=message):
            restore(bad)


def test_bad_input_is_refused_and_loses_nothing() -> None:
    learner = StreamQ(5, 2, raw_tail=1, seed=0)
    with pytest.raises(ValueError, match="needs a preceding act"):
        learner.observe(1.0, np.zeros(5), False, False)
    with pytest.raises(ValueError, match="NaN or infinity"):
        learner.act(np.array([0, 0, np.inf, 0, 0.0]))  # at the start: the observation the normaliser counts first
    assert learner.steps == 0 and learner.normalizer.stats.count == 0
    x = np.zeros(5)
    learner.act(x)
    before = learner.net.theta.copy(), learner.normalizer.stats.count
    with pytest.raises(ValueError, match="NaN or infinity"):
        learner.observe(1.0, np.array([0, np.nan, 0, 0, 0.0]), False, False)
    with pytest.raises(ValueError, match="features"):
        learner.act(np.zeros(4))
    with pytest.raises(ValueError, match="not finite"):
        learner.observe(float("inf"), np.zeros(5), False, False)
    np.testing.assert_array_equal(learner.net.theta, before[0])  # nothing learned from the bad steps
    assert learner.normalizer.stats.count == before[1]
    assert math.isfinite(learner.observe(1.0, np.zeros(5), False, False))  # and the step still goes through
    assert learner.normalizer.stats.count == before[1] + 1
    with pytest.raises(ValueError, match="raw_tail"):
        StreamQ(5, 2, raw_tail=6)


def test_one_action_all_raw_features_and_both_done_flags() -> None:
    single = StreamQ(3, 1, hidden=(8,), raw_tail=3, seed=0)  # nothing to choose, nothing to normalise
    x = np.array([0.5, -1.0, 2.0])
    for _ in range(50):
        assert single.act(x) == 0
        single.observe(1.0, x, False, False)
    np.testing.assert_array_equal(single._state, x.astype(np.float32))
    learner = StreamQ(5, 2, raw_tail=1, seed=0)
    learner.act(np.zeros(5))
    learner.observe(1.0, np.ones(5), True, True)
    assert (learner.trace == 0).all() and learner._state is None  # one episode end, counted once
    assert learner.rewards.u == 1.0 and learner.normalizer.count == 2


@pytest.mark.parametrize(
    "layers",
    [
        [(6, 16, True, "leaky_relu"), (16, 8, True, "leaky_relu")],
        [(6, 16, False, "relu"), (16, 8, False, "relu")],
        [(6, 16, True, "tanh"), (16, 8, False, "leaky_relu")],
        [(6, 16, False, "tanh"), (16, 8, True, "relu")],
    ],
)
def test_gradient_matches_autograd_for_every_layer_kind(layers) -> None:
    """The hand-written backward (LayerNorm as one 3-term product, centred blocks) against torch autograd."""
    torch = pytest.importorskip("torch")
    nn_functional = torch.nn.functional
    from edge_rl.stream.network import LayerSpec, StreamNet

    net = StreamNet([LayerSpec(*spec) for spec in layers] + [LayerSpec(8, 3, False, None)])
    rng = np.random.default_rng(0)
    net.theta[:] = rng.normal(size=net.theta.size) * 0.5
    net.centre()
    params = [torch.tensor(p, requires_grad=True) for i in range(3) for p in (net.weight(i), net.bias(i))]
    for trial in range(20):
        x = rng.normal(size=6).astype(np.float32)
        q, plan = net.forward(x)
        h = torch.from_numpy(x)
        for i, (_, n_out, layernorm, activation) in enumerate(layers):
            h = h @ params[2 * i].T + params[2 * i + 1]
            h = nn_functional.layer_norm(h, (n_out,), eps=1e-5) if layernorm else h
            h = {"leaky_relu": lambda t: nn_functional.leaky_relu(t, 0.01), "relu": torch.relu, "tanh": torch.tanh}[
                activation
            ](h)
        want_q = h @ params[4].T + params[5]
        np.testing.assert_allclose(q, want_q.detach().numpy(), rtol=1e-5, atol=1e-5)
        action = trial % 3
        want = flat(torch.autograd.grad(want_q[action], params))
        got = net.torch_order(net.gradient(plan, action))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(want).max()))


def test_layernorm_blocks_stay_centred_while_learning() -> None:
    """The forward skips LayerNorm's centring because LN blocks keep zero column sums: check it holds."""
    learner = StreamQ(5, 2, raw_tail=1, seed=2)
    stream_cartpole(learner, 5000, seed=2)
    net = learner.net
    for i, spec in enumerate(net.specs):
        if spec.layernorm:
            block = net.blocks[i]
            assert np.abs(block.sum(axis=0)).max() <= 1e-4 * max(1.0, np.abs(block).max())
    rng = np.random.default_rng(0)
    reference = learner.to_policy()  # true weights, LayerNorm with explicit centring in the IR forward
    for _ in range(50):
        x = np.append(rng.normal(size=4) * [1, 1, 0.1, 1], rng.uniform(-0.5, 0.5))
        np.testing.assert_allclose(learner.q_values(x), reference.q_values(x.astype(np.float32)), rtol=1e-4, atol=1e-4)
