"""The fleet as the monitor sees it: pure state fed one MQTT message at a time, no I/O, no clock.

Every message goes through `Fleet.receive(topic, payload, at)`: the topic must match the
subscription (amqtt delivers retained messages of topics nobody subscribed to: those are ignored),
the payload must pass `telemetry.schema.parse_message` and agree with its topic, otherwise it is
counted as bad, per device (or `unknown`), and never raises. Telemetry is de-duplicated by
(`boot`, `seq`); a seq missing between the lowest and the highest seen of a boot is a gap until it
arrives. The window starts at the lowest seq seen, not at 1: a monitor that joins a running daemon
did not lose what was published before it subscribed. Times (`at`, `now`) are the caller's
receive clock in Unix seconds, so a recorded session replays to the same figures.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from edge_rl.errors import BadInput
from edge_rl.telemetry import schema

UNKNOWN = "unknown"  # the device bad messages count against when their topic names none
SPARK_POINTS = 24  # samples kept per device for the sparkline
CURVE_POINTS = 20_000  # samples kept per device for --plot (~1.5 MB per device at most)
EVENTS_KEPT = 64  # recent events per device (the table's alarms look back through these)
MARKERS_KEPT = 2_000  # promotion / rollback / drift events per device for --plot
BOOTS_KEPT = 8  # boots tracked per device (an outbox may replay an old boot after a restart)
MAX_MISSING = 10_000  # missing seqs listed per boot; a larger loss is only counted
EVENT_NAMES_KEPT = 64  # distinct event names counted per device; the rest count as `other`
MARKER_EVENTS = ("candidate_promoted", "rollback", "drift_alarm")
ALARM_EVENTS = ("rollback", "drift_alarm", "fallback")
LATEST_FIELDS = (  # from the newest sample, for the table, the summary and Prometheus
    "steps",
    "rate_hz",
    "episodes",
    "success_rate",
    "return_mean",
    "period_p50_us",
    "period_p99_us",
    "act_p50_us",
    "act_p99_us",
    "promotions",
    "rollbacks",
    "drift_alarms",
    "trials",
    "safe_actions",
    "deadline_misses",
    "interval_s",
)


def number(doc: dict[str, Any], key: str) -> float | None:
    """A finite number from an untrusted message, or None (booleans, strings and NaN are not numbers)."""
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def text(doc: dict[str, Any], key: str, limit: int = 40) -> str | None:
    """A short string (or number shown as one) from an untrusted message, or None."""
    value = doc.get(key)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return value[:limit] if isinstance(value, str) else None


class SeqWindow:
    """Which seqs of one boot arrived: a duplicate is one seen before, a gap one missing between lowest and highest."""

    def __init__(self) -> None:
        self.lowest = self.highest = 0  # 0: nothing yet (seqs start at 1)
        self.missing: set[int] = set()
        self.unlisted = 0  # missing seqs beyond MAX_MISSING: counted, never filled (a late one counts as a duplicate)

    @property
    def gaps(self) -> int:
        return len(self.missing) + self.unlisted

    def add(self, seq: int) -> bool:
        """True for a seq not seen before, False for a duplicate."""
        if not self.highest:
            self.lowest = self.highest = seq
        elif seq > self.highest:
            self._lose(range(self.highest + 1, seq))
            self.highest = seq
        elif seq < self.lowest:  # history delivered late (an outbox replay): the window grows down
            self._lose(range(seq + 1, self.lowest))
            self.lowest = seq
        elif seq in self.missing:
            self.missing.discard(seq)
        else:
            return False
        return True

    def _lose(self, seqs: range) -> None:
        room = max(0, MAX_MISSING - len(self.missing))
        self.missing.update(seqs[:room])
        self.unlisted += max(0, len(seqs) - room)


@dataclass(frozen=True)
class Point:
    """One sample on the learning curve, on the daemon's clock (`wall`) so events line up with it."""

    wall: float
    success_rate: float | None
    return_mean: float | None


@dataclass(frozen=True)
class Event:
    at: float  # received
    wall: float  # made, on the daemon's clock
    name: str
    boot: str
    seq: int


@dataclass(frozen=True)
class Received:
    """What one message was: `ok`, `duplicate`, `bad` (see `error`) or `ignored` (not our topic)."""

    outcome: str
    device: str | None = None
    doc: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Device:
    """One device: its presence, its newest sample, its curves, its recent events and its message accounting."""

    name: str
    state: str | None = None  # from the newest status message: online or offline
    bundle_version: str | None = None
    model_id: str | None = None
    adapt: str | None = None
    boot: str | None = None  # the newest boot (the one whose first message is latest on the daemon's clock)
    last_seen: float | None = None
    messages: int = 0
    duplicates: int = 0
    bad: int = 0
    last_error: str | None = None
    latest: dict[str, float | None] = field(default_factory=dict)
    latest_seq: int = 0  # of the newest sample of `boot`
    safe_bursts: int = 0
    burst: tuple[float, float] | None = None  # (received, safe actions added) of the newest burst
    spark: deque[Point] = field(default_factory=lambda: deque(maxlen=SPARK_POINTS))
    curve: deque[Point] = field(default_factory=lambda: deque(maxlen=CURVE_POINTS))
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    markers: deque[Event] = field(default_factory=lambda: deque(maxlen=MARKERS_KEPT))
    event_counts: Counter[str] = field(default_factory=Counter)
    windows: OrderedDict[str, SeqWindow] = field(default_factory=OrderedDict)
    boot_started: dict[str, float] = field(default_factory=dict)  # boot -> earliest `wall` seen

    @property
    def gaps(self) -> int:
        return sum(w.gaps for w in self.windows.values())

    def missing(self, limit: int = 20) -> list[tuple[str, int]]:
        """Some (boot, seq) still missing, lowest first, for a human to look up."""
        return [(boot, seq) for boot, w in self.windows.items() for seq in sorted(w.missing)[:limit]][:limit]


class Fleet:
    """Every device heard on `edgerl/+/telemetry|status` (or one `device`), built from messages alone."""

    MAX_DEVICES = 1000  # a flood of made-up device ids stops here (counted as bad under `unknown`)

    def __init__(
        self,
        device: str | None = None,
        *,
        safe_burst: int = 10,
        alarm_window: float = 300.0,
        silent_after: float | None = None,
    ) -> None:
        self.device = schema.check_device(device) if device is not None else None
        self.safe_burst = safe_burst  # safe actions added by one sample beyond which it is a burst
        self.alarm_window = alarm_window  # seconds an event or burst stays an alarm
        self.silent_after = silent_after  # None: 3 sample intervals, at least 10 s
        self.devices: dict[str, Device] = {}
        self.unknown_bad = 0
        self.ignored = 0
        self.messages = 0

    # -- input --------------------------------------------------------------------------------------
    def receive(self, topic: str, payload: bytes, at: float) -> Received:
        """Account one MQTT message; never raises (bad input is counted and described)."""
        leaf = self._leaf(topic)
        if leaf is None:
            self.ignored += 1
            return Received("ignored")
        name = topic.split("/")[1]
        try:
            doc = schema.parse_message(payload)
            if doc["device"] != name:
                raise BadInput(f"message of device {doc['device']!r} on {name!r}'s topic")
            if (doc["kind"] == "status") != (leaf == "status"):
                raise BadInput(f"a {doc['kind']} message on the {leaf} topic")
        except BadInput as e:
            return self.count_bad(topic, str(e), at)
        device = self._device(name)
        if device is None:
            return self.count_bad(topic, "too many devices", at)
        self.messages += 1
        device.messages += 1
        device.last_seen = at if device.last_seen is None else max(device.last_seen, at)
        self._see_boot(device, doc)
        if doc["kind"] == "status":
            self._status(device, doc)
            return Received("ok", name, doc)
        window = device.windows.setdefault(doc["boot"], SeqWindow())
        if not window.add(doc["seq"]):
            device.duplicates += 1
            return Received("duplicate", name, doc)
        if doc["kind"] == "sample":
            self._sample(device, doc, at)
        else:
            self._event(device, doc, at)
        return Received("ok", name, doc)

    def count_bad(self, topic: str, error: str, at: float) -> Received:
        """A message that cannot be used: counted on its topic's device, else on `unknown`."""
        self.messages += 1
        name = topic.split("/")[1] if self._leaf(topic) else None
        device = self._device(name) if name and schema.DEVICE_ID.match(name) else None
        if device is None:
            self.unknown_bad += 1
            return Received("bad", UNKNOWN, error=error)
        device.bad += 1
        device.last_error = error
        device.last_seen = at if device.last_seen is None else max(device.last_seen, at)
        return Received("bad", device.name, error=error)

    def _leaf(self, topic: str) -> str | None:
        """`telemetry` or `status` for a topic our subscription matches, else None."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != schema.ROOT or parts[2] not in ("telemetry", "status"):
            return None
        return parts[2] if self.device in (None, parts[1]) else None

    def _device(self, name: str) -> Device | None:
        if name not in self.devices:
            if len(self.devices) >= self.MAX_DEVICES:
                return None
            self.devices[name] = Device(name)
        return self.devices[name]

    def _see_boot(self, device: Device, doc: dict[str, Any]) -> None:
        """Track the boot's start; the boot that started last on the daemon's clock is the device's current one."""
        boot, wall = doc["boot"], number(doc, "wall") or 0.0
        started = device.boot_started
        started[boot] = min(started.get(boot, wall), wall)
        if device.boot is None or started[boot] > started.get(device.boot, -math.inf):
            device.boot, device.latest_seq = boot, 0
        while len(started) > BOOTS_KEPT:  # forget the boot that started first
            oldest = min(started, key=started.__getitem__)
            del started[oldest]
            device.windows.pop(oldest, None)

    def _status(self, device: Device, doc: dict[str, Any]) -> None:
        state = text(doc, "state")
        device.state = state if state in ("online", "offline") else device.state
        device.bundle_version = text(doc, "bundle_version") or device.bundle_version
        device.model_id = text(doc, "model_id") or device.model_id
        device.adapt = text(doc, "adapt") or device.adapt

    def _sample(self, device: Device, doc: dict[str, Any], at: float) -> None:
        point = Point(number(doc, "wall") or 0.0, number(doc, "success_rate"), number(doc, "return_mean"))
        device.curve.append(point)
        if doc["boot"] != device.boot or doc["seq"] <= device.latest_seq:
            return  # history (a late or replayed sample): on the curve, not the newest figures
        before = device.latest.get("safe_actions") if device.latest_seq else None
        device.latest = {key: number(doc, key) for key in LATEST_FIELDS}
        device.latest_seq = doc["seq"]
        device.spark.append(point)
        device.bundle_version = text(doc, "bundle_version") or device.bundle_version
        device.adapt = text(doc, "adapt") or device.adapt
        after = device.latest["safe_actions"]
        if before is not None and after is not None and after - before > self.safe_burst:
            device.safe_bursts += 1
            device.burst = (at, after - before)

    def _event(self, device: Device, doc: dict[str, Any], at: float) -> None:
        name = text(doc, "event", 64) or "?"
        if name not in device.event_counts and len(device.event_counts) >= EVENT_NAMES_KEPT:
            name = "other"
        device.event_counts[name] += 1
        event = Event(at, number(doc, "wall") or 0.0, name, doc["boot"], doc["seq"])
        device.events.append(event)
        if name in MARKER_EVENTS:
            device.markers.append(event)

    # -- output -------------------------------------------------------------------------------------
    def presence(self, device: Device, now: float) -> str:
        """online, offline (the daemon said so, or its will did), silent (nothing heard lately) or unknown."""
        if device.state == "offline":
            return "offline"
        if device.last_seen is None or device.messages == 0:
            return "unknown"
        interval = device.latest.get("interval_s") or 0.0
        limit = self.silent_after if self.silent_after is not None else max(10.0, 3 * interval)
        return "silent" if now - device.last_seen > limit else "online"

    def count(self, device: Device, key: str, event: str) -> int:
        """The daemon's own count from its newest sample, or the events seen if more (a sample lags its events)."""
        reported = device.latest.get(key)
        return max(int(reported) if reported is not None else 0, device.event_counts[event])

    def alarms(self, device: Device, now: float) -> list[str]:
        """What needs a look now: presence, lost messages, recent rollbacks, drift alarms, fallbacks, safe bursts."""
        out = []
        presence = self.presence(device, now)
        if presence in ("offline", "silent"):
            age = f" {now - device.last_seen:.0f}s" if presence == "silent" and device.last_seen else ""
            out.append(presence + age)
        if device.gaps:
            out.append(f"gaps {device.gaps}")
        recent = Counter(e.name for e in device.events if e.name in ALARM_EVENTS and now - e.at <= self.alarm_window)
        out += [name if n == 1 else f"{name} x{n}" for name, n in sorted(recent.items())]
        if device.burst and now - device.burst[0] <= self.alarm_window:
            out.append(f"safe +{device.burst[1]:.0f}")
        return out

    def summary(self, now: float) -> dict[str, Any]:
        """Everything the table shows, as plain JSON-ready values (for --json, scripts and tests)."""
        devices = {}
        for name, d in sorted(self.devices.items()):
            devices[name] = {
                "presence": self.presence(d, now),
                "state": d.state,
                "bundle_version": d.bundle_version,
                "model_id": d.model_id,
                "adapt": d.adapt,
                "boot": d.boot,
                "boots": len(d.windows),
                **{key: d.latest.get(key) for key in LATEST_FIELDS},
                "promotions": self.count(d, "promotions", "candidate_promoted"),
                "rollbacks": self.count(d, "rollbacks", "rollback"),
                "drift_alarms": self.count(d, "drift_alarms", "drift_alarm"),
                "messages": d.messages,
                "duplicates": d.duplicates,
                "seq_gaps": d.gaps,
                "missing": [f"{boot[:8]}:{seq}" for boot, seq in d.missing()],
                "bad_messages": d.bad,
                "last_error": d.last_error,
                "safe_bursts": d.safe_bursts,
                "events": dict(sorted(d.event_counts.items())),
                "last_seen_age_s": None if d.last_seen is None else round(now - d.last_seen, 3),
                "alarms": self.alarms(d, now),
            }
        return {
            "devices": devices,
            "messages": self.messages,
            "unknown_bad": self.unknown_bad,
            "ignored": self.ignored,
        }
