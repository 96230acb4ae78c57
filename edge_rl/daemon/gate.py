"""Which policy acts: the incumbent, a candidate on trial, or the bundle's frozen policy for good.

The shadow learner's candidate is gated every `gate_every` steps: finite weights, finite and bounded
Q-values on the golden and recent states, an action-change rate close to the incumbent's; then a
trial of whole episodes (at least `trial_steps`) in which it acts and must beat the incumbent's
recent reward per step by a margin. A trial losing badly stops early; a refused candidate doubles
the interval to the next one (up to x32), so a learner that is not getting better costs less and
less. A Page-Hinkley monitor on the acting policy's reward catches a drop: roll back to last-good
(the newest policy that kept its level through a probation after its promotion), reset the learner
to it and freeze learning for a cooldown; more than `max_rollbacks_per_hour` rollbacks and the
bundle policy acts for good.

Everything is counted in steps except the rollback rate (monotonic seconds): the gate behaves the
same at 10 Hz and at 10 kHz, and a wall-clock jump changes nothing.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_rl.daemon.config import AdaptConfig
from edge_rl.daemon.evidence import DriftMonitor, Segments
from edge_rl.errors import BadInput
from edge_rl.policy import Policy
from edge_rl.runtime.backends import Backend, NumpyBackend

Emit = Callable[..., None]
MAX_BACKOFF = 32
RECOVERY_BACKOFF = 1  # while recovering from a drop, the incumbent is known to be worse than before: trials are cheap
HOUR = 3600.0


@dataclass
class Candidate:
    policy: Policy
    snapshot: dict[str, Any]  # the learner's state it came from: what a promotion or rollback restores


@dataclass
class GateCounters:
    candidates: int = 0
    refused: int = 0  # failed a sanity check
    trials: int = 0
    aborted: int = 0  # trials stopped early
    promotions: int = 0
    discarded: int = 0  # trials the candidate did not win
    drift_alarms: int = 0
    rollbacks: int = 0


class Gate:
    """The arbiter between the bundle policy, the incumbent and the shadow learner's candidates."""

    def __init__(
        self,
        bundle: Policy,
        bundle_actor: Backend,
        golden: np.ndarray,
        config: AdaptConfig,
        emit: Emit,
        reset_learner: Callable[[Candidate | None], None],
    ) -> None:
        """`reset_learner(candidate)` puts the shadow learner back to a candidate's snapshot (None: the bundle's)."""
        self.bundle, self.bundle_actor, self.golden, self.emit = bundle, bundle_actor, golden, emit
        self.reset_learner = reset_learner
        self.bundle_qmax = float(np.abs(bundle_actor.q_values(golden)).max())
        self.config = config
        self.drift = DriftMonitor(config.drift_delta, config.drift_lambda, config.drift_warmup)
        self.incumbent_segments = Segments(config.trial_steps, config.trial_steps)
        self.trial_segments = Segments(config.trial_steps, 4 * config.trial_steps)
        self.phase = "learning"  # learning | trial (a candidate acts) | cooldown (frozen) | fallback (for good)
        self.incumbent: Candidate | None = None  # None everywhere means the bundle policy
        self.last_good: Candidate | None = None  # the newest policy that acted through its probation
        self.probation_until = 0  # step at which a promoted incumbent becomes last-good (if no alarm before)
        self.trial: Candidate | None = None
        self.actor: Backend = bundle_actor
        self.counters = GateCounters()
        self.history: deque[dict[str, Any]] = deque(maxlen=100)  # promotions and rollbacks, newest last
        self.rollback_times: deque[float] = deque()  # monotonic seconds
        self.steps = 0
        self.backoff = 1
        self.next_gate = config.gate_every
        self.cooldown_until = 0
        self.drift_reference = 0.0  # the drift monitor's reference level, once set
        self.recovery_target: float | None = None  # set by a drift alarm: the level to get back to

    def configure(self, config: AdaptConfig) -> None:
        """New settings (a config reload) apply from the next step; the evidence gathered so far is kept."""
        self.config = config
        self.drift.delta, self.drift.threshold, self.drift.warmup = (
            config.drift_delta,
            config.drift_lambda,
            config.drift_warmup,
        )
        self.incumbent_segments.max_len = self.incumbent_segments.keep = config.trial_steps
        self.trial_segments.max_len, self.trial_segments.keep = config.trial_steps, 4 * config.trial_steps

    # -- what acts ------------------------------------------------------------------------------
    @property
    def learning(self) -> bool:
        """Whether the shadow learner may learn from this step (never while frozen or on fallback)."""
        return self.phase in ("learning", "trial")

    def incumbent_policy(self) -> Policy:
        return self.incumbent.policy if self.incumbent else self.bundle

    def _set_actor(self, candidate: Candidate | None) -> None:
        if self.actor is not self.bundle_actor:
            self.actor.close()
        self.actor = NumpyBackend(candidate.policy) if candidate else self.bundle_actor

    # -- each step ------------------------------------------------------------------------------
    def after_step(
        self,
        reward: float,
        done: bool,
        propose: Callable[[], Candidate],
        recent: Callable[[], np.ndarray],
        trusted: bool = True,
    ) -> None:
        """Account one acted step's reward (valid transitions only) and move the gate on.

        `propose()` makes a candidate and `recent()` gives the recent valid observations, oldest
        first; both are called only when a candidate is due.

        With `trusted` False (a suspect reward stream) the drift monitor still watches, but no
        trial starts and a running one is cancelled: a comparison on such rewards means nothing.
        """
        self.steps += 1
        if self.phase == "fallback":
            return
        if trusted and self.incumbent is not self.last_good and self.steps >= self.probation_until:
            self.last_good = self.incumbent  # it kept its level through probation: what a rollback returns to
            self.emit("confirmed", digest=self.incumbent_policy().digest()[:16])
        if self.phase == "trial":
            if not trusted:
                self._end_trial(False, "cancelled", self.incumbent_segments.mean(), float("nan"), 0)
                return
            self._judge_trial(self.trial_segments.add(reward, done))
            return
        closed = self.incumbent_segments.add(reward, done)
        self.drift_reference = self.drift.mean if self.drift.n >= self.drift.warmup else self.drift_reference
        if closed and self.drift.update(self.incumbent_segments.last()):
            self._drift_alarm()
            return
        if self.phase == "cooldown":
            if self.steps >= self.cooldown_until:
                self.phase = "learning"
                self.next_gate = self.steps + self.config.gate_every
                self.emit("learning_resumed")
            return
        if trusted and closed and self.steps >= self.next_gate:  # a trial starts with an episode (or segment)
            self._consider(propose, recent())

    def _consider(self, propose: Callable[[], Candidate], recent: np.ndarray) -> None:
        if self.incumbent_segments.steps() < self.config.trial_steps:
            self.next_gate = self.steps + self.config.trial_steps  # not enough evidence on the incumbent yet
            return
        self.counters.candidates += 1
        try:
            candidate = propose()
            reason, diverged = self.sanity(candidate.policy, recent)
        except BadInput as e:  # the learner's network is no valid policy (e.g. an overflow to infinity)
            candidate, reason, diverged = None, f"no valid policy: {e}", True
        if reason:
            self.counters.refused += 1
            self._back_off()
            if diverged:  # the learner's weights are unusable: it starts again from the incumbent
                self.reset_learner(self.incumbent)
            self.emit("candidate_refused", reason=reason, learner_reset=diverged, next_gate=self.next_gate)
            return
        assert candidate is not None
        self.trial, self.phase = candidate, "trial"
        self.trial_segments.clear()
        self.counters.trials += 1
        self._set_actor(candidate)
        self.emit("trial_started", baseline=self.incumbent_segments.mean(), digest=candidate.policy.digest()[:16])

    def sanity(self, policy: Policy, recent: np.ndarray) -> tuple[str | None, bool]:
        """Why `policy` may not even be tried (None: it may), and whether that means the learner diverged."""
        if not all(np.isfinite(a).all() for layer in policy.layers for a in layer.arrays().values()):
            return "non-finite weights", True
        states = np.concatenate([self.golden, recent]) if len(recent) else self.golden
        q = policy.q_values(states)
        if not np.isfinite(q).all():
            return "non-finite Q-values on golden or recent states", True
        qmax = float(np.abs(q).max())
        if qmax > self.config.q_limit * max(self.bundle_qmax, 1e-6):
            return f"max |Q| {qmax:.3g} exceeds {self.config.q_limit:g} x the bundle's {self.bundle_qmax:.3g}", True
        if len(recent) > 1:
            mine = _change_rate(q[len(self.golden) :].argmax(1))
            theirs = _change_rate(self.incumbent_policy().q_values(recent).argmax(1))
            if mine > theirs + self.config.action_change_limit:
                return f"action-change rate {mine:.2f} vs the incumbent's {theirs:.2f}", False
        return None, False

    def _judge_trial(self, closed: bool) -> None:
        """Stop a trial that is clearly losing (checked every step); judge a finished one on whole episodes.

        Clearly losing: the reward lost against the incumbent's rate exceeds both `abort_margin`
        x `trial_steps` and three standard deviations of the incumbent's own noise over as many
        steps (a sequential test: noisy rewards do not stop an equal candidate, a crash stops a
        bad one at once). A stopped trial costs about that much reward, whatever the candidate;
        an early stop may lose a candidate that would have caught up, never promote a worse one.
        """
        c, trial = self.config, self.trial_segments
        baseline = self.incumbent_segments.mean()
        n, mean = trial.steps(partial=True), trial.mean(partial=True)
        shortfall = (baseline - mean) * n  # reward lost so far against the incumbent's rate
        if shortfall > max(c.abort_margin * c.trial_steps, 3.0 * self.incumbent_segments.std() * math.sqrt(n)):
            self.counters.aborted += 1
            self._end_trial(False, "aborted", baseline, mean, n)
            return
        if not closed or trial.steps() < c.trial_steps:
            return
        n, mean = trial.steps(), trial.mean()
        needed = baseline + max(c.margin, c.relative_margin * abs(baseline))
        self._end_trial(mean >= needed, "promoted" if mean >= needed else "discarded", baseline, mean, n)

    def _end_trial(self, won: bool, outcome: str, baseline: float, mean: float, n: int) -> None:
        candidate, self.trial, self.phase = self.trial, None, "learning"
        assert candidate is not None
        if won:
            self.counters.promotions += 1
            self.incumbent, self.probation_until = candidate, self.steps + self.config.probation_steps
            self.incumbent_segments.clear()
            self.incumbent_segments.closed.extend(self.trial_segments.closed)  # its evidence is its trial
            self.drift.restart()
            self.backoff = 1
        else:
            self.counters.discarded += outcome == "discarded"
            if outcome != "cancelled":
                self._back_off(schedule=False)
        self._set_actor(self.incumbent)
        self.next_gate = self.steps + self.config.gate_every * self.backoff
        record = {"event": outcome, "step": self.steps, "baseline": baseline, "trial": mean, "trial_steps": n}
        if won:
            record["digest"] = candidate.policy.digest()[:16]
            self.history.append(record)
        self.emit(f"candidate_{outcome}", **{k: v for k, v in record.items() if k != "event"})

    @property
    def recovering(self) -> bool:
        """After a drift alarm, until the incumbent earns within 10 % of what it earned before: try often."""
        if self.recovery_target is None:
            return False
        if self.incumbent_segments.steps() >= self.config.trial_steps:
            level = self.incumbent_segments.mean()
            if level >= self.recovery_target - 0.1 * abs(self.recovery_target):
                self.recovery_target = None
                self.emit("recovered", reward_per_step=level)
                return False
        return True

    def _back_off(self, schedule: bool = True) -> None:
        cap = RECOVERY_BACKOFF if self.recovering else MAX_BACKOFF
        self.backoff = min(self.backoff * 2, cap)
        if schedule:
            self.next_gate = self.steps + self.config.gate_every * self.backoff

    def _drift_alarm(self) -> None:
        """Restore last-good (when something was promoted), freeze learning for the cooldown."""
        self.counters.drift_alarms += 1
        if self.recovery_target is None:
            self.recovery_target = self.drift_reference  # what the acting policy earned before the drop
        rolled_back = self.incumbent is not self.last_good  # on probation: last-good acts again
        if rolled_back:
            self.counters.rollbacks += 1
            now = time.monotonic()
            self.rollback_times.append(now)
            while self.rollback_times and now - self.rollback_times[0] > HOUR:
                self.rollback_times.popleft()
            self.incumbent = self.last_good
            self.history.append(
                {"event": "rollback", "step": self.steps, "digest": self.incumbent_policy().digest()[:16]}
            )
        self.reset_learner(self.incumbent)  # whatever it learnt since is suspect
        self.incumbent_segments.clear()
        self.backoff = 1
        if len(self.rollback_times) > self.config.max_rollbacks_per_hour:
            self.phase = "fallback"
            self.incumbent = self.last_good = None
            self._set_actor(None)
            self.emit("fallback", reason=f"{len(self.rollback_times)} rollbacks within an hour", policy="bundle")
            return
        self.phase, self.cooldown_until = "cooldown", self.steps + self.config.cooldown_steps
        self._set_actor(self.incumbent)
        self.emit(
            "rollback" if rolled_back else "drift_alarm",
            incumbent=self.incumbent_policy().digest()[:16],
            learning_frozen_until_step=self.cooldown_until,
        )

    def operator_rollback(self, to_bundle: bool) -> str | None:
        """An operator's rollback: act from last-good (or the bundle's own policy) now, learning from there.

        Returns None, or why nothing changed. Not counted against `max_rollbacks_per_hour`: that
        cap is about the daemon's own judgement, not an operator's.
        """
        if self.phase == "fallback":
            return "on the bundle's policy for good (too many rollbacks); restart the daemon to adapt again"
        target = None if to_bundle else self.last_good
        trial = self.phase == "trial"  # a candidate is acting: stopping it is a rollback too
        if self.incumbent is target and not trial:
            return f"already acting from {'the bundle policy' if target is None else 'last-good'}"
        if trial:
            self._end_trial(False, "cancelled", self.incumbent_segments.mean(), float("nan"), 0)
        if self.incumbent is not target:
            self.counters.rollbacks += 1
            self.incumbent = target
        if to_bundle:
            self.last_good = None
        digest = self.incumbent_policy().digest()[:16]
        self.history.append({"event": "rollback", "step": self.steps, "digest": digest, "by": "operator"})
        self.reset_learner(self.incumbent)
        self.incumbent_segments.clear()
        self.drift.restart()
        self.backoff = 1
        self.phase, self.cooldown_until = "cooldown", self.steps + self.config.cooldown_steps
        self._set_actor(self.incumbent)
        self.emit("rollback", by="operator", incumbent=digest, learning_frozen_until_step=self.cooldown_until)
        return None

    # -- persistence ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-able state; the policies go with the learner snapshots (the caller stores those)."""
        now = time.monotonic()
        return {
            "phase": "learning" if self.phase == "trial" else self.phase,  # a trial is not resumed: judged anew
            "steps": self.steps,
            "backoff": self.backoff,
            "next_gate": self.next_gate,
            "cooldown_until": self.cooldown_until,
            "counters": asdict(self.counters),
            "history": list(self.history),
            "rollback_ages_s": [now - t for t in self.rollback_times],  # monotonic: no wall clock survives
            "drift": [self.drift.n, self.drift.mean, self.drift.m2, self.drift.statistic],
            "incumbent_segments": list(self.incumbent_segments.closed),
            "recovery_target": self.recovery_target,
            "probation_until": self.probation_until,
            "confirmed": self.incumbent is self.last_good,
        }

    def load(self, state: dict[str, Any], incumbent: Candidate | None, last_good: Candidate | None) -> None:
        self.phase = state["phase"]
        self.steps, self.backoff = int(state["steps"]), int(state["backoff"])
        self.next_gate, self.cooldown_until = int(state["next_gate"]), int(state["cooldown_until"])
        self.counters = GateCounters(**state["counters"])
        self.history = deque(state["history"], maxlen=100)
        now = time.monotonic()
        self.rollback_times = deque(now - float(age) for age in state["rollback_ages_s"])
        self.drift.n, self.drift.mean, self.drift.m2, self.drift.statistic = state["drift"]
        self.drift.n = int(self.drift.n)
        self.incumbent_segments.closed = deque((float(r), int(n), float(q)) for r, n, q in state["incumbent_segments"])
        self.recovery_target = state["recovery_target"]
        self.probation_until = int(state["probation_until"])
        self.incumbent, self.last_good = incumbent, incumbent if state["confirmed"] else last_good
        self._set_actor(None if self.phase == "fallback" else incumbent)


def _change_rate(actions: np.ndarray) -> float:
    return float(np.mean(actions[1:] != actions[:-1])) if len(actions) > 1 else 0.0
