"""SWEEP.toml: which pipelines a sweep runs, as a fixed, named list of trials.

A trial is one (group, task, seed): a group is a point of the hyperparameter grid (or a named
variant), a task a stratum the statistics keep apart (an env or a jammer kind), the seed the
repetition. The list is a pure function of the file, so an interrupted sweep finds its finished
trials again by name and a second run never repeats them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_rl.errors import BadInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SEARCHES = ("grid", "random", "asha")
STEPS = ("train", "distill", "quantize", "export", "eval")
METRICS = ("teacher_return", "teacher_success", "student_return", "student_success")
TOP_KEYS = {"name", "env_id", "seeds", "search", "samples", "metric", "max_failures", "train", "grid", "groups"}
TOP_KEYS |= {"tasks", "pipeline", "asha"}
PIPELINE_KEYS = {"steps", "distill", "quantize", "export", "eval"}
ASHA_KEYS = {"grace_period", "reduction_factor"}
MAX_TRIALS = 100_000  # a typo such as seeds = 10**9 is refused, not expanded


@dataclass(frozen=True)
class Trial:
    """One pipeline run: its DQN overrides, env kwargs and seed, under a name that is also its directory."""

    name: str
    group: str
    task: str
    seed: int
    train: dict[str, Any]
    env_kwargs: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("name", "group", "task", "seed", "train", "env_kwargs")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        return cls(**d)


@dataclass(frozen=True)
class Pipeline:
    """Which CLI steps run, with the options each gets (CLI option names, without dashes)."""

    steps: tuple[str, ...] = STEPS
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "train" not in self.steps:
            raise BadInput("pipeline.steps must start with train")
        if list(self.steps) != [s for s in STEPS if s in self.steps]:
            raise BadInput(f"pipeline.steps {list(self.steps)}: give a subset of {list(STEPS)} in that order")
        if "quantize" in self.steps and "distill" not in self.steps:
            raise BadInput("pipeline: quantize needs distill (it quantizes the fp32 student)")
        if "quantize" in self.steps and self.options.get("distill", {}).get("quant", "none") != "none":
            raise BadInput("pipeline: quantize takes an fp32 student; drop quantize or set distill.quant = 'none'")

    @property
    def student(self) -> bool:
        return "distill" in self.steps


@dataclass(frozen=True)
class SweepSpec:
    name: str
    env_id: str
    search: str
    metric: str
    max_failures: int
    pipeline: Pipeline
    trials: tuple[Trial, ...]
    asha: dict[str, int]
    source: str  # the TOML text, copied into the sweep directory

    def fingerprint(self, trial: Trial) -> str:
        """What a trial's results depend on: a resumed sweep refuses a trial run with other settings."""
        what = [self.env_id, self.metric, trial.train, trial.env_kwargs, self.pipeline.steps, self.pipeline.options]
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "env_id": self.env_id,
            "search": self.search,
            "metric": self.metric,
            "max_failures": self.max_failures,
            "pipeline": {"steps": list(self.pipeline.steps), "options": self.pipeline.options},
            "asha": self.asha,
            "trials": [t.name for t in self.trials],
        }


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check SWEEP.toml; every mistake is one line naming the key."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
        doc = tomllib.loads(source)
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: not valid TOML: {e}") from None
    try:
        return parse_spec(doc, source)
    except BadInput as e:
        raise BadInput(f"{path}: {e}") from None


def parse_spec(doc: dict[str, Any], source: str = "") -> SweepSpec:
    unknown = sorted(set(doc) - TOP_KEYS)
    if unknown:
        raise BadInput(f"unknown key(s) {', '.join(unknown)} (expected {', '.join(sorted(TOP_KEYS))})")
    env_id = _typed(doc, "env_id", str, None)
    if env_id is None:
        raise BadInput("env_id is required, e.g. env_id = 'CartPole-v1'")
    name = _typed(doc, "name", str, Path(env_id).name.lower())
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise BadInput(f"name {name!r}: use letters, digits, '_', '.', '-'")
    search = _typed(doc, "search", str, "grid")
    if search not in SEARCHES:
        raise BadInput(f"search {search!r}: expected one of {', '.join(SEARCHES)}")
    metric = _typed(doc, "metric", str, None)
    max_failures = _typed(doc, "max_failures", int, 2)
    if max_failures < 0:
        raise BadInput("max_failures must be >= 0")
    pipeline = _pipeline(_table(doc, "pipeline"))
    metric = metric or ("student_return" if pipeline.student else "teacher_return")
    if metric not in METRICS or (metric.startswith("student") and not pipeline.student):
        allowed = [m for m in METRICS if pipeline.student or m.startswith("teacher")]
        raise BadInput(f"metric {metric!r}: expected one of {', '.join(allowed)}")
    groups = _groups(doc)
    if search != "grid":
        samples = _typed(doc, "samples", int, len(groups))
        if not 1 <= samples <= len(groups):
            raise BadInput(f"samples = {samples}: draw 1 to {len(groups)} of the grid's points")
        picked = sorted(random.Random(name).sample(range(len(groups)), samples))  # seeded by the name: resumable
        groups = [groups[i] for i in picked]
    elif "samples" in doc:
        raise BadInput("samples is for search = 'random' or 'asha'")
    tasks = _tasks(doc, env_id)
    trials = _trials(groups, tasks, _seeds(doc), _table(doc, "train"))
    return SweepSpec(
        name, env_id, search, metric, max_failures, pipeline, tuple(trials), _asha(doc, len(tasks)), source
    )


def _asha(doc: dict[str, Any], tasks: int) -> dict[str, int]:
    """ASHA's cut points; it ranks every trial against every other, so only trials of one task."""
    table = _table(doc, "asha")
    if doc.get("search", "grid") != "asha":
        if table:
            raise BadInput("[asha] is for search = 'asha'")
        return {}
    if tasks > 1:
        raise BadInput("search = 'asha' ranks trials against each other: give one task (or use grid or random)")
    if sorted(set(table) - ASHA_KEYS):
        raise BadInput(f"asha: unknown key(s) {', '.join(sorted(set(table) - ASHA_KEYS))}")
    grace, factor = _typed(table, "grace_period", int, 1), _typed(table, "reduction_factor", int, 2)
    if grace < 1 or factor < 2:
        raise BadInput("asha: grace_period >= 1 evaluations and reduction_factor >= 2")
    return {"grace_period": grace, "reduction_factor": factor}


def _typed(doc: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = doc.get(key, default)
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is int)):
        raise BadInput(f"{key} must be a {kind.__name__}, got {value!r}")
    return value


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise BadInput(f"[{key}] must be a table")
    return value


def _pipeline(table: dict[str, Any]) -> Pipeline:
    unknown = sorted(set(table) - PIPELINE_KEYS)
    if unknown:
        raise BadInput(f"pipeline: unknown key(s) {', '.join(unknown)}")
    steps = table.get("steps", list(STEPS))
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise BadInput("pipeline.steps must be a list of step names")
    options = {k: v for k, v in table.items() if k != "steps"}
    for step, opts in options.items():
        if not isinstance(opts, dict):
            raise BadInput(f"[pipeline.{step}] must be a table of {step} options")
    return Pipeline(tuple(steps), options)


def _groups(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Named variants, or every combination of the grid, or one default group."""
    grid, named = _table(doc, "grid"), _table(doc, "groups")
    if grid and named:
        raise BadInput("give [grid] or [groups], not both")
    if named:
        for group, overrides in named.items():
            if not isinstance(overrides, dict):
                raise BadInput(f"[groups.{group}] must be a table of DQN settings")
            _check_name(group, "group")
        return list(named.items())
    if not grid:
        return [("default", {})]
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise BadInput(f"grid.{key} must be a non-empty list of values")
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    return [(_point_name(p), p) for p in points]


def _point_name(point: dict[str, Any]) -> str:
    def text(v: Any) -> str:
        return "x".join(map(str, v)) if isinstance(v, list) else str(v)

    return ",".join(f"{k}={text(v)}" for k, v in point.items())


def _check_name(name: str, what: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.=,x+-]*", name) or "__" in name:
        raise BadInput(f"{what} name {name!r}: use letters, digits and _ . = , + - (and no '__': it joins names)")


def _tasks(doc: dict[str, Any], env_id: str) -> list[tuple[str, dict[str, Any]]]:
    tasks = _table(doc, "tasks")
    if not tasks:
        return [(Path(env_id).name, {})]
    for task, kwargs in tasks.items():
        _check_name(task, "task")
        if not isinstance(kwargs, dict):
            raise BadInput(f"tasks.{task} must be a table of environment keyword arguments")
    return list(tasks.items())


def _seeds(doc: dict[str, Any]) -> list[int]:
    seeds = doc.get("seeds", 5)
    if type(seeds) is int and 1 <= seeds <= MAX_TRIALS:
        return list(range(seeds))
    if isinstance(seeds, list) and seeds and all(type(s) is int and s >= 0 for s in seeds):
        if len(set(seeds)) != len(seeds):
            raise BadInput("seeds: each seed once")
        return seeds
    raise BadInput(f"seeds must be a count >= 1 or a list of seeds >= 0, got {seeds!r}")


def _trials(
    groups: list[tuple[str, dict[str, Any]]],
    tasks: list[tuple[str, dict[str, Any]]],
    seeds: list[int],
    base: dict[str, Any],
) -> list[Trial]:
    for key in ("seed", "env_id", "env_kwargs"):
        if key in base or any(key in g for _, g in groups):
            raise BadInput(f"{key} is set by the sweep (seeds, env_id, tasks), not per group")
    out = []
    for (group, overrides), (task, env_kwargs), seed in itertools.product(groups, tasks, seeds):
        name = re.sub(r"[^A-Za-z0-9_.=,+-]", "_", f"{group}__{task}__seed{seed}")
        out.append(Trial(name, group, task, seed, {**base, **overrides}, dict(env_kwargs)))
    if len(out) > MAX_TRIALS:
        raise BadInput(f"{len(out):,} trials: more than {MAX_TRIALS:,} (check seeds and the grid)")
    twice = [name for name, n in Counter(t.name for t in out).items() if n > 1]
    if twice:
        raise BadInput(f"two trials would share the name {twice[0]}: drop duplicate grid values or rename a group")
    return out
