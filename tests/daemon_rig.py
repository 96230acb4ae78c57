"""Daemon test parts: small AntiJam bundles, a daemon run in this process, transports that misbehave on cue.

Bundles come from `edge-rl export` where the export extra is installed, else (a device install)
an IR-only bundle written by `edge_rl.bundle`; both are verified by the daemon as on a device.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_rl.cli import main
from edge_rl.daemon.config import AdaptConfig, CheckpointConfig, ControlConfig, DaemonConfig
from edge_rl.daemon.events import EventLog
from edge_rl.daemon.loop import Daemon
from edge_rl.daemon.service import Notifier, Signals
from edge_rl.daemon.source import BundleSource
from edge_rl.envdevice import EnvDevice, Shift, SimTransport
from edge_rl.policy import Policy
from edge_rl.rollout import collect_states
from firmware_bridge.links.base import Transport
from firmware_bridge.links.session import Link
from firmware_bridge.protocol import Action, Hello, Message, Obs
from tests.policies import mlp

EXPORT = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("flatbuffers") is not None
ANTIJAM = "edge_rl/AntiJam-v0"


def antijam_policy(seed: int = 0) -> Policy:
    """A random fp32 ReLU MLP shaped for AntiJam (8 channels), with the env's observation bounds.

    Poor (there is much to learn) and safe action 1, as tests/policies makes them.
    """
    from edge_rl.gymenv import make_env

    policy, _ = mlp("antijam", (32, 32), seed)
    env = make_env(ANTIJAM, {"jammer": "sweeping"})
    space = env.observation_space
    env.close()
    low, high = np.broadcast_to(space.low, space.shape), np.broadcast_to(space.high, space.shape)
    observation = replace(policy.observation, low=low.astype(np.float32), high=high.astype(np.float32))
    return replace(policy, observation=observation)


def write_bundle(policy: Policy, out: Path, version: int, key: Path | None = None) -> Path:
    """`edge-rl export` where it runs, else an IR-only bundle with golden I/O recorded in AntiJam."""
    if EXPORT:
        src = out.with_name(out.name + "-policy")
        policy.save(src)
        args = ["export", str(src), "--out", str(out), "--bundle-version", str(version), "--formats", "onnx"]
        assert main([*args, *(["--sign", str(key)] if key else [])]) == 0
        shutil.rmtree(src)
        return out
    from edge_rl.bundle import build_manifest
    from edge_rl.bundle import write_bundle as write
    from edge_rl.signing import signer

    golden = collect_states(policy.act, ANTIJAM, 64, 0, 0.1, {"jammer": "sweeping"})
    out.mkdir(parents=True)
    write(out, policy, build_manifest(policy, golden, [], version), sign=signer(key) if key else None)
    return out


def config(mode: str = "off", **adapt: Any) -> DaemonConfig:
    """Test settings: a deadline no loaded CI machine misses (the deadline itself is tested on its own)."""
    checkpoint = adapt.pop("checkpoint", CheckpointConfig())
    control = adapt.pop("control", ControlConfig(deadline_ms=5000))
    return DaemonConfig(control, replace(AdaptConfig(), mode=mode, **adapt), checkpoint)


class Wrapped(Transport):
    """A transport passing everything through `inner`, with hooks to change what the host receives or sends."""

    def __init__(
        self,
        inner: Transport,
        on_receive: Callable[[list[Message]], list[Message]] = lambda msgs: msgs,
        on_send: Callable[[Message], None] = lambda msg: None,
    ) -> None:
        self.inner, self.on_receive, self.on_send = inner, on_receive, on_send
        self.describe = inner.describe
        self.sent: list[Message] = []

    def open(self) -> None:
        self.inner.open()

    def send(self, msg: Message) -> int:
        self.on_send(msg)
        self.sent.append(msg)
        return self.inner.send(msg)

    def receive(self, timeout: float) -> list:
        return self.on_receive(self.inner.receive(timeout))

    def close(self) -> None:
        self.inner.close()

    def counters(self) -> dict[str, int]:
        return self.inner.counters()

    def actions(self) -> list[Action]:
        return [m for m in self.sent if isinstance(m, Action)]


def sim(
    jammer: str = "constant", seed: int = 0, shifts: tuple[Shift, ...] = (), windows: list | None = None
) -> SimTransport:
    """AntiJam in this process, lock step with the host (ground-truth windows of 500 steps into `windows`)."""
    sink = windows.append if windows is not None else None
    device = EnvDevice(ANTIJAM, {"jammer": jammer}, "sim", seed, shifts=shifts, window=500, on_window=sink)
    return SimTransport(device)


def daemon(
    bundle: Path,
    transport: Transport,
    cfg: DaemonConfig,
    state_dir: Path | None = None,
    events: Path | None = None,
    notifier: Notifier | None = None,
    config_path: Path | None = None,
) -> Daemon:
    """A daemon over `transport`, started as `edge-rl run` starts it (verified bundle, resumed state)."""
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
    source = BundleSource(bundle, backend="numpy")
    actor, checked, _ = source.load(None)
    hello = Hello("host", tuple(checked.policy.observation.shape), checked.policy.action.n, checked.policy.action.safe)
    link = Link(transport, replace(hello, heartbeat_ms=cfg.control.heartbeat_ms), "host")
    log = EventLog(events, echo=None)
    d = Daemon(checked, actor, link, cfg, log, state_dir, config_path, notifier, Signals(), source)
    d.resume()
    return d


def kinds(d: Daemon) -> list[str]:
    return [e["kind"] for e in d.events.recent]


def finite_theta(d: Daemon) -> bool:
    return d.shadow is None or bool(np.isfinite(d.shadow.learner.net.theta).all())


def corrupt(observation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """NaN, +-inf or a value far out of range in one random feature."""
    x = observation.copy()
    x[rng.integers(x.size)] = rng.choice([np.nan, np.inf, -np.inf, 1e6])
    return x


def with_observation(msg: Obs, observation: np.ndarray) -> Obs:
    return replace(msg, observation=observation)
