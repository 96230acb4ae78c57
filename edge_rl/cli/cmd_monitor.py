"""`edge-rl monitor`: the fleet's telemetry live in a table or a browser, recorded, plotted, served to Prometheus."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_rl.cli.common import count, positive_float, positive_int
from edge_rl.errors import BadInput

REFRESH_S = 0.5  # the live table is redrawn at most this often
DRAW_SHARE = 0.25  # ... and less often when drawing takes longer: at most this share of a core
TABLE_CHROME = 7  # terminal lines the live table needs besides its device rows (title, header, borders, caption)


def port_number(text: str) -> int:
    """argparse type for a TCP port (0 lets the system pick a free one)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port 0-65535, got {text!r}")
    return value


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "monitor",
        help="watch the fleet's telemetry over MQTT: live table, web view, record, replay, plot, Prometheus",
        description="Subscribes to edgerl/+/telemetry and edgerl/+/status (MQTT 3.1.1, QoS 1) and shows one "
        "row per device: presence, bundle, adaptation mode, boot, sparklines of success rate and mean return, "
        "loop latency, promotions and rollbacks, safe actions, message accounting (de-duplicated by boot and "
        "seq; gaps are seqs still missing) and alarms (offline or silent, gaps, recent rollback / drift_alarm "
        "/ fallback events, safe-action bursts). Bad messages are counted, never fatal; a broker that is not "
        "reachable is retried. On a terminal the table is live (as many rows as fit, devices with alarms "
        "first); otherwise (or with --once) it is printed at exit. --web serves the same table with learning "
        "curves to a browser, live. Exit codes: 0 done (after --duration, Ctrl-C or SIGTERM); 2 bad arguments.",
    )
    p.add_argument(
        "url",
        nargs="?",
        metavar="URL",
        help="broker: mqtt://host:port or mqtts://host:port (default: none; give a URL or --replay)",
    )
    p.add_argument(
        "--replay",
        type=Path,
        metavar="FILE.jsonl",
        help="render a session written by --record instead of connecting (default: none)",
    )
    p.add_argument("--device", metavar="ID", help="watch only this device (default: every device)")
    p.add_argument(
        "--plot", type=Path, metavar="OUT.png", help="write learning curves with event markers at exit (default: none)"
    )
    p.add_argument(
        "--record",
        type=Path,
        metavar="FILE.jsonl",
        help="append every received message (topic, parsed payload, receive time) as JSON lines (default: none)",
    )
    p.add_argument(
        "--prometheus",
        type=port_number,
        metavar="PORT",
        help="serve the figures as Prometheus metrics on this port, 0 picks one (default: none)",
    )
    p.add_argument(
        "--web",
        type=port_number,
        metavar="PORT",
        help="serve a live web view (the table with learning curves, server-sent events; /fleet.json the summary) "
        "on this port, 0 picks one and prints the URL (default: none)",
    )
    p.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="ADDR",
        help="address --prometheus and --web listen on (default: 127.0.0.1)",
    )
    p.add_argument(
        "--username",
        metavar="NAME",
        help="MQTT user name (default: the URL's user, else edge-rl-monitor: amqtt queues only for named clients)",
    )
    p.add_argument(
        "--password-env",
        metavar="VAR",
        help="environment variable holding the MQTT password, never the password itself (default: none)",
    )
    p.add_argument("--ca", type=Path, metavar="CA.pem", help="CA certificates for mqtts:// (default: the system's CAs)")
    p.add_argument(
        "--client-id",
        metavar="ID",
        help="stable MQTT client id: a persistent session, so the broker queues telemetry while the monitor is "
        "away and delivers it on return (default: a random id and a clean session)",
    )
    p.add_argument("--keepalive", type=positive_int, default=10, metavar="S", help="MQTT keepalive (default: 10)")
    p.add_argument(
        "--duration", type=positive_float, metavar="S", help="exit after S seconds (default: until Ctrl-C or SIGTERM)"
    )
    p.add_argument("--once", action="store_true", help="no live table: print it once at exit (default without a TTY)")
    p.add_argument("--json", action="store_true", help="print the fleet summary as JSON at exit instead of the table")
    p.add_argument(
        "--safe-burst",
        type=count,
        default=10,
        metavar="N",
        help="alarm when safe actions rise by more than N from one sample to the next (default: 10)",
    )
    p.add_argument(
        "--alarm-window",
        type=positive_float,
        default=300.0,
        metavar="S",
        help="how long a rollback, drift alarm, fallback or safe burst stays an alarm, seconds (default: 300)",
    )
    p.add_argument(
        "--silent-after",
        type=positive_float,
        metavar="S",
        help="a device not heard from for S seconds is `silent` (default: 3 sample intervals, at least 10)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from edge_rl.monitor.fleet import Fleet

    fleet = Fleet(
        args.device, safe_burst=args.safe_burst, alarm_window=args.alarm_window, silent_after=args.silent_after
    )
    if args.plot is not None and not args.plot.parent.is_dir():
        raise BadInput(f"--plot {args.plot}: directory {args.plot.parent} does not exist")
    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200  # a pipe would get 80 columns
    console = Console(width=width)
    if args.replay is not None:
        return replay(args, fleet, console)
    if args.url is None:
        raise BadInput("give a broker URL (mqtt://host:port) or --replay FILE.jsonl")
    return watch(args, fleet, console)


def replay(args: argparse.Namespace, fleet: Any, console: Any) -> int:
    from edge_rl.monitor import record

    live_only = {
        "url": "a broker URL",
        "record": "--record",
        "prometheus": "--prometheus",
        "web": "--web",
        "duration": "--duration",
    }
    for key, flag in live_only.items():
        if getattr(args, key) is not None:
            raise BadInput(f"--replay renders a recorded session: {flag} needs a live broker")
    replayed = record.replay(args.replay, fleet)
    if replayed.skipped:
        print(f"edge-rl monitor: {args.replay}: {replayed.skipped} unreadable lines skipped", file=sys.stderr)
    now = replayed.last_at if replayed.last_at is not None else time.time()
    report(args, fleet, now, f"edge-rl fleet · replay of {args.replay} ({replayed.lines} messages)", console)
    return 0


def watch(args: argparse.Namespace, fleet: Any, console: Any) -> int:
    from edge_rl.monitor.live import Monitor
    from edge_rl.monitor.record import Recorder
    from edge_rl.monitor.subscribe import CLIENT_ID, DEFAULT_USERNAME, Broker, parse_url

    host, port, tls, url_user = parse_url(args.url)
    if args.ca is not None and not tls:
        raise BadInput("--ca is for TLS: use an mqtts:// URL")
    password = None
    if args.password_env is not None:
        password = os.environ.get(args.password_env)
        if password is None:
            raise BadInput(f"--password-env {args.password_env}: no such environment variable")
    if args.client_id is not None and not CLIENT_ID.match(args.client_id):
        raise BadInput(f"--client-id {args.client_id!r}: use 1-64 letters, digits, '_', '.', ':' or '-'")
    username = args.username or url_user or DEFAULT_USERNAME
    broker = Broker(host, port, tls, username, password, args.ca, args.client_id, args.keepalive)
    recorder = Recorder(args.record) if args.record is not None else None
    monitor = Monitor(broker, fleet, recorder)
    exporter = web = None
    views: list[Callable[[], None]] = []  # called in the monitor's thread after each batch of messages
    interactive = console.is_terminal and not (args.once or args.json)
    stop = threading.Event()
    restore = _stop_on_sigterm(stop)
    try:
        if args.prometheus is not None:
            from edge_rl.monitor.prometheus import Exporter

            exporter = Exporter(fleet, monitor.lock, args.prometheus, args.bind)
            print(f"edge-rl monitor: metrics on http://{args.bind}:{exporter.port}/metrics", file=sys.stderr)
        if args.web is not None:
            from edge_rl.monitor.web import WebView

            web = WebView(fleet, monitor.lock, args.web, args.bind, monitor.status)
            views.append(web.tick)
            print(f"edge-rl monitor: web view on {web.url}", file=sys.stderr, flush=True)
        try:
            if interactive:
                _live(monitor, args.duration, stop, console, views)
            else:
                _quiet(monitor, args.duration, stop, views)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a live monitor is stopped: the final table, record and plot still follow
    finally:
        restore()
        if exporter is not None:
            exporter.close()
        if web is not None:
            web.close()
        if recorder is not None:
            recorder.close()
    if not interactive:
        report(args, fleet, time.time(), f"edge-rl fleet · {monitor.status()}", console)
    elif args.plot is not None:
        _plot(args.plot, fleet)
    return 0


def _live(
    monitor: Any, duration: float | None, stop: threading.Event, console: Any, views: list[Callable[[], None]]
) -> None:
    """The table redrawn in place every REFRESH_S, or less often if drawing would take more than DRAW_SHARE of a
    core (a safety net: 200 rows take ~50 ms); only the rows that fit the terminal; left on screen at the end."""
    from rich.live import Live

    from edge_rl.monitor.view import fleet_table

    def table() -> Any:
        rows = max(1, console.size.height - TABLE_CHROME)
        with monitor.lock:
            return fleet_table(monitor.fleet, time.time(), f"edge-rl fleet · {monitor.status()}", rows)

    due = [0.0]

    def show() -> None:
        for view in views:
            view()
        started = time.monotonic()
        if started >= due[0]:
            live.update(table(), refresh=True)
            due[0] = started + max(REFRESH_S, (time.monotonic() - started) / DRAW_SHARE)

    with Live(table(), console=console, auto_refresh=False) as live:
        try:
            monitor.run(duration, stop, show)
        finally:
            live.update(table(), refresh=True)


def _quiet(monitor: Any, duration: float | None, stop: threading.Event, views: list[Callable[[], None]]) -> None:
    """No live table: one stderr line whenever the connection status changes."""
    said = [""]

    def show() -> None:
        for view in views:
            view()
        status = monitor.status()
        if status != said[0]:
            print(f"edge-rl monitor: {status}", file=sys.stderr)
            said[0] = status

    monitor.run(duration, stop, show)


def report(args: argparse.Namespace, fleet: Any, now: float, title: str, console: Any) -> None:
    """At exit: the table (or --json), then --plot."""
    from edge_rl.monitor.view import fleet_table

    if args.json:
        print(json.dumps(fleet.summary(now), indent=1))
    else:
        console.print(fleet_table(fleet, now, title))
    if args.plot is not None:
        _plot(args.plot, fleet)


def _plot(path: Path, fleet: Any) -> None:
    from edge_rl.monitor.plot import write_plot

    markers = write_plot(fleet, path)
    shown = ", ".join(f"{n} {name}" for name, n in markers.items() if n) or "no markers"
    print(f"edge-rl monitor: wrote {path} ({shown})", file=sys.stderr)


def _stop_on_sigterm(stop: threading.Event) -> Any:
    """SIGTERM ends the session like Ctrl-C (final table, record closed); returns what restores the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    return lambda: signal.signal(signal.SIGTERM, previous)
