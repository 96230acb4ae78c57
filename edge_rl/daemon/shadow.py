"""The shadow learner: stream Q(lambda) learning from the actions the acting policy takes, never acting.

It sees every valid transition (off-policy, Watkins's trace cut), and a step that would leave
non-finite weights (a poisoned or absurd reward) is undone: the learner goes back to the last
snapshot it was given and the step is counted. `candidate()` is its greedy network as a policy
IR, with the snapshot that reproduces it, for the gate to judge.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge_rl.daemon.config import AdaptConfig
from edge_rl.daemon.gate import Candidate
from edge_rl.errors import BadInput
from edge_rl.policy import Policy
from edge_rl.stream import StreamQ, from_policy, restore


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    return {"scalars": dict(state["scalars"]), "arrays": {k: v.copy() for k, v in state["arrays"].items()}}


class ShadowLearner:
    """A StreamQ adapting the bundle policy (`head` or `full`) from transitions it is shown."""

    def __init__(self, bundle: Policy, mode: str, config: AdaptConfig) -> None:
        self.bundle, self.mode = bundle, mode
        self.settings = {"lr": config.lr, "kappa": config.kappa, "lam": config.lam, "seed": config.seed}
        self.learner: StreamQ = from_policy(bundle, mode, **self.settings)
        self.fresh = _copy(self.learner.state_dict())  # the learner on the bundle policy, before any step
        self.anchor = self.fresh  # what a diverged step goes back to
        self.updates = 0
        self.skipped = 0  # transitions refused (non-finite reward or observation the normaliser rejects)
        self.diverged = 0  # updates undone because they left non-finite weights

    def learn(
        self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool, truncated: bool
    ) -> float | None:
        """One off-policy update from a transition the acting policy made (after its action was sent).

        Returns the update's TD error, or None when no update happened (refused or undone).
        """
        try:
            self.learner.behave(obs, action)
            delta = self.learner.observe(reward, next_obs, terminated, truncated)
        except BadInput:
            self.skipped += 1  # nothing changed: the next `behave` starts the next step afresh
            return None
        if not math.isfinite(delta) or not math.isfinite(float(self.learner.net.theta.sum())):
            self.diverged += 1
            self.load(self.anchor)
            return None
        self.updates += 1
        return float(delta)

    def candidate(self) -> Candidate:
        state = _copy(self.learner.state_dict())
        return Candidate(self.learner.to_policy(), state)

    def reset(self, candidate: Candidate | None) -> None:
        """Back to a candidate's snapshot (None: the fresh learner on the bundle policy); it becomes the anchor."""
        self.anchor = self.fresh if candidate is None else candidate.snapshot
        self.load(self.anchor)

    def load(self, state: dict[str, Any]) -> None:
        self.learner = restore(_copy(state), self.bundle)

    def state(self) -> dict[str, Any]:
        return self.learner.state_dict()

    def counters(self) -> dict[str, int]:
        return {"updates": self.updates, "skipped": self.skipped, "diverged": self.diverged}
