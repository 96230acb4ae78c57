"""The daemon as its operator sees it over telemetry: the retained status, the samples, the commands.

Functions of a running `Daemon`, called by its loop between steps (after the ACTION is out):
`bundle_status` for the retained status, `telemetry_sample` for each sample interval, `answer` for
each command that arrived (applied, or refused with the reason, and either way a `command` event).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_rl.bundle import Bundle
from edge_rl.daemon.interval import ring_since
from edge_rl.telemetry.schema import Command, Refusal

if TYPE_CHECKING:
    from edge_rl.daemon.loop import Daemon


def bundle_status(bundle: Bundle, mode: str) -> dict[str, Any]:
    """What the retained telemetry status says about the acting bundle, besides online/offline."""
    return {
        "bundle_version": bundle.version,
        "model_id": bundle.policy.digest()[:16],
        "precision": bundle.manifest.get("precision"),
        "adapt": mode,
    }


def telemetry_sample(d: Daemon, now: float) -> dict[str, Any]:
    """The sample for the interval since the previous one (docs/telemetry.md lists every field)."""
    c, gate = d.counters, d.gate.counters
    then, steps_then, obs_then = d.sampled
    d.sampled = (now, c.steps, d.n_obs)
    elapsed = now - then
    arrivals = ring_since(d.arrivals, max(obs_then - 1, 0), d.n_obs)  # one before: the first period
    latencies = ring_since(d.latency, steps_then, c.steps)
    return {
        "interval_s": round(elapsed, 4),
        "steps": c.steps,
        "rate_hz": round((c.steps - steps_then) / elapsed, 2) if elapsed > 0 else None,
        "episodes": c.terminal,
        **d.interval.take(arrivals, latencies),
        "updates": d.shadow.updates if d.shadow else 0,
        "epsilon": d.epsilon,
        "adapt": d.mode,
        "paused": d.paused,
        "gate_phase": d.gate.phase,
        "promotions": gate.promotions,
        "rollbacks": gate.rollbacks,
        "drift_alarms": gate.drift_alarms,
        "trials": gate.trials,
        "safe_actions": c.safe_actions,
        "fallbacks": dict(c.fallbacks),
        "deadline_misses": c.fallbacks.get("deadline", 0),
        "link": {"state": d.link.state.value, **d.link.counters()},
        "bundle_version": d.bundle.version,
    }


def answer(d: Daemon, command: Command | Refusal) -> None:
    """Apply one command and answer it with a `command` event (ok, and what happened or why not)."""
    if isinstance(command, Refusal):
        named = {"cmd": command.name, "id": command.id} if command.name else {}
        d.events.emit("command", **named, ok=False, reason=command.reason)
        return
    refused = _apply(d, command)
    reply: dict[str, Any] = {"cmd": command.name, "id": command.id, "ok": refused is None}
    if command.value is not None:
        reply["value"] = command.value
    d.events.emit("command", **reply, **({"reason": refused} if refused else {}))


def _apply(d: Daemon, command: Command) -> str | None:
    """None when applied, else why not."""
    name = command.name
    if name == "reload":
        d.signals.reload = True  # as SIGHUP (several requests make one reload); results come as events
        return None
    if d.shadow is None:
        return f"{name}: this daemon does not adapt (--adapt off)"
    if name in ("pause", "resume"):
        if d.paused == (name == "pause"):
            return f"adaptation is already {'paused' if d.paused else 'running'}"
        d.paused = name == "pause"
        return None
    if name == "set_epsilon":
        assert command.value is not None
        d.set_epsilon(command.value)
        return None
    return d.gate.operator_rollback(to_bundle=command.to == "bundle")
