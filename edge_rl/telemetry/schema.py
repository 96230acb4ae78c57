"""The telemetry wire format: topics, message kinds, every field with its meaning, commands.

One module both ends read: the daemon builds messages against it, the monitor parses them with
it, and `docs/telemetry.md` documents exactly these fields (a test holds them together). A
message is one JSON object per MQTT PUBLISH:

- `edgerl/<device>/telemetry` (QoS 1, persistent session): a `sample` every `interval_s` and an
  `event` on every daemon event. `boot` (a fresh id per daemon start) and `seq` (1, 2, ... per
  boot, shared by samples and events) let a reader de-duplicate and find gaps.
- `edgerl/<device>/status` (retained, QoS 1): `online` on connect, `offline` as the will.
- `edgerl/<device>/cmd` (to the daemon): a command, answered by a `command` event.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from edge_rl.errors import BadInput

VERSION = 1
ROOT = "edgerl"
MAX_MESSAGE_BYTES = 64 << 10  # a reader refuses anything larger (a sample is ~1.5 KB)
MAX_COMMAND_BYTES = 1024
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # no MQTT wildcards, no '/', no '$'
COMMAND_ID = re.compile(r"^[A-Za-z0-9_.:-]{0,64}$")  # echoed into logs: no newlines, no escapes


@dataclass(frozen=True)
class Topics:
    telemetry: str
    status: str
    cmd: str


def topics(device: str) -> Topics:
    """The three topics of one device (the link's own frames live under `edgerl/<device>/link/`)."""
    check_device(device)
    base = f"{ROOT}/{device}/"
    return Topics(base + "telemetry", base + "status", base + "cmd")


def check_device(device: str) -> str:
    if not DEVICE_ID.match(device):
        raise BadInput(f"device id {device!r}: use 1-64 letters, digits, '_', '.' or '-' (it is an MQTT topic level)")
    return device


# Every message: who, which boot, where in the sequence, when.
COMMON_FIELDS: dict[str, str] = {
    "v": "format version (1)",
    "device": "the daemon's device id (`--device-id`, or `[telemetry] device`)",
    "boot": "random id of this daemon start (32 hex digits): seq restarts at 1 with each boot",
    "seq": "1, 2, 3, ... per boot over samples and events together; a missing number is a lost message",
    "kind": "`sample`, `event` or `status`",
    "wall": "Unix time in seconds when the message was made (wall clock: may jump; only for display)",
    "mono": "the daemon's monotonic clock in seconds (orders messages within a boot)",
}

SAMPLE_FIELDS: dict[str, str] = {
    "interval_s": "seconds this sample covers (since the previous sample)",
    "steps": "OBS answered (policy or safe action), counted on across restarts (resumed from the checkpoint)",
    "rate_hz": "OBS answered per second over the interval",
    "episodes": "episodes ended, counted on across restarts",
    "returns": "returns of the episodes that ended in the interval (newest last, at most 32)",
    "return_mean": "mean return of the last 20 episodes (null before the first ends)",
    "reward_mean": "mean reward per valid transition in the interval (null if none)",
    "success_rate": "fraction of the interval's transitions with reward >= `[telemetry] success_reward` (null if none)",
    "period_p50_us": "loop period: median time between consecutive OBS over the interval, microseconds",
    "period_p99_us": "loop period: 99th percentile over the interval, microseconds",
    "act_p50_us": "OBS received to ACTION written (validation, inference, shield, send): median over the interval",
    "act_p99_us": "the same, 99th percentile",
    "learn_us": "mean time of one shadow-learner update over the interval, microseconds (null if none)",
    "td_error": "mean |TD error| of the shadow learner's updates in the interval, scaled reward units (null: none)",
    "updates": "shadow-learner updates since start",
    "epsilon": "chance of a random allowed action per step in force now (0 when not adapting or paused)",
    "adapt": "adaptation mode: off, head or full",
    "paused": "true while adaptation is paused by a `pause` command",
    "gate_phase": "learning, trial, cooldown or fallback",
    "promotions": "candidates promoted since start (resumed from the checkpoint)",
    "rollbacks": "rollbacks to last-good since start (resumed from the checkpoint)",
    "drift_alarms": "drift alarms since start (resumed from the checkpoint)",
    "trials": "candidate trials since start (resumed from the checkpoint)",
    "safe_actions": "steps answered with the bundle's safe action, counted on across restarts",
    "fallbacks": "safe actions by reason, e.g. {invalid_nonfinite: 3, deadline: 1}, counted on across restarts",
    "deadline_misses": "steps whose action missed `[control] deadline_ms`, counted on across restarts",
    "link": "the device link: state (ready, lost, ...) and its counters (frames, crc_errors, seq_gaps, ...)",
    "rss_mb": "resident memory of the daemon process, MiB",
    "cpu_pct": "CPU time of the daemon process over the interval, percent of one core",
    "bundle_version": "version of the bundle acting now",
    "mqtt": "this telemetry client: connects, disconnects, outbox rows and bytes, samples dropped at the bound",
}

EVENT_FIELDS: dict[str, str] = {
    "event": "the daemon event: e.g. candidate_promoted, rollback, drift_alarm, safe_action, link, command",
    "data": "the event's own fields (see docs/daemon.md for each event); `event_seq` is its number in events.jsonl",
}

STATUS_FIELDS: dict[str, str] = {
    "state": "`online` (published on every connect) or `offline` (the will, and on a clean stop)",
    "bundle_version": "version of the bundle acting",
    "model_id": "the bundle policy's digest (16 hex digits): which weights were deployed",
    "precision": "the bundle's precision (fp32, int8, 1bit)",
    "adapt": "adaptation mode: off, head or full",
}

# Commands on edgerl/<device>/cmd: {"cmd": NAME, "id": "optional string echoed in the answer", ...}
COMMANDS: dict[str, str] = {
    "pause": "stop adapting: no learning, no exploration, no new trials (the incumbent keeps acting)",
    "resume": "adapt again after a pause",
    "rollback": "act from last-good now (`to: bundle` for the bundle's own policy); the learner restarts",
    "reload": "check the config and the installed bundle path again, as SIGHUP (a new bundle is verified first)",
    "set_epsilon": "exploration chance per step while adapting: `value` in [0, 1]",
}
COMMAND_KEYS = {"cmd", "id", "value", "to"}
ROLLBACK_TARGETS = ("last_good", "bundle")


@dataclass(frozen=True)
class Command:
    name: str
    id: str = ""
    value: float | None = None
    to: str = "last_good"


@dataclass(frozen=True)
class Refusal:
    """A command that will not run, and why (answered like any other)."""

    reason: str
    name: str = ""
    id: str = ""


def parse_command(payload: bytes) -> Command:
    """A validated command (size, JSON object, allow-listed name and keys, typed values), or BadInput."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise BadInput(f"command of {len(payload)} bytes: at most {MAX_COMMAND_BYTES}")
    doc = _json(payload, "command")
    if not isinstance(doc, dict):
        raise BadInput("command must be a JSON object")
    unknown = sorted(set(doc) - COMMAND_KEYS)
    if unknown:
        raise BadInput(f"command: unknown key {unknown[0]!r} (known: {', '.join(sorted(COMMAND_KEYS))})")
    name, cid = doc.get("cmd"), doc.get("id", "")
    if name not in COMMANDS:
        raise BadInput(f"command {name!r} is not one of {', '.join(COMMANDS)}")
    if not isinstance(cid, str) or not COMMAND_ID.match(cid):
        raise BadInput("command id must be at most 64 letters, digits, '_', '.', ':' or '-'")
    value = doc.get("value")
    if name == "set_epsilon":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadInput("set_epsilon needs a number `value`")
        if not 0.0 <= value <= 1.0:
            raise BadInput(f"set_epsilon value {value} is outside [0, 1]")
        value = float(value)
    elif value is not None:
        raise BadInput(f"command {name!r} takes no value")
    to = doc.get("to", "last_good")
    if name == "rollback" and to not in ROLLBACK_TARGETS:
        raise BadInput(f"rollback to {to!r}: one of {', '.join(ROLLBACK_TARGETS)}")
    if name != "rollback" and "to" in doc:
        raise BadInput(f"command {name!r} takes no `to`")
    return Command(name, cid, value, to)


def parse_message(payload: bytes) -> dict[str, Any]:
    """A telemetry or status message as a dict, checked for the common fields, or BadInput (one line)."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise BadInput(f"message of {len(payload)} bytes: at most {MAX_MESSAGE_BYTES}")
    doc = _json(payload, "message")
    if not isinstance(doc, dict):
        raise BadInput("message must be a JSON object")
    if doc.get("v") != VERSION:
        raise BadInput(f"message format version {doc.get('v')!r} (this reader knows {VERSION})")
    kind = doc.get("kind")
    if kind not in ("sample", "event", "status"):
        raise BadInput(f"message kind {kind!r}")
    device, boot, seq = doc.get("device"), doc.get("boot"), doc.get("seq")
    if not isinstance(device, str) or not DEVICE_ID.match(device):
        raise BadInput(f"message device {device!r}")
    if not isinstance(boot, str) or not re.fullmatch(r"[0-9a-f]{32}", boot):
        raise BadInput(f"message boot {boot!r}")
    if kind != "status" and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1):
        raise BadInput(f"message seq {seq!r}")
    return doc


def _json(payload: bytes, what: str) -> Any:
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadInput(f"{what} is not JSON") from None
    except RecursionError:  # e.g. a thousand nested brackets: json recurses once per level
        raise BadInput(f"{what} is nested too deeply") from None
