"""The embedded demo broker (`edge-rl broker`, edge_rl.broker.Broker on amqtt): loopback only, QoS 1, retained
status and the will after an unclean drop, offline queueing for a persistent session with a username, the
retained-on-connect quirk the clients live with, and the CLI's start, stop and port-in-use behaviour."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("amqtt", reason="the embedded broker needs the demo extra: pip install 'edge-rl[demo]'")

from edge_rl.broker import Broker, BrokerError
from edge_rl.telemetry import schema
from tests.mqtt_probe import ACCEPTED, NOT_AUTHORIZED, Probe

ROOT = Path(__file__).resolve().parents[1]
BOOT = uuid.uuid4().hex


def status(device: str, state: str) -> bytes:
    doc = {"v": 1, "device": device, "boot": BOOT, "seq": 0, "kind": "status", "wall": time.time(), "mono": 0.0}
    return json.dumps({**doc, "state": state}).encode()


def sample(device: str, seq: int) -> bytes:
    doc = {"v": 1, "device": device, "boot": BOOT, "seq": seq, "kind": "sample", "wall": time.time(), "mono": 1.0}
    return json.dumps(doc).encode()


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def outward_address() -> str | None:
    """This host's address on its default route (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_loopback_only_and_qos1_round_trip() -> None:
    t0 = time.monotonic()
    with Broker(port=0) as broker:
        started = time.monotonic() - t0
        print(f"embedded broker started in {started * 1000:.0f} ms on {broker.url}")
        assert started < 2.0
        assert broker.host == "127.0.0.1" and broker.port > 0
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        # bound to 127.0.0.1 only: another loopback address, and this host's LAN address, are refused
        assert refused("127.0.0.2", broker.port)
        lan = outward_address()
        if lan is not None:
            assert refused(lan, broker.port), f"{lan}:{broker.port} accepted a connection"

        topics = schema.topics("dev-a")
        monitor = Probe(broker.port, "mon", username="edge-rl-monitor")
        device = Probe(broker.port, "dev-a", username="dev-a")
        try:
            assert monitor.connect() == ACCEPTED and device.connect() == ACCEPTED
            assert monitor.subscribe("edgerl/+/telemetry") == [1]
            device.publish(topics.telemetry, sample("dev-a", 1), qos=1)  # returns after the PUBACK
            msg = monitor.expect()
            assert (msg.topic, msg.qos, msg.retain) == (topics.telemetry, 1, False)
            assert schema.parse_message(msg.payload)["seq"] == 1
        finally:
            device.close()
            monitor.close()
    assert not broker.running
    assert refused("127.0.0.1", broker.port)  # stop() closed the listener


def test_retained_status_and_will_after_an_unclean_drop() -> None:
    with Broker(port=0) as broker:
        topics = schema.topics("dev-a")
        device = Probe(broker.port, "dev-a", username="dev-a", will=(topics.status, status("dev-a", "offline")))
        watcher = Probe(broker.port, "watcher", username="edge-rl-monitor")
        try:
            assert device.connect() == ACCEPTED
            device.publish(topics.status, status("dev-a", "online"), retain=True)
            assert watcher.connect() == ACCEPTED
            assert watcher.subscribe("edgerl/+/status") == [1]
            first = watcher.expect()  # the retained status, sent on SUBSCRIBE
            assert first.retain and schema.parse_message(first.payload)["state"] == "online"

            device.kill()  # the socket closes without DISCONNECT: the broker publishes the will
            live = watcher.expect()
            assert live.topic == topics.status and schema.parse_message(live.payload)["state"] == "offline"
        finally:
            watcher.close()
        late = Probe(broker.port, "late", username="edge-rl-monitor")  # a monitor that starts after the drop
        try:
            assert late.connect() == ACCEPTED
            late.subscribe("edgerl/+/status")
            msg = late.expect()
            assert msg.retain and msg.topic == topics.status
            assert schema.parse_message(msg.payload)["state"] == "offline"  # the will replaced the retained online
        finally:
            late.close()


def test_a_persistent_session_gets_what_was_published_while_it_was_away() -> None:
    with Broker(port=0) as broker:
        topics = schema.topics("dev-a")
        anonymous = Probe(broker.port, "anon")
        assert anonymous.connect() == NOT_AUTHORIZED  # a username is required: amqtt queues nothing for anonymous

        monitor = Probe(broker.port, "edge-rl-monitor", username="edge-rl-monitor", clean_session=False)
        assert monitor.connect() == ACCEPTED and not monitor.session_present
        assert monitor.subscribe("edgerl/+/telemetry") == [1]
        monitor.close()  # away, session kept

        device = Probe(broker.port, "dev-a", username="dev-a")
        assert device.connect() == ACCEPTED
        for seq in range(1, 6):
            device.publish(topics.telemetry, sample("dev-a", seq), qos=1)
        device.close()

        back = Probe(broker.port, "edge-rl-monitor", username="edge-rl-monitor", clean_session=False)
        back.route("edgerl/+/telemetry")  # no new SUBSCRIBE: the session remembers it
        try:
            assert back.connect() == ACCEPTED and back.session_present
            seqs = [schema.parse_message(back.expect().payload)["seq"] for _ in range(5)]
            assert seqs == [1, 2, 3, 4, 5]
        finally:
            back.close()


def test_clients_route_by_topic_past_the_retained_on_connect_quirk() -> None:
    """amqtt sends a connecting client the retained messages of *every* subscription on the broker (QoS 0):
    a daemon that routes its own cmd topic (message_callback_add) sees exactly its commands."""
    with Broker(port=0) as broker:
        a, b = schema.topics("dev-a"), schema.topics("dev-b")
        monitor = Probe(broker.port, "mon", username="edge-rl-monitor")
        other = Probe(broker.port, "dev-b", username="dev-b")
        daemon = Probe(broker.port, "dev-a", username="dev-a", clean_session=False)
        try:
            assert monitor.connect() == ACCEPTED and other.connect() == ACCEPTED
            monitor.subscribe("edgerl/+/status")
            other.publish(b.status, status("dev-b", "online"), retain=True)
            monitor.expect()

            daemon.route(a.cmd)
            assert daemon.connect() == ACCEPTED
            assert daemon.subscribe(a.cmd) == [1]
            command = json.dumps({"cmd": "pause", "id": "c1"}).encode()
            monitor.publish(a.cmd, command)
            msg = daemon.expect()
            assert schema.parse_command(msg.payload).name == "pause" and daemon.drain() == []
            strays = []
            while not daemon.stray.empty():
                strays.append(daemon.stray.get_nowait())
            # whatever else arrived is another device's retained status, never a command or telemetry
            assert all(m.topic == b.status and m.retain for m in strays), [m.topic for m in strays]
            print(f"stray retained messages on connect: {[m.topic for m in strays]}")
        finally:
            for probe in (daemon, other, monitor):
                probe.close()


def test_a_port_in_use_is_one_line_from_python_and_from_the_cli() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BrokerError, match="in use"):
            Broker(port=port).start()
        result = subprocess.run(
            [sys.executable, "-m", "edge_rl.cli", "broker", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"edge-rl broker: error: 127.0.0.1:{port} is in use")


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line on stdout within {timeout} s"
    return proc.stdout.readline()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_its_url_serves_and_exits_cleanly_on_a_signal(sig: signal.Signals) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "edge_rl.cli", "broker", "--port", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        line = read_line(proc, 20)
        assert line.startswith("edge-rl broker: listening on mqtt://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        probe = Probe(port, "p", username="dev-a")
        assert probe.connect() == ACCEPTED
        probe.subscribe("edgerl/dev-a/cmd")
        probe.publish("edgerl/dev-a/cmd", b'{"cmd": "resume"}')
        assert probe.expect().payload == b'{"cmd": "resume"}'
        probe.close()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == "" and err == "edge-rl broker: stopped\n", (out, err)


def test_an_address_not_on_this_host_and_a_missing_amqtt_are_one_line_each() -> None:
    with pytest.raises(BrokerError, match=r"cannot listen on 192\.0\.2\.77"):
        Broker("192.0.2.77", 0).start()  # TEST-NET-1: not an address of this host
    probe = "import sys; sys.modules['amqtt'] = None; from edge_rl.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", probe, "broker", "--port", "0"], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "edge-rl broker: error: this install has no amqtt: pip install 'edge-rl[demo]'\n"
