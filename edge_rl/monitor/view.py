"""The fleet as a table: one row per device, sparklines of learning, latency, counts and alarms.

A cell is plain text and a style name (`Cell`): strings that came over the network never go
through rich markup, and `grid.safe` shows their control and format characters (escapes, C1
controls, bidi overrides) as `?` in the terminal and the web page alike, so a device cannot restyle,
garble or reorder what the operator reads (the page also only ever sets `textContent`).
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_rl.monitor.fleet import Device, Fleet
from edge_rl.monitor.grid import Cell, Grid

BLOCKS = "▁▂▃▄▅▆▇█"
PRESENCE_STYLE = {"online": "green", "offline": "red", "silent": "yellow", "unknown": "dim"}


def shares(values: Sequence[float | None], low: float | None = None, high: float | None = None) -> list[float | None]:
    """Each value's place in [0, 1] between low and high (default: the values' range), the terminal's and the web
    view's sparklines alike; a flat line sits at ▄ (3/7); None stays None."""
    known = [v for v in values if v is not None]
    if not known:
        return [None] * len(values)
    low = min(known) if low is None else low
    high = max(known) if high is None else high
    span = high - low
    if span <= 0:
        return [None if v is None else 3 / 7 for v in values]
    return [None if v is None else min(max((v - low) / span, 0.0), 1.0) for v in values]


def sparkline(values: Sequence[float | None], low: float | None = None, high: float | None = None) -> str:
    """One block character per value scaled between low and high (default: the values' range); None is a space."""
    return "".join(" " if s is None else BLOCKS[round(s * (len(BLOCKS) - 1))] for s in shares(values, low, high))


def _us(value: float | None) -> str:
    """Microseconds as the unit that reads best: 850us, 12.3ms, 1.20s."""
    if value is None:
        return "-"
    if value < 1000:
        return f"{value:.0f}us"
    return f"{value / 1000:.1f}ms" if value < 1_000_000 else f"{value / 1_000_000:.2f}s"


def _value(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.0f}h"


COLUMNS: tuple[tuple[str, str], ...] = (  # (header, justify): the terminal table's and the web view's
    ("device", "left"),
    ("status", "left"),
    ("bundle", "right"),
    ("adapt", "left"),
    ("boot", "left"),
    ("steps", "right"),
    ("success", "left"),
    ("return", "left"),
    ("period p50/p99", "right"),
    ("act p99", "right"),
    ("promo/rollb", "right"),
    ("safe", "right"),
    ("msgs dup/gap/bad", "right"),
    ("seen", "right"),
    ("alarms", "left"),
)
DROP = ("boot", "bundle", "adapt", "period p50/p99", "safe", "act p99", "seen", "return", "promo/rollb", "steps")


def fleet_table(fleet: Fleet, now: float, title: str = "edge-rl fleet", rows: int | None = None) -> Grid:
    """The table `edge-rl monitor` shows: live (refreshed) and at exit.

    `rows` caps the device rows (a terminal shows what fits); the devices with alarms come first
    then, and the caption counts the rest. Columns that do not fit the width are left out (DROP).
    """
    devices = sorted(fleet.devices.values(), key=lambda d: d.name)
    hidden = ""
    if rows is not None and len(devices) > rows:
        alarmed = {d.name for d in devices if fleet.alarms(d, now)}
        devices.sort(key=lambda d: d.name not in alarmed)  # stable: by name within each group
        rest = devices[rows:]
        devices = devices[:rows]
        more = sum(d.name in alarmed for d in rest)
        hidden = f", {len(rest)} more not shown ({more} with alarms)" if more else f", {len(rest)} more not shown (ok)"
    return Grid(title, caption(fleet) + hidden, COLUMNS, [cells(fleet, d, now) for d in devices], DROP)


def cells(fleet: Fleet, d: Device, now: float, curves: bool = True) -> list[Cell]:
    """One device's row, (text, style) per column; without `curves` the success and return cells hold only the
    value (the web view draws the curves itself from `Device.spark`)."""
    presence = fleet.presence(d, now)
    latest = d.latest
    success = sparkline([p.success_rate for p in d.spark], 0.0, 1.0) + " " if curves else ""
    returns = sparkline([p.return_mean for p in d.spark]) + " " if curves else ""
    steps = latest.get("steps")
    alarms = fleet.alarms(d, now)
    return [
        (d.name, "bold"),
        (presence, PRESENCE_STYLE[presence]),
        (d.bundle_version or "-", ""),
        (d.adapt or "-", ""),
        (d.boot[:8] if d.boot else "-", "dim"),
        ("-" if steps is None else f"{steps:,.0f}", ""),
        (f"{success}{_value(latest.get('success_rate'))}", ""),
        (f"{returns}{_value(latest.get('return_mean'), 1)}", ""),
        (f"{_us(latest.get('period_p50_us'))}/{_us(latest.get('period_p99_us'))}", ""),
        (_us(latest.get("act_p99_us")), ""),
        (f"{fleet.count(d, 'promotions', 'candidate_promoted')}/{fleet.count(d, 'rollbacks', 'rollback')}", ""),
        (_value(latest.get("safe_actions"), 0), ""),
        (f"{d.messages} {d.duplicates}/{d.gaps}/{d.bad}", "red" if d.gaps or d.bad else ""),
        (_age(None if d.last_seen is None else now - d.last_seen), ""),
        (", ".join(alarms) if alarms else "ok", "bold red" if alarms else "green"),
    ]


def caption(fleet: Fleet) -> str:
    """How many devices and messages, and what was refused or ignored."""
    parts = [f"{len(fleet.devices)} devices", f"{fleet.messages} messages"]
    if fleet.unknown_bad:
        parts.append(f"{fleet.unknown_bad} bad from unknown devices")
    if fleet.ignored:
        parts.append(f"{fleet.ignored} on other topics ignored")
    return ", ".join(parts)
