"""The daemon's state as a checkpoint holds it: captured from a running daemon, loaded into a new one.

The live learner, the incumbent's and last-good's learner snapshots (their policies are rebuilt
from them exactly), the gate, the reward envelope and the loop's counters, tied to the bundle and
the adaptation mode they belong to: state of another bundle or mode is refused, not mixed in.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from edge_rl.daemon.gate import Candidate
from edge_rl.daemon.snapshot import States, unpack
from edge_rl.errors import BadInput
from edge_rl.stream import restore

if TYPE_CHECKING:
    from edge_rl.daemon.loop import Daemon

STATE_SCHEMA = 1


def capture(d: Daemon) -> tuple[dict[str, Any], States]:
    """Copies of everything a restart needs (the learner's arrays are copied by `state_dict`)."""
    shadow = d.shadow
    meta = {
        "schema": STATE_SCHEMA,
        "bundle": d.policy.digest(),
        "bundle_version": d.bundle.version,
        "mode": d.mode,
        "loop": d.counters.as_dict(),
        "gate": d.gate.state(),
        "rewards": d.rewards.state(),
        "shadow": [shadow.updates, shadow.skipped, shadow.diverged] if shadow else [0, 0, 0],
        "operator": {"paused": d.paused, "epsilon": d.epsilon_override},  # commands outlive a restart
    }
    states: States = {
        "learner": shadow.state() if shadow else {"scalars": {}, "arrays": {}},
        "incumbent": d.gate.incumbent.snapshot if d.gate.incumbent else None,
        "last_good": d.gate.last_good.snapshot if d.gate.last_good else None,
    }
    return meta, states


def restore_into(d: Daemon, payload: bytes) -> None:
    """Load a checkpoint's payload into a freshly built daemon; BadInput if it is not this daemon's state."""
    meta, states = unpack(payload)
    if meta.get("schema") != STATE_SCHEMA:
        raise BadInput(f"state schema {meta.get('schema')!r}, this daemon writes {STATE_SCHEMA}")
    if meta.get("bundle") != d.policy.digest():
        raise BadInput("the state belongs to another bundle: starting afresh on this one")
    if meta.get("mode") != d.mode:
        raise BadInput(f"the state was learnt with --adapt {meta.get('mode')}, this run uses {d.mode}")
    loop = meta["loop"]
    d.counters = type(d.counters)(**{**loop, "fallbacks": Counter(loop["fallbacks"])})
    incumbent, last_good = (_candidate(d, states[slot]) for slot in ("incumbent", "last_good"))
    d.gate.load(meta["gate"], incumbent, last_good)
    d.rewards.load(meta["rewards"])
    operator = meta.get("operator", {})  # absent in checkpoints written before telemetry
    d.paused = bool(operator.get("paused", False))
    if operator.get("epsilon") is not None:
        d.set_epsilon(float(operator["epsilon"]))
    d.reward_suspect = d.rewards.suspect
    if d.shadow is not None:
        d.shadow.load(states["learner"])
        d.shadow.anchor = incumbent.snapshot if incumbent else d.shadow.fresh
        d.shadow.updates, d.shadow.skipped, d.shadow.diverged = meta["shadow"]


def _candidate(d: Daemon, state: dict[str, Any] | None) -> Candidate | None:
    return None if state is None else Candidate(restore(state, d.policy).to_policy(), state)
