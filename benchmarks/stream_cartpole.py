"""Stream Q(lambda) learning check on CartPole-v1 under the reference protocol, over many seeds.

Limit 10,000 steps per episode (truncation terminal), raw time feature, 60k steps per seed. Per
seed: mean return of the episodes ending in the first 10k steps, and the first step at which an
episode reached 10,000. The reference note's bar: over seeds 0-19, >= 16 solve within 60k steps
and every seed's early mean lies in 25-45 (a clean-room learner solved 27 of 30). The solve count
gets a Wilson interval; the steps to the first solve and the early mean get an IQM over seeds with
a 95 % bootstrap interval (edge_rl.stats). An unsolved seed counts as the whole budget, a lower
bound: the IQM ignores it while at most a quarter of the seeds are unsolved (it trims the top
quarter), but the interval's upper end is then a lower bound too.

    python benchmarks/stream_cartpole.py                 # seeds 0-19, 2 processes, ~1 min
    python benchmarks/stream_cartpole.py --seeds $(seq 0 99)
    python benchmarks/stream_cartpole.py --time-lag 1    # the reference wrapper's time feature

Writes benchmarks/results/stream_cartpole.json (stream_cartpole-lag1.json with --time-lag 1).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def one_seed(seed: int, steps: int, time_lag: int) -> dict:
    from edge_rl.stream import StreamQ
    from edge_rl.stream.simulate import CARTPOLE_LIMIT, stream_cartpole

    run = stream_cartpole(StreamQ(5, 2, raw_tail=1, seed=seed), steps, seed, time_lag=time_lag)
    solved = [s for r, s in zip(run.returns, run.end_steps, strict=True) if r >= CARTPOLE_LIMIT]
    return {"seed": seed, "early_mean": run.window_mean(0, 10_000), "first_solve": solved[0] if solved else None}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial rate: how much a solve count over n seeds says."""
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return centre - half, centre + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(20)))
    parser.add_argument("--steps", type=int, default=60_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--time-lag", type=int, choices=(0, 1), default=0, help="1: the reference wrapper's lagged time feature"
    )
    args = parser.parse_args()
    if len(args.seeds) < 2:
        parser.error("--seeds: an interval over seeds needs at least 2")
    from edge_rl.stats import interval_estimates
    from edge_rl.table import print_table

    with ProcessPoolExecutor(args.jobs) as pool:
        n = len(args.seeds)
        rows = list(pool.map(one_seed, args.seeds, [args.steps] * n, [args.time_lag] * n))
    print_table(
        ["seed", "mean return, steps 0-10k", "first 10,000-return episode ends at"],
        [[r["seed"], r["early_mean"], r["first_solve"] or "-"] for r in rows],
    )
    solved = sum(r["first_solve"] is not None for r in rows)
    early_ok = all(25 <= r["early_mean"] <= 45 for r in rows)
    print(f"solved within {args.steps:,} steps: {solved}/{len(rows)}; every early mean in 25-45: {early_ok}")
    low, high = wilson(solved, len(rows))
    verdict = "met" if solved >= 0.8 * len(rows) and early_ok else "NOT met"
    print(f"solve rate {solved / len(rows):.0%} (95 % interval {low:.0%}-{high:.0%}); reference bar >= 80 %: {verdict}")
    iqm = interval_estimates(
        {
            "steps_to_solve": [r["first_solve"] or args.steps for r in rows],  # unsolved: the budget, a lower bound
            "early_mean": [r["early_mean"] for r in rows],
        }
    )
    print(
        f"IQM over {len(rows)} seeds [95% CI]: steps to the first 10,000-return episode {iqm['steps_to_solve']} "
        f"(unsolved = {args.steps:,}); mean return in steps 0-10k {iqm['early_mean']}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / ("stream_cartpole.json" if args.time_lag == 0 else "stream_cartpole-lag1.json")).write_text(
        json.dumps(
            {
                "steps": args.steps,
                "time_lag": args.time_lag,
                "rows": rows,
                "solved": solved,
                "solve_rate_wilson_95": [low, high],
                "iqm": {key: e.as_dict() for key, e in iqm.items()},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
