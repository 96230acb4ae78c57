"""`edge-rl run` as a process: bundles refused before the link opens (S15, S16, at start and at reload),
link loss (S4), the C firmware's deadman while the daemon is stopped (S5), a device of another
protocol version (S6), SIGKILL at any time (S12 at the daemon's level), SIGHUP and SIGTERM.

Devices are real processes on real ptys: the C AntiJam simulator (built with the sanitizers) and
`edge-rl device`. Every wait has a deadline; randomised tests print their seed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_rl.cli import main
from edge_rl.errors import ExitCode
from tests.c_device import POLICY, assert_clean, exit_counters, read_log, slots
from tests.daemon_rig import antijam_policy, config, daemon, kinds, sim, write_bundle
from tests.ptys import SocatPair

ROOT = Path(__file__).resolve().parents[1]
DEVICE = [sys.executable, "-m", "edge_rl.cli", "device", "edge_rl/AntiJam-v0"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    key = tmp_path_factory.mktemp("keys") / "key"
    assert main(["keygen", "--out", str(key)]) == 0
    return key, key.with_name("key.pub")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, keys) -> dict[str, Path]:
    """Signed AntiJam bundles: v5, an older v4 and a newer v6 of other weights, and v7 signed by a stranger."""
    root = tmp_path_factory.mktemp("bundles")
    stranger = root / "stranger"
    assert main(["keygen", "--out", str(stranger)]) == 0
    return {
        "v5": write_bundle(antijam_policy(0), root / "v5", 5, keys[0]),
        "v4": write_bundle(antijam_policy(1), root / "v4", 4, keys[0]),
        "v6": write_bundle(antijam_policy(2), root / "v6", 6, keys[0]),
        "v7-stranger": write_bundle(antijam_policy(3), root / "v7", 7, stranger),
    }


def copy(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to)
    return to


def flip_byte(path: Path, offset: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def daemon_cmd(bundle: Path, link: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "edge_rl.cli", "run", str(bundle), "--link", link, *args]


def events(state_dir: Path) -> list[dict]:
    path = state_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def handshakes(log: list[dict]) -> list[float]:
    """When the link became ready after a handshake (not the other events it logs while ready)."""
    return [e["at"] for e in log if e["kind"] == "link" and e["state"] == "ready" and "speaks" in e["detail"]]


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# --- S15 / S16: refused before anything is sent --------------------------------------------------------


@pytest.mark.parametrize(
    "damage, code",
    [
        (lambda b, keys: flip_byte(b / "policy.safetensors"), ExitCode.BUNDLE_DAMAGED),
        (lambda b, keys: (b / "extra.pkl").write_bytes(b"\x80\x04."), ExitCode.BUNDLE_DAMAGED),
        (lambda b, keys: flip_byte(b / "manifest.sig", 40), ExitCode.BAD_SIGNATURE),
        (lambda b, keys: (b / "manifest.sig").unlink(), ExitCode.BAD_SIGNATURE),
    ],
    ids=["flipped-byte", "pickle", "bad-signature", "unsigned"],
)
def test_s15_a_tampered_bundle_is_refused_before_the_link_opens(
    bundles, keys, tmp_path: Path, capsys, damage, code: ExitCode
) -> None:
    bundle = copy(bundles["v5"], tmp_path / "bundle")
    damage(bundle, keys)
    master, slave = os.openpty()
    try:
        args = ["run", str(bundle), "--link", f"serial://{os.ttyname(slave)}", "--public-key", str(keys[1])]
        assert main([*args, "--state-dir", str(tmp_path / "state")]) == int(code)
        os.set_blocking(master, False)
        with pytest.raises(BlockingIOError):
            os.read(master, 4096)  # not one byte reached the device
    finally:
        os.close(master)
        os.close(slave)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-rl run: error: "), err
    assert not (tmp_path / "state" / "installed.json").exists()


def test_s16_an_older_bundle_is_refused_unless_a_downgrade_is_allowed(bundles, keys, tmp_path: Path, capsys) -> None:
    state = tmp_path / "state"
    common = ["--link", "sim://edge_rl/AntiJam-v0", "--state-dir", str(state), "--public-key", str(keys[1])]
    assert main(["run", str(bundles["v5"]), *common, "--steps", "20"]) == 0
    assert json.loads((state / "installed.json").read_text())["version"] == 5
    assert main(["run", str(bundles["v4"]), *common, "--steps", "20"]) == int(ExitCode.DOWNGRADE)
    assert "older than the installed 5" in capsys.readouterr().err
    assert main(["run", str(bundles["v4"]), *common, "--steps", "20", "--allow-downgrade"]) == 0
    assert json.loads((state / "installed.json").read_text())["version"] == 4


def test_s15_s16_a_reload_applies_only_a_verified_newer_bundle(bundles, keys, tmp_path: Path) -> None:
    """SIGHUP re-verifies the bundle directory in a thread; anything wrong leaves the running bundle acting."""
    from edge_rl.daemon.source import BundleSource
    from edge_rl.signing import read_public_key

    live = copy(bundles["v5"], tmp_path / "live")
    d = daemon(live, sim(), config("head"), tmp_path / "state")
    d.source = BundleSource(live, read_public_key(keys[1]), "numpy")
    running = d.policy.digest()

    def reload_with(contents: Path | None, change=None) -> dict:
        if contents is not None:
            shutil.rmtree(live)
            copy(contents, live)
        if change is not None:
            change(live)
        d.signals.reload = True
        d.run(50)
        wait_for(lambda: d.pending_bundle is None or d.pending_bundle.done, 30, "the bundle check")
        d.run(50)
        return d.events.recent[-1] if d.events.recent else {}

    (tmp_path / "state").mkdir(exist_ok=True)
    outcomes = {}
    for name, contents, change in [
        ("flipped", None, lambda b: flip_byte(b / "policy.safetensors")),
        ("downgrade", bundles["v4"], None),
        ("stranger", bundles["v7-stranger"], None),
    ]:
        reload_with(contents, change)
        (rejected,) = [e for e in d.events.recent if e["kind"] == "bundle_rejected" and e not in outcomes.values()]
        outcomes[name] = rejected
        assert d.policy.digest() == running and d.bundle.version == 5  # the running bundle still acts
    assert outcomes["flipped"]["exit_code"] == "BUNDLE_DAMAGED"
    assert outcomes["downgrade"]["exit_code"] == "DOWNGRADE"
    assert outcomes["stranger"]["exit_code"] == "BAD_SIGNATURE"
    reload_with(bundles["v6"])
    assert "bundle_updated" in kinds(d) and d.bundle.version == 6 and d.policy.digest() != running
    assert json.loads((tmp_path / "state" / "installed.json").read_text())["version"] == 6
    steps = d.counters.steps
    d.run(100)
    assert d.counters.steps == steps + 100 and d.counters.safe_actions == 0
    d.stop()


# --- the C firmware on the other end ---------------------------------------------------------------------


class CRig:
    """The C AntiJam simulator on one end of a socat pty pair, `edge-rl run` on the other."""

    def __init__(self, build: Path, tmp_path: Path, bundle: Path, sim_args: list[str], run_args: list[str]) -> None:
        self.wire = SocatPair(tmp_path)
        self.sim_log, self.state = tmp_path / "sim.log", tmp_path / "state"
        self.sim = subprocess.Popen(
            [build / "antijam_device", *sim_args, "--log", self.sim_log, str(self.wire.a)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err = (tmp_path / "daemon.err").open("w")
        link = f"serial://{self.wire.b}?baud=115200"
        self.daemon = subprocess.Popen(
            daemon_cmd(bundle, link, "--state-dir", str(self.state), *run_args),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
        )

    def __enter__(self) -> CRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.send_signal(signal.SIGCONT)
        for proc in (self.daemon, self.sim):
            if proc.poll() is None:
                proc.terminate()
        try:
            self.out, _ = self.daemon.communicate(timeout=20)
            _, self.sim_stderr = self.sim.communicate(timeout=10)
        finally:
            for proc in (self.daemon, self.sim):
                proc.kill()
            self.err.close()
            self.wire.close()


def test_s5_the_firmware_deadman_holds_while_the_daemon_is_stopped(build: Path, bundles, tmp_path: Path) -> None:
    seed, period_ms, valid_ms = 5, 10, 100
    print(f"seed={seed}")
    cfg = tmp_path / "daemon.toml"
    cfg.write_text(f"[control]\nvalid_ms = {valid_ms}\nheartbeat_ms = 50\n")
    sim_args = ["--period-ms", str(period_ms), "--host-timeout-ms", "1000", "--seed", str(seed)]
    with CRig(build, tmp_path, bundles["v5"], sim_args, ["--config", str(cfg)]) as rig:
        policy_slots = lambda after=0.0: sum(r in POLICY and t > after for t, _, r in slots(read_log(rig.sim_log)))  # noqa: E731
        wait_for(lambda: policy_slots() >= 30, 20, "30 policy slots", rig.daemon)
        pid = rig.daemon.pid
        t_stop = time.monotonic()
        rig.daemon.send_signal(signal.SIGSTOP)
        time.sleep(2.0)
        t_cont = time.monotonic()
        rig.daemon.send_signal(signal.SIGCONT)
        wait_for(lambda: policy_slots(t_cont) >= 20, 10, "policy slots after SIGCONT", rig.daemon)
        assert rig.daemon.pid == pid and rig.daemon.poll() is None
    assert_clean(rig.sim.returncode, rig.sim_stderr)
    assert rig.daemon.returncode == 0, (tmp_path / "daemon.err").read_text()[-2000:]
    log = read_log(rig.sim_log)
    (t_trip, trip), *_ = [(t, text) for t, text in log if text.startswith("deadman tripped") and t > t_stop]
    print(f"deadman {1000 * (t_trip - t_stop):.0f} ms after SIGSTOP: {trip}")
    assert t_trip - t_stop <= (valid_ms + period_ms + 50) / 1000
    (t_hello,) = [t for t, text in log if text.startswith("hello host") and t > t_trip][:1]
    applied = slots(log)
    between = {r for t, _, r in applied if t_trip <= t < t_hello}
    assert between == {"deadman"}  # the safe action from the trip until the daemon's fresh HELLO
    assert min(t for t, _, r in applied if t > t_trip and r in POLICY) > t_hello
    assert exit_counters(log)["deadman_trips"] == "1"
    # the daemon ran again and said HELLO: because the device's heartbeat said SAFE ("HELLO again"), or
    # because it noticed the silence first and handshook anew; either way within a second of SIGCONT
    hello = [
        e["at"]
        for e in events(rig.state)
        if e["kind"] == "link" and e["at"] >= t_cont and ("HELLO again" in e["detail"] or "speaks" in e["detail"])
    ]
    assert hello and hello[0] <= t_cont + 1.0 and abs(hello[0] - t_hello) < 0.1


def test_s6_a_device_of_another_protocol_version_is_never_actuated(build: Path, bundles, tmp_path: Path) -> None:
    with CRig(build, tmp_path, bundles["v5"], ["--major", "2", "--period-ms", "10"], []) as rig:
        rig.daemon.wait(timeout=20)
    assert rig.daemon.returncode == int(ExitCode.PEER_MISMATCH)
    err = [line for line in (tmp_path / "daemon.err").read_text().splitlines() if "error" in line]
    assert len(err) == 1 and re.search(r"speaks 1\.0 .*speaks 2\.0", err[0]), err
    counters = exit_counters(read_log(rig.sim_log))
    assert counters["actions_accepted"] == "0"
    assert not [s for s in slots(read_log(rig.sim_log)) if s[2] in POLICY]


# --- a Python device process: S4 and restarts -------------------------------------------------------------


def test_s4_link_loss_gets_the_safe_action_and_recovers_in_the_same_process(bundles, tmp_path: Path) -> None:
    wire = SocatPair(tmp_path)
    stats = tmp_path / "device.jsonl"
    stats_args = ["--stats", str(stats), "--window", "50"]
    device = subprocess.Popen(
        [*DEVICE, "--link", f"serial://{wire.a}", "--period-ms", "10", "--heartbeat-ms", "50", *stats_args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cfg = tmp_path / "daemon.toml"
    cfg.write_text("[control]\nheartbeat_ms = 50\nvalid_ms = 100\n")
    state = tmp_path / "state"
    err = (tmp_path / "daemon.err").open("w")
    run = subprocess.Popen(
        daemon_cmd(bundles["v5"], f"serial://{wire.b}", "--state-dir", str(state), "--config", str(cfg)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    unplugged = []
    try:
        ready = lambda n: len(handshakes(events(state))) >= n  # noqa: E731
        wait_for(lambda: ready(1), 20, "the first handshake", run)
        for cycle in range(3):
            time.sleep(1.0)
            t0 = time.monotonic()  # before: the daemon may notice before unplug() has returned
            wire.unplug()
            time.sleep(1.0)
            wire.plug()
            unplugged.append((t0, time.monotonic()))
            wait_for(lambda c=cycle: ready(c + 2), 10, "the handshake after replugging", run)
        time.sleep(0.5)
        assert run.poll() is None and device.poll() is None  # the same processes throughout
    finally:
        run.terminate()
        device.terminate()
        out, _ = run.communicate(timeout=20)
        device.wait(timeout=10)
        err.close()
        wire.close()
    assert run.returncode == 0, (tmp_path / "daemon.err").read_text()[-2000:]
    log = events(state)
    for t_out, t_in in unplugged:
        lost = [e["at"] for e in log if e["kind"] == "link" and e["state"] == "lost" and e["at"] >= t_out]
        back = [t for t in handshakes(log) if t >= t_in]
        print(f"lost after {1000 * (lost[0] - t_out):.0f} ms, ready {back[0] - t_in:.2f} s after replug")
        assert lost[0] - t_out <= 0.35 and back[0] - t_in <= 2.0
    windows = [json.loads(line) for line in stats.read_text().splitlines()]
    assert sum(w["safe_steps"] for w in windows) >= 3 * 50  # the device held the safe action while unplugged
    assert "policy actions" in out


def test_s12_sigkill_at_any_time_always_resumes(bundles, tmp_path: Path) -> None:
    seed = 12
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    state = tmp_path / "state"
    cfg = tmp_path / "daemon.toml"
    cfg.write_text("[checkpoint]\ninterval_s = 0.02\nkeep = 2\n[adapt]\nmode = 'head'\n")
    cmd = daemon_cmd(bundles["v5"], "sim://edge_rl/AntiJam-v0?jammer=constant", "--state-dir", str(state))
    cmd += ["--config", str(cfg)]
    steps_seen = []
    for kill in range(8):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        written = sum(e["kind"] == "checkpoint" for e in events(state))
        wait_for(lambda n=written: sum(e["kind"] == "checkpoint" for e in events(state)) > n, 30, "a checkpoint", proc)
        time.sleep(float(rng.uniform(0.3, 0.8)))
        proc.kill()
        proc.wait(timeout=10)
        resumed = [e for e in events(state) if e["kind"] == "resumed"]
        if kill:
            assert len(resumed) == kill, "a restart did not resume"
            steps_seen.append(resumed[-1]["step"])
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]
    assert not list(state.glob(".ckpt*")) or all(p.name.startswith(".ckpt.") for p in state.glob(".ckpt*"))
    from edge_rl.daemon.checkpoint import CheckpointStore

    recovered, lines = CheckpointStore(state, keep=2).recover()
    assert recovered is not None and not [line for line in lines if "quarantined" in line]
    assert len(list(state.glob("ckpt.*"))) <= 3 and not list(state.glob(".ckpt*"))


def test_sighup_reloads_and_sigterm_saves_and_exits_zero(bundles, tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "daemon.toml"
    cfg.write_text("[adapt]\nmode = 'head'\n")
    cmd = daemon_cmd(bundles["v5"], "sim://edge_rl/AntiJam-v0", "--state-dir", str(state), "--config", str(cfg))
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_for(lambda: any(e["kind"] == "link" for e in events(state)), 20, "the link", proc)
        cfg.write_text("[adapt]\nmode = 'head'\nexplore = 0.2\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: any(e["kind"] == "config_reloaded" for e in events(state)), 10, "the reload", proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    kinds_seen = [e["kind"] for e in events(state)]
    assert kinds_seen[-2:] == ["checkpoint", "stopped"] or kinds_seen[-1] == "stopped"
    assert "checkpoint" in kinds_seen and "steps answered" in out
    stopped = events(state)[-1]
    assert stopped["kind"] == "stopped" and stopped["signal"] == int(signal.SIGTERM)


def test_the_example_service_unit_and_config_are_valid(tmp_path: Path) -> None:
    """examples/deploy: the config parses; the unit is Type=notify with a watchdog and restarts (systemd checks it)."""
    from edge_rl.daemon import config as config_file

    deploy = ROOT / "examples" / "deploy"
    assert config_file.load(deploy / "daemon.toml").adapt.mode == "head"
    unit = (deploy / "edge-rl.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith((" ", "#")))
    assert settings["Type"] == "notify" and settings["Restart"] in ("on-failure", "on-watchdog")
    assert settings["WatchdogSec"] and settings["User"] != "root" and settings["ExecReload"].endswith("-HUP $MAINPID")
    analyze = shutil.which("systemd-analyze")
    if analyze:  # systemd's own parser, with ExecStart pointing at this checkout's edge-rl
        local = tmp_path / "edge-rl.service"
        local.write_text(unit.replace("/opt/edge-rl/.venv/bin/edge-rl", str(Path(sys.executable).with_name("edge-rl"))))
        result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60)
        problems = [line for line in result.stderr.splitlines() if "edge-rl.service" in line]
        assert not problems, problems


def test_the_daemon_process_never_imports_torch_gymnasium_or_export(build: Path, bundles, tmp_path: Path) -> None:
    """A whole run against the C firmware, then the modules the process had loaded are listed at exit."""
    wire = SocatPair(tmp_path)
    sim_proc = subprocess.Popen(
        [build / "antijam_device", "--period-ms", "5", str(wire.a)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = (
        "import atexit, sys; from edge_rl.cli import main; "
        "atexit.register(lambda: print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'gymnasium', 'export', 'quantize')))); sys.exit(main(sys.argv[1:]))"
    )
    try:
        args = ["run", str(bundles["v5"]), "--link", f"serial://{wire.b}", "--adapt", "full", "--steps", "300"]
        result = subprocess.run(
            [sys.executable, "-c", probe, *args, "--state-dir", str(tmp_path / "state")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        sim_proc.terminate()
        sim_proc.wait(timeout=10)
        wire.close()
    assert result.returncode == 0, result.stderr[-2000:]
    (loaded,) = [line for line in result.stdout.splitlines() if line.startswith("LOADED")]
    assert loaded == "LOADED []", loaded
    assert "policy actions" in result.stdout


def test_the_daemon_drives_a_device_over_mqtt(bundles, tmp_path: Path, mosquitto) -> None:
    """The same daemon over a real Mosquitto: `edge-rl device` publishes OBS, the daemon answers on its topics."""
    url = f"mqtt://127.0.0.1:{mosquitto.port}/radio-7"
    device = subprocess.Popen(
        [*DEVICE, "--link", url, "--steps", "400"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    state = tmp_path / "state"
    run = subprocess.Popen(
        daemon_cmd(bundles["v5"], url, "--state-dir", str(state), "--adapt", "head"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        out, err = device.communicate(timeout=120)
        assert device.returncode == 0, err
    finally:
        run.terminate()
        run_out, _ = run.communicate(timeout=20)
        device.kill()
    safe = int(next(line.split()[-1] for line in out.splitlines() if line.startswith("safe-action steps")))
    assert safe <= 5, out  # the first OBS may go out before the handshake
    assert run.returncode == 0 and "policy actions" in run_out
    answered = int(next(line.split()[-1] for line in run_out.splitlines() if line.startswith("policy actions")))
    assert answered >= 390
