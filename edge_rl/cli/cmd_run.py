"""`edge-rl run`: the device daemon (verify the bundle, open the link, act, learn in a shadow, keep state)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_rl.cli.common import count

BACKEND_NAMES = {"auto": "auto", "numpy": "numpy", "onnx": "onnxruntime", "litert": "litert"}
EXIT_CODES = (
    "0 stopped by SIGTERM/SIGINT or after --steps (state saved); 1 no backend passed the golden I/O here; "
    "2 bad arguments, config or link URL; 3 damaged bundle; 4 bad or missing signature; 5 unknown bundle "
    "schema; 6 older than the installed bundle; 8 the device speaks another protocol or is another device"
)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a bundle on this device: control loop, shadow learning, durable state",
        description="Verifies BUNDLE (hashes, signature with --public-key, golden I/O on the chosen backend) "
        "before opening the link, then answers every OBS with an ACTION from the incumbent policy: invalid "
        "input, a deadline miss or a non-finite output get the bundle's safe action on the same step. With "
        "--adapt, a stream Q(lambda) learner learns in a shadow after each action is sent; its candidates "
        "act only after a gate (sanity checks and a trial they must win), a drift in reward rolls back to "
        "last-good. State is checkpointed atomically to --state-dir and resumed on start. SIGHUP reloads "
        "--config, SIGTERM saves and exits; systemd's notify and watchdog protocol is spoken when "
        f"$NOTIFY_SOCKET is set. Exit codes: {EXIT_CODES}.",
    )
    p.add_argument("bundle", metavar="BUNDLE", type=Path, help="bundle directory written by `edge-rl export`")
    p.add_argument(
        "--link",
        required=True,
        metavar="URL",
        help="the device: serial:///dev/ttyUSB0?baud=115200, mqtt://host:1883/DEVICE_ID, "
        "sim://edge_rl/AntiJam-v0?jammer=sweeping, replay://run.jsonl (required)",
    )
    p.add_argument(
        "--adapt",
        choices=("off", "head", "full"),
        default=None,
        help="shadow learning: off, head (the last layer over the deployed body) or full (every layer) "
        "(default: the config's [adapt] mode, else off)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="checkpoints, the installed bundle's version and events.jsonl (default: none: nothing persists)",
    )
    p.add_argument("--config", type=Path, default=None, metavar="FILE.toml", help="settings (default: built-in)")
    p.add_argument(
        "--public-key", type=Path, default=None, metavar="PUB", help="require a signature by this key (default: none)"
    )
    p.add_argument(
        "--backend",
        choices=tuple(BACKEND_NAMES),
        default="auto",
        help="what runs the bundle: auto picks the fastest that passes the golden I/O here (default: auto)",
    )
    p.add_argument("--allow-downgrade", action="store_true", help="accept a bundle older than the installed one")
    p.add_argument("--steps", type=count, default=0, help="answered OBS before exiting (default: 0 = until stopped)")
    p.add_argument(
        "--device-id",
        default="edge-rl-host",
        help="this daemon's id: in HELLO and in the telemetry topics edgerl/<id>/... (default: edge-rl-host)",
    )
    p.add_argument(
        "--telemetry",
        default=None,
        metavar="URL",
        help="publish samples and events to this MQTT broker, mqtt://host:1883 or mqtts://host:8883, and take "
        "commands from it (docs/telemetry.md; credentials and TLS files in the config's [telemetry]) "
        "(default: the config's [telemetry] url, else none)",
    )
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.add_argument("--print-config", action="store_true", help="print every config key with its default and exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edge_rl.daemon import config as config_file

    if args.print_config:
        print(config_file.describe(), end="")
        return 0
    config = config_file.load(args.config).with_mode(args.adapt).with_telemetry(args.telemetry)
    from edge_rl.daemon.service import Signals

    signals = Signals()
    signals.install()  # from here on, SIGTERM during verification still ends cleanly
    from edge_rl.daemon.start import Options, run_daemon

    options = Options(
        args.bundle,
        args.link,
        args.state_dir,
        args.config,
        args.public_key,
        BACKEND_NAMES[args.backend],
        args.allow_downgrade,
        args.steps,
        args.device_id,
    )
    summary = run_daemon(options, config, signals).summary()
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        print_summary(summary)
    return 0


def print_summary(s: dict) -> None:
    from edge_rl.table import print_table

    rows = [
        ["steps answered", s["steps"]],
        ["policy actions", s["policy_actions"]],
        ["safe actions", s["safe_actions"]],
        *[[f"  safe: {k}", v] for k, v in sorted(s["fallbacks"].items())],
        ["ACTIONs the link refused", s["unsent"]],
        ["episodes ended", s["terminal"]],
        ["transitions", s["transitions"]],
        ["OBS -> ACTION p50 us", s["latency_p50_us"]],
        ["OBS -> ACTION p99 us", s["latency_p99_us"]],
        ["gate phase", s["gate"]["phase"]],
        *[[f"  {k}", v] for k, v in s["gate"].items() if k != "phase" and v],
        *[[f"learner {k}", v] for k, v in s["learner"].items()],
        ["incumbent", s["incumbent"]],
        ["watchdog pings", s["watchdog_pings"]],
        ["loop time on telemetry (ms)", s["telemetry_loop_ms"]],
    ]
    print_table(["daemon", "value"], rows)
    sys.stdout.flush()
