"""Run an adaptation in simulation and write what a user looks at: the curve (JSON, PNG), the policy, the state."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_rl.atomic import write_atomic
from edge_rl.stream.learner import StreamQ
from edge_rl.stream.protocol import StreamRun, run_stream
from edge_rl.stream.state import save_state


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


def write_adaptation(
    learner: StreamQ,
    env_id: str,
    env_kwargs: dict[str, Any],
    steps: int,
    seed: int,
    window: int,
    shift: tuple[int, dict[str, Any]] | None,
    out: Path,
) -> str:
    """Run `learner` for `steps`, write policy, state, adapt.json and curve.png to `out`; one-line summary."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = run_stream(learner, env_id, steps, seed, env_kwargs, shift=shift)
    seconds = time.perf_counter() - t0
    points = curve(run, steps, window)
    learner.to_policy().save(out)
    save_state(learner, out)
    mode = learner.mode
    report = {
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "mode": mode,
        "steps": steps,
        "seed": seed,
        "shift": list(shift) if shift else None,
        "gamma": learner.gamma,
        "seconds": round(seconds, 2),
        "steps_per_second": round(steps / seconds, 1),
        "episodes": len(run.returns),
        "curve": points,
    }
    write_atomic(out / "adapt.json", json.dumps(report, indent=1) + "\n")
    plotted = plot(points, f"{env_id}: {mode} learner", out / "curve.png", shift[0] if shift else None)
    last = [v for v in (points["success_rate"] if run.successes else points["mean_return"]) if v is not None]
    tail = f"last window {last[-1]:.3f}" if last else "no finished episode"
    return (
        f"{out}: {mode} adaptation, {steps:,} steps in {seconds:.1f} s ({steps / seconds:,.0f} steps/s), "
        f"{len(run.returns)} episodes, {tail}" + ("" if plotted else " (no matplotlib: curve.png skipped)")
    )
