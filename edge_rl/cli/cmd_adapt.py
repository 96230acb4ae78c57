"""`edge-rl adapt`: run the streaming learner on a policy in simulation, as the daemon will on a device."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_rl.cli.common import add_env_options, count, json_object, positive_int, unit_float

MODES = ("full", "head", "scratch")


def shift_arg(text: str) -> tuple[int, dict]:
    step, _, kwargs = text.partition(":")
    try:
        return int(step), json_object(kwargs)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'expected STEP:JSON like 5000:\'{{"jammer": "reactive"}}\', got {text!r}'
        ) from None


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="adapt a policy online with stream Q(lambda) in simulation (no torch)",
        description="Runs stream Q(lambda) one step at a time in ENV_ID: `full` learns every layer from float "
        "master weights (int8 dequantized), `head` learns a float Q head on the deployed body, `scratch` "
        "starts a fresh learner (the reference hyperparameters). Writes the adapted policy IR, the learner "
        "state (to resume), adapt.json with the curve, and curve.png when matplotlib is installed.",
    )
    p.add_argument("source", metavar="SRC", type=Path, help="policy directory (its spec also shapes a scratch learner)")
    add_env_options(p)
    p.add_argument("--steps", type=positive_int, required=True, help="environment steps to learn for")
    p.add_argument("--mode", choices=MODES, required=True, help="what learns: every layer, the head, or a new net")
    p.add_argument("--out", type=Path, required=True, help="directory for the adapted policy, state and curve")
    p.add_argument("--seed", type=count, default=0, help="seed of the env and the learner (default: 0)")
    p.add_argument(
        "--shift",
        type=shift_arg,
        default=None,
        metavar="STEP:JSON",
        help='set env attributes at STEP, e.g. \'5000:{"jammer": "reactive"}\' (default: none)',
    )
    p.add_argument("--window", type=positive_int, default=1000, help="steps per point of the curve (default: 1000)")
    p.add_argument(
        "--gamma", type=unit_float, default=None, help="discount in [0, 1] (default: the policy's, else 0.99)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edge_rl.cli.common import policy_env
    from edge_rl.policy import Policy
    from edge_rl.stream import StreamQ, from_policy
    from edge_rl.stream.simulate import write_adaptation

    policy = Policy.load(args.source)
    env_id, env_kwargs = policy_env(policy, args.env, args.env_kwargs, args.source)
    gamma = {"gamma": args.gamma} if args.gamma is not None else {}
    if args.mode == "scratch":
        learner = StreamQ(policy.observation.size, policy.action.n, seed=args.seed, **gamma)
    else:
        learner = from_policy(policy, args.mode, seed=args.seed, **gamma)
    summary = write_adaptation(learner, env_id, env_kwargs, args.steps, args.seed, args.window, args.shift, args.out)
    print(summary)
    return 0
