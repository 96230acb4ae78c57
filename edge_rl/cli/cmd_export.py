"""`edge-rl export`: a policy IR -> a verified bundle (ONNX, TFLite, C header), no torch needed."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_rl.cli.common import add_env_options, count, load_states, positive_int

FORMATS = ("onnx", "tflite", "c")


def format_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(values) - set(FORMATS))
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"formats are a comma-separated subset of {','.join(FORMATS)}, got {text!r}")
    return list(dict.fromkeys(values))


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a policy to a verified bundle (ONNX, TFLite, C header)",
        description="Write BUNDLE: manifest.json (specs, SHA-256 of every file, card, provenance, golden I/O), the IR, "
        "and the asked formats; every available backend is run on the golden I/O and extra states before "
        "the bundle appears. Golden observations are recorded by running the policy in its environment.",
    )
    p.add_argument("policy_dir", metavar="DIR", type=Path, help="policy directory (fp32, int8 or 1-bit)")
    p.add_argument("--formats", type=format_list, default=list(FORMATS), help="subset of onnx,tflite,c (default: all)")
    p.add_argument("--out", type=Path, required=True, metavar="BUNDLE", help="new (or empty) bundle directory")
    p.add_argument(
        "--sign",
        type=Path,
        default=None,
        metavar="KEYFILE",
        help="Ed25519 private key from edge-rl keygen (default: unsigned)",
    )
    p.add_argument("--bundle-version", type=count, default=None, help="monotonic version (default: Unix time)")
    p.add_argument("--golden", type=positive_int, default=64, help="golden observations to record (>= 64, default: 64)")
    p.add_argument(
        "--states",
        type=Path,
        default=None,
        metavar="FILE.npy",
        help="held-out states to verify on (default: 1000 jittered golden states)",
    )
    p.add_argument("--seed", type=count, default=0, help="seed of the golden recording (default: 0)")
    add_env_options(p)
    p.add_argument("--json", action="store_true", help="print the verification report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edge_rl.cli.common import policy_env
    from edge_rl.policy import Policy
    from edge_rl.rollout import collect_states
    from export.exporter import export_bundle

    policy = Policy.load(args.policy_dir)
    states = load_states(args.states, policy.observation) if args.states is not None else None
    env_id, env_kwargs = policy_env(policy, args.env, args.env_kwargs, args.policy_dir)
    golden = collect_states(policy.act, env_id, args.golden, args.seed, 0.1, env_kwargs)
    out, report = export_bundle(
        policy, args.out, args.formats, golden, states, args.bundle_version, args.sign, {"source": str(args.policy_dir)}
    )
    from edge_rl.cli.cmd_verify import print_report

    print_report(report, args.json, out)
    return 0
