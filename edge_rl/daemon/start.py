"""Starting the daemon in the only safe order: config, bundle verified, state recovered, link, loop.

Nothing is opened towards the device before the bundle passed every check (hashes, signature
when a key is given, version against the installed one, golden I/O on the backend that will
act). The installed version is recorded in the state directory, so an older bundle is refused
(exit 6) at the next start unless `--allow-downgrade` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_rl.daemon.config import DaemonConfig
from edge_rl.daemon.events import EventLog
from edge_rl.daemon.loop import Daemon
from edge_rl.daemon.service import Notifier, Signals
from edge_rl.daemon.source import BundleSource, installed_version, record_installed
from edge_rl.errors import BadInput, ExitCode
from edge_rl.signing import read_public_key
from firmware_bridge import IncompatiblePeer, LinkError, open_link
from firmware_bridge.protocol import Hello

EVENTS = "events.jsonl"


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
    state_dir = options.state_dir
    if state_dir is not None:
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(f"{state_dir}: cannot create the state directory ({e.strerror or e})") from None
    installed = installed_version(state_dir)
    key = read_public_key(options.public_key) if options.public_key is not None else None
    source = BundleSource(options.bundle, key, options.backend, options.allow_downgrade)
    events = EventLog(state_dir / EVENTS if state_dir is not None else None)
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
        with actor:
            try:
                link = open_link(options.link, hello, role="host")
            except LinkError as e:
                raise BadInput(str(e)) from None
            with link:
                daemon = Daemon(
                    bundle, actor, link, config, events, state_dir, options.config_path, Notifier(), signals, source
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
        events.close()
