"""edge-rl DQN against Stable-Baselines3 DQN (RL Zoo's tuned CartPole-v1 settings), side by side.

Same seeds, one thread each, one process per run, in one invocation. Per seed it reports the
whole-process training wall-clock (interpreter start to exit, evaluation excluded), env steps
per second during training, the greedy mean return over 20 episodes on identical evaluation
seeds, and whether the seed is solved (>= 475). Medians and the time ratio go in the summary,
with each library's IQM over seeds and its 95 % stratified-bootstrap interval (edge_rl.stats) for
return, wall time and steps/s, and the probability that an edge-rl seed beats an SB3 seed
(higher return; shorter wall time). Five seeds is the minimum for such an interval, not plenty.

    python benchmarks/dqn_vs_sb3.py                 # seeds 0-4, 50k steps
    python benchmarks/dqn_vs_sb3.py --seeds 0 1 --steps 20000

Writes benchmarks/results/dqn_vs_sb3.json. SB3 hyperparameters: rl-baselines3-zoo
hyperparams/dqn.yml, CartPole-v1 (lr 2.3e-3, batch 64, buffer 1e5, learning_starts 1000,
gamma 0.99, target_update_interval 10, train_freq 256, gradient_steps 128, exploration 0.16 ->
0.04, net [256, 256]); SB3 runs its full budget, as the Zoo does by default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL_EPISODES = 20
EVAL_SEED = 10_000  # episode i of every evaluation is reset with EVAL_SEED + i, for both libraries
SOLVED = 475.0
ZOO_CARTPOLE = dict(
    learning_rate=2.3e-3,
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1000,
    gamma=0.99,
    target_update_interval=10,
    train_freq=256,
    gradient_steps=128,
    exploration_fraction=0.16,
    exploration_final_eps=0.04,
    policy_kwargs=dict(net_arch=[256, 256]),
)
IQM_OF = {"mean_return": "greedy return", "wall_seconds": "wall s", "steps_per_second": "steps/s"}  # per seed
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def sb3_worker(seed: int, steps: int) -> None:
    """Runs inside a fresh interpreter: train SB3 DQN, then evaluate; prints one JSON line."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import DQN

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = DQN("MlpPolicy", "CartPole-v1", seed=seed, device="cpu", verbose=0, **ZOO_CARTPOLE)
    model.learn(total_timesteps=steps)
    learn_seconds = time.perf_counter() - t0
    t_eval = time.perf_counter()
    returns = []
    env = gym.make("CartPole-v1")
    for i in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=EVAL_SEED + i)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    print(
        json.dumps({"learn_seconds": learn_seconds, "eval_seconds": time.perf_counter() - t_eval, "returns": returns})
    )


def run_sb3(seed: int, steps: int) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--worker", "sb3", "--seeds", str(seed), "--steps", str(steps)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **ONE_THREAD},
    )
    total = time.perf_counter() - t0
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    return _row("sb3", seed, total - doc["eval_seconds"], steps / doc["learn_seconds"], steps, doc["returns"])


def run_ours(seed: int, steps: int, workdir: Path) -> dict:
    from edge_rl.evaluate import evaluate
    from edge_rl.policy import Policy

    out = workdir / f"edge-rl-seed{seed}"
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_rl.cli",
            "train",
            "CartPole-v1",
            "--steps",
            str(steps),
            "--seed",
            str(seed),
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **ONE_THREAD, "PYTHONPATH": str(ROOT)},
    )
    total = time.perf_counter() - t0
    run = json.loads((out / "train.json").read_text())
    result = evaluate(Policy.load(out).act, "CartPole-v1", EVAL_EPISODES, EVAL_SEED)
    return _row("edge-rl", seed, total, run["steps_per_second"], run["steps"], result.returns)


def _row(lib: str, seed: int, wall: float, sps: float, steps: int, returns: list[float]) -> dict:
    mean = statistics.fmean(returns)
    return {
        "library": lib,
        "seed": seed,
        "wall_seconds": round(wall, 2),
        "steps": steps,
        "steps_per_second": round(sps, 1),
        "mean_return": mean,
        "solved": mean >= SOLVED,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dqn_vs_sb3.json")
    parser.add_argument("--worker", choices=["sb3"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sb3_worker(args.seeds[0], args.steps)
        return
    if len(args.seeds) < 2:
        parser.error("--seeds: an interval over seeds needs at least 2")

    sys.path.insert(0, str(ROOT))
    from edge_rl.stats import interval_estimates, probability_of_improvement
    from edge_rl.table import print_table

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:  # alternate libraries so drift in machine load hits both alike
            for runner in (lambda s: run_ours(s, args.steps, Path(tmp)), lambda s: run_sb3(s, args.steps)):
                row = runner(seed)
                rows.append(row)
                print(
                    f"  {row['library']:8s} seed {seed}: {row['wall_seconds']:6.1f} s"
                    f"  return {row['mean_return']:6.1f}",
                    flush=True,
                )

    def median(lib: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["library"] == lib)

    print_table(
        ["library", "seed", "wall s", "env steps", "steps/s", f"greedy return ({EVAL_EPISODES} ep)", "solved"],
        [
            [
                r["library"],
                r["seed"],
                r["wall_seconds"],
                r["steps"],
                r["steps_per_second"],
                r["mean_return"],
                r["solved"],
            ]
            for r in rows
        ],
    )
    summary = {
        lib: {
            "median_wall_seconds": median(lib, "wall_seconds"),
            "median_steps_per_second": median(lib, "steps_per_second"),
            "seeds_solved": sum(r["solved"] for r in rows if r["library"] == lib),
            "seeds": len(args.seeds),
        }
        for lib in ("edge-rl", "sb3")
    }
    ratio = summary["edge-rl"]["median_wall_seconds"] / summary["sb3"]["median_wall_seconds"]
    runs = {key: {lib: [r[key] for r in rows if r["library"] == lib] for lib in summary} for key in IQM_OF}
    iqm = {key: interval_estimates(by_lib) for key, by_lib in runs.items()}
    improvement = {
        "return": probability_of_improvement(runs["mean_return"]["edge-rl"], runs["mean_return"]["sb3"]),
        "wall": probability_of_improvement(runs["wall_seconds"]["sb3"], runs["wall_seconds"]["edge-rl"]),
    }
    print()
    print_table(
        ["library", "median wall s", "median steps/s", "seeds solved"],
        [
            [lib, s["median_wall_seconds"], s["median_steps_per_second"], f"{s['seeds_solved']}/{s['seeds']}"]
            for lib, s in summary.items()
        ],
    )
    print(f"\nwall-clock ratio edge-rl / sb3 (medians): {ratio:.3f}")
    print()
    print_table(
        ["library", "seeds", *(f"IQM {label} [95% CI]" for label in IQM_OF.values())],
        [[lib, len(runs["wall_seconds"][lib]), *(str(iqm[key][lib]) for key in IQM_OF)] for lib in summary],
    )
    print(
        f"P(edge-rl seed returns more than an sb3 seed) = {improvement['return']}; "
        f"P(edge-rl seed trains faster) = {improvement['wall']}  [95% CI]"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "steps": args.steps,
                "eval_episodes": EVAL_EPISODES,
                "eval_seed": EVAL_SEED,
                "rows": rows,
                "summary": summary,
                "wall_ratio": ratio,
                "iqm": {key: {lib: e.as_dict() for lib, e in by_lib.items()} for key, by_lib in iqm.items()},
                "probability_of_improvement": {
                    "edge-rl return > sb3": improvement["return"].as_dict(),
                    "edge-rl wall < sb3": improvement["wall"].as_dict(),
                },
                "sb3_hyperparameters": ZOO_CARTPOLE,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
