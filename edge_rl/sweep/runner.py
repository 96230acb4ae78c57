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


def pending(spec: SweepSpec, out: Path, retry_failed: bool = False) -> list[Trial]:
    """Trials without a result: a finished one (ok, failed or pruned) is not run again, unless it failed
    and `retry_failed` (its finished steps are still not repeated)."""
    todo = []
    for trial in spec.trials:
        result = trial_dir(out, trial) / "result.json"
        if retry_failed and result.exists() and json.loads(result.read_text())["status"] == "failed":
            result.unlink()
        if not result.exists():
            todo.append(trial)
    return todo


def check_trials(spec: SweepSpec, out: Path) -> None:
    """Everything that can be checked before a trial runs, so a typo fails the sweep and not trial 37:
    DQN settings (names, types, values), each task's environment, and that a resumed sweep's finished
    trials were run with the settings they have now."""
    from edge_rl.gymenv import make_env
    from edge_rl.train.config import resolve_config

    for trial in spec.trials:
        _check_types(trial)
        try:
            resolve_config(spec.env_id, None, **trial.train, seed=trial.seed, env_kwargs=trial.env_kwargs)
        except (TypeError, ValueError) as e:
            raise BadInput(f"group {trial.group}: {e}") from None
        fingerprint = trial_dir(out, trial) / "fingerprint"
        if fingerprint.exists() and fingerprint.read_text() != spec.fingerprint(trial):
            what = f"{out}: trial {trial.name} was run with other settings"
            raise BadInput(f"{what}; use another --out or delete {fingerprint.parent}")
    for task, kwargs in {t.task: t.env_kwargs for t in spec.trials}.items():
        try:
            env = make_env(spec.env_id, kwargs)
        except BadInput as e:
            raise BadInput(f"task {task}: {e}") from None
        try:
            env.reset(seed=0)
            _, _, _, _, info = env.step(env.action_space.sample())
        finally:
            env.close()
        if spec.metric.endswith("success") and "success" not in info:
            raise BadInput(f"metric {spec.metric}: {spec.env_id} reports no success; use a *_return metric")


def _check_types(trial: Trial) -> None:
    """DQN settings of the right kind: "64" for hidden or "0.001" for lr would otherwise fail deep inside."""
    from dataclasses import fields

    from edge_rl.train.config import DQNConfig

    defaults = {f.name: f.default for f in fields(DQNConfig)}
    for key, value in trial.train.items():
        if key not in defaults:
            raise BadInput(f"group {trial.group}: unknown DQN setting {key!r} (see edge-rl train --help)")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, tuple):
            ok = isinstance(value, list) and all(type(v) is int for v in value)
        elif isinstance(default, int):
            ok = type(value) is int
        elif isinstance(default, float) or default is None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            kind = "a list of integers" if isinstance(default, tuple) else type(default).__name__
            raise BadInput(f"group {trial.group}: {key} = {value!r} must be {kind}")


def init_ray(address: str | None, workers: int | None) -> None:
    """A local Ray instance (no dashboard, usage stats off, a small object store) or the cluster at `address`."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    quiet = {"log_to_driver": False, "configure_logging": False}
    try:
        if address is None:
            ray.init(num_cpus=workers, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise BadInput(f"cannot start or reach Ray{f' at {address}' if address else ''}: {e}") from None


class Lock:
    """One sweep per directory: two would run the same pending trials into the same directories."""

    def __init__(self, out: Path) -> None:
        import fcntl

        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / ".lock", "a+")  # held open for the sweep's lifetime: the lock goes with it
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise BadInput(f"{out} is in use by another edge-rl sweep (pid {holder})") from None
        self.file.truncate(0)
        self.file.write(str(os.getpid()))
        self.file.flush()

    def release(self) -> None:
        self.file.close()


def run_sweep(
    spec: SweepSpec,
    out: Path,
    *,
    cli: Cli,
    address: str | None,
    workers: int,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run what is pending (after `check_trials`, under a `Lock`), then write sweep.json and the best bundles."""
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
    import ray
    from ray import tune
    from ray.tune import PlacementGroupFactory
    from ray.tune.schedulers import ASHAScheduler

    init_ray(address, workers)
    try:
        asha = spec.search == "asha"

        def cpus(config: dict[str, Any]) -> Any:  # a trial with threads = 4 takes four of the CPUs
            return PlacementGroupFactory([{"CPU": config["trial"]["train"].get("threads", 1)}])

        trainable = tune.with_resources(_trainable(spec, out.resolve(), asha, cli), cpus)
        scheduler = ASHAScheduler(max_t=10_000, **spec.asha) if asha else None
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.to_dict() for t in todo])},
            tune_config=tune.TuneConfig(  # the metric is ASHA's; grid and random only schedule
                metric="score" if asha else None,
                mode="max" if asha else None,
                scheduler=scheduler,
                max_concurrent_trials=workers,
                reuse_actors=not asha,  # a pruned trial's training thread must die with its actor
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
    """The function Tune runs per trial. ASHA ranks training's evaluations (`score`), the teacher's on one
    task; the pipeline's own score (perhaps the student's) is reported apart, as `final`."""

    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        trial = Trial.from_dict(config["trial"])
        last = [math.nan]

        def progress(step: int, score: float) -> None:
            last[0] = score
            tune.report({"score": score, "env_step": step})

        result = run_trial(spec, trial, trial_dir(out, trial), cli, progress if asha else None)
        final = result["score"] if result["score"] is not None else math.nan
        score = last[0] if asha else final
        tune.report({"score": score, "final": final, "trial_status": result["status"]})  # Tune owns "done"

    return trainable


def _gather(out: Path, spec: SweepSpec, on_trial: Callable[[dict[str, Any]], None] | None) -> Any:
    """Driver-side Tune callback: records the trials that could not record themselves, reports progress."""
    from ray.tune import Callback

    class Gather(Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if "trial_status" in (trial.last_result or {}):  # it finished: its result.json should be here
                lost = f"finished on its node, but {trial_dir(out, Trial.from_dict(trial.config['trial']))} is not"
                self._record(trial, "failed", lost + " here: OUT must be on storage every node shares")
            else:
                self._record(trial, "pruned", None)  # ASHA stopped it

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._record(trial, "failed", f"gave up after {spec.max_failures + 1} attempts (see {trial.path})")

        def _record(self, tune_trial: Any, status: str, error: str | None) -> None:
            trial = Trial.from_dict(tune_trial.config["trial"])
            root = trial_dir(out, trial)
            path = root / "result.json"
            if not path.exists():  # ASHA stopped it, every attempt died, or its result is on another node
                root.mkdir(parents=True, exist_ok=True)
                attempts = int((root / "attempts").read_text()) if (root / "attempts").exists() else 0
                curve = read_curve(root / "teacher" / "evaluations.jsonl", spec.metric)
                doc = result_doc(trial, spec.metric, status, {}, curve, attempts, error)
                write_atomic(path, json.dumps(doc, indent=1) + "\n")
            if on_trial is not None:
                on_trial(json.loads(path.read_text()))

    return Gather()
