"""`edge-rl` console script: one parser, one module per subcommand, imports deferred.

Each subcommand module offers `add(subparsers)` and `run(args) -> int`; heavy dependencies
(torch, gymnasium, matplotlib) are imported inside `run`, so `edge-rl eval --help` and device
commands start fast and never pull in torch. Bad input ends with one line on stderr and the
error's exit code (2 unless a command documents another), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import edge_rl
from edge_rl import __version__
from edge_rl.errors import BadInput, ExitCode

COMMANDS = (
    "train",
    "eval",
    "distill",
    "quantize",
    "card",
    "export",
    "verify",
    "keygen",
    "adapt",
    "run",
    "device",
    "broker",
    "monitor",
    "sweep",
    "report",
)
EXTRAS = {  # a missing third-party module -> the extra that installs it (a device install has no torch)
    "torch": "train",
    "tqdm": "train",
    "matplotlib": "train",
    "gymnasium": "train",
    "onnx": "export",
    "flatbuffers": "export",
    "ai_edge_litert": "export",
    "onnxruntime": "onnx",
    "cryptography": "device",
    "serial": "bridge",
    "paho": "bridge",
    "rich": "monitor",
    "prometheus_client": "monitor",
    "amqtt": "demo",
    "scipy": "stats",
    "ray": "scale",
}


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (plus where to look) instead of the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(ExitCode.BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    parser = Parser(prog="edge-rl", description=edge_rl.__doc__)
    parser.add_argument("--version", action="version", version=f"edge-rl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, required=True)
    for name in COMMANDS:
        importlib.import_module(f"edge_rl.cli.cmd_{name}").add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BadInput as e:
        print(f"edge-rl {args.command}: error: {e}", file=sys.stderr)
        return int(e.exit_code)
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in EXTRAS:
            raise
        print(
            f"edge-rl {args.command}: error: this install has no {top}: pip install 'edge-rl[{EXTRAS[top]}]'",
            file=sys.stderr,
        )
        return int(ExitCode.BAD_INPUT)
    except KeyboardInterrupt:
        print(f"edge-rl {args.command}: interrupted", file=sys.stderr)
        return 130
