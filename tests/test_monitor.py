"""`edge-rl monitor`: fleet accounting, the table, plots, record/replay, Prometheus, and a real Mosquitto.

The recorded session (`session()`) is synthetic but schema-valid: three devices, a promotion, a
drift alarm and a rollback, a duplicate, a lost and a late message, a safe-action burst, a daemon
restart (new boot), bad messages and a topic outside the subscription. `tests/data/monitor/session.jsonl`
is what the recorder writes for it (regenerate with `python -m tests.test_monitor`).
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from edge_rl.cli import main
from edge_rl.monitor.fleet import Fleet, SeqWindow
from edge_rl.monitor.live import Monitor
from edge_rl.monitor.plot import learning_curves, write_plot
from edge_rl.monitor.prometheus import Exporter
from edge_rl.monitor.record import Recorder, load
from edge_rl.monitor.subscribe import Broker
from edge_rl.monitor.view import fleet_table, sparkline
from edge_rl.telemetry.schema import SAMPLE_FIELDS
from tests.mosquitto import free_port

STORED = Path(__file__).parent / "data" / "monitor" / "session.jsonl"
T0 = 1_700_000_000.0
BOOT = {"rig-1": "1" * 32, "rig-2": "2" * 32, "rig-3/old": "3" * 32, "rig-3": "4" * 32}
Wire = tuple[float, str, bytes]  # (receive time, topic, payload)


# -- a synthetic, schema-valid session ------------------------------------------------------------------
def doc(device: str, boot: str, seq: int | None, kind: str, wall: float, **fields: Any) -> dict[str, Any]:
    mono = round(wall - T0 + 7.0, 3)
    out = {"v": 1, "device": device, "boot": boot, "seq": seq, "kind": kind, "wall": wall, "mono": mono}
    if seq is None:
        del out["seq"]
    return out | fields


def sample(device: str, boot: str, seq: int, wall: float, success: float, ret: float, safe: int, **kw: Any) -> dict:
    fields = {
        "interval_s": 1.0,
        "steps": 100 * seq,
        "rate_hz": 100.0,
        "episodes": seq,
        "returns": [ret],
        "return_mean": ret,
        "reward_mean": 0.5,
        "success_rate": success,
        "period_p50_us": 10_000,
        "period_p99_us": 12_500,
        "act_p50_us": 90,
        "act_p99_us": 240,
        "learn_us": 400.0,
        "td_error": 0.1,
        "updates": 100 * seq,
        "epsilon": 0.05,
        "adapt": "head",
        "paused": False,
        "gate_phase": "learning",
        "promotions": kw.get("promotions", 0),
        "rollbacks": kw.get("rollbacks", 0),
        "drift_alarms": kw.get("drift_alarms", 0),
        "trials": kw.get("promotions", 0),
        "safe_actions": safe,
        "fallbacks": {"deadline": safe},
        "deadline_misses": 0,
        "link": {"state": "ready", "frames": 100 * seq, "crc_errors": 0},
        "rss_mb": 80.5,
        "cpu_pct": 12.0,
        "bundle_version": 3,
        "mqtt": {"connects": 1, "outbox_rows": 0},
    }
    assert fields.keys() == SAMPLE_FIELDS.keys()
    return doc(device, boot, seq, "sample", wall, **fields)


def event(device: str, boot: str, seq: int, wall: float, name: str) -> dict:
    return doc(device, boot, seq, "event", wall, event=name, data={"event_seq": seq})


def status(device: str, boot: str, state: str, wall: float) -> dict:
    return doc(device, boot, None, "status", wall, state=state, bundle_version=3, model_id="antijam", adapt="head")


def session() -> list[Wire]:
    """Messages in arrival order; each arrives 50 ms after it was made unless it is late or repeated."""
    out: list[tuple[float, str, bytes | dict]] = []

    def send(message: dict, delay: float = 0.05, topic: str | None = None) -> None:
        leaf = "status" if message["kind"] == "status" else "telemetry"
        out.append((message["wall"] + delay, topic or f"edgerl/{message['device']}/{leaf}", message))

    a, b, old, new = BOOT["rig-1"], BOOT["rig-2"], BOOT["rig-3/old"], BOOT["rig-3"]
    # rig-1 learns: success 0.26 -> 0.92, a promotion at seq 6, seq 8 delivered twice
    send(status("rig-1", a, "online", T0))
    for seq in range(1, 13):
        wall = T0 + seq
        if seq == 6:
            send(event("rig-1", a, 6, wall, "candidate_promoted"))
            continue
        message = sample("rig-1", a, seq, wall, 0.2 + 0.06 * seq, 10.0 + 5 * seq, seq // 3, promotions=int(seq > 6))
        send(message)
        if seq == 8:
            send(message, delay=1.05)  # a QoS 1 redelivery
    # rig-2 degrades: seq 4 lost, seq 7 late, a drift alarm, a rollback, 55 safe actions in one sample, offline
    safe = {1: 0, 2: 1, 3: 2, 5: 3, 6: 4, 7: 5, 10: 60}
    for seq in (1, 2, 3, 5, 6, 7, 10):
        wall = T0 + seq + 0.3
        message = sample("rig-2", b, seq, wall, 0.9 - 0.05 * seq, 50.0 - 2 * seq, safe[seq], rollbacks=int(seq > 9))
        send(message, delay=2.5 if seq == 7 else 0.05)
    send(event("rig-2", b, 8, T0 + 8.3, "drift_alarm"))
    send(event("rig-2", b, 9, T0 + 9.3, "rollback"))
    send(status("rig-2", b, "online", T0 + 0.3))
    send(status("rig-2", b, "offline", T0 + 11.5))
    # rig-3 restarts: boot `old` seq 1-3, then a new boot from seq 1 (not duplicates), a safe_action event
    for seq in (1, 2, 3):
        send(sample("rig-3", old, seq, T0 + seq * 0.5, 0.5, 20.0, 0))
    send(status("rig-3", new, "online", T0 + 7.6))
    for seq in (1, 2, 3):
        send(sample("rig-3", new, seq, T0 + 8 + seq, 0.5 + 0.1 * seq, 20.0 + seq, seq))
    send(event("rig-3", new, 4, T0 + 11.8, "safe_action"))
    wire: list[Wire] = [
        (at, topic, json.dumps(m).encode())
        for at, topic, m in sorted(out, key=lambda x: x[0])  # type: ignore
    ]
    # bad input: not JSON, a future format version, oversized, a device id that is no topic level; and a
    # retained message on a topic nobody subscribed to (amqtt sends those)
    wire += [
        (T0 + 4.5, "edgerl/rig-1/telemetry", b"{not json"),
        (T0 + 9.7, "edgerl/rig-3/telemetry", json.dumps(doc("rig-3", new, 9, "sample", T0 + 9.7) | {"v": 2}).encode()),
        (T0 + 6.2, "edgerl/rig-2/telemetry", b'{"v": 1, "pad": "' + b"x" * 70_000 + b'"}'),
        (T0 + 3.3, "edgerl/bad$id/telemetry", json.dumps(status("rig-1", a, "online", T0)).encode()),
        (T0 + 2.2, "edgerl/rig-1/cmd", b'{"cmd": "pause"}'),
    ]
    return sorted(wire, key=lambda w: w[0])


def record_session(path: Path) -> Fleet:
    """The session through a Fleet and a Recorder, as a live monitor would see and record it."""
    fleet, recorder = Fleet(), Recorder(path)
    for at, topic, payload in session():
        recorder.write(topic, payload, at, fleet.receive(topic, payload, at))
    recorder.close()
    return fleet


def end_of_session() -> float:
    return max(at for at, _, _ in session())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Fleet, Path]:
    path = tmp_path_factory.mktemp("monitor") / "session.jsonl"
    return record_session(path), path


# -- the fleet's accounting -----------------------------------------------------------------------------
def test_seq_window_counts_duplicates_and_gaps_that_fill() -> None:
    w = SeqWindow()
    assert [w.add(s) for s in (1, 2, 2, 5)] == [True, True, False, True]
    assert w.missing == {3, 4}
    assert w.add(4) and w.missing == {3}  # a late message fills its gap
    assert not w.add(4)  # ... and is a duplicate the second time
    assert w.add(3) and w.gaps == 0
    late = SeqWindow()
    late.add(10)  # joined a running daemon: seqs 1-9 were never ours to miss
    assert late.gaps == 0
    late.add(8)  # an outbox replay of history: the window grows down
    assert late.missing == {9}
    huge = SeqWindow()
    huge.add(1)
    huge.add(10**9)
    assert huge.gaps == 10**9 - 2 and len(huge.missing) <= 10_000  # counted, not listed


def test_fleet_dedupes_by_boot_and_seq_and_a_new_boot_starts_afresh() -> None:
    fleet = Fleet()
    topic = "edgerl/d1/telemetry"

    def put(boot: str, seq: int, at: float) -> str:
        return fleet.receive(topic, json.dumps(sample("d1", boot, seq, T0 + at, 0.5, 1.0, 0)).encode(), T0 + at).outcome

    assert [put("a" * 32, s, s) for s in (1, 2, 2, 4)] == ["ok", "ok", "duplicate", "ok"]
    d = fleet.devices["d1"]
    assert (d.duplicates, d.gaps, d.missing()) == (1, 1, [("a" * 32, 3)])
    assert put("a" * 32, 3, 5) == "ok" and d.gaps == 0  # the gap filled: no longer reported
    assert [put("b" * 32, s, 10 + s) for s in (1, 2)] == ["ok", "ok"]  # new boot: seq 1 again is new
    assert (d.boot, d.duplicates, d.gaps, d.latest_seq) == ("b" * 32, 1, 0, 2)
    assert put("a" * 32, 2, 20) == "duplicate"  # the old boot is still remembered
    assert d.boot == "b" * 32  # and a late message of it does not make it current again


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xfe",
        b"{not json",
        b"[1, 2]",
        b"null",
        b'{"v": 2}',
        json.dumps(doc("d1", "a" * 32, 1, "sample", T0) | {"kind": "weird"}).encode(),
        json.dumps(doc("d1", "short", 1, "sample", T0)).encode(),
        json.dumps(doc("d1", "a" * 32, 0, "sample", T0)).encode(),
        json.dumps(doc("d1", "a" * 32, True, "event", T0)).encode(),
        json.dumps(doc("other", "a" * 32, 1, "sample", T0)).encode(),  # another device's message on d1's topic
        json.dumps(status("d1", "a" * 32, "online", T0)).encode(),  # a status on the telemetry topic
        b'{"v": 1, "x": "' + b"y" * 70_000 + b'"}',
    ],
)
def test_bad_messages_are_counted_never_raised(payload: bytes) -> None:
    fleet = Fleet()
    got = fleet.receive("edgerl/d1/telemetry", payload, T0)
    assert got.outcome == "bad" and got.error and got.device == "d1"
    assert fleet.devices["d1"].bad == 1 and fleet.summary(T0)["devices"]["d1"]["bad_messages"] == 1


def test_odd_field_values_and_foreign_topics_never_raise() -> None:
    fleet = Fleet()
    odd = doc("d1", "a" * 32, 1, "sample", T0) | {
        "success_rate": "high",
        "steps": True,
        "return_mean": float("nan"),
        "safe_actions": [1],
        "bundle_version": {"x": 1},
        "adapt": "[bold red]owned[/]" * 20,
        "interval_s": -1,
    }
    assert fleet.receive("edgerl/d1/telemetry", json.dumps(odd).encode(), T0).outcome == "ok"
    weird_event = doc("d1", "a" * 32, 2, "event", T0) | {"event": 123, "data": "?"}
    assert fleet.receive("edgerl/d1/telemetry", json.dumps(weird_event).encode(), T0).outcome == "ok"
    assert fleet.devices["d1"].latest["success_rate"] is None
    for topic in ("t/ret", "edgerl/d1/cmd", "edgerl/d1/link/status", "edgerl/d1/telemetry/x", "?"):
        assert fleet.receive(topic, b"{}", T0).outcome == "ignored"  # amqtt may deliver these: not ours
    assert fleet.receive("edgerl/bad$id/telemetry", b"{}", T0).device == "unknown"
    one = Fleet("d1")
    assert one.receive("edgerl/d2/telemetry", b"{}", T0).outcome == "ignored"
    text = render(fleet, T0, width=240)
    assert "[bold red]owned[/]" in text  # shown literally, never interpreted as markup
    assert fleet.summary(T0)["ignored"] == 5 and fleet.summary(T0)["unknown_bad"] == 1


def test_sparkline() -> None:
    assert sparkline([0.0, 0.5, 1.0], 0.0, 1.0) == "▁▅█"
    assert sparkline([None, 3.0, 3.0]) == " ▄▄"
    assert sparkline([]) == "" and sparkline([None]) == " "


# -- the recorded session: table, plot, replay -----------------------------------------------------------
def render(fleet: Fleet, now: float, width: int = 260) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(fleet_table(fleet, now))
    return console.export_text()


def row(text: str, device: str) -> str:
    return next(line for line in text.splitlines() if f" {device} " in line)


def test_table_of_the_recorded_session(recorded) -> None:
    fleet, _ = recorded
    text = render(fleet, end_of_session())
    one, two, three = row(text, "rig-1"), row(text, "rig-2"), row(text, "rig-3")
    assert "online" in one and " 1/0 " in one and " ok" in one  # one promotion, no rollback, no alarm
    assert "0.92" in one and "70.0" in one and "10.0ms/12.5ms" in one and "240us" in one
    assert "14 1/0/1" in one  # 14 messages (status, 11 samples, a repeat, an event), 1 duplicate, 0 gaps, 1 bad
    assert "offline" in two and "gaps 1" in two and "rollback" in two and "drift_alarm" in two
    assert "safe +55" in two and " 0/1 " in two  # rollbacks from the daemon's own count
    assert "online" in three and "44444444" in three and " 0/0/1" in three  # the new boot, no dup, no gap
    assert "1 bad from unknown devices" in text and "1 on other topics ignored" in text
    summary = fleet.summary(end_of_session())
    assert summary["devices"]["rig-2"]["missing"] == ["22222222:4"]
    assert summary["devices"]["rig-3"]["events"] == {"safe_action": 1}


def test_plot_of_the_recorded_session(recorded, tmp_path) -> None:
    fleet, _ = recorded
    fig, markers = learning_curves(fleet)
    assert markers == {"candidate_promoted": 1, "rollback": 1, "drift_alarm": 1}
    drawn = [line.get_gid() for ax in fig.axes for line in ax.get_lines() if line.get_gid()]
    assert sorted(drawn) == sorted(["candidate_promoted", "rollback", "drift_alarm"] * 2)  # one line per panel
    curves = [line for line in fig.axes[0].get_lines() if line.get_label() == "rig-1"]
    assert len(curves) == 1 and len(curves[0].get_xdata()) == 11  # 11 samples (the duplicate not twice)
    out = tmp_path / "curves.png"
    assert write_plot(fleet, out) == markers
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not list(tmp_path.glob(".*tmp*"))


def test_record_then_replay_gives_the_same_fleet(recorded) -> None:
    fleet, path = recorded
    replayed, how = load(path)
    assert how.skipped == 0 and how.lines == len(session()) - 1  # the foreign topic is not recorded
    assert how.last_at == end_of_session()
    live, again = fleet.summary(end_of_session()), replayed.summary(how.last_at)
    assert (live.pop("ignored"), again.pop("ignored")) == (1, 0)  # topics outside the subscription: not recorded
    assert again == live
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert all({"at", "topic"} <= line.keys() for line in lines)
    assert sum("error" in line for line in lines) == 4 and sum("payload" in line for line in lines) == len(lines) - 4


def test_the_stored_session_is_what_the_recorder_writes(recorded) -> None:
    assert STORED.read_text() == recorded[1].read_text(), "regenerate it: python -m tests.test_monitor"


def test_replay_cli_prints_table_json_and_plot(tmp_path, capsys) -> None:
    torn = tmp_path / "torn.jsonl"  # a torn last line (the recorder was killed) is skipped, not fatal
    torn.write_text(STORED.read_text() + '{"at": 1, "topic": "edgerl/x/tel')
    assert main(["monitor", "--replay", str(torn), "--plot", str(tmp_path / "p.png")]) == 0
    out, err = capsys.readouterr()
    assert "rig-1" in out and "rig-2" in out and "offline" in row(out, "rig-2")
    assert "1 unreadable lines skipped" in err and "1 candidate_promoted, 1 rollback, 1 drift_alarm" in err
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["monitor", "--replay", str(STORED), "--json", "--device", "rig-2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary["devices"]) == ["rig-2"] and summary["devices"]["rig-2"]["seq_gaps"] == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "broker URL"),
        (["http://x"], "mqtt://host:port"),
        (["mqtt://u:secret@x"], "--password-env"),
        (["mqtt://x/dev"], "--device"),
        (["mqtt://x:99999"], "does not parse"),
        (["mqtt://x", "--ca", "ca.pem"], "mqtts://"),
        (["mqtt://x", "--password-env", "EDGE_RL_NO_SUCH_VARIABLE"], "EDGE_RL_NO_SUCH_VARIABLE"),
        (["mqtt://x", "--client-id", "a b"], "--client-id"),
        (["mqtt://x", "--device", "a/b"], "device id"),
        (["mqtt://x", "--duration", "0"], "--duration"),
        (["mqtt://x", "--prometheus", "70000"], "--prometheus"),
        (["mqtt://x", "--plot", "/no/such/dir/p.png"], "/no/such/dir"),
        (["--replay", "{tmp}/missing.jsonl"], "missing.jsonl"),
        (["mqtt://x", "--replay", str(STORED)], "live broker"),
        (["--replay", str(STORED), "--prometheus", "0"], "--prometheus"),
    ],
)
def test_bad_cli_input_is_one_line_exit_2(args, needle, tmp_path, capsys) -> None:
    try:
        code = main(["monitor", *(a.replace("{tmp}", str(tmp_path)) for a in args)])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err


# -- Prometheus ----------------------------------------------------------------------------------------
def test_prometheus_serves_the_fleet(recorded) -> None:
    fleet, _ = recorded
    exporter = Exporter(fleet, threading.Lock(), 0, "127.0.0.1", clock=end_of_session)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        exporter.close()
    values = {
        (s.name, s.labels.get("device")): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert values[("edgerl_online", "rig-1")] == 1.0 and values[("edgerl_online", "rig-2")] == 0.0
    assert values[("edgerl_seq_gaps", "rig-2")] == 1.0 and values[("edgerl_duplicates_total", "rig-1")] == 1.0
    assert values[("edgerl_promotions_total", "rig-1")] == 1.0 and values[("edgerl_rollbacks_total", "rig-2")] == 1.0
    assert values[("edgerl_success_rate", "rig-1")] == pytest.approx(0.92)
    assert values[("edgerl_period_p99_seconds", "rig-1")] == pytest.approx(0.0125)
    assert values[("edgerl_safe_actions_total", "rig-2")] == 60.0 and values[("edgerl_steps_total", "rig-3")] == 300
    assert values[("edgerl_bad_messages_total", "rig-3")] == 1.0
    assert values[("edgerl_monitor_unknown_bad_messages_total", None)] == 1.0
    assert values[("edgerl_alarms", "rig-2")] >= 4 and values[("edgerl_last_seen_age_seconds", "rig-3")] < 1


# -- against a real Mosquitto ----------------------------------------------------------------------------
def publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher", protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish(client: mqtt.Client, topic: str, message: dict | bytes, retain: bool = False) -> None:
    payload = message if isinstance(message, bytes) else json.dumps(message).encode()
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


def test_live_monitor_sees_dedupes_and_finds_gaps_on_mosquitto(mosquitto) -> None:
    pub = publisher(mosquitto.port)
    boot, now = "c" * 32, time.time()
    publish(pub, "edgerl/m1/status", status("m1", boot, "online", now), retain=True)
    monitor = Monitor(Broker("127.0.0.1", mosquitto.port, False), Fleet())
    stop = threading.Event()
    thread = threading.Thread(target=monitor.run, args=(None, stop, lambda: None))
    thread.start()
    try:
        assert monitor.subscriber.subscribed.wait(5), monitor.status()
        for seq in (1, 2, 2, 4):  # seq 2 twice (a redelivery), seq 3 lost
            publish(pub, "edgerl/m1/telemetry", sample("m1", boot, seq, now + seq, 0.5, 1.0, 0))
        publish(pub, "edgerl/m1/telemetry", event("m1", boot, 5, now + 5, "rollback"))
        publish(pub, "edgerl/m1/telemetry", b"garbage")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and monitor.fleet.messages < 7:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
        pub.disconnect()
        pub.loop_stop()
    m1 = monitor.fleet.summary(time.time())["devices"]["m1"]
    assert (m1["messages"], m1["duplicates"], m1["seq_gaps"], m1["bad_messages"]) == (6, 1, 1, 1), m1
    assert m1["presence"] == "online" and m1["state"] == "online" and m1["bundle_version"] == "3"
    assert "gaps 1" in m1["alarms"] and "rollback" in m1["alarms"]


def test_persistent_session_delivers_what_came_while_away(mosquitto, tmp_path, capsys) -> None:
    url, record = mosquitto.url, tmp_path / "live.jsonl"
    base = ["monitor", url, "--client-id", "ops-monitor", "--json", "--record", str(record)]
    assert main([*base, "--duration", "0.6"]) == 0  # subscribes: the broker now keeps a session for it
    first = json.loads(capsys.readouterr().out)
    assert first["devices"] == {}
    pub, boot = publisher(mosquitto.port), "d" * 32
    for seq in range(1, 6):  # published while the monitor is away
        publish(pub, "edgerl/away/telemetry", sample("away", boot, seq, T0 + seq, 0.1 * seq, seq, 0))
    publish(pub, "edgerl/away/telemetry", event("away", boot, 6, T0 + 6, "candidate_promoted"))
    pub.disconnect()
    pub.loop_stop()
    assert main([*base, "--duration", "1.0"]) == 0
    out, err = capsys.readouterr()
    away = json.loads(out)["devices"]["away"]
    assert (away["messages"], away["seq_gaps"], away["duplicates"], away["promotions"]) == (6, 0, 0, 1), away
    assert "session resumed" in err
    replayed, how = load(record)
    assert how.lines == 6 and replayed.devices["away"].latest["success_rate"] == pytest.approx(0.5)


def test_unreachable_broker_is_a_status_line_not_a_crash(capsys) -> None:
    assert main(["monitor", f"mqtt://127.0.0.1:{free_port()}", "--duration", "0.5", "--once"]) == 0
    out, err = capsys.readouterr()
    assert "broker unreachable (retrying)" in err and "0 devices" in out


if __name__ == "__main__":
    STORED.parent.mkdir(parents=True, exist_ok=True)
    record_session(STORED.with_suffix(".tmp"))
    STORED.with_suffix(".tmp").replace(STORED)
    print(f"wrote {STORED}")
