"""`edge-rl device`: run an environment as a device speaking protocol 1.0 over a real link."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_rl.cli.common import count, json_object, milliseconds, positive_int, positive_milliseconds
from edge_rl.errors import ExitCode


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "device",
        help="run an environment as a device on a serial port or MQTT, for demos and tests",
        description="Plays the hardware: ENV_ID's observations go out as OBS frames over --link and the "
        "ACTIONs that come back step it. No valid ACTION in time, or a link that is not ready, means the "
        "safe action (the deadman). Runs until --steps or Ctrl-C / SIGTERM, then prints a summary.",
    )
    p.add_argument("env", metavar="ENV_ID", help="Gymnasium id, e.g. CartPole-v1 or edge_rl/AntiJam-v0")
    p.add_argument(
        "--link",
        required=True,
        metavar="URL",
        help="device side of the link: serial:///dev/ttyX?baud=115200, socket://host:port or "
        "mqtt://host:port/DEVICE_ID (required)",
    )
    p.add_argument(
        "--env-kwargs", type=json_object, default=None, metavar="JSON", help="kwargs for gymnasium.make (default: none)"
    )
    p.add_argument("--device-id", default="sim-device", help="id announced in HELLO (default: sim-device)")
    p.add_argument("--seed", type=count, default=0, help="seed of the first episode (default: 0)")
    p.add_argument("--steps", type=count, default=0, help="env steps before exiting (default: 0 = until stopped)")
    p.add_argument(
        "--period-ms",
        type=milliseconds,
        default=0.0,
        help="step every PERIOD ms with the newest valid ACTION (default: 0 = lock step with the host)",
    )
    p.add_argument(
        "--action-timeout-ms",
        type=positive_milliseconds,
        default=200.0,
        help="lock step: how long to wait for the ACTION answering an OBS before the safe action (default: 200)",
    )
    p.add_argument("--heartbeat-ms", type=positive_int, default=100, help="heartbeat period (default: 100)")
    p.add_argument(
        "--shift",
        action="append",
        default=[],
        metavar="STEP:JSON",
        help="change the env at env step STEP: attributes of the unwrapped env, or reward_scale (e.g. -1 poisons "
        'the reported reward); repeatable, e.g. --shift \'5000:{"jammer": "reactive"}\' (default: none)',
    )
    p.add_argument(
        "--stats",
        type=Path,
        default=None,
        metavar="FILE.jsonl",
        help="append ground truth per --window steps: true mean reward, success rate, safe steps (default: none)",
    )
    p.add_argument("--window", type=positive_int, default=1000, help="steps per --stats line (default: 1000)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edge_rl.deviceloop import serve
    from edge_rl.envdevice import EnvDevice, Shift
    from edge_rl.table import print_table
    from firmware_bridge import IncompatiblePeer, LinkError, open_link

    shifts = tuple(Shift.parse(text) for text in args.shift)
    stats = _stats_writer(args.stats) if args.stats is not None else None
    device = EnvDevice(
        args.env,
        args.env_kwargs,
        args.device_id,
        args.seed,
        min(args.heartbeat_ms, 0xFFFF),
        shifts,
        args.window if stats else 0,
        stats,
    )
    device.action_timeout_ms = args.action_timeout_ms
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    try:
        with open_link(args.link, device.hello, role="device") as link:
            serve(device, link, args.steps, args.period_ms, stop=lambda: bool(stopping))
            counters = link.counters()
    except IncompatiblePeer as exc:
        print(f"edge-rl device: error: {exc}", file=sys.stderr)
        return int(ExitCode.PEER_MISMATCH)
    except LinkError as exc:
        print(f"edge-rl device: error: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    finally:
        device.close()
    c = device.counters
    mean = c.returns_sum / c.episodes if c.episodes else float("nan")
    rows = [
        ["steps", c.steps],
        ["episodes", c.episodes],
        ["mean return", mean],
        ["safe-action steps", c.safe_steps],
        ["invalid actions", c.invalid_actions],
    ]
    rows += [[name.replace("_", " "), value] for name, value in counters.items() if value]
    print_table(["device", "value"], rows)
    return 0


def _stats_writer(path: Path) -> Callable[[dict[str, Any]], None]:
    """A line per window, flushed at once (a benchmark reads it while the device runs)."""
    from edge_rl.errors import BadInput

    try:
        out = path.open("a", encoding="utf-8")
    except OSError as e:
        raise BadInput(f"{path}: cannot write ({e.strerror or e})") from None

    def write(record: dict[str, Any]) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    return write
