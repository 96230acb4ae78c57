"""`edge-rl card`: a saved policy's size, precision and cost per layer (numpy only; never torch).

With an environment it also runs the policy against a reference (by default the teacher it was
distilled or quantized from) and reports returns and action agreement.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_rl.cli.common import add_env_options, count, positive_int

if TYPE_CHECKING:
    from edge_rl.policy import Policy


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "card",
        help="show a policy's parameters, bytes, compression and MACs per layer",
        description="Print the model card of the policy in DIR. With --env (or --reference) also compare it "
        "with a reference policy over N greedy episodes (episode i is reset with seed S+i): returns, their "
        "ratio, and the fraction of the reference's states on which both pick the same action.",
    )
    p.add_argument("policy_dir", metavar="DIR", type=Path, help="directory holding policy.json + policy.safetensors")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_env_options(p, "no comparison; with --reference, the training env")
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        metavar="DIR2",
        help="reference policy directory (default: the teacher_dir the policy records, if it exists)",
    )
    p.add_argument("--episodes", type=positive_int, default=20, help="episodes for the comparison (default: 20)")
    p.add_argument("--seed", type=count, default=0, help="seed of the first episode (default: 0)")
    p.set_defaults(run=run)


def _reference_dir(args: argparse.Namespace, metadata: dict[str, Any]) -> Path:
    """--reference, else the recorded teacher directory if it is still there."""
    from edge_rl.errors import BadInput

    if args.reference is not None:
        return args.reference
    teacher = metadata.get("teacher_dir")
    if isinstance(teacher, str) and Path(teacher).is_dir():
        return Path(teacher)
    found = f"its teacher_dir {teacher!r} does not exist" if teacher else "it records no teacher_dir"
    raise BadInput(f"no reference policy to compare {args.policy_dir} with ({found}); pass --reference DIR2")


def _comparison(args: argparse.Namespace, policy: Policy) -> dict[str, Any]:
    """Run the comparison the arguments ask for: env and kwargs default to the training ones."""
    from edge_rl.card import compare
    from edge_rl.errors import BadInput
    from edge_rl.policy import Policy

    env_id = args.env or policy.metadata.get("env_id")
    if not env_id:
        raise BadInput(f"{args.policy_dir} does not record its environment; pass --env ENV_ID")
    env_kwargs = args.env_kwargs if args.env_kwargs is not None else policy.metadata.get("env_kwargs", {})
    reference_dir = _reference_dir(args, policy.metadata)
    reference = Policy.load(reference_dir)
    result = compare(policy, reference, env_id, env_kwargs, args.episodes, args.seed)
    return {"reference_dir": str(reference_dir), "env_id": env_id, "episodes": args.episodes, **result}


def run(args: argparse.Namespace) -> int:
    from edge_rl.card import format_card, model_card
    from edge_rl.policy import Policy
    from edge_rl.table import format_table

    policy = Policy.load(args.policy_dir)
    card = model_card(policy)
    comparison = _comparison(args, policy) if args.env or args.reference else None
    if args.json:
        print(json.dumps(card if comparison is None else {**card, "comparison": comparison}))
        return 0
    print(format_card(card))
    if comparison is not None:
        header = ["reference", "env", "episodes", "return", "reference return", "return ratio", "agreement", "states"]
        c = comparison
        ratio = "-" if c["return_ratio"] is None else c["return_ratio"]
        row = [c["reference_dir"], c["env_id"], c["episodes"], c["return"], c["reference_return"]]
        row += [ratio, c["agreement"], c["states"]]
        print()
        print(format_table(header, [row]))
    return 0
