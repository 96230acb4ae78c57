"""`edge-rl train`: train a DQN teacher and write a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_rl.cli.common import add_dataclass_options, count, int_list, json_object, positive_int


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a DQN policy on a Gymnasium env",
        description="Train Double DQN on ENV_ID. The run directory gets the best greedy checkpoint as a "
        "policy IR (policy.json + policy.safetensors), train.json (config, curve, evaluations) and curve.png.",
    )
    p.add_argument("env_id", metavar="ENV_ID", help="e.g. CartPole-v1, edge_rl/AntiJam-v0")
    p.add_argument(
        "--steps", type=positive_int, default=None, help="environment step budget (default: preset or 50000)"
    )
    p.add_argument("--seed", type=count, default=None, help="random seed (default: 0)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<env>-seed<seed>)")
    p.add_argument("--hidden", type=int_list, default=None, metavar="N,N", help="hidden widths (default: 64,64)")
    p.add_argument(
        "--env-kwargs", type=json_object, default=None, metavar="JSON", help="kwargs for gymnasium.make (default: {})"
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE.toml",
        help="settings file ([dqn] table or top level) (default: none: preset values)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from edge_rl.train.config import DQNConfig  # pure Python: no torch at parse time

    add_dataclass_options(
        p.add_argument_group("DQN settings (override the preset and --config)"),
        DQNConfig,
        skip={"env_id", "env_kwargs", "steps", "seed", "hidden"},
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edge_rl.errors import BadInput
    from edge_rl.train.config import FIELD_NAMES, resolve_config

    overrides = {k: v for k, v in vars(args).items() if k in FIELD_NAMES and k != "env_id"}
    try:
        cfg = resolve_config(args.env_id, args.config, **overrides)
    except OSError as e:
        raise BadInput(f"cannot read {args.config}: {e.strerror}") from None
    except ValueError as e:  # includes TOML syntax errors
        raise BadInput(f"{e}") from None

    from edge_rl.gymenv import make_env
    from edge_rl.table import print_table

    make_env(cfg.env_id, cfg.env_kwargs).close()  # fail fast on a bad env before importing torch
    from edge_rl.train.dqn import train_dqn

    out = args.out or Path("runs") / f"{cfg.env_id.split('/')[-1]}-seed{cfg.seed}"
    policy, log = train_dqn(cfg, out, progress=not args.quiet)
    print_table(
        ["env", "steps", "stopped early", "best eval return", "at step", "params", "run directory"],
        [
            [
                cfg.env_id,
                log.steps,
                log.stopped_early,
                f"{log.best_return:.2f}",
                log.best_step,
                policy.n_params,
                str(out),
            ]
        ],
    )
    return 0
