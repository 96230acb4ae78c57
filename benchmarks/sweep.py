"""Sweep throughput: pipelines per hour, one after another in one process vs `edge-rl sweep` on N Ray workers.

The same trials every time: CartPole-v1 pipelines (train 10,000 steps, distill a 16x16 student, quantize to
int8, export and verify the bundle, evaluate teacher and student), `--trials` of them over seeds and two
learning rates. The peer is the plain loop a script would write: `run_trial` for each trial in this
process, no Ray. Each Ray configuration is a fresh `edge-rl sweep` process, so its figure includes
starting and stopping the local Ray instance, as a user pays it. Medians over `--reps`; the machine's
core count caps what N workers can give.

    python benchmarks/sweep.py                  # 8 pipelines; loop, 1 and 2 workers; 2 repetitions, ~8 min
    python benchmarks/sweep.py --trials 4 --reps 1 --workers 2

A pipeline that fails fails in every runner (the pipelines are deterministic), so the work stays
equal; failures are listed per run. Writes benchmarks/results/sweep.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

SWEEP = """
name = "throughput"
env_id = "CartPole-v1"
seeds = {seeds}
[train]
steps = 10000
learning_starts = 500
eval_every = 2500
early_stop = false
[grid]
lr = [1e-3, 5e-4]
[pipeline.distill]
hidden = [16, 16]
steps = 1000
rounds = 1
[pipeline.eval]
episodes = 10
"""


def loop(spec_path: Path, out: Path) -> float:
    """The peer: every trial's pipeline in turn, in this process."""
    from edge_rl.cli import main as edge_rl
    from edge_rl.sweep.pipeline import run_trial
    from edge_rl.sweep.runner import trial_dir
    from edge_rl.sweep.spec import load_spec

    spec = load_spec(spec_path)
    start = time.perf_counter()
    for trial in spec.trials:
        run_trial(spec, trial, trial_dir(out, trial), edge_rl)  # the sweep's layout
    return time.perf_counter() - start


def failed(out: Path) -> list[str]:
    """Trials that ended failed: the same in every runner (the pipelines are deterministic), so equal work."""
    results = (json.loads(p.read_text()) for p in sorted(out.glob("trials/*/result.json")))
    return [r["name"] for r in results if r["status"] != "ok"]


def ray_sweep(spec_path: Path, out: Path, workers: int) -> float:
    cmd = [sys.executable, "-m", "edge_rl.cli", "sweep", str(spec_path), "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run([*cmd, "--workers", str(workers), "--quiet"], capture_output=True, text=True, cwd=ROOT)
    if done.returncode not in (0, 1):  # 1: a trial failed, which `failed` reports
        raise SystemExit(f"edge-rl sweep failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="pipelines per run, an even number (default: 8)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts (default: 1 2)")
    parser.add_argument("--reps", type=int, default=2, help="repetitions of every configuration (default: 2)")
    args = parser.parse_args()
    if args.trials < 2 or args.trials % 2:
        parser.error("--trials must be an even number >= 2 (two learning rates x seeds)")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    configs = ["loop", *(f"ray x{n}" for n in args.workers)]
    walls: dict[str, list[float]] = {c: [] for c in configs}
    failures: dict[str, list[list[str]]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="edge-rl-sweep-bench-") as tmp:
        spec_path = Path(tmp) / "sweep.toml"
        spec_path.write_text(SWEEP.format(seeds=args.trials // 2))
        for rep in range(args.reps):  # configurations alternate, so drift in machine load hits them alike
            for config in configs:
                out = Path(tmp) / f"{config.replace(' ', '')}-{rep}"
                wall = loop(spec_path, out) if config == "loop" else ray_sweep(spec_path, out, int(config[5:]))
                walls[config].append(wall)
                lost = failed(out)
                failures[config].append(lost)
                print(f"rep {rep + 1}/{args.reps} {config:<8} {wall:7.1f} s, failed: {lost or 'none'}", flush=True)
    from edge_rl.table import print_table

    base = statistics.median(walls["loop"])
    rows, summary = [], {}
    for config in configs:
        wall = statistics.median(walls[config])
        per_hour = args.trials * 3600 / wall
        summary[config] = {
            "median_wall_s": round(wall, 2),
            "pipelines_per_hour": round(per_hour, 1),
            "walls": walls[config],
            "failed": failures[config],
        }
        rows.append([config, args.trials, wall, per_hour, base / wall])
    print()
    print_table(["runner", "pipelines", "median wall s", "pipelines/hour", "speed-up vs loop"], rows)
    doc = {"trials": args.trials, "reps": args.reps, "cpus": os.cpu_count(), "configs": summary}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sweep.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nwrote {RESULTS / 'sweep.json'}")


if __name__ == "__main__":
    main()
