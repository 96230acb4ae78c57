"""mqtt:// links against a real Mosquitto: handshake and round trips, broker crashes without loss, the device's
will, refused URLs and credentials, TLS, an absent broker, latest-wins setpoints, bounded offline sends.
Every wait is bounded; random choices print their seed (TEST_SEED=... repeats a run)."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge import Link, LinkError, open_link
from firmware_bridge.links import LinkUrl, State
from firmware_bridge.links.mqtt import BACKOFF, open_transport
from firmware_bridge.protocol import Action, Heartbeat, Hello, Obs, PeerState
from tests.mosquitto import Mosquitto, free_port
from tests.test_link_serial import balance

ROOT = Path(__file__).resolve().parents[1]
DEVICE = Hello("dev1", obs_shape=(2,), n_actions=3)
HOST = Hello("host")


def seeded() -> random.Random:
    seed = int(os.environ.get("TEST_SEED", random.SystemRandom().randrange(2**32)))
    print(f"seed={seed} (rerun with TEST_SEED={seed})")
    return random.Random(seed)


def pump(cond: Callable[[], bool], *links: Link, timeout: float = 5.0) -> float:
    """Run the links' sessions until `cond()`; seconds it took (fails after `timeout`)."""
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout, f"not within {timeout} s: {[link.events[-1] for link in links]}"
        for link in links:
            link.recv(0.002)
    return time.monotonic() - start


def first(kind: type, link: Link, *others: Link, timeout: float = 2.0):  # type: ignore[no-untyped-def]
    """The next message of `kind` on `link`, keeping the other links' sessions alive meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = link.recv(0.005)
        if isinstance(msg, kind):
            return msg
        for other in others:
            other.poll()
    raise AssertionError(f"no {kind.__name__} within {timeout} s; counters {link.counters()}")


def probe(broker: Mosquitto, device: str):  # type: ignore[no-untyped-def]
    """What a host connecting now sees first on the device's topics (the retained `status`)."""
    url = LinkUrl.parse(f"{broker.url}/{device}?client_id=probe-{time.monotonic_ns()}&session_expiry=0")
    transport = open_transport(url, HOST, "host")
    transport.open()
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            msgs = transport.receive(0.1)
            if msgs:
                return msgs[0]
        return None
    finally:
        transport.close()


def test_handshake_round_trips_and_presence(mosquitto: Mosquitto) -> None:
    url = f"{mosquitto.url}/dev1"
    with open_link(url, DEVICE, role="device") as dev:
        seen = probe(mosquitto, "dev1")  # a host that comes later gets the retained HELLO at once
        assert isinstance(seen, Hello) and seen.device_id == "dev1" and seen.reply_requested
        with open_link(url, HOST, role="host") as host:
            print(f"handshake {pump(lambda: dev.ready and host.ready, dev, host) * 1000:.0f} ms")
            rtts = []
            for i in range(300):
                start = time.perf_counter()
                assert dev.send(Obs(np.array([i, -i], np.float32), reward=0.5, t_us=i)) is not None
                obs = first(Obs, host, dev)
                assert (obs.t_us, obs.seq, obs.reward) == (i, i, 0.5)  # the obs topic numbers only OBS frames
                assert host.send(Action(i % 3, answers=obs.seq)) is not None
                act = first(Action, dev, host)
                assert (act.action, act.answers) == (i % 3, i)
                rtts.append(time.perf_counter() - start)
            rtts.sort()
            print(f"OBS->ACTION round trip p50 {rtts[150] * 1e3:.2f} ms, p99 {rtts[296] * 1e3:.2f} ms")
            for link in (dev, host):
                counters = link.counters()
                print(link.role, counters)
                assert counters["frames"] >= 300 and counters["published"] >= 300
                bad = "crc_errors malformed seq_gaps duplicates reorders publish_dropped disconnects".split()
                assert all(counters[key] == 0 for key in bad)
                assert link.state is State.READY and counters["losses"] == 0
    gone = probe(mosquitto, "dev1")  # a closed device leaves its will behind: retained OFFLINE
    assert isinstance(gone, Heartbeat) and gone.state is PeerState.OFFLINE and gone.unsequenced


def looping(step: Callable[[], object], stop: threading.Event, errors: list[BaseException]) -> threading.Thread:
    """Run `step` in a thread until `stop`; an exception ends it and is kept for the test to raise."""

    def run() -> None:
        try:
            while not stop.is_set():
                step()
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def reconnect_gaps(events: list[tuple[str, float]], planned: list[float]) -> tuple[list[float], list[float]]:
    """Seconds before each connection attempt, and each planned delay over its un-jittered backoff step."""
    gaps, factors, attempt = [], [], 0
    for (kind, t0), (next_kind, t1) in itertools.pairwise(events):
        attempt = 0 if kind == "down" else attempt + 1  # a loss plans attempt 0, each failed attempt the next
        if next_kind == "attempt" and len(gaps) < len(planned):
            gaps.append(t1 - t0)
            factors.append(planned[len(gaps) - 1] / min(BACKOFF[0] * 2**attempt, BACKOFF[1]))
    return gaps, factors


def test_broker_sigkill_loses_no_qos1_observation(mosquitto: Mosquitto) -> None:
    """Three broker crashes under 100 OBS/s: every observation reaches the host, in this same process."""
    rng = seeded()
    url = f"{mosquitto.url}/dev1?misses=10"  # 5 s of silence before LOST: the sessions ride out each crash
    with (
        open_link(url, Hello("dev1", obs_shape=(1,), n_actions=2, heartbeat_ms=500), role="device") as dev,
        open_link(url, Hello("host", heartbeat_ms=500), role="host") as host,
    ):
        pump(lambda: dev.ready and host.ready, dev, host)
        received: list[int] = []
        inner = host.transport.receive

        def spy(timeout: float):  # type: ignore[no-untyped-def]  # what the transport delivers, before the session
            msgs = inner(timeout)
            received.extend(m.t_us for m in msgs if isinstance(m, Obs))
            return msgs

        host.transport.receive = spy  # type: ignore[method-assign]
        events: list[tuple[str, float]] = []  # the device client's losses and connection attempts
        client, transport = dev.transport._client, dev.transport  # type: ignore[attr-defined]
        on_disconnect = client.on_disconnect

        def note_disconnect(*args: object) -> None:
            if transport.connected:
                events.append(("down", time.monotonic()))
            on_disconnect(*args)

        client.on_disconnect = note_disconnect
        client.on_pre_connect = lambda *args: events.append(("attempt", time.monotonic()))
        sent: list[int] = []
        stop, sending, errors = threading.Event(), threading.Event(), []
        sending.set()
        due = [time.monotonic()]

        def device_step() -> None:  # ~100 OBS/s on QoS 1
            dev.recv(max(due[0] - time.monotonic(), 0.0))
            if time.monotonic() >= due[0]:
                due[0] += 0.01
                if sending.is_set():
                    dev.send(Obs(np.zeros(1, np.float32), t_us=len(sent)))
                    sent.append(len(sent))

        threads = [looping(device_step, stop, errors), looping(lambda: host.recv(0.05), stop, errors)]
        try:
            for kill in range(3):
                time.sleep(rng.uniform(0.5, 1.0))
                before = (len(sent), len(received))
                mosquitto.kill()
                down = time.monotonic()
                time.sleep(rng.uniform(0.5, 1.2))
                mosquitto.start()
                up = time.monotonic()
                while not (transport.connected and host.transport.connected):  # type: ignore[attr-defined]
                    assert time.monotonic() < up + 8, "no reconnect within 8 s of the restart"
                    time.sleep(0.005)
                back = time.monotonic() - up
                print(f"kill {kill}: {before[0]} sent, {before[1]} received; down {up - down:.2f} s, back {back:.2f} s")
            time.sleep(0.3)
            sending.clear()
            drain = time.monotonic()
            while set(sent) - set(received) and time.monotonic() - drain < 15:
                time.sleep(0.02)
            print(f"drained in {time.monotonic() - drain:.2f} s")
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
        assert not errors, errors
        missing = sorted(set(sent) - set(received))
        counters = {"device": dev.counters(), "host": host.counters()}
        twice = len(received) - len(set(received))
        dropped = counters["host"]["duplicates"] + counters["host"]["reorders"]
        print(f"sent {len(sent)}, missing {len(missing)}, delivered twice {twice}, dropped as old {dropped}")
        print(counters)
        assert not missing, f"{len(missing)} QoS 1 observations lost: {missing[:20]}"
        for side in counters.values():
            assert side["disconnects"] == side["broker_reconnects"] == side["session_present"] == 3
            assert side["publish_dropped"] == 0 and side["crc_errors"] == side["malformed"] == 0
        assert dev.state is State.READY and host.state is State.READY
        log = mosquitto.log_text()
        assert "Saving in-memory database" in log and "Permission denied" not in log

        # paho's reconnect got our jitter: each attempt came after its planned delay, and the delays vary
        planned = list(transport.retry_delays)
        gaps, factors = reconnect_gaps(events, planned)
        print("planned delays", [round(p, 3) for p in planned], "measured", [round(g, 3) for g in gaps])
        assert len(gaps) == len(planned) >= 3
        assert all(abs(gap - plan) < 0.15 for gap, plan in zip(gaps, planned, strict=True))
        assert all(0.5 <= f <= 1.5 for f in factors) and statistics.pstdev(factors) > 0.02


DEVICE_SCRIPT = """
import sys
import tempfile
import numpy as np
from firmware_bridge import open_link
from firmware_bridge.protocol import Hello, Obs
link = open_link(sys.argv[1], Hello("dev9", obs_shape=(1,), n_actions=2), role="device")
while True:
    link.recv(0.02)
    link.send(Obs(np.zeros(1, np.float32)))
"""


# Mosquitto 2.0 scans for silent clients only every 5-6 s, in whole seconds (src/keepalive.c): a hung device's
# will comes 1.5 x keepalive after its last packet, plus up to one scan period.
SCAN = 7.0  # 5 s + 1 s for the strict comparison + 1 s of whole-second rounding


@pytest.mark.parametrize("death", ["SIGKILL", "SIGSTOP"])
def test_device_death_publishes_retained_offline_will(mosquitto: Mosquitto, death: str) -> None:
    keepalive = 1
    command = [sys.executable, "-c", DEVICE_SCRIPT, f"{mosquitto.url}/dev9?keepalive={keepalive}"]
    device = subprocess.Popen(command, cwd=ROOT)
    try:
        # the host trusts silence for 10 s: only the broker's will can make it LOST sooner
        with open_link(f"{mosquitto.url}/dev9?misses=100", HOST, role="host") as host:
            pump(lambda: host.ready, host, timeout=10)
            first(Obs, host)
            device.send_signal(getattr(signal, death))  # SIGSTOP: a hung device, found by the keepalive only
            bound = 1.5 * keepalive + (SCAN if death == "SIGSTOP" else 0) + 0.5
            took = pump(lambda: host.state is State.LOST, host, timeout=bound)
            print(f"{death}: host LOST after {took:.2f} s (bound {bound:g} s): {host.events[-1]}")
            assert host.events[-1] == "link lost: the peer's will says it went offline"
            if death == "SIGSTOP":
                assert took > keepalive, "a stopped device holds its TCP connection until the keepalive runs out"
    finally:
        device.kill()
        device.wait(5)
    gone = probe(mosquitto, "dev9")
    assert isinstance(gone, Heartbeat) and gone.state is PeerState.OFFLINE and gone.unsequenced


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("tls_insecure=1", "tls_insecure is refused"),
        ("keepalive=10&colour=red", "unknown option 'colour'"),
        ("qos=2", "option qos=2 out of range"),
        ("keepalive=1.5", "not a whole number"),
        ("password_env=EDGE_RL_NO_SUCH_VARIABLE", "no such environment variable"),
        ("ca=/nonexistent/ca.pem", "needs an mqtts:// URL"),
    ],
)
def test_bad_options_are_refused_in_one_line(query: str, says: str) -> None:
    with pytest.raises(LinkError) as refused:
        open_link(f"mqtt://127.0.0.1:1/dev1?{query}", HOST)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_bad_urls_are_refused_in_one_line() -> None:
    for url, says in [
        ("mqtts://127.0.0.1/dev1?ca=/nonexistent/ca.pem", "no such readable file"),
        ("mqtt://127.0.0.1:1/", "one device id"),
        ("mqtt://127.0.0.1:1/a/b", "one device id"),
        ("mqtt://user:secret@127.0.0.1:99999/dev1", "port"),
    ]:
        with pytest.raises(LinkError) as refused:
            open_link(url, HOST)
        assert says in str(refused.value) and "\n" not in str(refused.value) and "secret" not in str(refused.value)


def test_absent_broker_is_a_lost_link_that_recovers(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}/dev2"
    with open_link(url, HOST, role="host") as host:
        assert host.state is State.LOST and host.events[-1].startswith("cannot open mqtt://127.0.0.1")
        for _ in range(10):  # the session retries with backoff: no traceback, still LOST
            assert host.recv(0.03) is None
        assert host.state is State.LOST
        appeared = time.monotonic()
        mosquitto_factory(port).start()
        with open_link(url, Hello("dev2"), role="device") as dev:
            pump(lambda: host.ready and dev.ready, host, dev, timeout=6)
            print(f"ready {time.monotonic() - appeared:.2f} s after the broker started; events {list(host.events)}")
        assert host.counters()["reconnects"] >= 1


def test_device_actions_are_latest_wins(mosquitto: Mosquitto) -> None:
    url = f"{mosquitto.url}/dev3"
    slow = 500  # ms heartbeats: the device may stop reading for a while without being declared lost
    with (
        open_link(url, Hello("dev3", n_actions=3, heartbeat_ms=slow), role="device") as dev,
        open_link(url, Hello("host", heartbeat_ms=slow), role="host") as host,
    ):
        pump(lambda: dev.ready and host.ready, dev, host)
        for i in range(300):
            assert host.send(Action(i % 3, answers=i, valid_ms=1000)) is not None
        deadline = time.monotonic() + 3
        while dev.counters()["queue_overwritten"] < 299:  # the device does not read meanwhile
            assert time.monotonic() < deadline, dev.counters()
            time.sleep(0.01)
        actions = [msg for msg in iter(lambda: dev.recv(0.05), None) if isinstance(msg, Action)]
        counters = dev.counters()
        print(f"device got {len(actions)} of 300 ACTIONs; counters {counters}")
        assert [a.answers for a in actions] == [299]
        assert counters["queue_overwritten"] == 299 and counters["seq_gaps"] == 0


def test_broker_refusing_credentials_is_one_line(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    broker = mosquitto_factory(extra=["allow_anonymous false"]).start()
    with pytest.raises(LinkError) as refused:
        open_link(f"mqtt://someone:wrong@127.0.0.1:{broker.port}/dev1", HOST)
    print(refused.value)
    assert "refused the connection: Not authorized" in str(refused.value) and "wrong" not in str(refused.value)


def write_ca(where: Path, name: str, *servers: str) -> list[Path]:
    """A CA certificate, plus a key and certificate for 127.0.0.1 per server name; PEM files world-readable."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key, issuer: str, signer, ca: bool) -> x509.Certificate:  # type: ignore[no-untyped-def]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    def save(path: Path, data: bytes) -> Path:
        path.write_bytes(data)
        path.chmod(0o644)
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    files = [save(where / f"{name}.pem", cert(name, ca_key, name, ca_key, True).public_bytes(pem))]
    for server in servers:
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        files.append(save(where / f"{server}.pem", cert(server, key, name, ca_key, False).public_bytes(pem)))
        files.append(save(where / f"{server}.key", key_pem))
    return files


def test_mqtts_checks_the_broker_certificate(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    where = Path(tempfile.mkdtemp(prefix="edgerl-tls-"))
    try:
        where.chmod(0o755)  # the broker runs as nobody
        ca, cert, key = write_ca(where, "test-ca", "broker")
        (stranger,) = write_ca(where, "stranger-ca")
        broker = mosquitto_factory(extra=[f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]).start()
        url = f"mqtts://127.0.0.1:{broker.port}/dev4"
        with (
            open_link(f"{url}?ca={ca}", Hello("dev4"), role="device") as dev,
            open_link(f"{url}?ca={ca}", HOST) as host,
        ):
            pump(lambda: dev.ready and host.ready, dev, host)
        with pytest.raises(LinkError) as refused:
            open_link(f"{url}?ca={stranger}", HOST)
        print(refused.value)
        assert "certificate verify failed" in str(refused.value) and "\n" not in str(refused.value)
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.parametrize("qos", [0, 1])
def test_sends_while_the_broker_is_down_never_block_and_are_bounded(mosquitto: Mosquitto, qos: int) -> None:
    transport = open_transport(LinkUrl.parse(f"{mosquitto.url}/dev5?qos={qos}&queue=5"), Hello("dev5"), "device")
    transport.open()
    try:
        time.sleep(0.2)  # the retained HELLO of the connect is acknowledged: paho's queue is empty
        mosquitto.kill()
        deadline = time.monotonic() + 3
        while transport.connected:
            assert time.monotonic() < deadline, "the loss of the broker went unnoticed"
            time.sleep(0.005)
        before = transport.counters()
        slowest = 0.0
        for i in range(20):
            start = time.perf_counter()
            transport.send(Obs(np.zeros(1, np.float32), t_us=i))
            transport.send(Heartbeat(PeerState.READY))  # liveness is not worth queueing
            slowest = max(slowest, time.perf_counter() - start)
        after = transport.counters()
        delta = {key: after[key] - before[key] for key in ("published", "publish_dropped", "liveness_dropped")}
        print(f"qos {qos}: {delta}, slowest send {slowest * 1e3:.2f} ms")
        assert delta == {"published": 5 * qos, "publish_dropped": 20 - 5 * qos, "liveness_dropped": 20}
        assert slowest < 0.05
    finally:
        transport.close()


def test_the_device_command_is_controlled_over_mqtt(mosquitto: Mosquitto) -> None:
    """`edge-rl device` as its own process on a real broker, in lock step with a host Link."""
    url = f"mqtt://127.0.0.1:{mosquitto.port}/cartpole-1"
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "edge_rl.cli", "device", "CartPole-v1", "--link", url, "--steps", "300"]
    device = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    answered = 0
    try:
        with open_link(url, Hello("host", (4,), 2)) as host:
            while device.poll() is None:
                msg = host.recv(0.5)
                if isinstance(msg, Obs) and not (msg.terminated or msg.truncated):
                    answered += host.send(Action(balance(msg), answers=msg.seq)) is not None
        out, err = device.communicate(timeout=20)
    finally:
        device.kill()
    assert device.returncode == 0, err
    safe = int(next(line.split()[-1] for line in out.splitlines() if line.startswith("safe-action steps")))
    assert answered >= 290 and safe <= 10, out
