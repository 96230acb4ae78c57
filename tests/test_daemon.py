"""`edge-rl run` in this process: the control loop, its guards, checkpoints and reloads (scenarios S14, S17-S23).

Each test drives a real daemon (verified bundle, protocol session, shadow learner, gate, checkpoint
thread) against AntiJam running in this process in lock step, so nothing depends on timing except
where timing is the point (S19, S23). Randomised tests print their seed.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_rl.daemon import config as config_file
from edge_rl.daemon.checkpoint import CheckpointStore, FileOps
from edge_rl.daemon.config import ControlConfig
from edge_rl.daemon.service import Notifier
from edge_rl.daemon.snapshot import unpack
from edge_rl.errors import BadInput
from firmware_bridge.protocol import Action, Obs
from tests.daemon_rig import (
    Wrapped,
    antijam_policy,
    config,
    corrupt,
    daemon,
    finite_theta,
    kinds,
    sim,
    with_observation,
    write_bundle,
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(antijam_policy(), tmp_path_factory.mktemp("bundle") / "v5", 5)


# --- the config --------------------------------------------------------------------------------------


def test_the_printed_config_is_the_default_config() -> None:
    assert config_file.parse(config_file.describe().encode()) == config_file.DaemonConfig()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[control]\nfoo = 1\n", "unknown key 'foo'"),
        ("[nonsense]\n", "unknown section [nonsense]"),
        ("[control]\ndeadline_ms = 'fast'\n", "must be a number"),
        ("[control]\nvalid_ms = 2.5\n", "must be an integer"),
        ("[control]\ndeadline_ms = -1\n", "outside"),
        ("[control]\ndeadline_ms = nan\n", "outside"),
        ("[control]\naction_mask = [1, 1]\n", "distinct"),
        ("[control]\naction_mask = [true]\n", "list of integers"),
        ("[adapt]\nmode = 'sometimes'\n", "mode must be one of"),
        ("[adapt]\nexplore = 2\n", "outside"),
        ("control = 3\n", "must be a table"),
        ("[control\n", "not valid TOML"),
    ],
)
def test_a_bad_config_is_refused_with_one_line(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("[", r"\[")) as info:
        config_file.parse(text.encode(), "cfg.toml")
    assert "\n" not in str(info.value) and str(info.value).startswith("cfg.toml: ")


def test_the_command_line_mode_overrides_the_config() -> None:
    cfg = config_file.parse(b"[adapt]\nmode = 'head'\n")
    assert cfg.adapt.mode == "head" and cfg.with_mode(None).adapt.mode == "head"
    assert cfg.with_mode("full").adapt.mode == "full"


# --- the shield and the input guard -------------------------------------------------------------------


def test_the_shield_applies_mask_slew_and_dwell_after_the_policy() -> None:
    from edge_rl.daemon.guard import Shield

    q = np.array([0.0, 1.0, 5.0, 2.0, 9.0])
    assert Shield(5, 0, ControlConfig(action_mask=(0, 1, 3))).choose(q) == 3  # 4 and 2 are masked
    slew = Shield(5, 0, ControlConfig(max_action_step=1))
    slew.hold(0)
    assert [slew.choose(q) for _ in range(3)] == [1, 2, 2]  # one level per step, up to the best within reach
    rising = np.arange(5.0)
    assert [slew.choose(rising) for _ in range(3)] == [3, 4, 4]
    dwell = Shield(5, 0, ControlConfig(min_dwell_steps=3))
    assert [dwell.choose(q) for _ in range(3)] == [4, 4, 4]
    dwell.hold(0)  # a fallback step sent the safe action: it must now be held
    assert [dwell.choose(q) for _ in range(3)] == [0, 0, 4]
    assert dwell.shielded == 2
    rng = np.random.default_rng(0)
    masked = Shield(5, 0, ControlConfig(action_mask=(0, 3)))
    assert {masked.explore(rng) for _ in range(200)} == {0, 3}
    with pytest.raises(BadInput, match="safe action"):
        Shield(5, 2, ControlConfig(action_mask=(0, 1)))
    with pytest.raises(BadInput, match="lacks"):
        Shield(5, 0, ControlConfig(action_mask=(0, 7)))


def test_the_input_guard_names_what_is_wrong() -> None:
    from edge_rl.daemon.guard import InputGuard

    spec = antijam_policy().observation
    guard = InputGuard(spec, ControlConfig(stale_ms=50))
    x = np.full(spec.size, 0.5, np.float32)
    assert guard.check(x, 1_000_000, 10.0) is None
    assert guard.check(x[:10], 1_000_000, 10.0) == "shape"
    assert guard.check(np.where(np.arange(spec.size) == 3, np.nan, x), 1_000_000, 10.0) == "nonfinite"
    assert guard.check(np.where(np.arange(spec.size) == 3, 1.5, x), 1_000_000, 10.0) == "bounds"
    assert guard.check(x, 1_010_000, 10.01) is None  # the same delay: fresh
    assert guard.check(x, 1_020_000, 10.08) == "stale"  # arrived 60 ms later than the fastest delivery
    assert guard.check(x, 0, 99.0) is None  # a device without a clock is never stale


# --- the loop -----------------------------------------------------------------------------------------


def test_every_action_is_sent_before_the_learner_sees_its_obs(bundle: Path) -> None:
    received: dict[bytes, int] = {}  # an OBS's observation (noisy: unique) -> its sequence number
    answered: set[int] = set()
    checked = {"learnt": 0, "terminal": 0}

    def note(msgs: list) -> list:
        received.update({m.observation.astype(np.float32).tobytes(): m.seq for m in msgs if isinstance(m, Obs)})
        return msgs

    transport = Wrapped(sim(), on_receive=note)
    transport.on_send = lambda msg: answered.add(msg.answers) if isinstance(msg, Action) else None
    d = daemon(bundle, transport, config("head"))
    learn = d.shadow.learn

    def spy(obs, action, reward, next_obs, terminated, truncated) -> None:
        # the OBS that completes this transition was answered before learning started (a terminal one never is)
        seq = received[np.asarray(next_obs, np.float32).tobytes()]
        if terminated or truncated:
            checked["terminal"] += 1
            assert seq not in answered
        else:
            assert seq in answered
        checked["learnt"] += 1
        learn(obs, action, reward, next_obs, terminated, truncated)

    d.shadow.learn = spy
    d.run(300)
    assert d.counters.steps == 300 and checked["learnt"] >= 290 and checked["terminal"] >= 1
    assert d.counters.safe_actions == 0 and d.counters.fallbacks == {} and d.counters.gaps == 0
    assert len(answered) == 300 and d.summary()["latency_p99_us"] < 1e6


def test_a_frozen_daemon_acts_greedily_from_the_bundle(bundle: Path) -> None:
    """--adapt off: every ACTION is the bundle policy's own greedy choice (no exploration, no learner)."""
    observations: dict[int, np.ndarray] = {}

    def note(msgs: list) -> list:
        observations.update({m.seq: m.observation for m in msgs if isinstance(m, Obs)})
        return msgs

    transport = Wrapped(sim("reactive"), on_receive=note)
    d = daemon(bundle, transport, config("off", explore=0.5))
    d.run(500)
    actions = transport.actions()
    expected = d.bundle.policy.act(np.stack([observations[a.answers] for a in actions]))
    assert [a.action for a in actions] == expected.tolist()
    assert d.shadow is None and d.counters.explored == 0


def test_a_missed_deadline_sends_the_safe_action_on_the_same_step(bundle: Path) -> None:
    transport = Wrapped(sim())
    d = daemon(bundle, transport, config("off", control=ControlConfig(deadline_ms=0.01)))  # 10 us: never met
    d.run(50)
    actions = transport.actions()
    assert len(actions) == 50 and all(a.fallback and a.action == d.safe for a in actions)
    assert d.counters.fallbacks == {"deadline": 50} and kinds(d).count("safe_action") == 1


def test_s17_invalid_observations_get_the_safe_action_and_teach_nothing(bundle: Path) -> None:
    seed = 17
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    injected = {"count": 0}
    step = {"n": 0}

    def spoil(msgs: list) -> list:
        out = []
        for msg in msgs:
            if isinstance(msg, Obs) and not (msg.terminated or msg.truncated):
                step["n"] += 1
                burst = 600 <= step["n"] < 700 or 1400 <= step["n"] < 1500  # 100 % of 100 steps, twice
                if burst or rng.random() < 0.01:
                    msg = with_observation(msg, corrupt(msg.observation, rng))
                    injected["count"] += 1
            out.append(msg)
        return out

    transport = Wrapped(sim("constant", seed), on_receive=spoil)
    d = daemon(bundle, transport, config("full", gate_every=200, trial_steps=100))
    d.run(2000)
    actions = transport.actions()
    safe = d.bundle.policy.action.safe
    assert all(0 <= a.action < 8 and isinstance(a.action, int) for a in actions)
    fallback = [a for a in actions if a.fallback]
    assert len(fallback) == injected["count"] == d.counters.safe_actions >= 200
    assert all(a.action == safe for a in fallback)
    assert sum(v for k, v in d.counters.fallbacks.items() if k in ("nonfinite", "bounds")) == injected["count"]
    # no transition touches an invalid OBS (at either end) and the learner saw exactly the valid ones
    assert d.shadow.updates + d.shadow.skipped == d.counters.transitions - _frozen_steps(d)
    assert d.shadow.skipped == 0 and d.shadow.diverged == 0 and finite_theta(d)
    assert transport.inner.counters()["invalid_actions"] == 0
    assert kinds(d).count("safe_action") >= 2  # an event when fallback starts (not one per step)


def _frozen_steps(d) -> int:
    """Transitions the learner did not see because learning was frozen (cooldown) or rewards were suspect."""
    return d.counters.transitions - d.shadow.updates - d.shadow.skipped if d.gate.counters.drift_alarms else 0


def test_a_restart_resumes_exactly(bundle: Path, tmp_path: Path) -> None:
    cfg = config("head", gate_every=200, trial_steps=100, checkpoint=config_file.CheckpointConfig(interval_s=3600))
    first = daemon(bundle, sim("constant", 3), cfg, tmp_path)
    first.run(1500)
    first.stop()
    saved_learner = first.shadow.state()
    saved_gate = first.gate.state()
    second = daemon(bundle, sim("constant", 4), cfg, tmp_path)
    assert "resumed" in kinds(second)
    resumed = second.shadow.state()
    assert resumed["scalars"] == saved_learner["scalars"]
    for key, value in saved_learner["arrays"].items():
        assert np.array_equal(resumed["arrays"][key], value), key
    gate = second.gate.state()
    for key in ("steps", "backoff", "next_gate", "counters", "history", "drift", "incumbent_segments"):
        assert gate[key] == saved_gate[key], key
    assert second.counters.as_dict() == first.counters.as_dict()
    assert second.gate.incumbent_policy().digest() == first.gate.incumbent_policy().digest()
    second.run(200)
    assert second.counters.steps == 1700


def test_state_of_another_bundle_or_mode_is_not_resumed(bundle: Path, tmp_path: Path) -> None:
    first = daemon(bundle, sim(), config("head"), tmp_path)
    first.run(100)
    first.stop()
    other = daemon(bundle, sim(), config("full"), tmp_path)
    (event,) = [e for e in other.events.recent if e["kind"] == "not_resumed"]
    assert "--adapt head" in event["reason"] and other.counters.steps == 0


class FailingOps(FileOps):
    """The real file operations, with fsync failing (EIO) or writes failing (ENOSPC) while `fault` is set."""

    def __init__(self) -> None:
        self.fault: str | None = None
        self.calls = 0

    def fsync(self, fd: int) -> None:
        self.calls += 1
        if self.fault == "fsync":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        super().fsync(fd)

    def write(self, fd: int, data) -> int:
        self.calls += 1
        if self.fault == "write":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(fd, data)


@pytest.mark.parametrize("fault", ["fsync", "write"])
def test_s14_a_failing_disk_never_stops_control_and_alarms_once(bundle: Path, tmp_path: Path, fault: str) -> None:
    cfg = config("head", checkpoint=config_file.CheckpointConfig(interval_s=0.01))
    d = daemon(bundle, sim(), cfg, tmp_path)
    ops = FailingOps()
    d.store.ops = ops
    d.run(300)
    assert d.persister.flush(10)  # nothing in flight: what is on disk now must stay as it is
    good = d.store.generation
    assert good >= 1
    before = {p.name: p.read_bytes() for p in tmp_path.glob("ckpt.*")}
    ops.fault = fault
    calls = ops.calls
    d.run(600)
    assert d.persister.flush(10)  # the write in flight (failing too) has cleaned up after itself
    d._checkpoint_results()
    failed = [e for e in d.events.recent if e["kind"] == "checkpoint_failed"]
    assert len(failed) == 1 and d.checkpoint_backoff > 1  # one alarm, then a quiet back-off
    assert d.counters.steps == 900 and d.counters.safe_actions == 0  # control went on
    assert {p.name: p.read_bytes() for p in tmp_path.glob("ckpt.*")} == before  # the old generations intact
    assert not list(tmp_path.glob(".ckpt*"))  # no temp left, nothing partial renamed in
    attempts = ops.calls - calls
    ops.fault = None  # the disk works again: the next checkpoint after the back-off (<= 0.64 s here) succeeds
    deadline = time.monotonic() + 10
    while "checkpoint_recovered" not in kinds(d):
        assert time.monotonic() < deadline, "no checkpoint after the fault cleared"
        d.run(20)
    assert d.store.generation > good and d.checkpoint_backoff == 1
    d.stop()  # the final checkpoint; nothing in flight while another store reads the directory
    recovered, _ = CheckpointStore(tmp_path).recover()
    meta, _ = unpack(recovered.payload)
    assert meta["loop"]["steps"] >= 900
    print(f"{fault}: {attempts} failing calls while 600 steps ran")


STALL = 5.0  # seconds the loop is stuck in S19


def test_s19_watchdog_pings_come_from_the_loop_and_stop_while_it_stalls(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = str(tmp_path / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(0.05)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # systemd's deadline 1 s: a ping every 0.5 s
    received: list[tuple[float, str]] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                datagram = server.recv(4096).decode()
            except TimeoutError:
                continue
            received.append((time.monotonic(), datagram))  # stamped on arrival

    listener = threading.Thread(target=listen)
    listener.start()
    stall = {"at": None}

    def stall_once(msgs: list) -> list:
        if stall["at"] is None and any(isinstance(m, Obs) for m in msgs) and d.counters.steps >= 2000:
            stall["at"] = time.monotonic()
            time.sleep(STALL)  # the loop is stuck (a blocking read, a slow card): no ping may go out
        return msgs

    transport = Wrapped(sim(), on_receive=stall_once)
    d = daemon(bundle, transport, config("off"), notifier=Notifier())
    try:
        deadline = time.monotonic() + 40
        while d.counters.steps < 2000 or time.monotonic() < (stall["at"] or math.inf) + STALL + 2.5:
            d.run(500)
            assert time.monotonic() < deadline
        d.stop()
        while not received or received[-1][1] != "STOPPING=1":
            assert time.monotonic() < deadline, "no STOPPING=1"
            time.sleep(0.01)
    finally:
        done.set()
        listener.join()
        server.close()
    states = [text for _, text in received]
    assert states[0].startswith("READY=1") and states[-1] == "STOPPING=1"
    pings = [t for t, text in received if text == "WATCHDOG=1"]
    t0 = stall["at"]
    assert not [t for t in pings if t0 + 0.01 < t < t0 + STALL]  # none while the loop stalled
    after = [t for t in pings if t > t0 + STALL]
    assert after and after[0] < t0 + STALL + 0.1  # the first on-time step after the stall pings again
    assert [t for t in pings if t < t0]  # it pinged before the stall too
    gaps = np.diff(after)
    assert len(gaps) >= 3 and gaps.max() < 0.9  # every half WATCHDOG_USEC while on time: never near the deadline


def test_s22_config_reload_applies_valid_and_keeps_the_old_on_invalid(bundle: Path, tmp_path: Path) -> None:
    path = tmp_path / "daemon.toml"
    path.write_text("[control]\naction_mask = [0, 1, 2, 3, 4, 5, 6, 7]\n")
    transport = Wrapped(sim("constant", 2))
    d = daemon(bundle, transport, config_file.load(path), config_path=path)
    d.run(200)
    path.write_text("[control]\naction_mask = [0, 2]\n")  # refused: the safe action 1 is not in it
    d.signals.reload = True
    d.run(200)
    assert d.config.control.action_mask == (0, 1, 2, 3, 4, 5, 6, 7)
    (rejected,) = [e for e in d.events.recent if e["kind"] == "config_rejected"]
    assert "safe action 1" in rejected["reason"]
    path.write_text("[control]\naction_mask = [1, 5]\n")
    d.signals.reload = True
    d.run(1)  # the reload happens after this step's ACTION
    sent_before = len(transport.actions())
    d.run(300)
    assert "config_reloaded" in kinds(d) and d.config.control.action_mask == (1, 5)
    assert {a.action for a in transport.actions()[sent_before:]} <= {1, 5}
    assert d.counters.steps == 701 and d.counters.safe_actions == 0  # every OBS answered through both reloads


def test_s23_a_wall_clock_jump_causes_no_timeout(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = time.time
    offset = {"s": 0.0}
    monkeypatch.setattr(time, "time", lambda: real() + offset["s"])

    def jump(msgs: list) -> list:
        if d.counters.steps == 300:
            offset["s"] = 3600.0
        elif d.counters.steps == 600:
            offset["s"] = -3600.0
        return msgs

    d = daemon(bundle, Wrapped(sim(), on_receive=jump), config("head", checkpoint=config_file.CheckpointConfig()))
    d.run(900)
    assert d.counters.steps == 900 and d.counters.safe_actions == 0
    assert d.link.session.losses == 0 and "link_lost" not in json.dumps(list(d.events.recent))
    walls = [e["wall"] for e in d.events.recent]
    assert max(walls) - min(walls) < 7200  # the event log records what the wall clock said


@pytest.mark.learning
def test_s18_a_poisoned_reward_rolls_back_to_last_good_and_freezes_learning(bundle: Path) -> None:
    """End to end: the shadow improves a poor policy (promotions), then the device reports the reward sign-flipped.

    Whatever was on probation is rolled back to last-good (digest equal); nothing is learnt or
    promoted while the reward is suspect; learning resumes once it is back. Three seeds: the
    invariants hold for each, and most must have promoted something before the poison.
    """
    from edge_rl.envdevice import Shift

    poison, clean = 3000, 4500
    shifts = (Shift(poison, {"reward_scale": -1}), Shift(clean, {"reward_scale": 1}))
    promoted, rolled_back = 0, 0
    for seed in (0, 1, 2):
        d = daemon(bundle, sim("sweeping", seed, shifts), config("head", seed=seed, probation_steps=2000))
        updates: list[int] = []
        learn = d.shadow.learn

        def spy(*args, d=d, learn=learn, updates=updates) -> None:
            updates.append(d.counters.steps)
            learn(*args)

        d.shadow.learn = spy
        d.run(poison)
        before = d.gate.counters.promotions
        on_probation = d.gate.incumbent is not d.gate.last_good
        last_good = (d.gate.last_good.policy if d.gate.last_good else d.gate.bundle).digest()
        d.run(clean - poison)
        recent = list(d.events.recent)
        kinds_now = [e["kind"] for e in recent]
        print(f"seed {seed}: {before} promotions before the poison, on probation {on_probation}: {kinds_now[-8:]}")
        assert kinds_now.count("reward_suspect") == 1 and "reward_trusted" not in kinds_now
        assert "rollback" in kinds_now or "drift_alarm" in kinds_now, "the drop was not noticed"
        if on_probation:
            (rollback,) = [e for e in recent if e["kind"] == "rollback"]
            assert rollback["incumbent"] == last_good[:16] and d.gate.incumbent_policy().digest() == last_good
            rolled_back += 1
        assert d.gate.counters.promotions == before  # nothing promoted on poisoned rewards
        assert not [s for s in updates if poison + 250 < s <= clean]  # nothing learnt from them
        d.run(2000)
        assert "reward_trusted" in [e["kind"] for e in d.events.recent] and updates[-1] > clean + 500
        promoted += before > 0
    assert promoted >= 2 and rolled_back >= 1, (promoted, rolled_back)
