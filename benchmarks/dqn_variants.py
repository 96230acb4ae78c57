"""DQN variants on the anti-jamming task: which agent is sample-efficient, lightweight and robust?

The comparison the seed paper makes for power-constrained radios, run as an `edge-rl sweep`
(examples/sweeps/antijam_variants.toml): vanilla DQN and four one-change variants (Double, Dueling,
3-step returns, LayerNorm without a target network as in PQN), each against the sweeping, reactive and
switching jammers, 10 seeds per cell, 20,000 steps each. Per variant:

- success: IQM of the teacher's greedy delivery rate (20 evaluation episodes, seeds no run trained on)
  with 95 % stratified-bootstrap intervals per jammer, and over all three as a fraction of each jammer's
  optimal rate (jammers are the strata; the switching jammer's optimum is 0.906, the others' 1.0);
- sample efficiency: steps until training's evaluation (every 500 steps) first reached 95 % of the
  jammer's optimal rate, per jammer (median over runs; a run that never did counts as never);
- lightweight: parameters of the teacher, and parameters, MACs and int8 bytes of the deployed student
  (an int8 48x48 distilled from each run's teacher, as benchmarks/compression.py);
- robustness: the worst jammer's IQM and the spread (max - min) over jammers, both as fractions of optimal;
- P(variant > vanilla) with its interval, and the deployed student's IQM (fraction of optimal).

    python benchmarks/dqn_variants.py                 # runs (or resumes) the sweep, ~40 min on 2 cores
    python benchmarks/dqn_variants.py --no-run        # statistics of the sweep directory as it is

Writes benchmarks/results/dqn_variants.json and docs/dqn_variants/*.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
SWEEP = ROOT / "examples" / "sweeps" / "antijam_variants.toml"
BASELINE = "vanilla"


def settings(seed: int = 0) -> argparse.Namespace:
    """What `edge-rl report` uses by default: 2,000 resamples, 95 %, seed 0."""
    return argparse.Namespace(reps=2000, confidence=0.95, seed=seed, metrics=None, baseline=BASELINE)


def steps_to_target(values: list[float | None]) -> tuple[float, int]:
    """Median steps to 95 % of the best (a run that never got there counts as infinitely slow), and how many did."""
    steps = [math.inf if v is None else v for v in values]
    return statistics.median(steps), sum(v is not None for v in values)


def _steps_cell(median: float, reached: int, runs: int) -> str:
    """`1,500 (10/10)`: the median, and how many runs got there at all."""
    return f"{'never' if math.isinf(median) else f'{median:,.0f}'} ({reached}/{runs})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "sweep-antijam-variants", help="sweep directory")
    parser.add_argument("--no-run", action="store_true", help="do not run or resume the sweep first")
    parser.add_argument("--workers", type=int, default=2, help="trials at once (default: 2)")
    args = parser.parse_args()
    if not args.no_run:
        cmd = [sys.executable, "-m", "edge_rl.cli", "sweep", str(SWEEP), "--out", str(args.out)]
        done = subprocess.run([*cmd, "--workers", str(args.workers)], cwd=ROOT)
        if done.returncode not in (0, 1):  # 1: some trial failed, which the table reports
            raise SystemExit(done.returncode)

    from edge_rl.stats import Estimate
    from edge_rl.sweep.pipeline import TARGET_FRACTION
    from edge_rl.sweep.plots import plot_all
    from edge_rl.sweep.results import load_trials, summarize
    from edge_rl.table import print_table

    trials, skipped = load_trials(args.out)
    if skipped:
        raise SystemExit(f"unusable results: {skipped}")
    ok = [t for t in trials if t.ok]

    def normalized(key: str) -> list:
        """Success as a fraction of the jammer's optimal rate: jammers become comparable, 1.0 is optimal."""
        return [dataclasses.replace(t, score=t.metrics[key] * TARGET_FRACTION / t.metrics["target"]) for t in ok]

    raw = summarize(trials, settings())  # per jammer, in delivery rate
    teacher = summarize(normalized("teacher_success"), settings())
    student = summarize(normalized("student_success"), settings())
    jammers = raw["tasks"]

    def cell(e: dict | None) -> str:
        return "-" if e is None else Estimate(e["point"], e["low"], e["high"]).format(3)

    rows, doc = [], {"sweep": str(args.out), "jammers": jammers, "variants": {}}
    for group, g in teacher["groups"].items():
        mine = [t for t in ok if t.group == group]
        per_jammer = {j: raw["groups"][group]["tasks"][j]["iqm"] for j in jammers}
        relative = [g["tasks"][j]["iqm"]["point"] for j in jammers]
        steps = {j: steps_to_target([t.metrics.get("steps_to_target") for t in mine if t.task == j]) for j in jammers}
        improvement = teacher["probability_of_improvement"].get(group)
        entry = {
            "runs": g["runs"],
            "runs_per_jammer": {j: g["tasks"][j]["runs"] for j in jammers},
            "iqm_fraction_of_optimal": g["iqm"],
            "iqm_success_per_jammer": per_jammer,
            "median_steps_to_95": {j: None if math.isinf(m) else m for j, (m, _) in steps.items()},
            "runs_reaching_95": {j: reached for j, (_, reached) in steps.items()},
            "teacher_params": g["metrics"]["teacher_params"],
            "student_params": g["metrics"]["params"],
            "student_macs": g["metrics"]["macs"],
            "student_int8_bytes": g["metrics"]["deployed_bytes"],
            "worst_jammer_fraction": min(relative),
            "spread_across_jammers": max(relative) - min(relative),
            "p_improvement_vs_vanilla": improvement,
            "student_iqm_fraction_of_optimal": student["groups"][group]["iqm"],
        }
        doc["variants"][group] = entry
        rows.append(
            [
                group,
                g["runs"],
                cell(g["iqm"]),
                *(cell(per_jammer[j]) for j in jammers),
                *(_steps_cell(*steps[j], g["tasks"][j]["runs"]) for j in jammers),
                entry["teacher_params"],
                entry["student_params"],
                entry["student_macs"],
                entry["student_int8_bytes"],
                round(entry["worst_jammer_fraction"], 3),
                round(entry["spread_across_jammers"], 3),
                cell(improvement),
                cell(entry["student_iqm_fraction_of_optimal"]),
            ]
        )
    header = ["variant", "runs", "IQM of optimal [95% CI]", *(f"IQM success {j}" for j in jammers)]
    header += [f"steps to 95% {j}" for j in jammers]
    header += ["teacher params", "student params", "student MACs", "student int8 B", "worst jammer", "spread"]
    header += [f"P(> {BASELINE})", "student IQM of optimal"]
    print_table(header, rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dqn_variants.json").write_text(json.dumps(doc | {"report": teacher, "raw": raw}, indent=1) + "\n")
    pngs = ROOT / "docs" / "dqn_variants"
    pngs.mkdir(exist_ok=True)
    written = plot_all(teacher, "AntiJam, success / optimal", pngs)
    print(f"\nwrote {RESULTS / 'dqn_variants.json'} and {', '.join(written)} in {pngs}")


if __name__ == "__main__":
    main()
