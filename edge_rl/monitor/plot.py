"""`--plot`: learning curves (success rate and mean return against time) per device, with event markers.

Drawn on a bare `matplotlib.figure.Figure` (Agg, no pyplot): no global backend state, no display
needed, safe beside the monitor's other threads. The x axis is the daemons' own clock (`wall`), so
a promotion lines up with the samples around it however late its message arrived.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from matplotlib.figure import Figure

from edge_rl.errors import BadInput
from edge_rl.monitor.fleet import MARKER_EVENTS, Fleet

MARKER_STYLE = {  # event -> (line style, legend label); the line takes its device's colour
    "candidate_promoted": ("-", "promoted"),
    "rollback": ("--", "rollback"),
    "drift_alarm": (":", "drift alarm"),
}
LEGEND_DEVICES = 12  # more devices than this are drawn but not named in the legend


def learning_curves(fleet: Fleet) -> tuple[Figure, dict[str, int]]:
    """The figure and how many markers of each event it holds (a promotion draws one line per panel)."""
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    success, returns = fig.subplots(2, 1, sharex=True)
    devices = sorted(fleet.devices.values(), key=lambda d: d.name)
    walls = [p.wall for d in devices for p in d.curve] + [e.wall for d in devices for e in d.markers]
    markers = dict.fromkeys(MARKER_EVENTS, 0)
    if not walls:
        success.text(0.5, 0.5, "no samples", ha="center", va="center", transform=success.transAxes)
        return fig, markers
    t0 = min(walls)
    for i, device in enumerate(devices):
        points = sorted(device.curve, key=lambda p: p.wall)
        label = device.name if i < LEGEND_DEVICES else None
        for ax, key in ((success, "success_rate"), (returns, "return_mean")):
            xy = [(p.wall - t0, getattr(p, key)) for p in points if getattr(p, key) is not None]
            if xy:
                ax.plot(*zip(*xy, strict=True), color=f"C{i % 10}", label=label, linewidth=1.2)
        for event in device.markers:
            style = MARKER_STYLE[event.name][0]
            for ax in (success, returns):
                ax.axvline(event.wall - t0, color=f"C{i % 10}", linestyle=style, linewidth=1.4, gid=event.name)
            markers[event.name] += 1
    for name, (style, label) in MARKER_STYLE.items():
        if markers[name]:  # one legend entry per kind (in grey), not per line
            success.plot([], [], color="0.3", linestyle=style, label=f"{label} ({markers[name]})")
    start = dt.datetime.fromtimestamp(t0, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    success.set(ylabel="success rate", ylim=(-0.02, 1.02), title="learning curves per device")
    returns.set(ylabel="mean return (last 20 episodes)", xlabel=f"seconds since {start} (daemon clock)")
    for ax in (success, returns):
        ax.grid(alpha=0.3)
    success.legend(loc="upper left", fontsize="small", ncols=2)
    return fig, markers


def write_plot(fleet: Fleet, path: Path) -> dict[str, int]:
    """Write the PNG (temp file + rename: a reader never sees half a picture); the marker counts."""
    if not path.parent.is_dir():
        raise BadInput(f"--plot {path}: directory {path.parent} does not exist")
    fig, markers = learning_curves(fleet)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"--plot {path}: cannot write: {e.strerror or e}") from None
    return markers
