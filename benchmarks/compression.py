"""Teacher (256x256 DQN) -> students in fp32, int8 and 1-bit, on four target tasks, side by side.

For each task: train (or reuse) a 256x256 teacher, distill an fp32 and an int8 student with at
most 1/16 of its parameters and a 1-bit student (hidden 64,64,64: two binary 64x64 layers
between int8 first and last layers), then measure weight bytes and MACs (the model card),
greedy return over 50 episodes, action agreement with the teacher on 10k held-out states the
teacher visits, and numpy forward microseconds for one observation (median of 2,000 calls).

Each variant is one trained network per task (one teacher, one distillation seed), so the
"runs" behind its interval are evaluation episode sets, not training seeds: the 50 episodes are
split into 5 sets of 10 consecutive seeds, and the table gives the IQM of the 5 set means with a
95 % bootstrap interval (edge_rl.stats). That interval measures evaluation noise only; the spread
over distillation seeds is not measured here.

    python benchmarks/compression.py               # all tasks, ~40 min on 2 cores
    python benchmarks/compression.py --tasks cartpole --jobs 1

Writes benchmarks/results/compression.json; teachers are cached in benchmarks/results/teachers/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import pairwise
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
TASKS = {
    "cartpole": ("CartPole-v1", {}),
    "antijam-sweeping": ("edge_rl/AntiJam-v0", {"jammer": "sweeping"}),
    "antijam-reactive": ("edge_rl/AntiJam-v0", {"jammer": "reactive"}),
    "hover": ("edge_rl/Hover-v0", {}),
}
TEACHER_HIDDEN = (256, 256)
BINARY_HIDDEN = (64, 64, 64)
EPISODES, EVAL_SEED, HOLDOUT = 50, 50_000, 10_000
EPISODE_SETS = 5  # the "runs" of a variant's return interval: 5 sets of 10 evaluation episodes


def mlp_params(obs: int, hidden: tuple[int, ...], actions: int) -> int:
    sizes = [obs, *hidden, actions]
    return sum(a * b + b for a, b in pairwise(sizes))


def student_hidden(obs: int, actions: int, budget: int) -> tuple[int, int]:
    """Widest two-layer student whose stored int8 form (head with its shared value row) fits `budget`."""
    width = max(w for w in range(4, 257) if mlp_params(obs, (w, w), actions + 1) <= budget)
    return (width, width)


def teacher_for(name: str, env_id: str, kwargs: dict, seed: int) -> Path:
    from edge_rl.train.config import resolve_config
    from edge_rl.train.dqn import train_dqn

    out = RESULTS / "teachers" / name
    if not (out / "train.json").exists():  # written last: a killed run is retrained
        train_dqn(resolve_config(env_id, env_kwargs=kwargs, seed=seed, hidden=TEACHER_HIDDEN), out, progress=False)
    return out


def forward_us(policy, obs) -> float:
    for _ in range(200):
        policy.q_values(obs)
    samples = []
    for _ in range(20):
        t0 = time.perf_counter()
        for _ in range(100):
            policy.q_values(obs)
        samples.append((time.perf_counter() - t0) / 100 * 1e6)
    return statistics.median(samples)


def run_task(name: str, steps: int, seed: int) -> list[dict]:
    from edge_rl.card import model_card
    from edge_rl.evaluate import evaluate
    from edge_rl.policy import Policy
    from edge_rl.rollout import collect_states
    from edge_rl.train.distill import DistillConfig, distill

    env_id, kwargs = TASKS[name]
    teacher_dir = teacher_for(name, env_id, kwargs, seed)
    teacher = Policy.load(teacher_dir)
    holdout = collect_states(teacher.act, env_id, HOLDOUT, seed + 424_242, 0.0, kwargs)
    teacher_actions = teacher.act(holdout)
    hidden = student_hidden(teacher.observation.size, teacher.action.n, teacher.n_params // 16)
    variants = [
        ("teacher fp32", None, None),
        ("student fp32", "none", hidden),
        ("student int8", "int8", hidden),
        ("student 1-bit", "1bit", BINARY_HIDDEN),
    ]
    rows = []
    for label, quant, widths in variants:
        if quant is None:
            policy, out = teacher, teacher_dir
        else:
            cfg = DistillConfig(hidden=widths, quant=quant, steps=steps, seed=seed, env_kwargs=kwargs)
            out = RESULTS / "students" / f"{name}-{quant}"
            policy, _ = distill(teacher, env_id, cfg, out, teacher_dir=str(teacher_dir), progress=False)
        card = model_card(policy)
        result = evaluate(policy.act, env_id, EPISODES, EVAL_SEED, kwargs)
        rows.append(
            {
                "task": name,
                "policy": label,
                "dir": str(out),
                "hidden": list(widths or TEACHER_HIDDEN),
                "params": card["params"],
                "weight_bytes": card["weight_bytes"],
                "fp32_bytes": card["fp32_bytes"],
                "binary_weight_bytes": card.get("binary_weight_bytes"),
                "binary_fp32_bytes": card.get("binary_fp32_bytes"),
                "matrix_bytes": card["matrix_bytes"],
                "matrix_fp32_bytes": card["matrix_fp32_bytes"],
                "macs": card["macs"],
                "return": result.mean_return,
                "episode_set_returns": [float(np.mean(s)) for s in np.split(np.array(result.returns), EPISODE_SETS)],
                "success_rate": result.success_rate,
                "agreement": float((policy.act(holdout) == teacher_actions).mean()),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--steps", type=int, default=60_000, help="distillation gradient steps per student")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="tasks run in parallel (timings are taken afterwards)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = [
            row
            for task_rows in pool.map(
                run_task, args.tasks, [args.steps] * len(args.tasks), [args.seed] * len(args.tasks)
            )
            for row in task_rows
        ]

    from edge_rl.policy import Policy
    from edge_rl.rollout import collect_states
    from edge_rl.stats import Estimate, interval_estimate
    from edge_rl.table import print_table

    for row in rows:  # timings sequentially, on an otherwise idle process pool
        env_id, kwargs = TASKS[row["task"]]
        policy = Policy.load(row["dir"])
        row["return_iqm"] = interval_estimate(row["episode_set_returns"]).as_dict()
        row["forward_us"] = forward_us(policy, collect_states(policy.act, env_id, 1, 0, 0.0, kwargs, n_envs=1)[0])
        teacher = next(r for r in rows if r["task"] == row["task"] and r["policy"] == "teacher fp32")
        row["return_ratio"] = row["return"] / teacher["return"] if teacher["return"] else None
        row["compression"] = teacher["fp32_bytes"] / row["weight_bytes"]
        same_fp32 = next(r for r in rows if r["task"] == row["task"] and r["policy"] == "student fp32")
        if row["policy"] == "student int8":  # the same architecture in fp32, as the retention target asks
            row["vs_fp32_student"] = same_fp32["weight_bytes"] / row["weight_bytes"]
    print_table(
        [
            "task",
            "policy",
            "hidden",
            "params",
            "weight B",
            "vs own fp32",
            "vs fp32 student",
            "matrices vs fp32",
            "1-bit layers vs fp32",
            "MACs",
            "return",
            f"return IQM [95% CI] over {EPISODE_SETS} episode sets (evaluation noise, 1 training run)",
            "% teacher",
            "agreement",
            "fwd us",
        ],
        [
            [
                r["task"],
                r["policy"],
                ",".join(map(str, r["hidden"])),
                r["params"],
                r["weight_bytes"],
                r["fp32_bytes"] / r["weight_bytes"],
                r.get("vs_fp32_student", "-"),
                r["matrix_fp32_bytes"] / r["matrix_bytes"],
                (r["binary_fp32_bytes"] / r["binary_weight_bytes"]) if r.get("binary_weight_bytes") else "-",
                r["macs"],
                r["return"],
                str(Estimate(**r["return_iqm"])),
                100 * r["return_ratio"],
                r["agreement"],
                r["forward_us"],
            ]
            for r in rows
        ],
    )
    out = RESULTS / "compression.json"
    out.write_text(json.dumps({"steps": args.steps, "seed": args.seed, "episodes": EPISODES, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
