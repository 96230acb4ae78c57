"""`edge-rl quantize`: post-training int8 quantization of a saved policy (numpy only, no torch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_rl.cli.common import add_env_options, count, load_states, positive_int


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="post-training int8 quantization (no torch)",
        description="Quantize an fp32 policy to int8: per-channel symmetric weights, int32 biases, per-tensor int8 "
        "activations calibrated on states the policy visits (recorded by running it in its env with "
        "epsilon 0.1, or read from --states FILE.npy). Channel ranges are equalised first and biases corrected "
        "for the mean rounding error; the Q-value head is stored as a shared value row plus per-action rows.",
    )
    p.add_argument("policy_dir", metavar="DIR", type=Path, help="fp32 policy directory")
    p.add_argument("--to", choices=("int8",), required=True, help="target precision")
    p.add_argument("--out", type=Path, required=True, help="output policy directory")
    p.add_argument(
        "--calibration",
        choices=("minmax", "percentile", "mse"),
        default="percentile",
        help="activation range estimator (default: percentile, 99.99)",
    )
    p.add_argument(
        "--states",
        type=Path,
        default=None,
        metavar="FILE.npy",
        help="calibration observations (N, obs) (default: recorded in the env)",
    )
    p.add_argument(
        "--n-states",
        type=positive_int,
        default=5_000,
        help="states to record when --states is not given (default: 5000)",
    )
    p.add_argument("--seed", type=count, default=0, help="seed of the recording (default: 0)")
    p.add_argument("--no-equalize", dest="equalize", action="store_false", help="skip cross-layer range equalisation")
    p.add_argument(
        "--no-bias-correction", dest="correct_bias", action="store_false", help="skip empirical bias correction"
    )
    add_env_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    from edge_rl.policy import Policy
    from edge_rl.table import print_table
    from quantize.convert import blocks, default_plan, quantize_policy
    from quantize.equalize import equalize_ranges

    policy = Policy.load(args.policy_dir)
    if args.states is not None:
        states = load_states(args.states, policy.observation)
    else:
        from edge_rl.cli.common import policy_env
        from edge_rl.rollout import collect_states

        env_id, env_kwargs = policy_env(policy, args.env, args.env_kwargs, args.policy_dir)
        states = collect_states(policy.act, env_id, args.n_states, args.seed, 0.1, env_kwargs)
    plan = default_plan(len(blocks(policy)), args.to)
    source = equalize_ranges(policy, states, plan) if args.equalize else policy
    quantized = quantize_policy(source, states, plan, args.calibration, args.seed, correct_bias=args.correct_bias)
    quantized.save(args.out)
    agreement = float((quantized.act(states) == policy.act(states)).mean())
    print_table(
        ["from", "to", "calibration", "states", "agreement on calibration states", "out"],
        [[str(args.policy_dir), args.to, args.calibration, len(states), agreement, str(args.out)]],
    )
    return 0
