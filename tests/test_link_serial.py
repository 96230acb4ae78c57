"""Serial links over real ptys: a device process, unplugging (S4), quiet peers and version mismatches (S6)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
import tty
import zlib
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge import IncompatiblePeer, LinkError, open_link
from firmware_bridge.links import State
from firmware_bridge.protocol import (
    HEADER,
    Action,
    FrameDecoder,
    Hello,
    MessageType,
    Obs,
    cobs_decode,
    cobs_encode,
    encode,
)
from tests.ptys import SocatPair

ROOT = Path(__file__).resolve().parents[1]
CARTPOLE = Hello("host", (4,), 2, heartbeat_ms=50)


@pytest.fixture
def wire(tmp_path: Path):
    pair = SocatPair(tmp_path)
    yield pair
    pair.close()


def device_process(link: str, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "edge_rl.cli", "device", "CartPole-v1", "--link", link, "--heartbeat-ms", "50", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def balance(obs: Obs) -> int:
    """A good enough CartPole controller: push towards where the pole falls."""
    _, _, angle, velocity = obs.observation
    return int(angle + 0.5 * velocity > 0)


def wait_ready(link, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not link.ready:
        assert time.monotonic() < deadline, f"no handshake within {seconds} s: {list(link.events)}"
        link.recv(0.02)


def test_a_device_process_is_controlled_over_a_pty(wire: SocatPair) -> None:
    device = device_process(f"serial://{wire.b}", "--steps", "600")
    with open_link(f"serial://{wire.a}?baud=115200&spin_us=50", CARTPOLE) as host:
        wait_ready(host)
        assert host.peer is not None and host.peer.obs_shape == (4,) and host.peer.n_actions == 2
        answered = 0
        while device.poll() is None:
            msg = host.recv(0.5)
            if isinstance(msg, Obs) and not (msg.terminated or msg.truncated):
                assert host.send(Action(balance(msg), answers=msg.seq)) is not None
                answered += 1
        counters = host.counters()
    out, err = device.communicate(timeout=10)
    assert device.returncode == 0, err
    assert "steps" in out and "600" in out
    assert "safe-action steps" in out  # the first OBS went out before the handshake finished
    safe = int(next(line.split()[-1] for line in out.splitlines() if line.startswith("safe-action steps")))
    assert safe <= 2, out
    assert answered >= 595
    assert counters["crc_errors"] == counters["malformed"] == counters["seq_gaps"] == 0


def test_unplugging_is_noticed_within_three_heartbeats_and_recovered_in_process(wire: SocatPair) -> None:
    """S4: 20 unplug/replug cycles; the host notices each loss, and both ends come back without restarting."""
    device = device_process(f"serial://{wire.b}")
    period = CARTPOLE.heartbeat_ms / 1000
    detect, recover = [], []
    try:
        with open_link(f"serial://{wire.a}", CARTPOLE) as host:
            wait_ready(host)
            for _ in range(20):
                for _ in range(20):  # some traffic first
                    msg = host.recv(0.2)
                    if isinstance(msg, Obs):
                        host.send(Action(balance(msg), answers=msg.seq))
                wire.unplug()
                t0 = time.monotonic()
                while host.state is State.READY:
                    host.recv(0.005)
                detect.append(time.monotonic() - t0)
                time.sleep(0.2)
                wire.plug()
                t0 = time.monotonic()
                wait_ready(host, 5.0)
                recover.append(time.monotonic() - t0)
            assert host.counters()["losses"] == 20 and host.counters()["reconnects"] >= 20
        assert device.poll() is None, "the device process died"
    finally:
        device.send_signal(signal.SIGTERM)
        _, err = device.communicate(timeout=10)
    assert device.returncode == 0, err
    print(
        f"loss noticed after {np.median(detect) * 1e3:.0f} ms median, {max(detect) * 1e3:.0f} ms max; "
        f"ready again {np.median(recover):.2f} s median, {max(recover):.2f} s max after replug"
    )
    assert max(detect) <= 3 * period
    assert max(recover) <= 2.0


def test_a_silent_peer_is_lost_within_three_heartbeats_and_found_again(wire: SocatPair) -> None:
    """The cable stays in but the device stops (SIGSTOP): only heartbeats can tell."""
    device = device_process(f"serial://{wire.b}")
    period = CARTPOLE.heartbeat_ms / 1000
    try:
        with open_link(f"serial://{wire.a}", CARTPOLE) as host:
            wait_ready(host)
            device.send_signal(signal.SIGSTOP)
            t0 = time.monotonic()
            while host.state is State.READY:
                msg = host.recv(0.005)
                if isinstance(msg, Obs):
                    t0 = time.monotonic()  # frames already in the pipe still count as life
            lost_after = time.monotonic() - t0
            assert host.send(Action(0)) is None, "an ACTION went out to a lost peer"
            device.send_signal(signal.SIGCONT)
            wait_ready(host, 2.0)
    finally:
        device.send_signal(signal.SIGCONT)
        device.send_signal(signal.SIGTERM)
        device.communicate(timeout=10)
    assert lost_after <= 3 * period + 0.05, lost_after


def forged(msg, major: int | None = None) -> bytes:
    """A valid frame of `msg`, optionally claiming another protocol major in its header."""
    raw = bytearray(cobs_decode(encode(msg)[:-1]))
    if major is not None:
        raw[0] = major
    raw[-4:] = zlib.crc32(raw[:-4]).to_bytes(4, "little")
    return cobs_encode(bytes(raw)) + b"\x00"


@pytest.mark.parametrize(
    "hello, major, names",
    [
        (Hello("dev", (4,), 2, major=2, minor=3, reply_requested=True), 2, "2.3"),
        (Hello("dev", (4,), 2, schema_hash=0x1234ABCD, reply_requested=True), None, "1234abcd"),
    ],
    ids=["major", "schema"],
)
def test_a_mismatched_device_never_gets_an_action(hello: Hello, major: int | None, names: str, tmp_path: Path) -> None:
    """S6: another major version or schema hash: no ACTION frame, one line naming both versions."""
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    seen = FrameDecoder()
    kinds: list[int] = []
    replies: list[int] = []  # HELLOs without reply-requested: answers to the device's HELLO

    def read_host() -> None:
        while select.select([master], [], [], 0.3)[0]:
            for data in [os.read(master, 4096)]:
                raw_frames = [cobs_decode(f) for f in data.split(b"\x00") if f]
                headers = [HEADER.unpack_from(f) for f in raw_frames if len(f) >= HEADER.size]
                kinds.extend(h[1] for h in headers)
                replies.extend(h[3] for h in headers if h[1] == MessageType.HELLO and not h[2] & 1)
                seen.feed(data)

    with open_link(f"serial://{os.ttyname(slave)}", CARTPOLE) as host:
        os.write(master, forged(hello, major) + forged(Obs(np.zeros(4, np.float32), seq=1), major))
        with pytest.raises(IncompatiblePeer) as caught:
            for _ in range(100):
                host.recv(0.01)
        for _ in range(5):
            assert host.send(Action(1)) is None
        reader = threading.Thread(target=read_host)
        reader.start()
        reader.join(5)
    line = str(caught.value)
    assert "\n" not in line and names in line and host.local.version.split()[0] in line, line
    assert MessageType.ACTION not in kinds and MessageType.ERROR in kinds, kinds
    assert replies, "the device's HELLO was not answered: it could not name the host's version"
    os.close(master)
    os.close(slave)


def test_the_device_command_names_both_versions_and_exits_8(wire: SocatPair) -> None:
    device = device_process(f"serial://{wire.b}")
    port = os.open(wire.a, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(port)
    try:
        deadline = time.monotonic() + 10
        while device.poll() is None and time.monotonic() < deadline:  # until the device has opened its port
            os.write(port, forged(Hello("host", major=7, minor=1, reply_requested=True), major=7))
            if select.select([port], [], [], 0.1)[0]:
                os.read(port, 65536)  # keep the device's frames from filling the pty
        _, err = device.communicate(timeout=10)
    finally:
        os.close(port)
    assert device.returncode == 8, err
    assert err.count("\n") == 1 and "7.1" in err and "1.0" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "url, message",
    [
        ("ttyUSB0", "no scheme"),
        ("bogus://x", "unknown link scheme"),
        ("serial://", "names no device"),
        ("serial:///dev/ttyS0?bud=9600", "unknown option 'bud'"),
        ("serial:///dev/ttyS0?baud=fast", "not a number"),
        ("serial:///dev/ttyS0?misses=0", "out of range"),
        ("serial:///dev/ttyS0?spin_us=-1", "out of range"),
        ("serial:///dev/ttyS0?misses=1.5", "whole number"),
        ("sim://NoSuchEnv-v9", "NoSuchEnv"),
    ],
)
def test_bad_link_urls_are_one_line(url: str, message: str) -> None:
    with pytest.raises(LinkError) as caught:
        open_link(url, CARTPOLE)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_port_is_lost_not_a_traceback_and_found_when_it_appears(tmp_path: Path) -> None:
    pair_dir = tmp_path / "later"
    pair_dir.mkdir()
    with open_link(f"serial://{pair_dir / 'ttyA'}", CARTPOLE) as host:
        assert host.state is State.LOST and "cannot open" in host.events[-1]
        pair = SocatPair(pair_dir)
        device = device_process(f"serial://{pair.b}")
        try:
            wait_ready(host, 5.0)
        finally:
            device.send_signal(signal.SIGTERM)
            device.communicate(timeout=10)
            pair.close()


def test_pyserial_urls_without_a_descriptor_work_too() -> None:
    """`loop://` (no file descriptor) echoes every frame: the link shakes hands with itself."""
    with open_link("loop://", CARTPOLE) as link:
        wait_ready(link, 2.0)
        seq = link.send(Obs(np.ones(4, np.float32)))
        msg = link.recv(1.0)
        assert isinstance(msg, Obs) and msg.seq == seq and link.counters()["crc_errors"] == 0
