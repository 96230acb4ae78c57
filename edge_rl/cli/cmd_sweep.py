"""`edge-rl sweep`: train -> distill -> quantize -> export -> eval over seeds and a grid, on Ray Tune."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from edge_rl.cli.common import positive_int

if TYPE_CHECKING:
    from edge_rl.sweep.spec import SweepSpec


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
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="run failed trials again (their finished steps are kept) (default: a finished trial is final)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os

    from edge_rl.sweep.runner import Lock, check_trials, pending, trial_dir
    from edge_rl.sweep.spec import load_spec
    from edge_rl.table import print_table

    spec = load_spec(args.sweep)
    out = args.out or Path("runs") / f"sweep-{spec.name}"
    check_trials(spec, out)
    check_commands(spec, out)
    if args.list:
        todo = {t.name for t in pending(spec, out)}
        rows = [[t.name, t.group, t.task, t.seed, "pending" if t.name in todo else "done"] for t in spec.trials]
        print_table(["trial", "group", "task", "seed", "state"], rows)
        print(f"{len(spec.trials)} trials, {len(todo)} pending, in {trial_dir(out, spec.trials[0]).parent}")
        return 0
    from tqdm import tqdm

    from edge_rl.cli import main
    from edge_rl.sweep.runner import run_sweep

    lock = Lock(out)
    try:
        workers = args.workers or (os.cpu_count() or 1 if args.ray is None else _cluster_cpus(args.ray))
        todo = pending(spec, out, retry_failed=args.retry_failed)
        bar = tqdm(total=len(spec.trials), initial=len(spec.trials) - len(todo), unit="trial", disable=args.quiet)
        bar.set_description(spec.name)

        def on_trial(result: dict) -> None:
            bar.update(1)
            bar.set_postfix_str(f"{result['name']}: {result['status']}", refresh=True)

        try:
            results = run_sweep(spec, out, cli=main, address=args.ray, workers=workers, on_trial=on_trial)
        finally:
            bar.close()
    finally:
        lock.release()
    _print_summary(results, spec.metric)
    print(f"results in {out}; statistics: edge-rl report {out}")
    return 0 if all(r["status"] in ("ok", "pruned") for r in results) else 1


def check_commands(spec: SweepSpec, out: Path) -> None:
    """Parse every step's command line of every group and task as the CLI will: an option the step does
    not know fails the sweep now, with the CLI's own one-line message, not after every teacher trained."""
    import contextlib
    import io

    from edge_rl.cli import build_parser
    from edge_rl.errors import BadInput
    from edge_rl.sweep.pipeline import Steps
    from edge_rl.sweep.runner import trial_dir

    parser = build_parser()
    for trial in {(t.group, t.task): t for t in spec.trials}.values():
        for command in Steps(trial, spec.pipeline, spec.env_id, trial_dir(out, trial)).commands():
            stderr = io.StringIO()
            try:
                with contextlib.redirect_stderr(stderr):
                    parser.parse_args(command.argv)
            except SystemExit:
                message = stderr.getvalue().strip().splitlines()[-1:] or ["rejected"]
                raise BadInput(f"pipeline.{command.step}: {message[0]}") from None


def _cluster_cpus(address: str) -> int:
    """Trials at once on a cluster: its CPUs (connecting twice costs a second, not a guess)."""
    import ray

    from edge_rl.sweep.runner import init_ray

    init_ray(address, None)
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
