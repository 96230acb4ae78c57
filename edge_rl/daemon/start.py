"""Starting the daemon in the only safe order: config, bundle verified, state recovered, link, loop.

Nothing is opened towards the device before the bundle passed every check (hashes, signature
when a key is given, version against the installed one, golden I/O on the backend that will
act). The installed version is recorded in the state directory, so an older bundle is refused
(exit 6) at the next start unless `--allow-downgrade` says otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_rl.daemon.config import DaemonConfig
from edge_rl.daemon.events import EventLog
from edge_rl.daemon.loop import Daemon
from edge_rl.daemon.operator import bundle_status
from edge_rl.daemon.service import Notifier, Signals
from edge_rl.daemon.source import BundleSource, installed_version, record_installed
from edge_rl.errors import BadInput, ExitCode
from edge_rl.signing import read_public_key
from edge_rl.telemetry import settings
from firmware_bridge import IncompatiblePeer, LinkError, open_link
from firmware_bridge.protocol import Hello

if TYPE_CHECKING:
    from edge_rl.bundle import Bundle
    from edge_rl.telemetry.publish import Publisher

EVENTS = "events.jsonl"
OUTBOX = "telemetry.sqlite"
SWITCH_INTERVAL_S = 0.001


class PeerMismatch(BadInput):
    exit_code = ExitCode.PEER_MISMATCH


@dataclass(frozen=True)
class Options:
    bundle: Path
    link: str
    state_dir: Path | None = None
    config_path: Path | None = None
    public_key: Path | None = None
    backend: str = "auto"
    allow_downgrade: bool = False
    steps: int = 0
    device_id: str = "edge-rl-host"


def run_daemon(options: Options, config: DaemonConfig, signals: Signals) -> Daemon:
    """Verify, resume, connect and run until stopped; returns the stopped daemon (for its summary)."""
    # A background thread (events, checkpoints, telemetry) holding the GIL when an OBS arrives is
    # made to yield within 1 ms instead of Python's default 5 ms.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    state_dir = options.state_dir
    if state_dir is not None:
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(f"{state_dir}: cannot create the state directory ({e.strerror or e})") from None
    telemetry_settings = settings.from_config(config.telemetry, options.device_id)  # bad settings: exit 2 now
    installed = installed_version(state_dir)
    key = read_public_key(options.public_key) if options.public_key is not None else None
    source = BundleSource(options.bundle, key, options.backend, options.allow_downgrade)
    events = EventLog(state_dir / EVENTS if state_dir is not None else None)
    telemetry = None
    try:
        actor, bundle, report = source.load(installed)
        backend = report["fastest"] if options.backend == "auto" else options.backend
        events.emit(
            "verified",
            bundle=str(options.bundle),
            version=bundle.version,
            signer=bundle.signer,
            backend=backend,
            latency_us=round(report["backends"][backend]["latency_us"], 1),
        )
        if state_dir is not None and installed != bundle.version:
            record_installed(state_dir, bundle)
        spec = bundle.policy
        hello = Hello(
            options.device_id[:32],
            tuple(spec.observation.shape),
            spec.action.n,
            spec.action.safe,
            heartbeat_ms=config.control.heartbeat_ms,
        )
        if telemetry_settings is not None:
            telemetry = _start_telemetry(telemetry_settings, events, bundle, config, state_dir)
        with actor:
            try:
                link = open_link(options.link, hello, role="host")
            except LinkError as e:
                raise BadInput(str(e)) from None
            with link:
                daemon = Daemon(
                    bundle,
                    actor,
                    link,
                    config,
                    events,
                    state_dir,
                    options.config_path,
                    Notifier(),
                    signals,
                    source,
                    telemetry,
                )
                daemon.resume()
                try:
                    daemon.run(options.steps)
                except IncompatiblePeer as e:
                    raise PeerMismatch(str(e)) from None
                finally:
                    daemon.stop()
        return daemon
    finally:
        if telemetry is not None:
            events.listeners.remove(telemetry.event)
            telemetry.close()  # after the last event ("stopped"): it is published if the broker is there
        events.close()


def _start_telemetry(
    s: settings.Settings, events: EventLog, bundle: Bundle, config: DaemonConfig, state_dir: Path | None
) -> Publisher:
    """The publisher, with the events emitted so far (verification) and every later one."""
    from edge_rl.telemetry.publish import Publisher  # paho only when telemetry is on

    status = bundle_status(bundle, config.adapt.mode)
    telemetry = Publisher(s, events.boot_id, status, state_dir / OUTBOX if state_dir is not None else None)
    for record in list(events.recent):
        telemetry.event(record)
    events.listeners.append(telemetry.event)
    return telemetry
