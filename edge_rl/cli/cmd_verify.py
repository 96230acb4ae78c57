"""`edge-rl verify`: check a bundle (hashes, signature, version) and run every backend on its golden I/O."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge_rl.cli.common import count, load_states
from edge_rl.runtime.backends import BACKENDS


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check a bundle and compare every backend with the numpy IR",
        description="Checks the listing, manifest checksum, signature (with --public-key) and every file's SHA-256 "
        "before parsing anything, then runs the backends on the golden I/O and extra states. Exit codes: "
        "0 passed, 1 a backend missed the tolerance, 2 bad arguments, 3 damaged bundle (changed, missing, "
        "extra, symlinked or pickle file, escaping path), 4 bad or missing signature, 5 unknown schema version, "
        "6 older than the installed bundle, 7 states of the wrong shape.",
    )
    p.add_argument("bundle", metavar="BUNDLE", type=Path, help="bundle directory written by `edge-rl export`")
    p.add_argument(
        "--backend",
        default="all",
        choices=("all", *BACKENDS),
        help="backend or LiteRT kernel set to check (default: all: every one the bundle and this machine offer)",
    )
    p.add_argument(
        "--public-key", type=Path, default=None, metavar="PUB", help="require a signature by this key (default: none)"
    )
    p.add_argument(
        "--states", type=Path, default=None, metavar="FILE.npy", help="held-out states (N, *obs_shape) (default: none)"
    )
    p.add_argument(
        "--extra", type=count, default=1000, help="jittered golden states when --states is not given (default: 1000)"
    )
    p.add_argument(
        "--installed", type=Path, default=None, metavar="BUNDLE", help="the bundle installed now (default: none)"
    )
    p.add_argument("--allow-downgrade", action="store_true", help="accept a version older than --installed")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def _tolerance(tol: float) -> str:
    return "0 (bit-exact: a quantized policy)" if tol == 0 else f"{tol:.3g} (fp32: 1e-6 of max |Q|)"


def print_report(report: dict[str, Any], as_json: bool, where: Path) -> None:
    from edge_rl.table import print_table

    if as_json:
        print(json.dumps(report, indent=1))
        return
    rows = []
    for name, r in report["backends"].items():
        if not r["available"]:
            rows.append([name, "-", "-", "-", "-", f"unavailable: {r['reason']}"])
            continue
        extra = r["extra"] or {"max_abs_dq": float("nan"), "agreement": float("nan")}
        result = "pass" if r["passed"] else "deviates: never used" if r["optional"] else "FAIL"
        agreement = min(r["golden"]["agreement"], extra["agreement"])
        rows.append([name, r["golden"]["max_abs_dq"], extra["max_abs_dq"], agreement, r["latency_us"], result])
    print_table(["backend", "golden max|dQ|", "extra max|dQ|", "agreement", "us/act", "result"], rows)
    verdict = "verified" if report["passed"] else "FAILED"
    print(
        f"{where}: {verdict} on {report['golden_states']} golden + {report['extra_states']} extra states, "
        f"tolerance {_tolerance(report['tolerance'])}; fastest passing backend: {report['fastest']}"
    )


def run(args: argparse.Namespace) -> int:
    from edge_rl.bundle import open_bundle
    from edge_rl.errors import ExitCode
    from edge_rl.runtime.verify import verify_bundle
    from edge_rl.signing import read_public_key

    public_key = read_public_key(args.public_key) if args.public_key is not None else None
    installed = open_bundle(args.installed).version if args.installed is not None else None
    bundle = open_bundle(args.bundle, public_key, installed, args.allow_downgrade)
    states = load_states(args.states, bundle.policy.observation) if args.states is not None else None
    backends = None if args.backend == "all" else [args.backend]
    report = verify_bundle(bundle, backends, states, args.extra)
    report["bundle_version"], report["signer"], report["signer_pinned"] = bundle.version, bundle.signer, bundle.pinned
    print_report(report, args.json, args.bundle)
    return int(ExitCode.OK if report["passed"] else ExitCode.FAILURE)
