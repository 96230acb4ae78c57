"""What a user looks at after an adaptation run: the curve per window of steps, as JSON and as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edge_rl.stream.simulate import StreamRun


def curve(run: StreamRun, steps: int, window: int) -> dict[str, list]:
    """Per window of `window` steps: mean return and success rate of the episodes that ended in it."""
    ends = np.asarray(run.end_steps)
    returns = np.asarray(run.returns)
    success = np.asarray(run.successes) if len(run.successes) == len(run.returns) else None
    points: dict[str, list] = {"step": [], "mean_return": [], "success_rate": [], "episodes": []}
    for start in range(0, steps, window):
        mask = (ends > start) & (ends <= start + window)
        points["step"].append(start + window)
        points["episodes"].append(int(mask.sum()))
        points["mean_return"].append(float(returns[mask].mean()) if mask.any() else None)
        rate = float(success[mask].mean()) if success is not None and mask.any() else None
        points["success_rate"].append(rate)
    return points


def plot(points: dict[str, list], title: str, path: Path, shift_at: int | None = None) -> bool:
    """The curve as a PNG (success rate on 0-1 where the env reports it), the shift marked; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    key = "success_rate" if any(v is not None for v in points["success_rate"]) else "mean_return"
    fig, ax = plt.subplots(figsize=(7, 3.5))
    xs = [s for s, v in zip(points["step"], points[key], strict=True) if v is not None]
    ax.plot(xs, [v for v in points[key] if v is not None], marker=".")
    if shift_at is not None:
        ax.axvline(shift_at, color="grey", linestyle="--", linewidth=1, label=f"shift at step {shift_at:,}")
        ax.legend(loc="lower right")
    if key == "success_rate":
        ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
