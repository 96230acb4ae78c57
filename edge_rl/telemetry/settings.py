"""Where telemetry goes and how it authenticates, checked whole at start (one line on any problem).

The URL carries only the broker (`mqtt://host[:port]`, `mqtts://host[:port]`); credentials and
certificates come from the `[telemetry]` config, the password from an environment variable, so
neither a command line nor a config file holds a secret. There is no way to turn certificate
checks off: `tls_insecure` is refused where it could be given.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from edge_rl.errors import BadInput
from edge_rl.telemetry import schema

if TYPE_CHECKING:
    from edge_rl.daemon.config import TelemetryConfig

PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    tls: bool
    device: str
    username: str
    password: str | None
    ca: str | None
    certfile: str | None
    keyfile: str | None
    interval_s: float
    keepalive_s: int
    reconnect_s: tuple[float, float]
    outbox_bytes: int
    success_reward: float

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _check_tls_files(ca: str | None, certfile: str | None, keyfile: str | None) -> None:
    """Load the certificates now: a malformed file is a one-line refusal at start, not a failure later."""
    try:
        context = ssl.create_default_context(cafile=ca)
        if certfile is not None:
            context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise BadInput(f"[telemetry] cannot load the TLS files ({e})") from None


def from_config(c: TelemetryConfig, device_id: str) -> Settings | None:
    """Settings from the `[telemetry]` config (None when its url is empty: telemetry off)."""
    url = c.url
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in PORTS:
        raise BadInput(f"telemetry url {url!r}: use mqtt://host:port or mqtts://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise BadInput(
            f"telemetry url {url!r}: only host and port; the device id, user and password come from [telemetry]"
        )
    try:
        port = parts.port or PORTS[parts.scheme]
    except ValueError:
        raise BadInput(f"telemetry url {url!r}: bad port") from None
    if not parts.hostname:
        raise BadInput(f"telemetry url {url!r}: no host")
    device = schema.check_device(c.device or device_id)
    password = None
    if c.password_env:
        password = os.environ.get(c.password_env)
        if password is None:
            raise BadInput(f"[telemetry] password_env: ${c.password_env} is not set")
    tls = parts.scheme == "mqtts"
    files = {name: getattr(c, name) or None for name in ("ca", "certfile", "keyfile")}
    if not tls and any(files.values()):
        raise BadInput(f"[telemetry] certificates are given but the url {url!r} is not mqtts://")
    if bool(files["certfile"]) != bool(files["keyfile"]):
        raise BadInput("[telemetry] certfile and keyfile go together")
    for name, path in files.items():
        if path is not None and not os.access(path, os.R_OK):
            raise BadInput(f"[telemetry] {name}: cannot read {Path(path)}")
    if tls:
        _check_tls_files(files["ca"], files["certfile"], files["keyfile"])
    if c.reconnect_min_s > c.reconnect_max_s:
        raise BadInput("[telemetry] reconnect_min_s is larger than reconnect_max_s")
    return Settings(
        host=parts.hostname,
        port=port,
        tls=tls,
        device=device,
        username=c.username or device,
        password=password,
        ca=files["ca"],
        certfile=files["certfile"],
        keyfile=files["keyfile"],
        interval_s=c.interval_s,
        keepalive_s=c.keepalive_s,
        reconnect_s=(c.reconnect_min_s, c.reconnect_max_s),
        outbox_bytes=c.outbox_bytes,
        success_reward=c.success_reward,
    )
