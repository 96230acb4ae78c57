"""Run a sweep's pending trials on Ray Tune, then gather results and keep the best bundles.

Ray schedules, retries and (with ASHA) prunes; everything a trial produces is written by the
trial itself into `OUT/trials/<name>/`, so the sweep directory, not Ray's state, is the record.
A rerun submits only trials without a `result.json`: that is how a killed sweep resumes, on
this machine or on a cluster, and why a retried trial cannot clobber a finished one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_rl.atomic import write_atomic
from edge_rl.errors import BadInput
from edge_rl.sweep.pipeline import Cli, read_curve, result_doc, run_trial
from edge_rl.sweep.spec import SweepSpec, Trial

OBJECT_STORE_BYTES = 256 * 1024**2  # the sweep passes file paths, not arrays: Ray's default (30 % of RAM) is waste


def trial_dir(out: Path, trial: Trial) -> Path:
    return out / "trials" / trial.name


def pending(spec: SweepSpec, out: Path) -> list[Trial]:
    """Trials without a result: a finished one (ok, failed or pruned) is never run again."""
    return [t for t in spec.trials if not (trial_dir(out, t) / "result.json").exists()]


def check_trials(spec: SweepSpec) -> None:
    """Resolve every trial's DQN settings now (pure Python): a typo fails the sweep, not trial 37."""
    from edge_rl.train.config import resolve_config

    for trial in spec.trials:
        try:
            resolve_config(spec.env_id, None, **trial.train, seed=trial.seed, env_kwargs=trial.env_kwargs)
        except (TypeError, ValueError) as e:
            raise BadInput(f"group {trial.group}: {e}") from None


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    cli: Cli,
    address: str | None,
    workers: int,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run what is pending (after `check_trials`), then write sweep.json and the best bundles; return all results."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "sweep.toml", spec.source)
    todo = pending(spec, out)
    if todo:
        _tune(spec, todo, out, cli, address, workers, on_trial)
    results = [_read(out, t) for t in spec.trials]
    best = keep_best(out, results)
    summary = spec.to_dict() | {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "best": best}
    summary["status"] = {s: sum(r["status"] == s for r in results) for s in ("ok", "failed", "pruned", "missing")}
    write_atomic(out / "sweep.json", json.dumps(summary, indent=1) + "\n")
    return results


def _read(out: Path, trial: Trial) -> dict[str, Any]:
    path = trial_dir(out, trial) / "result.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {"name": trial.name, "group": trial.group, "task": trial.task, "seed": trial.seed, "status": "missing"}


def keep_best(out: Path, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copy the best bundle of each (group, task) to OUT/best/<group>/<task>/; ties go to the lower seed."""
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        if r["status"] != "ok" or r.get("score") is None or not math.isfinite(r["score"]):
            continue
        if not (trial_dir(out, _trial_of(r)) / "bundle").is_dir():
            continue
        key = (r["group"], r["task"])
        if key not in chosen or (r["score"], -r["seed"]) > (chosen[key]["score"], -chosen[key]["seed"]):
            chosen[key] = r
    index = []
    for (group, task), r in sorted(chosen.items()):
        dest = out / "best" / group / task
        tmp = dest.with_name(f".{task}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(trial_dir(out, _trial_of(r)) / "bundle", tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        index.append({"group": group, "task": task, "trial": r["name"], "score": r["score"], "bundle": str(dest)})
    write_atomic(out / "best.json", json.dumps(index, indent=1) + "\n")
    return index


def _trial_of(result: dict[str, Any]) -> Trial:
    return Trial(result["name"], result["group"], result["task"], result["seed"], {}, {})


def _tune(
    spec: SweepSpec,
    todo: list[Trial],
    out: Path,
    cli: Cli,
    address: str | None,
    workers: int,
    on_trial: Callable[[dict[str, Any]], None] | None,
) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    if address is None:
        ray.init(
            num_cpus=workers,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        asha = spec.search == "asha"
        trainable = tune.with_resources(_trainable(spec, out.resolve(), asha, cli), {"cpu": 1})
        scheduler = ASHAScheduler(max_t=10_000, **spec.asha) if asha else None
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.to_dict() for t in todo])},
            tune_config=tune.TuneConfig(
                metric="score", mode="max", scheduler=scheduler, max_concurrent_trials=workers, reuse_actors=False
            ),
            run_config=tune.RunConfig(
                name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str((out / "ray").resolve()),
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                verbose=0,
                callbacks=[_gather(out, spec, on_trial)],
            ),
        )
        tuner.fit()
    finally:
        ray.shutdown()


def _trainable(spec: SweepSpec, out: Path, asha: bool, cli: Cli) -> Callable[[dict[str, Any]], None]:
    """The function Tune runs per trial; ASHA sees every evaluation of training, others the final score."""
    pipeline, env_id, metric = spec.pipeline, spec.env_id, spec.metric

    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        trial = Trial.from_dict(config["trial"])

        def progress(step: int, score: float) -> None:
            tune.report({"score": score, "env_step": step})

        result = run_trial(trial, pipeline, env_id, metric, trial_dir(out, trial), cli, progress if asha else None)
        score = result["score"]
        tune.report({"score": score if score is not None else math.nan, "status": result["status"], "done": True})

    return trainable


def _gather(out: Path, spec: SweepSpec, on_trial: Callable[[dict[str, Any]], None] | None) -> Any:
    """Driver-side Tune callback: records the trials that could not record themselves, reports progress."""
    from ray.tune import Callback

    class Gather(Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._record(trial, "pruned", None)  # a trial that finished has its result.json already

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._record(trial, "failed", f"gave up after {spec.max_failures + 1} attempts (see {trial.path})")

        def _record(self, tune_trial: Any, status: str, error: str | None) -> None:
            trial = Trial.from_dict(tune_trial.config["trial"])
            root = trial_dir(out, trial)
            path = root / "result.json"
            if not path.exists():  # the pipeline did not finish: ASHA stopped it, or every attempt died
                root.mkdir(parents=True, exist_ok=True)
                attempts = int((root / "attempts").read_text()) if (root / "attempts").exists() else 0
                curve = read_curve(root / "teacher" / "evaluations.jsonl", spec.metric)
                doc = result_doc(trial, spec.metric, status, {}, curve, attempts, error)
                write_atomic(path, json.dumps(doc, indent=1) + "\n")
            if on_trial is not None:
                on_trial(json.loads(path.read_text()))

    return Gather()
