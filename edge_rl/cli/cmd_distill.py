"""`edge-rl distill`: distill a teacher policy into a small (optionally quantized) student."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_rl.cli.common import (
    add_env_options,
    count,
    int_list,
    nonnegative_float,
    positive_float,
    positive_int,
)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="distill a teacher into a small fp32, int8 or 1-bit student",
        description="KL(tau) + Q-regression distillation on teacher rollouts and DAgger rounds. Quantized students "
        "warm up in fp32, then train through their deploy form: int8 fake quantization (equalised channel "
        "ranges, split Q head), or QuEST 1-bit hidden layers between int8 first and last layers. Writes the "
        "student IR and distill.json to --out.",
    )
    p.add_argument("teacher", metavar="TEACHER_DIR", type=Path, help="teacher policy directory")
    p.add_argument("--hidden", type=int_list, default=(32, 32), metavar="N,N", help="student widths (default: 32,32)")
    p.add_argument(
        "--quant", choices=("none", "int8", "1bit"), default="none", help="student precision (default: none = fp32)"
    )
    p.add_argument("--out", type=Path, required=True, help="student directory")
    p.add_argument("--steps", type=positive_int, default=20_000, help="gradient steps over all rounds (default: 20000)")
    p.add_argument("--seed", type=count, default=0, help="seed of the student and the rollouts (default: 0)")
    p.add_argument("--rounds", type=positive_int, default=4, help="DAgger rounds (default: 4)")
    p.add_argument(
        "--tau", type=positive_float, default=0.01, help="softmax temperature of the KL term (default: 0.01)"
    )
    p.add_argument(
        "--q-weight",
        type=nonnegative_float,
        default=0.1,
        help="weight of the Q-value regression term (default: 0.1); lower favours action agreement over "
        "calibrated Q-values for on-device learning",
    )
    p.add_argument(
        "--stream", action="store_true", help="LayerNorm (no affine) + LeakyReLU student for stream Q(lambda)"
    )
    add_env_options(p, "the teacher's")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edge_rl.cli.common import policy_env
    from edge_rl.policy import Policy
    from edge_rl.table import print_table

    teacher = Policy.load(args.teacher)
    env_id, env_kwargs = policy_env(teacher, args.env, args.env_kwargs, args.teacher)
    from edge_rl.train.distill import DistillConfig, distill  # torch: after the input is known to be good

    cfg = DistillConfig(
        hidden=args.hidden,
        quant=args.quant,
        steps=args.steps,
        seed=args.seed,
        rounds=args.rounds,
        tau=args.tau,
        q_weight=args.q_weight,
        stream=args.stream,
        env_kwargs=env_kwargs,
    )
    _, report = distill(teacher, env_id, cfg, args.out, teacher_dir=str(args.teacher), progress=not args.quiet)
    f = report["final"]
    print_table(
        ["student", "params", "teacher params", "return", "teacher return", "agreement"],
        [
            [
                f"{args.quant} {','.join(map(str, args.hidden))}",
                f["params"],
                f["teacher_params"],
                f["return"],
                f["teacher_return"],
                f["agreement"],
            ]
        ],
    )
    return 0
