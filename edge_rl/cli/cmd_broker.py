"""`edge-rl broker`: the embedded demo MQTT broker (amqtt), in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from edge_rl.cli.common import _bounded

port_number = _bounded(int, 0, inclusive=True, high=65535)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "broker",
        help="run a small MQTT broker for demos and tests (loopback, in memory, pip-installed)",
        description="An embedded MQTT 3.1.1 broker (amqtt, `pip install 'edge-rl[demo]'`) so a demo needs "
        "nothing else installed. Prints `edge-rl broker: listening on mqtt://HOST:PORT` once it accepts "
        "connections and runs until SIGINT or SIGTERM. Any client that sends a username is accepted, whatever "
        "the password (a username is needed for offline messages of persistent sessions to be queued); no TLS, "
        "no ACL, nothing kept across a restart, and a connecting client may also receive other subscribers' "
        "retained messages (filter by topic). For production use Mosquitto with examples/deploy/mosquitto.conf. "
        "Exit codes: 0 stopped by SIGINT/SIGTERM; 1 the broker failed while running; 2 bad arguments, the port "
        "is in use or the address cannot be bound, or amqtt is not installed.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on: 127.0.0.1 keeps it to this machine; 0.0.0.0 opens it to the network to "
        "anyone with any username (default: 127.0.0.1)",
    )
    p.add_argument(
        "--port", type=port_number, default=1883, help="TCP port; 0 picks a free one and prints it (default: 1883)"
    )
    p.add_argument("--verbose", action="store_true", help="log connections and subscriptions on stderr")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edge_rl.broker import Broker

    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("edge-rl broker: %(message)s"))
        amqtt_log = logging.getLogger("amqtt")
        amqtt_log.addHandler(handler)
        amqtt_log.setLevel(logging.INFO)
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        broker = Broker(args.host, args.port).start()
        try:
            print(f"edge-rl broker: listening on {broker.url}", flush=True)
            if broker.host not in ("127.0.0.1", "::1"):
                print(
                    f"edge-rl broker: warning: {broker.host} is reachable from other machines and this broker "
                    "accepts any username with any password (demo only)",
                    file=sys.stderr,
                    flush=True,
                )
            while not stop.wait(0.5):
                if not broker.running:
                    print("edge-rl broker: error: the broker stopped unexpectedly", file=sys.stderr)
                    return 1
        finally:
            broker.stop()
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
    print("edge-rl broker: stopped", file=sys.stderr)
    return 0
