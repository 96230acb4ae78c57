"""`edge-rl sweep`: train -> distill -> quantize -> export -> eval over seeds and a grid, on Ray Tune."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_rl.cli.common import positive_int


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run pipelines over seeds and a hyperparameter grid on Ray Tune (extra: scale)",
        description="Runs every trial of SWEEP.toml (group x task x seed; see docs/sweeps.md) as a pipeline of "
        "this CLI's own commands (train, distill, quantize, export, eval) on Ray Tune: a local Ray instance "
        "(no dashboard, usage stats off, 256 MB object store) unless --ray names a cluster. Each trial writes "
        "OUT/trials/<name>/ (result.json last, commands.sh to replay it by hand); the best bundle of each "
        "group and task is copied to OUT/best/<group>/<task>/. A trial whose worker dies is retried "
        "(max_failures), finishing the steps it had not finished; run the same command again after an "
        "interruption and only unfinished trials run. Then: edge-rl report OUT. Exit codes: 0 every trial "
        "ok; 1 some trial failed or was lost; 2 bad arguments or SWEEP.toml.",
    )
    p.add_argument("sweep", metavar="SWEEP.toml", type=Path, help="what to run (examples/sweeps/*.toml)")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="an existing Ray cluster, e.g. auto or ray://head:10001; OUT must be on storage every node "
        "shares (default: start a local Ray instance)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="trials at once, one CPU each (default: the CPUs of this machine, or of the cluster with --ray)",
    )
    p.add_argument("--out", type=Path, default=None, help="sweep directory (default: runs/sweep-<name>)")
    p.add_argument("--list", action="store_true", help="print the trials and whether each is done, run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os

    from edge_rl.sweep.runner import check_trials, pending, trial_dir
    from edge_rl.sweep.spec import load_spec
    from edge_rl.table import print_table

    spec = load_spec(args.sweep)
    check_trials(spec)
    out = args.out or Path("runs") / f"sweep-{spec.name}"
    if args.list:
        todo = {t.name for t in pending(spec, out)}
        rows = [[t.name, t.group, t.task, t.seed, "pending" if t.name in todo else "done"] for t in spec.trials]
        print_table(["trial", "group", "task", "seed", "state"], rows)
        print(f"{len(spec.trials)} trials, {len(todo)} pending, in {trial_dir(out, spec.trials[0]).parent}")
        return 0
    from tqdm import tqdm

    from edge_rl.sweep.runner import run_sweep

    workers = args.workers or (os.cpu_count() or 1 if args.ray is None else _cluster_cpus(args.ray))
    todo = pending(spec, out)
    bar = tqdm(total=len(spec.trials), initial=len(spec.trials) - len(todo), unit="trial", disable=args.quiet)
    bar.set_description(spec.name)

    def on_trial(result: dict) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{result['name']}: {result['status']}", refresh=True)

    try:
        from edge_rl.cli import main

        results = run_sweep(spec, out, cli=main, address=args.ray, workers=workers, on_trial=on_trial)
    finally:
        bar.close()
    _print_summary(results, spec.metric)
    print(f"results in {out}; statistics: edge-rl report {out}")
    return 0 if all(r["status"] in ("ok", "pruned") for r in results) else 1


def _cluster_cpus(address: str) -> int:
    """Trials at once on a cluster: its CPUs (connecting twice costs a second, not a guess)."""
    import ray

    ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    finally:
        ray.shutdown()


def _print_summary(results: list[dict], metric: str) -> None:
    import math
    import statistics

    from edge_rl.table import print_table

    rows = []
    for group in dict.fromkeys(r["group"] for r in results):
        mine = [r for r in results if r["group"] == group]
        scores = [r["score"] for r in mine if r["status"] == "ok" and r.get("score") is not None]
        scores = [s for s in scores if math.isfinite(s)]
        counts = {s: sum(r["status"] == s for r in mine) for s in ("ok", "failed", "pruned", "missing")}
        median = statistics.median(scores) if scores else "-"
        retried = sum(r.get("attempts", 1) > 1 for r in mine)
        rows.append([group, *counts.values(), retried, median, max(scores) if scores else "-"])
    print_table(["group", "ok", "failed", "pruned", "missing", "retried", f"median {metric}", "best"], rows)
