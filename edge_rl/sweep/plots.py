"""The report's three PNGs: interval estimates per group (and task), the performance profile with its
bands, and the probability of improvement over the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PNGS = ("interval_estimates.png", "performance_profile.png", "probability_of_improvement.png")


def _axes_row(plt: Any, panels: int, height: float) -> tuple[Any, list[Any]]:
    fig, axes = plt.subplots(1, panels, figsize=(max(6.4, 4.2 * panels), height), squeeze=False)
    return fig, list(axes[0])


def _interval_bars(ax: Any, labels: list[str], estimates: list[dict[str, float] | None]) -> None:
    """Points with their intervals, one row per label, the way rliable draws interval estimates."""
    for y, e in enumerate(estimates):
        if e is not None:
            ax.errorbar(e["point"], y, xerr=[[e["point"] - e["low"]], [e["high"] - e["point"]]], fmt="o", capsize=4)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.locator_params(axis="x", nbins=4)  # intervals near 1.0 otherwise crowd the axis with long labels
    ax.grid(axis="x", alpha=0.3)


def plot_all(doc: dict[str, Any], title: str, out: Path) -> list[str]:
    """The three PNGs (the third only with two or more scored groups); returns the names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pct = f"{100 * doc['confidence']:g}%"
    scored = [g for g, e in doc["groups"].items() if "iqm" in e]
    tasks = doc["tasks"] if len(doc["tasks"]) > 1 else []
    fig, axes = _axes_row(plt, 1 + len(tasks), 0.6 * len(scored) + 1.6)
    _interval_bars(axes[0], scored, [doc["groups"][g]["iqm"] for g in scored])
    axes[0].set_title("IQM, all tasks")
    for ax, task in zip(axes[1:], tasks, strict=True):
        _interval_bars(ax, scored, [doc["groups"][g]["tasks"].get(task, {}).get("iqm") for g in scored])
        ax.set_title(f"IQM, {task}")
    fig.suptitle(f"{title} ({pct} CI)")
    written = [_save(plt, fig, out / PNGS[0])]

    fig, (ax,) = _axes_row(plt, 1, 3.6)
    profile = doc["performance_profile"]
    for group, p in profile["groups"].items():
        (line,) = ax.plot(profile["taus"], p["fraction"], label=group)
        ax.fill_between(profile["taus"], p["low"], p["high"], color=line.get_color(), alpha=0.2)
    ax.set(xlabel="score threshold tau", ylabel="fraction of runs with score > tau", title=f"{title}: {pct} bands")
    ax.legend()
    ax.grid(alpha=0.3)
    written.append(_save(plt, fig, out / PNGS[1]))

    improvement = doc["probability_of_improvement"]
    if improvement:
        fig, (ax,) = _axes_row(plt, 1, 0.6 * len(improvement) + 1.6)
        _interval_bars(ax, list(improvement), list(improvement.values()))
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set(xlim=(0, 1), xlabel=f"P(group > {doc['baseline']})", title=f"{title} ({pct} CI)")
        written.append(_save(plt, fig, out / PNGS[2]))
    return written


def _save(plt: Any, fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
