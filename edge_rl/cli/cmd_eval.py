"""`edge-rl eval`: greedy evaluation of a saved policy (numpy only; torch is never imported)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_rl.cli.common import add_env_options, count, positive_int


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a saved policy greedily",
        description="Run the policy in DIR greedily for N episodes (episode i is reset with seed S+i). "
        "The env and its kwargs default to those the policy was trained on.",
    )
    p.add_argument("policy_dir", metavar="DIR", type=Path, help="directory holding policy.json + policy.safetensors")
    p.add_argument("--episodes", type=positive_int, default=20, help="number of episodes (default: 20)")
    p.add_argument("--seed", type=count, default=0, help="seed of the first episode (default: 0)")
    add_env_options(p, "the training env's")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edge_rl.cli.common import policy_env
    from edge_rl.evaluate import evaluate
    from edge_rl.gymenv import check_fits
    from edge_rl.policy import Policy
    from edge_rl.table import print_table

    policy = Policy.load(args.policy_dir)
    env_id, env_kwargs = policy_env(policy, args.env, args.env_kwargs, args.policy_dir)
    check_fits(policy, env_id, env_kwargs)
    result = evaluate(policy.act, env_id, args.episodes, args.seed, env_kwargs)
    doc = {"env_id": env_id, "seed": args.seed, **result.to_dict()}
    if args.json:
        print(json.dumps(doc))
        return 0
    header = ["env", "episodes", "mean return", "std", "min", "max"]
    row = [env_id, result.episodes, result.mean_return, result.std_return, min(result.returns), max(result.returns)]
    if result.success_rate is not None:
        header.append("success rate")
        row.append(result.success_rate)
    print_table(header, [row])
    return 0
