"""Run-directory reporting: `train.json` (config, curve, evaluations) and `curve.png`."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_rl.atomic import write_atomic

if TYPE_CHECKING:
    from edge_rl.train.config import DQNConfig
    from edge_rl.train.dqn import RunLog


def versions() -> dict[str, str]:
    """Library versions that shape a run's numbers, for provenance."""
    import gymnasium
    import torch

    from edge_rl import __version__

    return {
        "edge_rl": __version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def write_run(out: Path, cfg: DQNConfig, log: RunLog, *, updates: int) -> None:
    doc: dict[str, Any] = {
        "config": cfg.to_dict(),
        "steps": log.steps,
        "updates": updates,
        "wall_seconds": round(log.wall_seconds, 3),
        "steps_per_second": round(log.steps / max(log.wall_seconds, 1e-9), 1),
        "stopped_early": log.stopped_early,
        "best": {"step": log.best_step, "mean_return": log.best_return},
        "evaluations": log.evals,
        "episodes": [{"step": s, "return": r} for s, r in log.episodes],
        "versions": versions(),
    }
    write_atomic(out / "train.json", json.dumps(doc, indent=1) + "\n")
    plot_curve(out / "curve.png", cfg.env_id, log)


def plot_curve(path: Path, title: str, log: RunLog) -> None:
    """Training returns (raw and smoothed) with greedy evaluations and the kept checkpoint marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if log.episodes:
        steps, returns = np.array(log.episodes).T
        ax.plot(steps, returns, color="tab:blue", alpha=0.25, lw=0.8, label="training episode")
        k = max(1, min(20, len(returns) // 5))
        smooth = np.convolve(returns, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, color="tab:blue", lw=1.6, label=f"training (mean of {k})")
    if log.evals:
        es = np.array([e["step"] for e in log.evals])
        em = np.array([e["mean_return"] for e in log.evals])
        sd = np.array([e["std_return"] for e in log.evals])
        ax.errorbar(es, em, yerr=sd, color="tab:orange", marker="o", ms=4, capsize=3, lw=1.2, label="greedy eval")
        ax.axvline(log.best_step, color="tab:green", ls="--", lw=1, label="kept checkpoint")
    ax.set(xlabel="environment steps", ylabel="episode return", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
