"""edge_rl.stats against hand-computed values, an independent numpy bootstrap, and its own coverage."""

import numpy as np
import pytest

pytest.importorskip("scipy", reason="statistics need the stats extra (training box)")

from edge_rl import stats
from edge_rl.errors import BadInput


def numpy_percentile_ci(
    scores: np.ndarray, reps: int, confidence: float, seed: int, stratified: bool = True
) -> tuple[float, float]:
    """IQM interval written out with numpy alone; stratified=False pools all runs and tasks (the wrong way)."""
    rng = np.random.default_rng(seed)
    runs, tasks = scores.shape
    if stratified:  # runs drawn within each task (column)
        rows = rng.integers(0, runs, size=(reps, runs, tasks))
        resampled = np.take_along_axis(np.broadcast_to(scores, (reps, runs, tasks)), rows, axis=1).reshape(reps, -1)
    else:
        flat = scores.reshape(-1)
        resampled = flat[rng.integers(0, flat.size, size=(reps, flat.size))]
    n = resampled.shape[1]
    cut = n // 4
    iqms = np.sort(resampled, axis=1)[:, cut : n - cut].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(iqms, [tail, 100 - tail])
    return float(low), float(high)


def test_iqm_of_known_arrays() -> None:
    assert stats.iqm(np.arange(1.0, 9.0)) == pytest.approx(4.5)  # 3, 4, 5, 6 kept
    assert stats.iqm(np.array([0.0, 1.0, 2.0, 3.0, 100.0])) == pytest.approx(2.0)  # one cut at each end
    runs_by_tasks = np.array([[1.0, 5.0], [2.0, 6.0], [3.0, 7.0], [4.0, 8.0]])
    assert stats.interval_estimate(runs_by_tasks, reps=200).point == pytest.approx(4.5)  # tasks pooled


def test_other_aggregates_by_hand() -> None:
    values = np.array([0.5, 1.5, 1.0, 0.0])
    assert stats.mean(values) == pytest.approx(0.75)
    assert stats.median(values) == pytest.approx(0.75)
    assert stats.optimality_gap(1.0)(values) == pytest.approx(1 - (0.5 + 1 + 1 + 0) / 4)


def test_ragged_tasks_pool_every_run() -> None:
    ragged = [np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0, 7.0, 8.0])]
    estimate = stats.interval_estimate(ragged, reps=200)
    assert estimate.point == pytest.approx(4.5)
    assert estimate.low <= estimate.point <= estimate.high


def test_interval_matches_an_independent_numpy_bootstrap() -> None:
    # 5 runs x 3 tasks of different difficulty: a pooled (unstratified) bootstrap would give a wider interval
    scores = np.random.default_rng(3).beta(2, 5, size=(5, 3)) + np.array([0.0, 1.0, 2.0])
    estimate = stats.interval_estimate(scores, reps=10_000, seed=1)
    low, high = numpy_percentile_ci(scores, 10_000, 0.95, seed=2)
    assert estimate.point == pytest.approx(float(stats.iqm(scores.reshape(-1))))
    assert estimate.low == pytest.approx(low, abs=0.005)
    assert estimate.high == pytest.approx(high, abs=0.005)


def coverage(interval, draws: int = 300) -> float:
    """How often `interval(scores, draw)` holds the true IQM, 1.5: four normal tasks, symmetric about it."""
    rng = np.random.default_rng(11)
    means = np.array([0.0, 1.0, 2.0, 3.0])
    hits = 0
    for draw in range(draws):
        scores = means + rng.standard_normal((20, 4))
        low, high = interval(scores, draw)
        hits += low <= 1.5 <= high
    return hits / draws


def test_stratified_interval_covers_at_about_the_nominal_rate() -> None:
    # measured: 0.93 here; a 90 % interval labelled 95 % scores 0.89, a pooled bootstrap 0.99
    def ours(scores: np.ndarray, draw: int) -> tuple[float, float]:
        e = stats.interval_estimate(scores, reps=1000, seed=draw)
        return e.low, e.high

    assert 0.91 <= coverage(ours) <= 0.98


def test_the_coverage_bound_rejects_a_pooled_bootstrap() -> None:
    """The check above has power: resampling runs across tasks widens the interval and over-covers."""
    pooled = coverage(lambda scores, draw: numpy_percentile_ci(scores, 1000, 0.95, draw, stratified=False))
    assert pooled > 0.98


def test_probability_of_improvement_extremes_and_ties() -> None:
    low = np.array([[1.0, 10.0], [2.0, 11.0], [3.0, 12.0]])
    high = low + 100
    assert stats.probability_of_improvement(high, low, reps=200) == stats.Estimate(1.0, 1.0, 1.0)
    assert stats.probability_of_improvement(low, low, reps=200).point == 0.5
    assert stats.probability_of_improvement(low, high, reps=200) == stats.Estimate(0.0, 0.0, 0.0)
    # pairs (1,2) (1,3) (2,2) (2,3): one tie counts half -> 0.5 / 4
    assert stats.probability_of_improvement([1.0, 2.0], [2.0, 3.0], reps=200).point == pytest.approx(0.125)


def test_probability_of_improvement_interval_brackets_its_point() -> None:
    rng = np.random.default_rng(5)
    better, worse = rng.normal(1.0, 1.0, size=(10, 3)), rng.normal(0.0, 1.0, size=(10, 3))
    estimate = stats.probability_of_improvement(better, worse, reps=1000)
    assert 0.5 < estimate.low < estimate.point < estimate.high < 1.0


def test_performance_profile_is_monotone_with_bands_around_it() -> None:
    scores = np.random.default_rng(7).normal(size=(8, 3))
    taus = np.linspace(scores.min() - 1, scores.max() + 1, 41)
    profile = stats.performance_profile(scores, taus, reps=500)
    for curve in (profile.fraction, profile.low, profile.high):
        assert np.all(np.diff(curve) <= 0)
    assert np.all(profile.low <= profile.fraction) and np.all(profile.fraction <= profile.high)
    assert profile.fraction[0] == 1.0 and profile.fraction[-1] == 0.0
    assert stats.performance_profile([1.0, 2.0, 3.0, 4.0], [2.5], reps=100).fraction[0] == 0.5


@pytest.mark.parametrize(
    ("scores", "needle"),
    [
        (np.array([1.0, np.nan, 2.0]), "NaN"),
        (np.zeros((2, 2, 2)), "shape"),
        ([np.array([1.0, 2.0]), np.array([3.0])], ">= 2 runs"),
        ([], ">= 2 runs"),
    ],
)
def test_bad_scores_raise_one_clear_error(scores, needle: str) -> None:
    with pytest.raises(BadInput, match=needle):
        stats.interval_estimate(scores, reps=100)


def test_probability_of_improvement_wants_the_same_tasks() -> None:
    with pytest.raises(BadInput, match="same tasks"):
        stats.probability_of_improvement(np.zeros((3, 2)), np.zeros((3, 3)), reps=100)


def test_estimate_formats_with_the_same_decimals() -> None:
    assert str(stats.Estimate(0.93, 0.9, 0.95)) == "0.93 [0.90, 0.95]"
    assert str(stats.Estimate(512.3, 500.0, 520.0)) == "512 [500, 520]"
    assert str(stats.Estimate(0.004, 0.001, 0.006)) == "0.004 [0.001, 0.006]"
    assert str(stats.Estimate(0.97, 0.93, 1.0)) == "0.97 [0.93, 1.00]"  # a rate near 1 keeps its digits
    assert str(stats.Estimate(37.26, 35.0, 40.1)) == "37.3 [35.0, 40.1]"
    assert str(stats.Estimate(0.0, 0.0, 0.0)) == "0.00 [0.00, 0.00]"
    assert stats.Estimate(3.21, 2.0, 4.0).format(0) == "3 [2, 4]"


def test_same_seed_same_interval() -> None:
    scores = np.random.default_rng(0).normal(size=(6, 2))
    assert stats.interval_estimate(scores, seed=4) == stats.interval_estimate(scores, seed=4)
    assert stats.interval_estimate(scores, seed=4) != stats.interval_estimate(scores, seed=5)


def test_probability_of_improvement_is_the_pairwise_count_with_ties_half() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.integers(0, 4, size=(6, 2)).astype(float), rng.integers(0, 4, size=(9, 2)).astype(float)  # many ties
    pairs = [np.mean((x[:, k, None] > y[None, :, k]) + 0.5 * (x[:, k, None] == y[None, :, k])) for k in range(2)]
    assert stats.probability_of_improvement(x, y, reps=200).point == pytest.approx(np.mean(pairs))
