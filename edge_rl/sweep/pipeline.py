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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_rl.atomic import write_atomic
from edge_rl.errors import BadInput
from edge_rl.policy import Policy
from edge_rl.sweep.spec import Pipeline, SweepSpec, Trial

EVAL_SEED = 2_000_000  # episodes no training run resets to (training evaluates from 1_000_000 + seed)
TARGET_FRACTION = 0.95  # sample efficiency: steps until the evaluation reaches 95 % of the optimal success rate
Progress = Callable[[int, float], None]  # (env step, score) after each of training's evaluations
Cli = Callable[[Sequence[str]], int]  # edge_rl.cli.main: argv -> exit code


class StepFailed(RuntimeError):
    """A CLI step exited with an error: deterministic, so the trial fails instead of being retried."""


def run_trial(spec: SweepSpec, trial: Trial, root: Path, cli: Cli, progress: Progress | None = None) -> dict[str, Any]:
    """Run (or finish) the trial's pipeline in `root`; return the result written to result.json."""
    root.mkdir(parents=True, exist_ok=True)
    done = root / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    write_atomic(root / "fingerprint", spec.fingerprint(trial))
    attempts = _count_attempt(root)
    t0 = time.perf_counter()
    steps = Steps(trial, spec.pipeline, spec.env_id, root)
    try:
        for command in steps.commands():
            steps.run(command, cli, spec.metric, progress)
        metrics = steps.metrics(spec.metric)
        result = result_doc(trial, spec.metric, "ok", metrics, steps.curve(spec.metric), attempts, error=None)
    except StepFailed as e:
        result = result_doc(trial, spec.metric, "failed", {}, {"step": [], "score": []}, attempts, error=str(e))
    result["metrics"]["pipeline_wall_s"] = round(time.perf_counter() - t0, 2)
    write_atomic(done, json.dumps(result, indent=1) + "\n")
    return result


def _count_attempt(root: Path) -> int:
    """Attempts so far, this one included: a retried trial (its worker died) says so in its result."""
    path = root / "attempts"
    n = int(path.read_text()) + 1 if path.exists() else 1
    write_atomic(path, str(n))
    write_atomic(root / "worker.pid", str(os.getpid()))
    with open(root / "commands.sh", "a", encoding="utf-8") as f:
        f.write(f"# attempt {n}: the steps it ran (finished steps are not repeated)\n")
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


@dataclass(frozen=True)
class Command:
    """One CLI step: its marker name, argv, output directory (emptied before a rerun) and captured stdout."""

    step: str
    argv: list[str]
    out: Path | None
    capture: Path | None = None


class Steps:
    """The step commands of one trial, their directories and their markers."""

    def __init__(self, trial: Trial, pipeline: Pipeline, env_id: str, root: Path) -> None:
        self.trial, self.pipeline, self.env_id, self.root = trial, pipeline, env_id, root
        self.markers = root / ".done"

    def dir(self, name: str) -> Path:
        return self.root / name

    @property
    def deployable(self) -> Path:
        """The policy the bundle ships: the int8 student, the student, or the teacher."""
        steps = self.pipeline.steps
        return self.dir("int8" if "quantize" in steps else "student" if "distill" in steps else "teacher")

    def commands(self) -> list[Command]:
        """Every step's command line, in order (no side effects: `edge-rl sweep` parses them before running)."""
        seed, teacher, student = str(self.trial.seed), self.dir("teacher"), self.dir("student")
        out: list[Command] = []
        for step in self.pipeline.steps:
            opts = _flags(step, self.pipeline.options.get(step, {}))
            if step == "train":
                argv = ["train", self.env_id, "--config", str(self.root / "train.toml"), "--seed", seed]
                argv += ["--env-kwargs", json.dumps(self.trial.env_kwargs), "--out", str(teacher), "--quiet"]
                out.append(Command(step, argv, teacher))
            elif step == "distill":
                argv = ["distill", str(teacher), "--out", str(student), "--seed", seed, "--quiet", *opts]
                out.append(Command(step, argv, student))
            elif step == "quantize":
                argv = ["quantize", str(student), "--to", "int8", "--out", str(self.dir("int8")), "--seed", seed]
                out.append(Command(step, [*argv, *opts], self.dir("int8")))
            elif step == "export":
                argv = ["export", str(self.deployable), "--out", str(self.dir("bundle")), "--seed", seed, *opts]
                out.append(Command(step, argv, self.dir("bundle")))
            else:
                opts = _flags(step, {"episodes": 20, "seed": EVAL_SEED, **self.pipeline.options.get(step, {})})
                policies = {"teacher": teacher} | ({"student": self.deployable} if self.pipeline.student else {})
                for who, policy in policies.items():
                    argv = ["eval", str(policy), "--json", *opts]
                    out.append(Command(f"eval-{who}", argv, None, capture=self.root / f"eval-{who}.json"))
        return out

    def run(self, command: Command, cli: Cli, metric: str, progress: Progress | None) -> None:
        """Run a step unless its marker says it finished; a step cut off before its marker starts from nothing."""
        marker = self.markers / command.step
        if marker.exists():
            return
        self.markers.mkdir(exist_ok=True)
        if command.out is not None and command.out.exists():
            shutil.rmtree(command.out)
        if command.step == "train":  # the trial's DQN settings, as `edge-rl train --config` reads them
            lines = [f"{k} = {json.dumps(v)}" for k, v in self.trial.train.items()]
            write_atomic(self.root / "train.toml", "[dqn]\n" + "".join(line + "\n" for line in lines))
        with open(self.root / "commands.sh", "a", encoding="utf-8") as f:
            f.write("edge-rl " + shlex.join(command.argv) + "\n")
        watch = command.out if command.step == "train" and progress is not None else None
        code, stdout = _call(cli, command.argv, self.root / "log.txt", watch, metric, progress)
        if code != 0:
            raise StepFailed(f"{command.step}: edge-rl {command.argv[0]} exited with {code} (see {self.root}/log.txt)")
        if command.capture is not None:
            try:
                json.loads(stdout)
            except json.JSONDecodeError:  # something else printed into the capture: not a result to keep
                raise StepFailed(
                    f"{command.step}: its output is not one JSON object (see {self.root}/log.txt)"
                ) from None
            write_atomic(command.capture, stdout)
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
        """95 % of the env's optimal success rate, or its reward threshold ("solved": 95 % of a negative
        threshold would be a harder bar, not an easier one)."""
        from edge_rl.gymenv import make_env

        env = make_env(self.env_id, self.trial.env_kwargs)
        try:
            if eval_key(metric) == "success_rate":
                best = getattr(env.unwrapped, "best_success_rate", None)  # AntiJam: a property
                return TARGET_FRACTION * float(best) if best is not None else None
            return getattr(env.spec, "reward_threshold", None)
        finally:
            env.close()


RESERVED = {"out", "seed", "quiet", "to", "json", "config", "env_kwargs"}  # set by the pipeline itself


def _flags(step: str, options: dict[str, Any]) -> list[str]:
    """{"hidden": [48, 48], "episodes": 20, "no-equalize": True} -> --hidden 48,48 --episodes 20 --no-equalize."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if key.replace("-", "_") in RESERVED and not (step == "eval" and key == "seed"):
            raise BadInput(f"pipeline.{step}.{key} is set by the sweep itself")
        if value is False:
            raise BadInput(f"pipeline.{step}.{key} = false: leave it out, or write no-{key} = true for a --no- flag")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            argv += [flag, ",".join(map(str, value))]
        elif isinstance(value, (int, float, str)):
            argv += [flag, str(value)]
        else:
            raise BadInput(f"pipeline.{step}.{key} = {value!r}: give a number, a string, true or a list of numbers")
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
                result["code"] = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
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
        entry = json.loads(line)
        value = entry.get(eval_key(metric))
        progress(int(entry["step"]), float(value) if value is not None else math.nan)
        seen += 1
    return seen
