"""Fleet scale: the simulated fleet, two Mosquittos bridged, the terminal table on a small screen, the web view's
streams (deltas, a stalled and a vanished browser) and bad input. Chromium's view of the page: test_fleet_web.py."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import threading
import time
import urllib.request
from itertools import pairwise

import pytest
from rich.console import Console

from edge_rl.cli import main
from edge_rl.monitor import simulate as simulate_module
from edge_rl.monitor import web
from edge_rl.monitor.fleet import Fleet
from edge_rl.monitor.live import Monitor
from edge_rl.monitor.simulate import SimDevice
from edge_rl.monitor.simulate import main as simulate
from edge_rl.monitor.subscribe import Broker
from edge_rl.monitor.view import fleet_table
from edge_rl.monitor.web import Frames, row_json
from edge_rl.telemetry import schema
from tests.fleet_rig import (
    MonitorThread,
    SimulatedFleet,
    client,
    feed,
    publish,
    raw_get,
    read_all,
    reset,
    start_monitor,
    stop,
    wait_for_bridge,
    wait_until,
)
from tests.mosquitto import bridge_to
from tests.telemetry_rig import Watcher


def test_simulated_devices_publish_what_a_daemon_publishes() -> None:
    device, again = SimDevice("sim-0001", 7, 2.0, events=50), SimDevice("sim-0001", 7, 2.0, events=50)
    assert device.boot != again.boot and len(device.boot) == 32  # a fresh boot per start, as a daemon's
    docs = [schema.parse_message(device.status("online")[1])]
    for _ in range(60):
        docs += [schema.parse_message(payload) for _, payload in device.tick()]
    seqs = [d["seq"] for d in docs[1:]]
    assert seqs == list(range(1, len(seqs) + 1))  # samples and events share one gapless seq
    samples, events = [d for d in docs if d["kind"] == "sample"], [d for d in docs if d["kind"] == "event"]
    assert len(samples) == 60 and {e["event"] for e in events} <= {"candidate_promoted", "rollback", "drift_alarm"}
    assert all(set(s) == set(schema.COMMON_FIELDS) | set(schema.SAMPLE_FIELDS) for s in samples)
    assert [e["data"]["event_seq"] for e in events] == list(range(1, len(events) + 1))
    assert samples[-1]["promotions"] == sum(e["event"] == "candidate_promoted" for e in events)
    assert samples[-1]["drift_alarms"] == sum(e["event"] in ("rollback", "drift_alarm") for e in events)  # as gate.py
    steps = [s["steps"] for s in samples]
    assert all(0 < b - a < 100 for a, b in pairwise(steps)) and all(s["interval_s"] == 0.5 for s in samples)
    assert all(0.0 <= s["success_rate"] <= 1.0 and s["act_p99_us"] > s["act_p50_us"] > 0 for s in samples)
    assert abs(samples[0]["wall"] - time.time()) < 5  # the send time: a reader's clock minus it is the lag
    twin = [schema.parse_message(p) for _ in range(60) for _, p in again.tick()]
    assert [d.get("success_rate") for d in twin] == [d.get("success_rate") for d in docs[1:]]  # a seed, a fleet


def test_a_simulated_sample_has_the_nested_keys_of_a_daemons(mosquitto) -> None:
    """The schema lists top-level fields only: `mqtt`, which the daemon's Publisher adds, is compared with one
    it really published."""
    from edge_rl.daemon.config import TelemetryConfig
    from edge_rl.telemetry.publish import Publisher
    from edge_rl.telemetry.settings import from_config

    simulated = schema.parse_message(SimDevice("sim-0001", 1, 1.0, events=0).tick()[-1][1])
    watcher = Watcher(mosquitto.port, client_id="test-nested-keys").start()
    publisher = Publisher(from_config(TelemetryConfig(url=mosquitto.url), "dev-a"), "b" * 32, {}, None)
    body = {k: v for k, v in simulated.items() if k in schema.SAMPLE_FIELDS and k != "mqtt"}
    try:
        deadline = time.monotonic() + 15
        while not watcher.docs("sample"):  # a sample each 0.2 s until the watcher has subscribed and got one
            assert time.monotonic() < deadline, "no sample from the Publisher within 15 s"
            publisher.sample(body)
            time.sleep(0.2)
        real = watcher.docs("sample")[0]
    finally:
        publisher.close()
        watcher.stop()
    assert set(real) == set(simulated) and set(real["mqtt"]) == set(simulated["mqtt"]), (real, simulated)


def test_a_small_terminal_shows_the_devices_with_alarms_first() -> None:
    fleet = Fleet()
    devices = [SimDevice(f"d-{i:02d}", i, 1.0, events=0) for i in range(12)]
    for device in devices:
        feed(fleet, device, 3)
    devices[9].seq = 100
    topic, payload = devices[9].event("rollback")
    fleet.receive(topic, payload, time.time())  # d-09 jumps from seq 3 to 101: a rollback alarm and a gap
    topic, payload = devices[0].status("online")
    odd = json.loads(payload) | {"bundle_version": "v1\n\x1b[2Jx\u009b2J\u202eab"}  # newline, ESC, C1 CSI, bidi
    fleet.receive(topic, json.dumps(odd).encode(), time.time())
    console = Console(record=True, width=260, file=io.StringIO())
    console.print(fleet_table(fleet, time.time(), rows=4))
    text = console.export_text()
    shown = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│ d-")]
    assert shown == ["d-09", "d-00", "d-01", "d-02"], text
    assert "rollback" in text and "gaps 97" in text and "8 more not shown (ok)" in text
    assert "│ v1??[2Jx?2J?ab │" in text and "\x1b" not in text and "\u202e" not in text
    assert json.loads(row_json(fleet, fleet.devices["d-00"], time.time())[0])["c"][2] == "v1??[2Jx?2J?ab"  # the page
    console.print(fleet_table(fleet, time.time()))  # no cap: every device, by name
    assert sum(line.startswith("│ d-") for line in console.export_text().splitlines()) == 12
    narrow = Console(record=True, width=120, file=io.StringIO())
    narrow.print(fleet_table(fleet, time.time(), rows=2))
    text = narrow.export_text()
    assert max(len(line) for line in text.splitlines()) <= 120 and "columns left out for width: boot, bundle" in text
    assert [line.split("│")[-2].strip() for line in text.splitlines() if line.startswith("│ d-")] == [
        "gaps 97, rollback",
        "ok",
    ]


def test_monitor_sees_every_device_across_bridged_mosquittos(mosquitto_factory) -> None:
    core = mosquitto_factory(persistence=False).start()  # the monitor's broker
    edge = mosquitto_factory(persistence=False, extra=bridge_to(core.port)).start()  # the devices' broker
    wait_for_bridge(core.port)
    monitor = Monitor(Broker("127.0.0.1", core.port, False), Fleet())
    halt = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(None, halt, lambda: None))
    thread.start()
    try:
        assert monitor.subscriber.subscribed.wait(10), monitor.status()
        fleet = SimulatedFleet(edge.port, 200, 3.0, rate_hz=1.0, connections=4, seed=3, events=40)
        fleet.join()
        sent = fleet.sent
        deadline = time.monotonic() + 30
        while monitor.fleet.messages < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        commands = []  # the bridge carries `both` ways: an operator's command on the core reaches the edge
        listener, subscribed = client(edge.port, "test-device-side"), threading.Event()
        listener.on_message = lambda _c, _u, m: commands.append(m.topic)
        listener.on_subscribe = lambda *_: subscribed.set()
        listener.subscribe("edgerl/+/cmd", qos=1)
        assert subscribed.wait(10), "no SUBACK from the devices' broker"
        publish(core.port, [("edgerl/sim-0042/cmd", b'{"cmd": "pause", "id": "op-1"}')])
        deadline = time.monotonic() + 10
        while not commands and time.monotonic() < deadline:
            time.sleep(0.05)
        listener.disconnect()
        listener.loop_stop()
    finally:
        halt.set()
        thread.join(10)
    assert monitor.fleet.messages == sent, f"{monitor.fleet.messages} of {sent} messages crossed the bridge"
    summary = monitor.fleet.summary(time.time())["devices"]
    assert len(summary) == 200
    rollbacks = 0
    for device in fleet.sim.devices:
        seen, last = summary[device.name], device.last_sample
        assert (seen["messages"], seen["seq_gaps"], seen["duplicates"], seen["bad_messages"]) == (device.sent, 0, 0, 0)
        assert (seen["steps"], seen["success_rate"], seen["return_mean"]) == (
            last["steps"],
            last["success_rate"],
            last["return_mean"],
        )
        assert (seen["promotions"], seen["rollbacks"]) == (device.counts["promotions"], device.counts["rollbacks"])
        assert seen["state"] == "offline" and seen["boot"] == device.boot  # the clean stop's retained status
        n = device.counts["rollbacks"]
        assert [a for a in seen["alarms"] if a.startswith("rollback")] == (
            [f"rollback x{n}"] if n > 1 else ["rollback"] * n
        )
        rollbacks += n
    assert rollbacks > 0 and sum(d.counts["promotions"] for d in fleet.sim.devices) > 0  # events did happen
    assert commands == ["edgerl/sim-0042/cmd"]


def test_frames_send_each_browser_what_changed_since_its_version() -> None:
    frames = Frames()
    assert frames.since(0, 0) == (0, None)  # nothing rendered yet
    frames.publish({"caption": "2 devices"}, {"a": '{"c":["a"]}', "b": '{"c":["b"]}'})
    frames.publish({"caption": "2 devices"}, {"a": '{"c":["a"]}', "b": '{"c":["b2"]}'})
    version, message = frames.since(0, 0)
    full = json.loads(message)
    assert version == 2 and full["rows"] == {"a": {"c": ["a"]}, "b": {"c": ["b2"]}}
    assert full["id"] == f"{frames.run}.2" and full["head"] == {"caption": "2 devices"}
    assert json.loads(frames.since(1, 0)[1])["rows"] == {"b": {"c": ["b2"]}}  # only what changed after 1
    assert frames.since(2, 0.05) == (2, None)  # nothing newer: a keepalive
    assert frames.start(f"{frames.run}.1") == 1
    for stale in ("", "other.1", f"{frames.run}.9", f"{frames.run}.x", "garbage", f"{frames.run}.²", f"{frames.run}.١"):
        assert frames.start(stale) == 0  # a fresh page, an earlier monitor's page, a version from the future
    assert frames.start(f"{frames.run}." + "9" * 5000) == 0  # past int()'s digit limit: no ValueError
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(frames.since(2, 30)))
    waiter.start()
    frames.close()
    waiter.join(5)
    assert woke == [(-1, None)]  # closing wakes every stream at once


def events_reader(url: str, got: list[float], halt: threading.Event) -> None:
    """Read /events, noting when each data message arrives."""
    with urllib.request.urlopen(url + "events", timeout=20) as stream:
        while not halt.is_set():
            line = stream.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                got.append(time.monotonic())


def test_a_stalled_and_a_vanished_browser_give_their_streams_back(monkeypatch) -> None:
    """A stream nobody reads is dropped SEND_TIMEOUT_S after its small send buffer filled (with the kernel's
    autotuned megabytes it would take half a minute), one reset mid-stream at its next write; a healthy
    stream keeps flowing and the monitor's thread never waits meanwhile."""
    monkeypatch.setattr(web, "SEND_TIMEOUT_S", 1.0)
    monkeypatch.setattr(web, "STREAM_SNDBUF", 4096)
    monitor = MonitorThread(50)  # a message with every row: ~15 kB
    view, halt, got = monitor.view, threading.Event(), []
    stalled = raw_get(view.port, "/events", rcvbuf=4096)  # ... and never reads
    vanished = raw_get(view.port, "/events")
    try:
        assert vanished.recv(100).startswith(b"HTTP/1.0 200")
        wait_until(lambda: view.streams == 2, 10, "two streams")
        reset(vanished)
        reader = threading.Thread(target=events_reader, args=(view.url, got, halt), daemon=True)
        reader.start()
        wait_until(lambda: got, 10, "the healthy stream's first message")
        wait_until(lambda: view.streams == 1, 8, "the stalled and the vanished stream's slots back")
        before = len(got)
        wait_until(lambda: len(got) >= before + 3, 10, "three more messages on the healthy stream")
    finally:
        halt.set()
        stalled.close()
        monitor.close()
    assert monitor.longest_tick < web.SEND_TIMEOUT_S, monitor.longest_tick


def test_the_stream_limit_says_busy_and_when_to_retry(monkeypatch) -> None:
    """Beyond MAX_STREAMS a browser gets a 200 stream saying `busy` and a long retry (a 503 would end its
    EventSource for good); a slot given back serves the next one."""
    monkeypatch.setattr(web, "MAX_STREAMS", 2)
    monitor = MonitorThread(3)
    view = monitor.view
    streams = [raw_get(view.port, "/events") for _ in range(2)]
    try:
        wait_until(lambda: view.streams == 2, 10, "two streams")
        busy = read_all(raw_get(view.port, "/events"))
        assert busy.startswith(b"HTTP/1.0 200") and b"Content-Type: text/event-stream" in busy, busy
        assert busy.endswith(b"\r\n\r\nretry: 10000\nevent: busy\ndata: 2\n\n"), busy
        reset(streams.pop())
        wait_until(lambda: view.streams == 1, 10, "the reset stream's slot back")
        streams.append(raw_get(view.port, "/events"))
        wait_until(lambda: b"retry: 2000" in streams[-1].recv(4096), 10, "a stream for the next browser")
    finally:
        for s in streams:
            s.close()
        monitor.close()


def test_rows_are_rendered_for_a_page_or_a_stream_only() -> None:
    """No browser: the monitor's ticks render nothing (200 rows cost ~30 ms under its lock); a page request
    renders for itself, an open stream has the ticks render."""
    monitor = MonitorThread(3)
    view = monitor.view
    stream = None
    try:
        wait_until(lambda: monitor.ticks >= 10, 10, "ten ticks")
        assert view.frames.version == 0
        assert b"sim-0002" in read_all(raw_get(view.port, "/")) and view.frames.version == 1
        stream = raw_get(view.port, "/events")
        wait_until(lambda: view.frames.version >= 3, 10, "renderings for the stream")
    finally:
        if stream is not None:
            stream.close()
        monitor.close()


def test_connections_beyond_the_bound_are_closed_at_once(monkeypatch) -> None:
    """Idle connections (a slowloris) hold at most MAX_CONNECTIONS threads; one more is closed, not queued."""
    monkeypatch.setattr(web, "MAX_CONNECTIONS", 3)
    monitor = MonitorThread(1)
    idle = [socket.create_connection(("127.0.0.1", monitor.view.port), timeout=10) for _ in range(3)]
    try:
        extra = socket.create_connection(("127.0.0.1", monitor.view.port), timeout=10)
        assert extra.recv(100) == b""  # closed by the server: no request read, no thread
        extra.close()
        idle.pop().close()  # its thread ends and gives its slot back

        def answered() -> bool:
            try:
                return read_all(raw_get(monitor.view.port, "/fleet.json")).startswith(b"HTTP/1.0 200")
            except ConnectionError:  # closed before the request was written: no slot yet
                return False

        wait_until(answered, 10, "the slot given back")
    finally:
        for s in idle:
            s.close()
        monitor.close()


def test_only_loopback_names_are_answered_on_loopback() -> None:
    """A hostile site whose name was rebound to 127.0.0.1 sends its own name as Host: 421, nothing read."""
    monitor = MonitorThread(1)
    try:
        wait_until(lambda: monitor.fleet.devices, 10, "a device")
        for host, code in (("evil.example", 421), ("evil.example:80", 421), ("", 421), ("127.0.0.1", 200)):
            connection = http.client.HTTPConnection("127.0.0.1", monitor.view.port, timeout=10)
            connection.request("GET", "/fleet.json", headers={"Host": host})
            response = connection.getresponse()
            assert (response.status, b"sim-" in response.read()) == (code, code == 200), host
            connection.close()
        for host in (f"localhost:{monitor.view.port}", f"[::1]:{monitor.view.port}", "LOCALHOST"):
            assert read_all(raw_get(monitor.view.port, "/", host)).startswith(b"HTTP/1.0 200"), host
    finally:
        monitor.close()


def test_browsers_that_leave_at_once_leave_no_traceback(mosquitto) -> None:
    """Requests reset before their answer: the monitor keeps serving, and its stderr (the operator's terminal)
    gets no traceback (`stop` checks)."""
    proc, url = start_monitor(mosquitto.url, "--once")
    try:
        port = int(url.split(":")[2].strip("/"))
        for i in range(90):
            reset(raw_get(port, ("/", "/events", "/fleet.json")[i % 3]))
        with urllib.request.urlopen(url + "fleet.json", timeout=10) as response:
            assert json.load(response)["devices"] == {}
    finally:
        stop(proc)


def test_a_frozen_broker_at_shutdown_costs_one_timeout_not_one_per_device(mosquitto, monkeypatch) -> None:
    """The offline statuses wait for their PUBACKs against one shared deadline: 20 devices and a broker that
    stopped answering (SIGSTOP) end in about CONNECT_TIMEOUT, not 20 times it; each unacknowledged is counted."""
    monkeypatch.setattr(simulate_module, "CONNECT_TIMEOUT", 1.0)
    fleet = SimulatedFleet(mosquitto.port, 20, None, rate_hz=5.0, connections=2, events=0)
    wait_until(lambda: fleet.sent > 40, 15, "the simulator publishing")  # the online statuses were acknowledged
    assert mosquitto.proc is not None
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        fleet.halt.set()
        fleet.join(timeout=10)  # 20 x 1 s before
        took = time.monotonic() - started
    finally:
        os.kill(mosquitto.proc.pid, signal.SIGCONT)
    assert took < 6 and sum(fleet.sim.failed) == 20, (took, fleet.sim.failed)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["monitor", "mqtt://x", "--web", "70000"], "--web"),
        (["monitor", "--replay", "x.jsonl", "--web", "0"], "--web needs a live broker"),
        (["monitor", "mqtt://127.0.0.1:1", "--web", "{busy}", "--duration", "1"], "cannot listen"),
        (["simulate", "http://x"], "mqtt://host:port"),
        (["simulate", "mqtt://x", "--devices", "0"], "--devices"),
        (["simulate", "mqtt://x", "--rate", "nan"], "--rate"),
        (["simulate", "mqtt://x", "--prefix", "a/b"], "device id"),
    ],
)
def test_bad_web_and_simulator_input_is_one_line_exit_2(args, needle, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = [a.replace("{busy}", str(busy.getsockname()[1])) for a in args]
        try:
            code = main(args) if args[0] == "monitor" else simulate(args[1:])
        except SystemExit as e:
            code = e.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
