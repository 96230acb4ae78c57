"""The daemon's settings: a strict TOML schema, every key with its default and the reason for it.

A config is read whole, checked whole and swapped whole: an unknown key, a wrong type or a value
out of range refuses the file with one line naming the key, and (on SIGHUP) the running config
stays. `describe()` renders the schema as the commented example `edge-rl run --print-config` shows.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edge_rl.errors import BadInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAX_CONFIG_BYTES = 1 << 20
ADAPT_MODES = ("off", "head", "full")


def _f(default: Any, help: str, low: float | None = None, high: float | None = None) -> Any:
    return field(default=default, metadata={"help": help, "low": low, "high": high})


@dataclass(frozen=True)
class ControlConfig:
    """The control loop: what makes an input invalid and what may reach the actuator."""

    deadline_ms: float = _f(20.0, "OBS to ACTION budget; a step that misses it sends the safe action", 0.01, 10_000)
    valid_ms: int = _f(200, "how long the device may apply an ACTION (its deadman re-arms after)", 1, 60_000)
    heartbeat_ms: int = _f(100, "heartbeat period both ways; the link is lost after 3 silent periods", 1, 60_000)
    stale_ms: float = _f(
        500.0, "an OBS older than this (device clock vs ours, least delay seen as zero) is invalid", 0.1, 3.6e6
    )
    bounds_slack: float = _f(
        0.0, "how far beyond the bundle's observation bounds a value may lie before it is invalid", 0.0, 1e30
    )
    action_mask: tuple[int, ...] = _f((), "actions the policy may choose (empty: all); must include the safe action")
    max_action_step: int = _f(0, "ordinal actions: largest |a - previous a| per step (0: no slew limit)", 0, 1 << 16)
    min_dwell_steps: int = _f(0, "steps an action must be held before another may follow (0: none)", 0, 1 << 20)


@dataclass(frozen=True)
class AdaptConfig:
    """Shadow learning and the gate that decides what acts."""

    mode: str = _f("off", "off | head | full: which part of the policy the shadow learner adapts")
    lr: float = _f(1.0, "ObGD step size alpha", 1e-9, 1e6)
    kappa: float = _f(2.0, "ObGD's bound on the step (larger: more cautious)", 1e-9, 1e9)
    lam: float = _f(0.0, "eligibility trace decay; learning from another policy's actions is steadier without", 0, 1)
    seed: int = _f(0, "learner seed", 0, 2**32 - 1)
    explore: float = _f(
        0.05, "chance per step of a random allowed action while adapting: how the shadow learns what else works", 0, 1
    )
    explore_recovering: float = _f(
        0.15,
        "the same after a drop in reward until the acting policy earns what it used to (it is failing anyway)",
        0,
        1,
    )
    reward_warmup: int = _f(
        1000, "transitions that set the reward range; a stream outside it (over 1 %) freezes learning", 1, 1e9
    )
    gate_every: int = _f(300, "steps of learning between candidates (doubles after each refusal, up to x32)", 1, 1e9)
    trial_steps: int = _f(300, "steps a candidate acts on trial (rounded up to whole episodes)", 1, 1e9)
    margin: float = _f(0.02, "reward per step a candidate must win by over the incumbent", 0.0, 1e9)
    relative_margin: float = _f(0.02, "... or this fraction of |incumbent's reward per step|, if larger", 0.0, 10.0)
    abort_margin: float = _f(
        0.05, "a trial behind by this much per step x trial_steps (and by 3 sigma of noise) stops at once", 0, 1e9
    )
    probation_steps: int = _f(
        3000, "steps a promoted policy must act without a drift alarm to become last-good", 0, 1e9
    )
    q_limit: float = _f(10.0, "a candidate's max |Q| may be at most this many times the bundle's", 1.0, 1e9)
    action_change_limit: float = _f(
        0.25, "a candidate's action-change rate on recent states may exceed the incumbent's by this", 0.0, 1.0
    )
    drift_delta: float = _f(1.0, "Page-Hinkley: drop per episode tolerated, in standard deviations", 0.0, 100)
    drift_lambda: float = _f(10.0, "Page-Hinkley: alarm threshold (sum of clipped standardised drops)", 0.1, 1e9)
    drift_warmup: int = _f(10, "episodes that set the drift monitor's reference after each (re)start", 2, 1e9)
    cooldown_steps: int = _f(1000, "steps learning stays frozen after a drift alarm", 0, 1e9)
    max_rollbacks_per_hour: int = _f(3, "more rollbacks than this within an hour: the bundle policy for good", 0, 1e6)


@dataclass(frozen=True)
class CheckpointConfig:
    """Durable state."""

    interval_s: float = _f(60.0, "seconds between checkpoints (and one at SIGTERM)", 0.01, 86_400 * 7)
    keep: int = _f(3, "generations kept on disk", 1, 1000)


@dataclass(frozen=True)
class TelemetryConfig:
    """Samples and events over MQTT (docs/telemetry.md); never in the way of the control loop."""

    url: str = _f("", "broker: mqtt://host:1883 or mqtts://host:8883 (TLS); empty: no telemetry (--telemetry sets it)")
    device: str = _f("", "device id in the topics edgerl/<device>/...; empty: the --device-id")
    interval_s: float = _f(1.0, "seconds between samples (events go out as they happen)", 0.05, 3600)
    keepalive_s: int = _f(10, "MQTT keepalive; a silent broker is given up after about this long", 1, 3600)
    reconnect_min_s: float = _f(1.0, "first delay before connecting again (doubles per failure, jittered)", 0.05, 3600)
    reconnect_max_s: float = _f(30.0, "largest delay before connecting again", 0.05, 86_400)
    outbox_bytes: int = _f(
        4 << 20, "bound of the on-disk outbox: past it the oldest samples go (events never)", 64 << 10, 1 << 32
    )
    username: str = _f("", "MQTT user name; empty: the device id (brokers' ACLs key on it: edgerl/%u/#)")
    password_env: str = _f("", "environment variable that holds the MQTT password (never written in this file)")
    ca: str = _f("", "CA certificate file that signed the broker's (mqtts://; empty: the system's CAs)")
    certfile: str = _f("", "client certificate for mutual TLS (empty: none)")
    keyfile: str = _f("", "the client certificate's key")
    success_reward: float = _f(0.5, "a transition whose reward is at least this counts as a success", -1e30, 1e30)


@dataclass(frozen=True)
class DaemonConfig:
    control: ControlConfig = field(default_factory=ControlConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)

    def with_mode(self, mode: str | None) -> DaemonConfig:
        """This config with the adaptation mode the command line gives (None: as configured)."""
        return (
            self if mode is None else replace(self, adapt=_section(AdaptConfig, {**_values(self.adapt), "mode": mode}))
        )

    def with_telemetry(self, url: str | None) -> DaemonConfig:
        """This config with the telemetry broker the command line gives (None: as configured)."""
        return self if url is None else replace(self, telemetry=replace(self.telemetry, url=url))


def _values(section: Any) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in fields(section)}


def _check(cls: type, name: str, value: Any, meta: dict[str, Any], default: Any) -> Any:
    where = f"[{cls.__name__.removesuffix('Config').lower()}] {name}"
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise BadInput(f"config {where} must be a list of integers")
        if any(v < 0 for v in value) or len(set(value)) != len(value):
            raise BadInput(f"config {where} must list distinct actions >= 0")
        return tuple(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise BadInput(f"config {where} must be a string")
        return value
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or (isinstance(default, int) and not isinstance(value, int)):
        kind = "an integer" if isinstance(default, int) else "a number"
        raise BadInput(f"config {where} must be {kind}, got {value!r}")
    if not math.isfinite(value) or not (meta["low"] <= value <= meta["high"]):
        raise BadInput(f"config {where} = {value} is outside [{meta['low']:g}, {meta['high']:g}]")
    return type(default)(value)


def _section(cls: type, given: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    if cls is TelemetryConfig and "tls_insecure" in given:
        raise BadInput("config [telemetry] tls_insecure: refused; a broker is trusted through its certificate (ca)")
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise BadInput(f"config [{cls.__name__.removesuffix('Config').lower()}]: unknown key {unknown[0]!r}")
    values = {}
    for name, value in given.items():
        f = known[name]
        default = f.default if f.default is not f.default_factory else None  # type: ignore[misc]
        values[name] = _check(cls, name, value, dict(f.metadata), default)
    section = cls(**values)
    if isinstance(section, AdaptConfig) and section.mode not in ADAPT_MODES:
        raise BadInput(f"config [adapt] mode must be one of {', '.join(ADAPT_MODES)}, got {section.mode!r}")
    return section


SECTIONS = {
    "control": ControlConfig,
    "adapt": AdaptConfig,
    "checkpoint": CheckpointConfig,
    "telemetry": TelemetryConfig,
}


def parse(data: bytes, where: str = "config") -> DaemonConfig:
    """A DaemonConfig from TOML bytes; BadInput (one line) on any problem."""
    if len(data) > MAX_CONFIG_BYTES:
        raise BadInput(f"{where}: {len(data)} bytes is no config this daemon reads")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BadInput(f"{where}: not valid TOML ({e})") from None
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise BadInput(f"{where}: unknown section [{unknown[0]}] (known: {', '.join(SECTIONS)})")
    sections = {}
    for name, cls in SECTIONS.items():
        given = doc.get(name, {})
        if not isinstance(given, dict):
            raise BadInput(f"{where}: [{name}] must be a table")
        try:
            sections[name] = _section(cls, given)
        except BadInput as e:
            raise BadInput(f"{where}: {e}") from None
    return DaemonConfig(**sections)


def load(path: str | Path | None) -> DaemonConfig:
    """The config in `path` (None: the defaults)."""
    if path is None:
        return DaemonConfig()
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise BadInput(f"{path}: cannot read the config ({e.strerror or e})") from None
    return parse(data, str(path))


def describe() -> str:
    """Every key with its default and help, as a TOML file a user can start from."""
    lines = ["# edge-rl run --config FILE.toml: every key is optional; these are the defaults."]
    for name, cls in SECTIONS.items():
        lines += ["", f"[{name}]"]
        for f in fields(cls):
            default = f.default
            text = "[]" if default == () else f'"{default}"' if isinstance(default, str) else repr(default)
            lines.append(f"{f.name} = {text.replace('(', '[').replace(')', ']')}  # {f.metadata['help']}")
    return "\n".join(lines) + "\n"
