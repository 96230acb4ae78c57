"""One trial's pipeline: train -> distill -> quantize -> export -> eval, each step the CLI's own command.

A trial is what a user would type by hand: every step is the CLI's `main([...])` (passed in as
`cli`, so this package does not import the CLI that imports it), and
`commands.sh` in the trial directory replays it. Steps are idempotent: a finished step leaves a
marker, and a step that was cut off (a killed worker, a power cut) is started again from an
empty directory. `result.json` is written last and atomically, so it exists only for a trial
that is complete.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_rl.atomic import write_atomic
from edge_rl.policy import Policy
from edge_rl.sweep.spec import Pipeline, Trial

EVAL_SEED = 2_000_000  # episodes no training run resets to (training evaluates from 1_000_000 + seed)
TARGET_FRACTION = 0.95  # sample efficiency: steps until the evaluation reaches 95 % of the task's best
Progress = Callable[[int, float], None]  # (env step, score) after each of training's evaluations
Cli = Callable[[Sequence[str]], int]  # edge_rl.cli.main: argv -> exit code


class StepFailed(RuntimeError):
    """A CLI step exited with an error: deterministic, so the trial fails instead of being retried."""


def run_trial(
    trial: Trial, pipeline: Pipeline, env_id: str, metric: str, root: Path, cli: Cli, progress: Progress | None = None
) -> dict[str, Any]:
    """Run (or finish) the trial's pipeline in `root`; return the result written to result.json."""
    root.mkdir(parents=True, exist_ok=True)
    done = root / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    attempts = _count_attempt(root)
    t0 = time.perf_counter()
    steps = _Steps(trial, pipeline, env_id, root, cli)
    try:
        steps.run_all(metric, progress)
        metrics = steps.metrics(metric)
        result = result_doc(trial, metric, "ok", metrics, steps.curve(metric), attempts, error=None)
    except StepFailed as e:
        result = result_doc(trial, metric, "failed", {}, {"step": [], "score": []}, attempts, error=str(e))
    result["metrics"]["pipeline_wall_s"] = round(time.perf_counter() - t0, 2)
    write_atomic(done, json.dumps(result, indent=1) + "\n")
    return result


def _count_attempt(root: Path) -> int:
    """Attempts so far, this one included: a retried trial (its worker died) says so in its result."""
    path = root / "attempts"
    n = int(path.read_text()) + 1 if path.exists() else 1
    write_atomic(path, str(n))
    write_atomic(root / "worker.pid", str(os.getpid()))
    return n


def result_doc(trial: Trial, metric: str, status: str, metrics: dict, curve: dict, attempts: int, error: str | None):
    score = metrics.get(metric)
    return {
        "name": trial.name,
        "group": trial.group,
        "task": trial.task,
        "seed": trial.seed,
        "status": status,
        "score": score,
        "metric": metric,
        "metrics": metrics,
        "curve": curve,
        "params": {"train": trial.train, "env_kwargs": trial.env_kwargs},
        "attempts": attempts,
        "error": error,
    }


class _Steps:
    """The step commands of one trial, their directories and their markers."""

    def __init__(self, trial: Trial, pipeline: Pipeline, env_id: str, root: Path, cli: Cli) -> None:
        self.trial, self.pipeline, self.env_id, self.root, self.cli = trial, pipeline, env_id, root, cli
        self.markers = root / ".done"
        self.markers.mkdir(exist_ok=True)

    def dir(self, name: str) -> Path:
        return self.root / name

    @property
    def deployable(self) -> Path:
        """The policy the bundle ships: the int8 student, the student, or the teacher."""
        steps = self.pipeline.steps
        return self.dir("int8" if "quantize" in steps else "student" if "distill" in steps else "teacher")

    def run_all(self, metric: str, progress: Progress | None) -> None:
        seed = str(self.trial.seed)
        for step in self.pipeline.steps:
            opts = dict(self.pipeline.options.get(step, {}))
            if step == "train":
                self._run("train", self._train_argv(), self.dir("teacher"), metric, progress)
            elif step == "distill":
                argv = ["distill", str(self.dir("teacher")), "--out", str(self.dir("student")), "--seed", seed]
                self._run(step, [*argv, "--quiet", *_flags(opts)], self.dir("student"))
            elif step == "quantize":
                argv = ["quantize", str(self.dir("student")), "--to", "int8", "--out", str(self.dir("int8"))]
                self._run(step, [*argv, "--seed", seed, *_flags(opts)], self.dir("int8"))
            elif step == "export":
                argv = ["export", str(self.deployable), "--out", str(self.dir("bundle")), "--seed", seed]
                self._run(step, [*argv, *_flags(opts)], self.dir("bundle"))
            else:
                self._eval(opts)

    def _train_argv(self) -> list[str]:
        t = self.trial
        lines = [f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in t.train.items()]
        write_atomic(self.root / "train.toml", "[dqn]\n" + "".join(line + "\n" for line in lines))
        argv = ["train", self.env_id, "--config", str(self.root / "train.toml"), "--seed", str(t.seed)]
        return [*argv, "--env-kwargs", json.dumps(t.env_kwargs), "--out", str(self.dir("teacher")), "--quiet"]

    def _eval(self, opts: dict[str, Any]) -> None:
        opts = {"episodes": 20, "seed": EVAL_SEED, **opts}
        policies = {"teacher": self.dir("teacher")}
        if self.pipeline.student:
            policies["student"] = self.deployable
        for who, policy in policies.items():
            out = self.root / f"eval-{who}.json"
            self._run(f"eval-{who}", ["eval", str(policy), "--json", *_flags(opts)], None, capture=out)

    def _run(
        self,
        step: str,
        argv: list[str],
        out: Path | None,
        metric: str | None = None,
        progress: Progress | None = None,
        capture: Path | None = None,
    ) -> None:
        marker = self.markers / step
        if marker.exists():
            return
        if out is not None and out.exists():
            shutil.rmtree(out)  # a step cut off before its marker starts again from nothing
        with open(self.root / "commands.sh", "a", encoding="utf-8") as f:
            f.write("edge-rl " + shlex.join(argv) + "\n")
        code, stdout = _call(self.cli, argv, self.root / "log.txt", out, metric, progress)
        if code != 0:
            raise StepFailed(f"{step}: edge-rl {argv[0]} exited with {code} (see {self.root / 'log.txt'})")
        if capture is not None:
            write_atomic(capture, stdout)
        write_atomic(marker, "")

    def metrics(self, metric: str) -> dict[str, Any]:
        """Scores of the teacher and the deployed student, and the student's size."""
        out: dict[str, Any] = {}
        for who in ("teacher", "student"):
            path = self.root / f"eval-{who}.json"
            if path.exists():
                ev = json.loads(path.read_text())
                out[f"{who}_return"] = ev["mean_return"]
                out[f"{who}_success"] = ev.get("success_rate")
        train = json.loads((self.dir("teacher") / "train.json").read_text())
        out["train_steps"] = train["steps"]
        out["train_wall_s"] = train["wall_seconds"]
        out["teacher_params"] = Policy.load(self.dir("teacher")).n_params
        manifest = self.dir("bundle") / "manifest.json"
        if manifest.exists():
            card = json.loads(manifest.read_text())["card"]
            out |= {"params": card["params"], "macs": card["macs"], "deployed_bytes": card["weight_bytes"]}
        curve = self.curve(metric)
        target = self._target(metric)
        out["target"] = target
        reached = [s for s, v in zip(curve["step"], curve["score"], strict=True) if target is not None and v >= target]
        out["steps_to_target"] = reached[0] if reached else None
        return out

    def curve(self, metric: str) -> dict[str, list]:
        return read_curve(self.dir("teacher") / "evaluations.jsonl", metric)

    def _target(self, metric: str) -> float | None:
        """95 % of the best the task allows: the env's optimal success rate, or its reward threshold."""
        from edge_rl.gymenv import make_env

        env = make_env(self.env_id, self.trial.env_kwargs)
        try:
            if eval_key(metric) == "success_rate":
                best = getattr(env.unwrapped, "best_success_rate", None)  # AntiJam: a property
                return TARGET_FRACTION * float(best) if best is not None else None
            threshold = getattr(env.spec, "reward_threshold", None)
            return TARGET_FRACTION * threshold if threshold is not None else None
        finally:
            env.close()


def _flags(options: dict[str, Any]) -> list[str]:
    """{"hidden": [48, 48], "episodes": 20, "stream": True} -> --hidden 48,48 --episodes 20 --stream."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif isinstance(value, list):
            argv += [flag, ",".join(map(str, value))]
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    return argv


_STDIO = threading.Lock()  # redirect_stdout is process-wide: one step of this process at a time


def _call(
    cli: Cli, argv: list[str], log: Path, out: Path | None, metric: str | None, progress: Progress | None
) -> tuple[int, str]:
    """Run `edge-rl ARGV` in this process with its output in the log; report training's evaluations live."""
    result: dict[str, Any] = {}

    def call() -> None:
        import io

        buffer = io.StringIO()
        with _STDIO, open(log, "a", encoding="utf-8") as f, contextlib.redirect_stderr(f):
            f.write(f"$ edge-rl {shlex.join(argv)}\n")
            f.flush()
            t0 = time.perf_counter()
            try:
                with contextlib.redirect_stdout(buffer):
                    result["code"] = cli(argv)
            except SystemExit as e:  # argparse rejected an option: its one line is in the log
                result["code"] = e.code if isinstance(e.code, int) else 1
            finally:
                f.write(buffer.getvalue() + f"({time.perf_counter() - t0:.2f} s)\n")
        result["stdout"] = buffer.getvalue()

    if progress is None or out is None:
        call()
    else:  # training runs beside a poller that forwards each new evaluation (the scheduler may stop the trial)
        worker = threading.Thread(target=call, name="edge-rl-train", daemon=True)
        worker.start()
        seen = 0
        while worker.is_alive():
            worker.join(0.5)
            seen = _forward(out / "evaluations.jsonl", seen, metric or "", progress)
    if "code" not in result:
        raise RuntimeError(f"edge-rl {argv[0]} did not finish")  # its exception went to stderr: let Tune retry
    return result["code"], result["stdout"]


def eval_key(metric: str) -> str:
    """The evaluation field a metric is measured in."""
    return "success_rate" if metric.endswith("success") else "mean_return"


def _complete_lines(path: Path) -> list[str]:
    """Lines of a log that is being appended to; a half-written (or cut-off) last line is left out."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return lines[:-1] if lines and not lines[-1].endswith("\n") else lines


def read_curve(path: Path, metric: str) -> dict[str, list]:
    """Training's greedy evaluations (evaluations.jsonl) in the metric's unit: return or success rate."""
    entries = [json.loads(line) for line in _complete_lines(path)]
    entries = [e for e in entries if e.get(eval_key(metric)) is not None]
    return {"step": [e["step"] for e in entries], "score": [e[eval_key(metric)] for e in entries]}


def _forward(path: Path, seen: int, metric: str, progress: Progress) -> int:
    """Report the evaluations after the first `seen` lines."""
    for line in _complete_lines(path)[seen:]:
        value = json.loads(line).get(eval_key(metric))
        progress(int(json.loads(line)["step"]), float(value) if value is not None else math.nan)
        seen += 1
    return seen
