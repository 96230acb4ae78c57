"""A sweep's results as `edge-rl report` reads them: one TrialResult per result.json, summarised
into report.json's numbers (IQM with stratified-bootstrap intervals per group and task, metric
medians, probability of improvement, performance profiles; the statistics are edge_rl.stats)."""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_rl.errors import BadInput

UNSCORED = ("failed", "pruned")  # pruned: stopped early by the sweep's scheduler for doing badly
FEW_RUNS = 5  # below this many runs per task an interval is too unreliable to lean on


@dataclass(frozen=True)
class TrialResult:
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


def _read_trial(path: Path) -> TrialResult:
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
        return TrialResult(path.parent.name, group, task, seed, status)
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
    return TrialResult(path.parent.name, group, task, seed, status, score, metrics)


def load_trials(sweep_dir: Path) -> tuple[list[TrialResult], list[dict[str, str]]]:
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


def sweep_info(sweep_dir: Path) -> dict[str, Any]:
    """sweep.json's name and metric for titles; {} when there is none or it is unreadable (only titles lose)."""
    try:
        doc = json.loads((sweep_dir / "sweep.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: doc[k] for k in ("name", "metric") if isinstance(doc, dict) and isinstance(doc.get(k), str)}


def _scores(trials: list[TrialResult]) -> dict[str, dict[str, list[float]]]:
    """group -> task -> scores of its ok trials, each in seed order; a group whose trials all failed is absent."""
    out: dict[str, dict[str, list[float]]] = {}
    for t in sorted((t for t in trials if t.ok), key=lambda t: (t.group, t.task, t.seed)):
        out.setdefault(t.group, {}).setdefault(t.task, []).append(t.score)
    for group, tasks in out.items():
        for task, scores in tasks.items():
            if len(scores) < 2:
                raise BadInput(f"group {group!r} has 1 scored run on task {task!r}; an interval needs at least 2")
    return out


def _metric_names(trials: list[TrialResult], chosen: tuple[str, ...] | None) -> list[str]:
    recorded = sorted({k for t in trials if t.ok for k in t.metrics})
    if chosen is None:
        return recorded
    unknown = [m for m in chosen if m not in recorded]
    if unknown:
        raise BadInput(f"no trial records metric {unknown[0]!r}; they record: {', '.join(recorded) or 'none'}")
    return list(chosen)


def summarize(trials: list[TrialResult], args: argparse.Namespace) -> dict[str, Any]:
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
