"""`edge-rl report DIR`: a sweep's trials as honest statistics (docs/statistics.md).

Reads DIR/trials/<trial>/result.json (written by `edge-rl sweep`) and reports, per group, the
interquartile mean of the scores with a stratified-bootstrap interval (tasks are the strata),
per-task IQMs, medians of the other metrics, and the probability that each group beats a
baseline; writes report.json and three PNGs. The numbers come from edge_rl.sweep.results (and
edge_rl.stats), the PNGs from edge_rl.sweep.plots; this module is the command and its table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from edge_rl.cli.common import count, positive_int
from edge_rl.errors import BadInput
from edge_rl.sweep.plots import PNGS, plot_all
from edge_rl.sweep.results import FEW_RUNS, UNSCORED, load_trials, summarize, sweep_info


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


def run(args: argparse.Namespace) -> int:
    trials, skipped = load_trials(args.sweep_dir)
    if skipped:
        listed = "; ".join(f"{s['file']} ({s['reason']})" for s in skipped)
        print(f"edge-rl report: warning: skipped {len(skipped)} unusable result file(s): {listed}", file=sys.stderr)
    info = sweep_info(args.sweep_dir)
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
