"""Honest aggregate statistics over few runs (Agarwal et al. 2021, "Deep RL at the Edge of the
Statistical Precipice"): interquartile mean, stratified-bootstrap confidence intervals,
performance profiles and the probability of improvement. Training-box side (numpy + scipy).

Scores of one group are an array of shape (runs, tasks), a 1-D array of runs on one task, or a
list of 1-D arrays, one per task (a list of lists is read that way too), so tasks that lost runs
to failures may have fewer runs. A task is a stratum: the bootstrap resamples runs independently
within each task, so the spread of task difficulties, which is fixed by the benchmark, does not widen the interval.

Intervals are percentile intervals, as in rliable: BCa's jackknife acceleration is undefined on
the all-equal samples RL produces (every seed solves CartPole: all returns 500), and the
percentile interval's coverage is checked in tests/test_stats.py. With few runs it covers a
little below the nominal rate, so 5 runs is a minimum, not a comfortable number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import bootstrap, rankdata, trim_mean

from edge_rl.errors import BadInput

Scores = ArrayLike | Sequence[ArrayLike]
Aggregate = Callable[[np.ndarray], np.ndarray]  # (..., values of all runs and tasks) -> (...)
REPS, CONFIDENCE, SEED = 2000, 0.95, 0
BATCH = 250  # resamples evaluated at once: bounds memory for profiles over many runs and taus


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval; str() gives `0.93 [0.90, 0.95]`."""

    point: float
    low: float
    high: float

    def format(self, digits: int | None = None) -> str:
        """Same decimals for all three numbers; by default 2 for rates and small scores, fewer for large ones."""
        if not all(map(math.isfinite, (self.point, self.low, self.high))):  # an overflowing resample
            return f"{self.point:g} [{self.low:g}, {self.high:g}]"
        if digits is None:
            largest = max(abs(self.point), abs(self.low), abs(self.high))
            digits = next(d for bound, d in ((0.1, 3), (10, 2), (100, 1), (math.inf, 0)) if largest < bound)
            digits = 2 if largest == 0 else digits
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def __str__(self) -> str:
        return self.format()

    def as_dict(self) -> dict[str, float]:
        return {"point": self.point, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Profile:
    """Performance profile: the fraction of runs scoring above each tau, with bootstrap bands."""

    taus: np.ndarray
    fraction: np.ndarray
    low: np.ndarray
    high: np.ndarray


def iqm(values: np.ndarray) -> np.ndarray:
    """Interquartile mean over the last axis: drop the lowest and highest 25 %, average the rest.

    Robust to a few outlier runs like the median, yet uses half the data like the mean.
    """
    return np.asarray(trim_mean(values, 0.25, axis=-1))


def mean(values: np.ndarray) -> np.ndarray:
    return np.mean(values, axis=-1)


def median(values: np.ndarray) -> np.ndarray:
    """Median of all runs, tasks pooled (rliable's median is over per-task means instead)."""
    return np.median(values, axis=-1)


def optimality_gap(gamma: float = 1.0) -> Aggregate:
    """How far runs fall short of `gamma` on average (scores above it count as gamma); lower is better."""

    def gap(values: np.ndarray) -> np.ndarray:
        return gamma - np.mean(np.minimum(values, gamma), axis=-1)

    return gap


def strata(scores: Scores, name: str = "scores") -> list[np.ndarray]:
    """One finite 1-D float array per task, or a BadInput naming the problem."""
    if isinstance(scores, np.ndarray) or (isinstance(scores, Sequence) and all(np.ndim(v) == 0 for v in scores)):
        array = np.asarray(scores, dtype=float)
        if array.ndim not in (1, 2):
            raise BadInput(f"{name}: expected shape (runs,) or (runs, tasks), got {array.shape}")
        columns = [array] if array.ndim == 1 else list(array.T)
    else:
        columns = [np.asarray(task, dtype=float) for task in scores]
    if not columns:
        raise BadInput(f"{name}: no tasks")
    for i, column in enumerate(columns):
        if column.ndim != 1 or column.size < 2:
            raise BadInput(f"{name}: task {i} has shape {column.shape}; a confidence interval needs >= 2 runs per task")
        if not np.isfinite(column).all():
            raise BadInput(f"{name}: task {i} has NaN or infinite scores")
    return columns


def _pooled(*columns: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.concatenate(columns, axis=axis)


def _interval(data: tuple[np.ndarray, ...], statistic: Callable, reps: int, confidence: float, seed: int) -> Any:
    """Stratified percentile bootstrap: every array in `data` is resampled on its own."""
    return bootstrap(
        data,
        statistic,
        n_resamples=reps,
        batch=BATCH,
        vectorized=True,
        method="percentile",
        confidence_level=confidence,
        rng=np.random.default_rng(seed),
    ).confidence_interval


def interval_estimate(
    scores: Scores,
    aggregate: Aggregate = iqm,
    reps: int = REPS,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
    name: str = "scores",
) -> Estimate:
    """`aggregate` over all runs and tasks, with a stratified-bootstrap interval."""
    columns = strata(scores, name)

    def statistic(*cols: np.ndarray, axis: int = -1) -> np.ndarray:
        return aggregate(_pooled(*cols, axis=axis))

    ci = _interval(tuple(columns), statistic, reps, confidence, seed)
    return Estimate(float(statistic(*columns)), float(ci.low), float(ci.high))


def interval_estimates(
    groups: Mapping[str, Scores],
    aggregate: Aggregate = iqm,
    reps: int = REPS,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> dict[str, Estimate]:
    """`interval_estimate` per group, each with the same seed, so a group's interval never depends on the others."""
    return {g: interval_estimate(s, aggregate, reps, confidence, seed, name=g) for g, s in groups.items()}


def performance_profile(
    scores: Scores, taus: ArrayLike, reps: int = REPS, confidence: float = CONFIDENCE, seed: int = SEED
) -> Profile:
    """Fraction of all runs (tasks pooled) with score > tau, for each tau, with stratified-bootstrap bands.

    A whole distribution instead of one number: one curve above another everywhere is a stronger
    claim than a higher mean.
    """
    columns, grid = strata(scores), np.asarray(taus, dtype=float)

    def statistic(*cols: np.ndarray, axis: int = -1) -> np.ndarray:
        pooled = _pooled(*cols, axis=axis)
        fractions = np.mean(pooled[..., None, :] > grid[:, None], axis=-1)  # (resamples..., taus)
        return np.moveaxis(fractions, -1, 0)  # scipy wants the resamples last

    ci = _interval(tuple(columns), statistic, reps, confidence, seed)
    return Profile(grid, statistic(*columns), np.asarray(ci.low), np.asarray(ci.high))


def probability_of_improvement(
    x: Scores, y: Scores, reps: int = REPS, confidence: float = CONFIDENCE, seed: int = SEED
) -> Estimate:
    """P(X > Y): the chance a run of X beats a run of Y on the same task (ties count half), averaged over tasks.

    The Mann-Whitney U statistic over n*m pairs per task; 0.5 means no difference. Runs of X and
    of Y are resampled independently within each task.
    """
    xs, ys = strata(x, "x"), strata(y, "y")
    if len(xs) != len(ys):
        raise BadInput(f"x has {len(xs)} tasks and y has {len(ys)}: compare them on the same tasks")
    tasks = len(xs)

    def statistic(*cols: np.ndarray, axis: int = -1) -> np.ndarray:
        per_task = []
        for a, b in zip(cols[:tasks], cols[tasks:], strict=True):
            n, m = a.shape[-1], b.shape[-1]
            ranks = rankdata(np.concatenate([a, b], axis=-1), axis=-1)  # midranks: a tie counts half
            per_task.append((ranks[..., :n].sum(axis=-1) - n * (n + 1) / 2) / (n * m))  # U / (n m), O(n + m)
        return np.mean(per_task, axis=0)

    ci = _interval((*xs, *ys), statistic, reps, confidence, seed)
    return Estimate(float(statistic(*xs, *ys)), float(ci.low), float(ci.high))
