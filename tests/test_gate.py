"""The gate alone, fed scripted rewards: promotion, early abort, refusal, drift, rollback to last-good (S18), fallback.

Rewards are scripted, so each rule is checked exactly and on any CPU; the daemon tests drive the
same gate with a real learner.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from edge_rl.daemon.config import AdaptConfig
from edge_rl.daemon.gate import Candidate, Gate
from edge_rl.errors import PolicyFormatError
from edge_rl.layers import Dense
from edge_rl.policy import Policy
from edge_rl.runtime.backends import NumpyBackend
from tests.daemon_rig import antijam_policy

EPISODE = 10
SETTINGS = {"gate_every": 50, "trial_steps": 40, "drift_warmup": 5, "probation_steps": 200, "cooldown_steps": 100}


def variant(policy: Policy, scale: float = 1.0, bias: float = 0.0) -> Policy:
    """The policy with its Q head scaled and shifted: another digest, the same greedy actions (scale > 0)."""
    *body, head = policy.layers
    return replace(policy, layers=[*body, Dense(head.weight * scale, head.bias * scale + bias)])


class Harness:
    def __init__(self, **settings: object) -> None:
        self.bundle = antijam_policy()
        rng = np.random.default_rng(0)
        golden = rng.uniform(0, 1, (64, self.bundle.observation.size)).astype(np.float32)
        self.recent = rng.uniform(0, 1, (32, self.bundle.observation.size)).astype(np.float32)
        self.events: list[tuple[str, dict]] = []
        self.resets: list[Candidate | None] = []
        config = AdaptConfig(mode="head", **{**SETTINGS, **settings})
        emit = lambda kind, **fields: self.events.append((kind, fields))  # noqa: E731
        self.gate = Gate(self.bundle, NumpyBackend(self.bundle), golden, config, emit, self.resets.append)
        self.offered = variant(self.bundle, 1.0, 0.5)

    def propose(self) -> Candidate:
        if isinstance(self.offered, Exception):
            raise self.offered
        return Candidate(self.offered, {"scalars": {"id": self.offered.digest()}, "arrays": {}})

    def feed(self, reward: float, steps: int, trusted: bool = True) -> None:
        for _ in range(steps):
            done = (self.gate.steps + 1) % EPISODE == 0
            self.gate.after_step(reward, done, self.propose, lambda: self.recent, trusted)

    def until(self, phase: str, reward: float, limit: int = 2000) -> int:
        start = self.gate.steps
        while self.gate.phase != phase:
            self.feed(reward, 1)
            assert self.gate.steps - start < limit, f"never reached {phase}"
        return self.gate.steps - start

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


def test_a_better_candidate_is_promoted_then_confirmed_as_last_good() -> None:
    h = Harness()
    h.until("trial", 0.5)
    assert h.gate.actor is not h.gate.bundle_actor  # the candidate acts during its trial
    h.feed(0.9, 40)
    assert h.gate.phase == "learning" and h.kinds()[-1] == "candidate_promoted"
    assert h.gate.incumbent_policy().digest() == h.offered.digest() and h.gate.last_good is None
    h.feed(0.9, 200)
    assert h.gate.last_good is h.gate.incumbent and "confirmed" in h.kinds()
    assert h.gate.history[-1]["event"] == "promoted" and h.gate.counters.promotions == 1


def test_a_losing_trial_stops_early_and_the_next_one_waits_longer() -> None:
    h = Harness()
    h.until("trial", 0.5)
    started = h.gate.steps
    h.until("learning", 0.0)
    assert h.gate.steps - started <= 5  # 0.5 x 40 x 0.05 = 1 reward lost -> stopped within a few steps
    assert h.kinds()[-1] == "candidate_aborted" and h.gate.incumbent is None and h.gate.actor is h.gate.bundle_actor
    assert h.gate.backoff == 2 and h.gate.next_gate == h.gate.steps + 100
    h.until("trial", 0.5)
    h.feed(0.505, 40)  # within the margin: not better
    assert h.kinds()[-1] == "candidate_discarded" and h.gate.incumbent is None and h.gate.backoff == 4


def alternating_states(h: Harness) -> np.ndarray:
    """A, B, A, B, ...: two states the bundle answers alike and its negation (argmin) does not."""
    rng = np.random.default_rng(1)
    states = rng.uniform(0, 1, (400, h.bundle.observation.size)).astype(np.float32)
    q = h.bundle.q_values(states)
    best, worst = q.argmax(1), q.argmin(1)
    for i in range(len(states)):
        for j in range(i + 1, len(states)):
            if best[i] == best[j] and worst[i] != worst[j]:
                return np.stack([states[i], states[j]] * 16)
    raise AssertionError("no such pair")


@pytest.mark.parametrize(
    "policy, reason, reset",
    [
        (lambda p: PolicyFormatError("dense layer holds non-finite values"), "no valid policy", True),
        (lambda p: variant(p, 1.0, 1e6), "max |Q|", True),
        (lambda p: variant(p, -1.0), "action-change rate 1.00 vs the incumbent's 0.00", False),
    ],
    ids=["nan", "q-range", "chatter"],
)
def test_an_insane_candidate_is_refused_without_a_trial(policy, reason: str, reset: bool) -> None:
    h = Harness()
    h.recent = alternating_states(h)
    h.offered = policy(h.bundle)
    h.feed(0.5, 60)
    refused = [f for k, f in h.events if k == "candidate_refused"]
    assert refused and reason in refused[0]["reason"] and refused[0]["learner_reset"] is reset
    assert h.gate.counters.trials == 0 and h.gate.phase == "learning"
    assert (h.resets == [None]) is reset


def test_s18_a_reward_drop_on_probation_rolls_back_to_last_good_and_freezes_learning() -> None:
    h = Harness()
    h.until("trial", 0.5)
    h.feed(0.9, 40)
    promoted = h.gate.incumbent_policy().digest()
    last_good = h.gate.bundle.digest()
    h.feed(0.9, 60)  # on probation, drift monitor warmed up
    episodes = h.until("cooldown", -0.9) / EPISODE  # the reward's sign flips
    assert episodes <= 3
    assert h.kinds()[-1] == "rollback" and h.gate.counters.rollbacks == 1
    assert h.gate.incumbent_policy().digest() == last_good != promoted
    assert h.gate.actor is h.gate.bundle_actor and not h.gate.learning and h.resets[-1] is None
    trials = h.gate.counters.trials
    h.feed(-0.9, 99)
    assert h.gate.phase == "cooldown" and h.gate.counters.trials == trials  # frozen: no learning, no trial
    h.feed(-0.9, 1)
    assert h.gate.phase == "learning" and h.kinds()[-1] == "learning_resumed"


def test_a_drop_after_probation_keeps_the_confirmed_policy() -> None:
    h = Harness()
    h.until("trial", 0.5)
    h.feed(0.9, 40 + 200)
    confirmed = h.gate.incumbent_policy().digest()
    h.until("cooldown", 0.0)
    assert h.kinds()[-1] == "drift_alarm" and h.gate.counters.rollbacks == 0
    assert h.gate.incumbent_policy().digest() == confirmed and h.resets[-1] is h.gate.incumbent


def test_too_many_rollbacks_in_an_hour_fall_back_to_the_bundle_for_good() -> None:
    h = Harness(max_rollbacks_per_hour=1)
    for _ in range(2):
        h.until("trial", 0.5)
        h.feed(0.9, 100)
        h.until("cooldown" if h.gate.counters.rollbacks == 0 else "fallback", -0.9)
        h.feed(0.5, 100)
    assert h.gate.phase == "fallback" and h.kinds()[-1] == "fallback" and h.gate.counters.rollbacks == 2
    assert h.gate.incumbent is None and h.gate.actor is h.gate.bundle_actor and not h.gate.learning
    trials = h.gate.counters.trials
    h.feed(0.9, 1000)
    assert h.gate.phase == "fallback" and h.gate.counters.trials == trials


def test_a_suspect_reward_stream_cancels_the_trial_and_starts_none() -> None:
    h = Harness()
    h.until("trial", 0.5)
    h.feed(0.9, 5, trusted=False)
    assert h.kinds()[-1] == "candidate_cancelled" and h.gate.incumbent is None and h.gate.backoff == 1
    h.feed(0.5, 500, trusted=False)
    assert h.gate.counters.trials == 1


def test_the_gate_state_survives_a_restart_as_json() -> None:
    h = Harness()
    h.until("trial", 0.5)
    h.feed(0.9, 70)
    state = json.loads(json.dumps(h.gate.state()))
    again = Harness()
    again.gate.load(state, h.gate.incumbent, h.gate.last_good)
    for key in ("steps", "backoff", "next_gate", "counters", "history", "drift", "probation_until", "confirmed"):
        assert again.gate.state()[key] == state[key], key
    assert again.gate.incumbent_policy().digest() == h.offered.digest()


def test_a_config_reload_keeps_the_evidence_gathered() -> None:
    h = Harness()
    h.feed(0.5, 45)
    drift, segments = (h.gate.drift.n, h.gate.drift.mean), list(h.gate.incumbent_segments.closed)
    h.gate.configure(replace(h.gate.config, drift_lambda=99.0, margin=0.3))
    assert (h.gate.drift.n, h.gate.drift.mean) == drift and list(h.gate.incumbent_segments.closed) == segments
    assert h.gate.drift.threshold == 99.0 and h.gate.config.margin == 0.3


def test_an_operator_rollback_goes_to_last_good_or_the_bundle_and_says_when_nothing_changes() -> None:
    h = Harness()
    assert h.gate.operator_rollback(to_bundle=False) == "already acting from the bundle policy"
    h.until("trial", 0.5)
    h.feed(0.9, 40 + 200)  # promoted and confirmed: last-good is the candidate
    confirmed = h.gate.incumbent
    assert h.gate.last_good is confirmed
    h.until("learning", 0.9)  # between trials
    assert h.gate.operator_rollback(to_bundle=False) == "already acting from last-good"
    h.until("trial", 0.9)  # a second candidate on trial: stopping it is a rollback
    assert h.gate.operator_rollback(to_bundle=False) is None
    assert h.kinds()[-2:] == ["candidate_cancelled", "rollback"] and h.events[-1][1]["by"] == "operator"
    assert h.gate.incumbent is confirmed and h.gate.phase == "cooldown" and h.gate.actor is not h.gate.bundle_actor
    assert h.gate.counters.rollbacks == 0  # the same policy acts on: a cancelled trial, no rollback counted
    assert h.gate.operator_rollback(to_bundle=True) is None  # to the bundle's own policy: last-good forgotten
    assert h.gate.incumbent is None and h.gate.last_good is None and h.gate.actor is h.gate.bundle_actor
    assert h.gate.counters.rollbacks == 1 and h.resets[-1] is None
    assert h.gate.operator_rollback(to_bundle=True) == "already acting from the bundle policy"
