"""`edge-rl keygen`: an Ed25519 key pair for signing bundles."""

from __future__ import annotations

import argparse
from pathlib import Path


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keygen",
        help="create an Ed25519 key pair for signing bundles",
        description="Writes KEY (private, PEM, mode 0600) and KEY.pub (public, PEM); never overwrites a key. "
        "Sign with `edge-rl export --sign KEY`, check on the device with `edge-rl verify --public-key KEY.pub`.",
    )
    p.add_argument(
        "--out", type=Path, required=True, metavar="KEY", help="private key path; KEY.pub is written beside it"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edge_rl.signing import generate_keypair

    private, public = generate_keypair(args.out)
    print(f"private key {private} (keep it on the training box), public key {public} (install it on devices)")
    return 0
