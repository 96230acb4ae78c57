"""`sim://` (an env in the host's process, registered by edge_rl) and recorded sessions played back by `replay://`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge import IncompatiblePeer, open_link
from firmware_bridge.links import EndOfStream, State
from firmware_bridge.protocol import Action, Config, Error, Hello, Obs, Reset

ANTIJAM = Hello("host", (40,), 8)


def run_session(link, steps: int, rng: np.random.Generator, msg: Obs | None = None) -> list[Obs]:
    """Answer every non-terminal OBS (from `msg` on) with a random action; return every OBS seen."""
    seen: list[Obs] = []
    msg = msg or link.recv(1.0)
    while len(seen) < steps:
        assert isinstance(msg, Obs), msg
        seen.append(msg)
        if not (msg.terminated or msg.truncated):
            link.send(Action(int(rng.integers(8)), answers=msg.seq))
        msg = link.recv(1.0)
    return seen


def test_sim_runs_an_environment_in_lock_step() -> None:
    with open_link("sim://edge_rl/AntiJam-v0?jammer=sweeping&seed=3", ANTIJAM) as link:
        seen = run_session(link, 500, np.random.default_rng(0))
        assert link.state is State.READY and link.peer is not None and link.peer.n_actions == 8
        counters = link.counters()
    assert counters["steps"] == 500 - counters["episodes"]  # 1 + steps + episodes OBS, the last one not kept
    assert counters["safe_steps"] == counters["invalid_actions"] == counters["stale_actions"] == 0
    assert all(o.observation.shape == (40,) for o in seen)
    assert 0 < sum(o.reward for o in seen) < 500


def test_sim_seeds_make_sessions_repeatable_and_stale_actions_are_not_applied() -> None:
    def observations(seed: int) -> np.ndarray:
        with open_link(f"sim://edge_rl/AntiJam-v0?seed={seed}", ANTIJAM) as link:
            first = link.recv(1.0)
            link.send(Action(1, answers=first.seq + 100))  # answers an OBS that does not exist
            assert link.recv(0.05) is None and link.counters()["stale_actions"] == 1
            return np.stack([o.observation for o in run_session(link, 50, np.random.default_rng(1), first)])

    assert np.array_equal(observations(5), observations(5))
    assert not np.array_equal(observations(5), observations(6))


def test_sim_answers_reset_and_config_like_a_device() -> None:
    with open_link("sim://CartPole-v1?seed=0", Hello("host", (4,), 2)) as link:
        first = link.recv(1.0)
        link.send(Reset(seed=0))
        again = link.recv(1.0)
        assert np.array_equal(first.observation, again.observation) and again.reward == 0
        link.send(Config("no_such_key", 1.0))
        error = link.recv(1.0)
        assert isinstance(error, Error) and "no_such_key" in error.text


def test_sim_with_the_wrong_observation_shape_is_incompatible() -> None:
    with pytest.raises(IncompatiblePeer, match=r"observation shape \(4,\) where \(40,\) is expected"):
        with open_link("sim://CartPole-v1", ANTIJAM) as link:
            link.recv(1.0)


def test_a_recorded_session_replays_what_was_received(tmp_path: Path) -> None:
    record = tmp_path / "run.jsonl"
    with open_link(f"sim://edge_rl/AntiJam-v0?seed=2&record={record}", ANTIJAM) as link:
        live = run_session(link, 200, np.random.default_rng(0))
    lines = record.read_text().splitlines()
    assert {json.loads(line)["dir"] for line in lines} == {"rx", "tx"}
    with open(record, "a") as f:
        f.write("{not json\n")
        f.write('{"dir": "rx", "type": "Nope"}\n')
    with open_link(f"replay://{record}", ANTIJAM) as replay:
        replayed = []
        with pytest.raises(EndOfStream):
            while True:
                msg = replay.recv(1.0)
                if isinstance(msg, Obs):
                    replayed.append(msg)
        assert replay.counters()["bad_lines"] == 2
    assert len(replayed) >= len(live)
    for a, b in zip(live, replayed, strict=False):
        assert np.array_equal(a.observation, b.observation) and (a.reward, a.seq, a.terminated) == (
            b.reward,
            b.seq,
            b.terminated,
        )
