"""`edge-rl report DIR`: a sweep's trials as honest statistics (docs/statistics.md).

Reads DIR/trials/<trial>/result.json (written by `edge-rl sweep`) and reports, per group, the
interquartile mean of the scores with a stratified-bootstrap interval (tasks are the strata),
per-task IQMs, medians of the other metrics, and the probability that each group beats a
baseline; writes report.json and three PNGs. The numbers come from edge_rl.stats.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_rl.cli.common import count, positive_int
from edge_rl.errors import BadInput

PNGS = ("interval_estimates.png", "performance_profile.png", "probability_of_improvement.png")
UNSCORED = ("failed", "pruned")  # pruned: stopped early by the sweep's scheduler for doing badly
FEW_RUNS = 5  # below this many runs per task an interval is too unreliable to lean on


@dataclass(frozen=True)
class Trial:
    name: str
    group: str
    task: str
    seed: int
    status: str  # ok, or one of UNSCORED
    score: float = math.nan
    metrics: dict[str, float | int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (exclusive), got {text!r}")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="IQM with bootstrap intervals, performance profiles, P(improvement) over a sweep (extra: stats)",
        description="Summarize DIR/trials/*/result.json: per group the interquartile mean (IQM) of the score "
        "over all runs and tasks with a stratified-bootstrap percentile interval (runs resampled within each "
        "task), the IQM per task, the median of each other metric, and the probability that a run of each "
        "group beats a run of the baseline group on the same task. Failed trials are counted and listed, "
        "not scored; unreadable result files are named and skipped while others remain. Writes report.json, "
        + ", ".join(PNGS)
        + " (see docs/statistics.md). Exit code 2 on unusable input.",
    )
    p.add_argument("sweep_dir", metavar="DIR", type=Path, help="sweep directory written by edge-rl sweep")
    p.add_argument("--out", type=Path, default=None, help="where report.json and the PNGs go (default: DIR)")
    p.add_argument(
        "--metrics",
        type=_names,
        default=None,
        metavar="A,B",
        help="metrics whose per-group median the table shows (default: every numeric metric the trials record)",
    )
    p.add_argument(
        "--baseline",
        default=None,
        metavar="GROUP",
        help="group the others are compared with (default: the group with the highest IQM)",
    )
    p.add_argument("--reps", type=positive_int, default=2000, help="bootstrap resamples per interval (default: 2000)")
    p.add_argument(
        "--seed", type=count, default=0, help="seed of the bootstrap, for reproducible intervals (default: 0)"
    )
    p.add_argument(
        "--confidence", type=_confidence, default=0.95, help="confidence level of every interval (default: 0.95)"
    )
    p.set_defaults(run=run)


def _field(doc: dict[str, Any], key: str, kinds: type | tuple[type, ...]) -> Any:
    value = doc.get(key)
    if key not in doc:
        raise BadInput(f"no {key!r} field")
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise BadInput(f"{key!r} is {value!r}")
    return value


def _finite(value: float | int) -> bool:
    """A number a float can hold and sums of it stay finite (an integer of 400 digits cannot)."""
    try:
        return math.isfinite(value) and abs(float(value)) < 1e300
    except OverflowError:
        return False


def _read_trial(path: Path) -> Trial:
    """One result.json, or a BadInput whose message says what is wrong with it."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read it ({e})") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise BadInput("not usable JSON (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise BadInput("not a JSON object")
    group, task, seed = _field(doc, "group", str), _field(doc, "task", str), _field(doc, "seed", int)
    status = _field(doc, "status", str)
    if status not in ("ok", *UNSCORED):
        raise BadInput(f"'status' is {status!r}, not one of ok, {', '.join(UNSCORED)}")
    if status != "ok":
        return Trial(path.parent.name, group, task, seed, status)
    score = _field(doc, "score", (int, float))
    if not _finite(score):
        shown = "nan" if score != score else "inf" if isinstance(score, int) or score > 0 else "-inf"
        raise BadInput(f"'score' is {shown} (or too large) in a trial whose status is 'ok'")
    score = float(score)
    metrics = {}
    for key, value in _field(doc, "metrics", dict).items():
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise BadInput(f"metric {key!r} is {value!r}, not a number or null")
        if value is not None and _finite(value):  # null, NaN and inf: not measured in this trial
            metrics[key] = value
    return Trial(path.parent.name, group, task, seed, status, score, metrics)


def load_trials(sweep_dir: Path) -> tuple[list[Trial], list[dict[str, str]]]:
    """Every readable trial, and the unusable files with the reason; BadInput when nothing is usable."""
    if not sweep_dir.is_dir():
        raise BadInput(f"sweep directory {sweep_dir} does not exist")
    paths = sorted(sweep_dir.glob("trials/*/result.json"))
    if not paths:
        raise BadInput(f"no trial results in {sweep_dir} (expected {sweep_dir}/trials/<trial>/result.json)")
    trials, skipped = [], []
    for path in paths:
        try:
            trials.append(_read_trial(path))
        except BadInput as e:
            skipped.append({"file": str(path.relative_to(sweep_dir)), "reason": str(e)})
    if not trials:
        first = skipped[0]
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise BadInput(f"no usable result in {sweep_dir}: {first['file']}: {first['reason']}{more}")
    seen: dict[tuple[str, str, int], str] = {}
    for t in trials:
        other = seen.setdefault((t.group, t.task, t.seed), t.name)
        if other != t.name:
            raise BadInput(f"trials {other} and {t.name} are both group {t.group!r}, task {t.task!r}, seed {t.seed}")
    return trials, skipped


def _sweep_info(sweep_dir: Path) -> dict[str, Any]:
    """sweep.json's name and metric for titles; {} when there is none or it is unreadable (only titles lose)."""
    try:
        doc = json.loads((sweep_dir / "sweep.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: doc[k] for k in ("name", "metric") if isinstance(doc, dict) and isinstance(doc.get(k), str)}


def _scores(trials: list[Trial]) -> dict[str, dict[str, list[float]]]:
    """group -> task -> scores of its ok trials, each in seed order; a group whose trials all failed is absent."""
    out: dict[str, dict[str, list[float]]] = {}
    for t in sorted((t for t in trials if t.ok), key=lambda t: (t.group, t.task, t.seed)):
        out.setdefault(t.group, {}).setdefault(t.task, []).append(t.score)
    for group, tasks in out.items():
        for task, scores in tasks.items():
            if len(scores) < 2:
                raise BadInput(f"group {group!r} has 1 scored run on task {task!r}; an interval needs at least 2")
    return out


def _metric_names(trials: list[Trial], chosen: tuple[str, ...] | None) -> list[str]:
    recorded = sorted({k for t in trials if t.ok for k in t.metrics})
    if chosen is None:
        return recorded
    unknown = [m for m in chosen if m not in recorded]
    if unknown:
        raise BadInput(f"no trial records metric {unknown[0]!r}; they record: {', '.join(recorded) or 'none'}")
    return list(chosen)


def summarize(trials: list[Trial], args: argparse.Namespace) -> dict[str, Any]:
    """All the report's numbers, as report.json holds them."""
    import numpy as np

    from edge_rl import stats

    scores, metrics = _scores(trials), _metric_names(trials, args.metrics)
    settings = {"reps": args.reps, "confidence": args.confidence, "seed": args.seed}
    groups: dict[str, Any] = {}
    for group in sorted({t.group for t in trials}):
        mine = [t for t in trials if t.group == group]
        entry: dict[str, Any] = {
            "runs": sum(t.ok for t in mine),
            **{status: sorted(t.name for t in mine if t.status == status) for status in UNSCORED},
            "metrics": {m: _median([t.metrics.get(m) for t in mine if t.ok]) for m in metrics},
        }
        if group in scores:
            strata = list(scores[group].values())
            for name, aggregate in (("iqm", stats.iqm), ("mean", stats.mean), ("median", stats.median)):
                entry[name] = stats.interval_estimate(strata, aggregate, **settings, name=group).as_dict()
            entry["tasks"] = {
                task: {"runs": len(s), "iqm": stats.interval_estimate(s, **settings, name=f"{group}/{task}").as_dict()}
                for task, s in scores[group].items()
            }
        groups[group] = entry
    if not scores:
        raise BadInput(f"no trial of {len(trials)} has status ok: nothing to score")
    every_task = sorted({t.task for t in trials})
    missing = {g: [k for k in every_task if k not in tasks] for g, tasks in scores.items()}
    complete = [g for g in scores if not missing[g]] or list(scores)
    baseline = args.baseline or max(complete, key=lambda g: groups[g]["iqm"]["point"])
    if baseline not in scores:
        raise BadInput(f"--baseline {baseline!r} is not a group with scored runs; groups: {', '.join(scores)}")
    every = np.concatenate([s for tasks in scores.values() for s in tasks.values()])
    taus = np.linspace(every.min(), every.max(), 101)
    profiles = {g: stats.performance_profile(list(scores[g].values()), taus, **settings) for g in scores}
    return {
        "method": "IQM; stratified percentile bootstrap, runs resampled within each task (edge_rl.stats)",
        **settings,
        "tasks": sorted({t.task for t in trials if t.ok}),
        "metrics": metrics,
        "groups": groups,
        "few_runs": sorted(g for g, tasks in scores.items() if min(map(len, tasks.values())) < FEW_RUNS),
        "unequal_runs": sorted(g for g, tasks in scores.items() if len(set(map(len, tasks.values()))) > 1),
        "missing_tasks": {g: m for g, m in missing.items() if m},
        "baseline": baseline,
        "probability_of_improvement": {
            g: _improvement(scores[g], scores[baseline], settings) for g in scores if g != baseline
        },
        "performance_profile": {
            "taus": taus.tolist(),
            "groups": {
                g: {"fraction": p.fraction.tolist(), "low": p.low.tolist(), "high": p.high.tolist()}
                for g, p in profiles.items()
            },
        },
    }


def _median(values: list[float | int | None]) -> float | int | None:
    """Median of the trials that measured it; whole counts (params, bytes) stay whole where the median is."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    middle = statistics.median(present)
    return int(middle) if all(isinstance(v, int) for v in present) and middle == int(middle) else middle


def _improvement(x: dict[str, list[float]], y: dict[str, list[float]], settings: dict) -> dict[str, Any] | None:
    """P(X > Y) over the tasks both groups have scores on; None when they share none."""
    from edge_rl.stats import probability_of_improvement

    shared = sorted(x.keys() & y.keys())
    if not shared:
        return None
    estimate = probability_of_improvement([x[t] for t in shared], [y[t] for t in shared], **settings)
    return {**estimate.as_dict(), "tasks": shared}


def _cell(estimate: dict[str, float] | None) -> str:
    from edge_rl.stats import Estimate

    return "-" if estimate is None else str(Estimate(estimate["point"], estimate["low"], estimate["high"]))


def print_report(doc: dict[str, Any], title: str) -> None:
    from edge_rl.table import format_table

    pct = f"{100 * doc['confidence']:g}%"
    tasks = doc["tasks"] if len(doc["tasks"]) > 1 else []
    print(f"{title}: IQM [{pct} CI] over {len(doc['tasks'])} task(s); {doc['reps']} resamples, seed {doc['seed']}")
    header = ["group", "runs", *UNSCORED, f"IQM [{pct} CI]", *tasks, *(f"median {m}" for m in doc["metrics"])]
    rows = []
    for group, g in doc["groups"].items():
        per_task = [_cell(g.get("tasks", {}).get(t, {}).get("iqm")) for t in tasks]
        medians = ["-" if g["metrics"][m] is None else g["metrics"][m] for m in doc["metrics"]]
        unscored = [len(g[status]) for status in UNSCORED]
        rows.append([group, g["runs"], *unscored, _cell(g.get("iqm")), *per_task, *medians])
    print(format_table(header, rows))
    for status in UNSCORED:
        names = [name for g in doc["groups"].values() for name in g[status]]
        if names:
            print(f"{status} trials (not scored): {', '.join(names)}")
    if any(g["pruned"] for g in doc["groups"].values()):
        print("note: pruned trials were stopped for scoring low; leaving them out flatters their group")
    if doc["few_runs"]:
        print(f"note: fewer than {FEW_RUNS} runs on some task in {', '.join(doc['few_runs'])}: expect wide intervals")
    if doc["unequal_runs"]:
        print(
            f"note: unequal runs per task in {', '.join(doc['unequal_runs'])}: the all-task IQM weighs a task "
            "by its runs (failures on a hard task flatter it); compare per task"
        )
    for group, tasks in doc["missing_tasks"].items():
        print(
            f"note: {group} has no scored run on {', '.join(tasks)}: its all-task IQM leaves that out and "
            "flatters it; it is not the default baseline"
        )
    improvement = doc["probability_of_improvement"]
    if improvement:
        print()
        base = doc["baseline"]
        rows = [[g, _cell(p), ", ".join(p["tasks"]) if p else "no shared task"] for g, p in improvement.items()]
        print(format_table(["group", f"P(group > {base}) [{pct} CI]", "tasks"], rows))


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


def run(args: argparse.Namespace) -> int:
    trials, skipped = load_trials(args.sweep_dir)
    if skipped:
        listed = "; ".join(f"{s['file']} ({s['reason']})" for s in skipped)
        print(f"edge-rl report: warning: skipped {len(skipped)} unusable result file(s): {listed}", file=sys.stderr)
    info = _sweep_info(args.sweep_dir)
    doc = {"sweep": info, "skipped": skipped, **summarize(trials, args)}
    title = f"sweep {info.get('name', args.sweep_dir.name)}, {info.get('metric', 'score')}"
    print_report(doc, title)
    out = args.out or args.sweep_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(doc, indent=1) + "\n")
        written = ["report.json", *plot_all(doc, title, out)]
    except OSError as e:
        raise BadInput(f"cannot write the report to {out}: {e.strerror or e}") from None
    print(f"wrote {', '.join(written)} to {out}")
    return 0
