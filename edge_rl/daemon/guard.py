"""What stands between the link and the policy, and between the policy and the actuator.

`InputGuard` decides whether an OBS may reach a policy (shape, finite, bounds, staleness); a
refused one gets the bundle's safe action on the same step. `Shield` applies the configured
action mask, slew limit and dwell time to the policy's Q-values, after the policy and outside
the learner (Simplex / shielding): the learned policy is never the last line of defence.
"""

from __future__ import annotations

import math

import numpy as np

from edge_rl.daemon.config import ControlConfig
from edge_rl.errors import BadInput
from edge_rl.policy import ObservationSpec

WRAP_US = 1 << 32  # the device's clock field wraps here


class InputGuard:
    """Validity of one observation, with the reason it is refused (a short word for the counters)."""

    def __init__(self, spec: ObservationSpec, config: ControlConfig) -> None:
        self.spec = spec
        self.size = spec.size
        self._offset: float | None = None  # least (our clock - device clock) seen: the link's fastest delivery
        self.configure(config)

    def configure(self, config: ControlConfig) -> None:
        """New limits (a config reload); the clock estimate is kept."""
        self.low = self.spec.low.reshape(-1).astype(np.float64) - config.bounds_slack
        self.high = self.spec.high.reshape(-1).astype(np.float64) + config.bounds_slack
        self.stale_us = config.stale_ms * 1000.0

    def check(self, observation: np.ndarray, t_us: int, now: float) -> str | None:
        """None if the observation may be acted on, else why not ("shape", "nonfinite", "bounds", "stale")."""
        if observation.size != self.size:
            return "shape"
        x = observation.reshape(-1)
        if not np.isfinite(x).all():
            return "nonfinite"
        if (x < self.low).any() or (x > self.high).any():
            return "bounds"
        return "stale" if self._age_us(t_us, now) > self.stale_us else None

    def _age_us(self, t_us: int, now: float) -> float:
        """How much later than the fastest delivery seen this OBS arrived (0 for the fastest).

        The device's clock and ours run at the same rate but from unknown origins; their least
        difference is the best-case delay, so any excess is time the OBS spent queued. Device
        timestamps of 0 mean "no clock": never stale.
        """
        if t_us == 0:
            return 0.0
        offset = now * 1e6 - t_us
        if self._offset is None or offset < self._offset:
            self._offset = offset
        excess = offset - self._offset
        if excess > WRAP_US / 2:  # the device's clock wrapped or it restarted: start over
            self._offset, excess = offset, 0.0
        return excess

    def reset_clock(self) -> None:
        """A new session (the device may have restarted): its clock origin is unknown again."""
        self._offset = None


class Shield:
    """Masks, slew and dwell applied to Q-values: the chosen action is the best one allowed."""

    def __init__(self, n_actions: int, safe_action: int, config: ControlConfig) -> None:
        self.index = np.arange(n_actions)
        self.safe = safe_action
        self.previous: int | None = None
        self.held = 0  # steps the previous action has been held
        self.shielded = 0  # steps on which the policy's own choice was not allowed
        self.configure(config)

    def configure(self, config: ControlConfig) -> None:
        """New limits (a config reload), checked before any is applied; the action history is kept."""
        n = len(self.index)
        mask = config.action_mask or tuple(range(n))
        if any(a >= n for a in mask):
            raise BadInput(f"config [control] action_mask names actions the policy lacks (it has {n})")
        if self.safe not in mask:
            raise BadInput(f"config [control] action_mask must include the safe action {self.safe}")
        allowed = np.zeros(n, bool)
        allowed[list(mask)] = True
        self.allowed, self.max_step, self.min_dwell = allowed, config.max_action_step, config.min_dwell_steps

    def choose(self, q: np.ndarray) -> int:
        """The allowed action with the highest Q-value (the policy's own choice when it is allowed)."""
        allowed = self.allowed
        prev = self.previous
        if prev is not None and self.min_dwell and self.held < self.min_dwell:
            action = prev
        else:
            if prev is not None and self.max_step:
                allowed = allowed & (np.abs(self.index - prev) <= self.max_step)
            masked = np.where(allowed, q, -np.inf)
            action = int(masked.argmax())
        if action != int(q.argmax()):
            self.shielded += 1
        return self.hold(action)

    def explore(self, rng: np.random.Generator) -> int:
        """A uniformly random action among those allowed now (mask, slew and dwell as for the policy's)."""
        prev = self.previous
        if prev is not None and self.min_dwell and self.held < self.min_dwell:
            return self.hold(prev)
        allowed = self.allowed
        if prev is not None and self.max_step:
            allowed = allowed & (np.abs(self.index - prev) <= self.max_step)
        return self.hold(int(rng.choice(self.index[allowed])))

    def hold(self, action: int) -> int:
        """Record `action` as sent (also the safe action of a fallback step)."""
        self.held = self.held + 1 if action == self.previous else 1
        self.previous = action
        return action

    def forget(self) -> None:
        """A new episode or session: no previous action constrains the next one."""
        self.previous, self.held = None, 0


class RewardEnvelope:
    """The range of rewards this device produces, and whether the reward stream can be trusted now.

    The range is learnt from the first `warmup` transitions of a bundle and widened by 10 % of its
    span (then fixed: a poisoned stream must not widen it). A reward outside it is never learnt
    from; when more than 1 % of recent rewards fall outside (an exponential average over ~200
    steps), the stream is suspect: a sensor fault or a poisoned reward (a sign flip) looks like
    this. A suspect stream freezes learning and the gate (no trial, no promotion) until it is back
    inside, while the drift monitor still sees it (and rolls back what was promoted meanwhile).
    """

    RATE = 1.0 / 200
    SUSPECT = 0.01

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.seen = 0
        self.low, self.high = math.inf, -math.inf
        self.outside_rate = 0.0
        self.outside = 0  # rewards outside the range, in total

    def check(self, reward: float) -> bool:
        """Whether `reward` may be learnt from (always, while the range is still being learnt)."""
        if self.seen < self.warmup:
            self.seen += 1
            self.low, self.high = min(self.low, reward), max(self.high, reward)
            if self.seen == self.warmup:
                margin = 0.1 * (self.high - self.low) + 1e-9
                self.low, self.high = self.low - margin, self.high + margin
            return True
        inside = self.low <= reward <= self.high
        self.outside += not inside
        self.outside_rate += self.RATE * ((not inside) - self.outside_rate)
        return inside

    @property
    def suspect(self) -> bool:
        return self.outside_rate > self.SUSPECT

    def state(self) -> dict[str, float | None]:
        bounds = [v if math.isfinite(v) else None for v in (self.low, self.high)]  # JSON has no infinity
        return {"seen": self.seen, "low": bounds[0], "high": bounds[1], "rate": self.outside_rate, "out": self.outside}

    def load(self, state: dict[str, float | None]) -> None:
        self.seen, self.outside = int(state["seen"] or 0), int(state["out"] or 0)
        self.low = math.inf if state["low"] is None else float(state["low"])
        self.high = -math.inf if state["high"] is None else float(state["high"])
        self.outside_rate = float(state["rate"] or 0.0)
