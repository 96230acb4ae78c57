"""Telemetry under faults, every part real: `edge-rl run` and `edge-rl device` processes on a socat pty pair,
a real Mosquitto (killed, restarted, black-holed through a proxy, absent), a persistent-session subscriber.

S7 broker SIGKILLed and restarted during a run; S8 a half-open (black-holed) connection; S9 the
monitor away for a while; S10 presence (will, retained status, a new boot id after SIGKILL);
the broker absent from the start; commands from the operator. Each test says what it injects
and what must hold; every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from edge_rl.telemetry import schema
from tests.chaos_proxy import BLACKHOLE, PASS, REFUSE, ChaosProxy
from tests.daemon_rig import antijam_policy, write_bundle
from tests.ptys import SocatPair
from tests.telemetry_rig import DEVICE, MONITOR, Watcher, boot_of, run_cmd, start, write_config

PERIOD_MS = 10  # the device's control period: 100 steps/s
DEADLINE = {"deadline_ms": 20}  # the daemon's default: a step whose action takes longer gets the safe action


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(antijam_policy(0), tmp_path_factory.mktemp("telemetry") / "bundle", 3)


@pytest.fixture
def pty(tmp_path: Path):
    pair = SocatPair(tmp_path)
    yield pair
    pair.close()


def device(pty: SocatPair, steps: int = 0):
    return start([*DEVICE, "--link", f"serial://{pty.b}", "--period-ms", str(PERIOD_MS), "--steps", str(steps)])


def stop(proc) -> tuple[str, str]:
    """SIGTERM and the output; a process already stopped (and read) gives nothing more."""
    if proc.returncode is not None:
        return "", ""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def stop_cleanly(run, watcher: Watcher, what: str = "the stopped event") -> str:
    """SIGTERM the daemon, check it exited 0, wait until its `stopped` event reached `watcher`; its stdout."""
    out, err = stop(run)
    assert run.returncode == 0, err[-2000:]
    watcher.wait(lambda: watcher.events("stopped"), 30, what)
    return out


def summary(out: str) -> dict:
    return json.loads(out[out.index("{") :])


def samples(watcher: Watcher, boot: str) -> list[dict]:
    return sorted(watcher.docs("sample", boot), key=lambda d: d["seq"])


def outbox_rows(state: Path) -> int:
    with sqlite3.connect(state / "telemetry.sqlite") as db:
        return db.execute("SELECT count(*) FROM outbox").fetchone()[0]


def test_s7_broker_killed_and_restarted_loses_no_telemetry_and_never_touches_the_loop(
    bundle: Path, pty: SocatPair, mosquitto, tmp_path: Path
) -> None:
    """Five SIGKILLs of Mosquitto, 1-2 s down each, while the daemon runs at 100 steps/s with 10 samples/s.

    After the drain every seq of the boot reached the subscriber and `edge-rl monitor` (both
    reconnecting through the kills; duplicates allowed), one daemon process (one boot) ran
    throughout with flat memory and file descriptors, no step missed the 20 ms deadline or fell
    back, and the outbox is empty.
    """
    watcher = Watcher(mosquitto.port).start()
    monitor = start([*MONITOR, mosquitto.url, "--client-id", "s7-monitor", "--json"])
    config = write_config(
        tmp_path / "d.toml", mosquitto.url, DEADLINE, interval_s=0.1, keepalive_s=2, reconnect_max_s=1.0
    )
    state = tmp_path / "state"
    dev = device(pty)
    run = start(run_cmd(bundle, f"serial://{pty.a}", state, config, "--adapt", "head", "--json"))
    try:
        boot = boot_of(watcher)
        watcher.wait(lambda: len(samples(watcher, boot)) >= 10, 20, "ten samples")
        fds = len(os.listdir(f"/proc/{run.pid}/fd"))
        for down in (1.0, 2.0, 1.5, 1.0, 2.0):
            mosquitto.kill()
            time.sleep(down)
            mosquitto.start()
            time.sleep(2.5)  # > the largest reconnect delay (1 s x 1.5 jitter): each restart gets its reconnect
            assert run.poll() is None
        fds_after = len(os.listdir(f"/proc/{run.pid}/fd"))
        out = stop_cleanly(run, watcher, "the stopped event after the drain")
        time.sleep(1.0)  # the monitor's copy, and duplicates of the last in-flight messages, if any
        monitor_out, _ = stop(monitor)
    finally:
        stop(run)
        stop(dev)
        stop(monitor)
        watcher.stop()
    seqs = watcher.seqs(boot)
    last = max(seqs)
    assert seqs == set(range(1, last + 1)), f"missing seqs {sorted(set(range(1, last + 1)) - seqs)[:20]}"
    assert watcher.events("stopped")[-1]["seq"] >= last - 1  # the stop's sample and event are the last two
    seen = summary(monitor_out)["devices"]["edge-rl-host"]
    assert seen["boot"] == boot and seen["seq_gaps"] == 0 and seen["missing"] == [], seen
    assert seen["messages"] >= last  # every one, duplicates counted apart
    s = summary(out)
    assert s["fallbacks"] == {} and s["safe_actions"] == 0, s  # no deadline miss, no fallback of any kind
    acted = [d for d in samples(watcher, boot) if d["act_p99_us"] is not None]  # None: no step in the interval
    assert len(acted) >= 10 and all(d["act_p99_us"] < 20_000 for d in acted)
    assert all(d["deadline_misses"] == 0 for d in samples(watcher, boot))
    assert {d["boot"] for d in watcher.docs()} == {boot}  # one process throughout
    assert fds_after <= fds + 2, (fds, fds_after)
    rss = [d["rss_mb"] for d in samples(watcher, boot)]
    assert max(rss[len(rss) // 4 :]) <= 1.1 * rss[len(rss) // 4], rss  # after warm-up: flat within 10 %
    ups = watcher.events("telemetry_up")
    assert len(ups) >= 6, [e["data"] for e in ups]  # the first connect and one per broker restart
    assert outbox_rows(state) == 0
    periods = [d["period_p99_us"] for d in samples(watcher, boot) if d["period_p99_us"] is not None]
    assert sorted(periods)[len(periods) // 2] <= 1.2 * PERIOD_MS * 1000, periods  # the typical interval's p99
    common = set(schema.COMMON_FIELDS)  # and every message has exactly the documented fields
    assert all(set(d) == common | set(schema.SAMPLE_FIELDS) for d in samples(watcher, boot))
    assert all(set(d) == common | set(schema.EVENT_FIELDS) for d in watcher.events())
    assert all(set(d) == common - {"seq"} | set(schema.STATUS_FIELDS) for _, d, _ in watcher.statuses())


def test_s8_a_black_holed_connection_is_noticed_within_a_keepalive_and_recovered(
    bundle: Path, pty: SocatPair, mosquitto, tmp_path: Path
) -> None:
    """A proxy between daemon and broker drops everything (no RST) for 3 s, five times.

    Each time the client gives the connection up within 1.5 keepalives (2 s here: the oldest
    PUBACK missing for a keepalive), reconnects once the path heals, and every seq and event arrives.
    """
    keepalive = 2
    proxy = ChaosProxy(mosquitto.port)
    watcher = Watcher(mosquitto.port).start()
    config = write_config(
        tmp_path / "d.toml",
        proxy.url,
        DEADLINE,
        interval_s=0.1,
        keepalive_s=keepalive,
        reconnect_min_s=0.2,
        reconnect_max_s=0.5,
        outbox_bytes=1 << 20,
    )
    state = tmp_path / "state"
    dev = device(pty)
    run = start(run_cmd(bundle, f"serial://{pty.a}", state, config, "--adapt", "head", "--json"))
    holes = []
    try:
        boot = boot_of(watcher)
        watcher.wait(lambda: len(samples(watcher, boot)) >= 5, 20, "five samples")
        for _ in range(5):
            ups = len(watcher.events("telemetry_up"))
            proxy.mode = BLACKHOLE
            holes.append(time.monotonic())
            time.sleep(3.0)
            proxy.mode = PASS
            watcher.wait(lambda n=ups: len(watcher.events("telemetry_up")) > n, 15, "a reconnect after the hole")
        out = stop_cleanly(run, watcher, "the stopped event")
    finally:
        stop(run)
        stop(dev)
        watcher.stop()
        proxy.close()
    downs = [e for e in watcher.events("telemetry_down")]
    assert len(downs) >= 5, [e["data"] for e in downs]
    for hole in holes:
        noticed = min(e["mono"] - hole for e in downs if e["mono"] >= hole)
        assert noticed <= 1.5 * keepalive, f"noticed {noticed:.2f} s after the hole began"
    seqs = watcher.seqs(boot)
    assert seqs == set(range(1, max(seqs) + 1))
    backlog = [d["mqtt"]["outbox_rows"] for d in samples(watcher, boot)]
    assert max(backlog) >= 10  # the holes did hold messages back (written while the path was dark) ...
    assert all(d["mqtt"]["queue_dropped"] == 0 and d["mqtt"]["dropped_samples"] == 0 for d in samples(watcher, boot))
    assert summary(out)["fallbacks"] == {}  # ... and the loop never noticed: no deadline miss


def test_s9_events_wait_for_an_absent_monitor_and_arrive_in_order(
    bundle: Path, pty: SocatPair, mosquitto, tmp_path: Path
) -> None:
    """The monitor leaves for 12 s while commands make events; on its return (same session) it gets them all, in order.

    The broker holds its queue, so the daemon's outbox stays near empty and its memory flat meanwhile.
    """
    watcher = Watcher(mosquitto.port, client_id="absent-monitor").start()
    config = write_config(tmp_path / "d.toml", mosquitto.url, interval_s=0.1, keepalive_s=2)
    state = tmp_path / "state"
    dev = device(pty)
    run = start(run_cmd(bundle, f"serial://{pty.a}", state, config, "--adapt", "head", "--device-id", "radio-9"))
    operator = Watcher(mosquitto.port, client_id="operator", topic="nothing/#").start()
    try:
        boot = boot_of(watcher)
        watcher.wait(lambda: len(samples(watcher, boot)) >= 5, 20, "five samples")
        watcher.stop()
        time.sleep(0.5)
        for i in range(12):  # one event per second while the monitor is away
            cmd = {"cmd": "set_epsilon", "value": round(0.01 * (i + 1), 2), "id": f"c{i}"}
            operator.client.publish("edgerl/radio-9/cmd", json.dumps(cmd), qos=1)
            time.sleep(1.0)
        away_rows = outbox_rows(state)
        returned = Watcher(mosquitto.port, client_id="absent-monitor").start()
        returned.wait(lambda: len(returned.events("command")) >= 12, 30, "the 12 command answers")
        answered = returned.events("command")
        stop_cleanly(run, returned, "the stopped event")
    finally:
        stop(run)
        stop(dev)
        operator.stop()
    returned.stop()
    ids = [e["data"]["id"] for e in answered[:12]]
    assert ids == [f"c{i}" for i in range(12)], ids
    assert all(e["data"]["ok"] for e in answered[:12])
    seen = [d["seq"] for d in returned.docs(boot=boot) if "seq" in d]
    assert seen == sorted(seen), "delivered out of order"
    seqs = set(seen) | watcher.seqs(boot)
    assert seqs == set(range(1, max(seqs) + 1))
    assert away_rows <= 64, away_rows  # the broker, not the daemon, held the absent monitor's messages
    rss = [d["rss_mb"] for d in samples(returned, boot)]
    assert max(rss) - min(rss) < 20, rss


def test_s10_presence_will_and_a_new_boot_after_sigkill(
    bundle: Path, pty: SocatPair, mosquitto, tmp_path: Path
) -> None:
    """SIGKILL the daemon: the broker publishes its retained `offline` will within 1.5 keepalives (plus a
    check period); a restart says `online` again with a new boot id, and a late subscriber sees only that."""
    keepalive = 2
    watcher = Watcher(mosquitto.port).start()
    config = write_config(tmp_path / "d.toml", mosquitto.url, keepalive_s=keepalive)
    state = tmp_path / "state"
    dev = device(pty)
    cmd = run_cmd(bundle, f"serial://{pty.a}", state, config, "--device-id", "drone-2")
    run = start(cmd)
    try:
        first = boot_of(watcher)
        watcher.wait(lambda: samples(watcher, first), 20, "a sample")
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=10)
        killed = time.monotonic()
        will = watcher.wait(
            lambda: [(d, t) for _, d, t in watcher.statuses() if d["state"] == "offline" and d["boot"] == first],
            10,
            "the offline will",
        )
        assert will[0][1] - killed <= 1.5 * keepalive + 1.0
        run = start(cmd)
        second = watcher.wait(
            lambda: next((d for _, d, _ in watcher.statuses() if d["state"] == "online" and d["boot"] != first), None),
            30,
            "online again",
        )
        assert second["bundle_version"] == 3 and second["adapt"] == "off" and second["device"] == "drone-2"
        late = Watcher(mosquitto.port, client_id="late").start()
        retained = late.wait(lambda: [(r, d) for r, d, _ in late.statuses()], 10, "the retained status")
        late.stop()
        assert retained[0][0] and retained[0][1]["state"] == "online" and retained[0][1]["boot"] == second["boot"]
        stop(run)
        watcher.wait(
            lambda: [d for _, d, _ in watcher.statuses() if d["state"] == "offline" and d["boot"] == second["boot"]],
            10,
            "offline from the clean stop",
        )
    finally:
        stop(run)
        stop(dev)
        watcher.stop()


def test_the_broker_absent_from_the_start_then_everything_in_order_within_the_outbox_bound(
    bundle: Path, pty: SocatPair, mosquitto_factory, tmp_path: Path
) -> None:
    """No broker for 6 s at 20 samples/s (~1.2 KB each) into a 64 KiB outbox: samples past the bound are dropped
    oldest first and counted, no event is lost, the loop never notices; then the broker starts and all goes out."""
    broker = mosquitto_factory()  # not started yet
    proxy = ChaosProxy(broker.port, REFUSE)  # the daemon's way to the broker: closed until the watcher listens
    config = write_config(
        tmp_path / "d.toml",
        proxy.url,
        DEADLINE,
        interval_s=0.05,
        outbox_bytes=65536,
        reconnect_min_s=0.2,
        reconnect_max_s=0.5,
    )
    state = tmp_path / "state"
    dev = device(pty)
    run = start(run_cmd(bundle, f"serial://{pty.a}", state, config, "--adapt", "head", "--json"))
    try:
        time.sleep(6.0)
        assert run.poll() is None
        on_disk = sum(os.path.getsize(p) for p in state.glob("telemetry.sqlite*"))
        assert on_disk < 1 << 20, on_disk  # WAL included
        broker.start()
        watcher = Watcher(broker.port).start()
        watcher.wait(lambda: watcher.client.is_connected(), 10, "the watcher")
        time.sleep(0.5)  # its SUBSCRIBE is through
        proxy.mode = PASS
        boot = boot_of(watcher)
        up = watcher.wait(lambda: watcher.events("telemetry_up"), 30, "the connection")[0]["seq"]
        watcher.wait(lambda: len([d for d in samples(watcher, boot) if d["seq"] > up]) >= 10, 30, "the drain")
        out = stop_cleanly(run, watcher, "the stopped event")
    finally:
        stop(run)
        stop(dev)
        proxy.close()
    watcher.stop()
    events = sorted(watcher.events(), key=lambda d: d["seq"])
    numbers = [e["data"]["event_seq"] for e in events]
    assert numbers == list(range(1, len(numbers) + 1)), "an event went missing"  # events.jsonl numbering, no gap
    assert [e["event"] for e in events][:2] == ["verified", "checkpoint_recovery"]
    last = samples(watcher, boot)[-1]
    assert last["mqtt"]["dropped_samples"] > 0  # the bound was reached: old samples went, counted
    seqs = watcher.seqs(boot)
    missing = set(range(1, max(seqs) + 1)) - seqs
    assert len(missing) == last["mqtt"]["dropped_samples"], "every gap is a counted dropped sample"
    assert summary(out)["fallbacks"] == {}


def test_operator_commands_are_validated_applied_and_answered(
    bundle: Path, pty: SocatPair, mosquitto, tmp_path: Path
) -> None:
    """A retained command is refused; pause stops learning and exploring, resume restarts them; set_epsilon
    and reload take effect; a rollback's answer matches what happened; a command delivered twice runs
    once; bad, oversized and out-of-range commands are refused with a reason. Every command is answered."""
    watcher = Watcher(mosquitto.port).start()
    config = write_config(tmp_path / "d.toml", mosquitto.url, interval_s=0.2)
    state = tmp_path / "state"
    pub = watcher.client.publish
    pub("edgerl/bot-1/cmd", b'{"cmd": "pause"}', qos=1, retain=True).wait_for_publish(5)  # waiting for the daemon
    dev = device(pty)
    run = start(run_cmd(bundle, f"serial://{pty.a}", state, config, "--adapt", "head", "--device-id", "bot-1"))

    def send(payload: object, retain: bool = False) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        pub("edgerl/bot-1/cmd", body, qos=1, retain=retain).wait_for_publish(5)

    def answers(n: int) -> list[dict]:
        watcher.wait(lambda: len(watcher.events("command")) >= n, 20, f"{n} answers")
        return watcher.events("command")

    try:
        boot = boot_of(watcher)
        assert "retained" in answers(1)[0]["data"]["reason"]  # never run: it would run on every subscribe
        send(b"", retain=True)  # clears the retained command (an empty message is not answered)
        watcher.wait(lambda: [d for d in samples(watcher, boot) if d["updates"] > 0], 20, "learning")
        send({"cmd": "pause", "id": "p"})
        answers(2)
        time.sleep(0.5)
        paused = samples(watcher, boot)[-1]
        time.sleep(1.5)
        still = samples(watcher, boot)[-1]
        assert paused["paused"] and still["paused"] and still["epsilon"] == 0.0
        assert still["updates"] == paused["updates"] and still["steps"] > paused["steps"] + 50
        send({"cmd": "resume", "id": "u"})
        send({"cmd": "set_epsilon", "value": 0.2, "id": "e"})
        send({"cmd": "set_epsilon", "value": 0.2, "id": "e"})  # the same command again: not run twice
        answers(5)
        watcher.wait(
            lambda: (d := samples(watcher, boot)[-1])["epsilon"] == 0.2 or d["gate_phase"] in ("cooldown", "fallback"),
            10,
            "epsilon 0.2 in force",
        )
        send({"cmd": "rollback", "to": "bundle", "id": "r"})
        send({"cmd": "reload", "id": "rl"})
        send({"cmd": "self_destruct"})
        send(b"x" * 2000)
        send({"cmd": "set_epsilon", "value": 3})
        got = answers(10)
        watcher.wait(lambda: watcher.events("config_reloaded"), 10, "the reload")
    finally:
        stop(run)
        stop(dev)
        watcher.stop()
    by_id: dict[str, list[dict]] = {}
    for e in got:
        by_id.setdefault(e["data"].get("id", ""), []).append(e["data"])
    assert by_id["p"][0]["ok"] and by_id["u"][0]["ok"] and by_id["rl"][0]["ok"]
    assert by_id["e"][0]["ok"] and by_id["e"][0]["value"] == 0.2
    assert not by_id["e"][1]["ok"] and "already run" in by_id["e"][1]["reason"]
    rollbacks = [e["data"] for e in watcher.events("rollback") if e["data"].get("by") == "operator"]
    answer = by_id["r"][0]
    assert answer["ok"] == bool(rollbacks)  # ok exactly when it rolled back (both paths: tests/test_gate.py)
    assert answer["ok"] or "already acting from the bundle policy" in answer["reason"]
    refusals = [e["data"]["reason"] for e in got if not e["data"]["ok"]]
    assert any("self_destruct" in r for r in refusals)
    assert any("2000 bytes" in r for r in refusals)
    assert any("outside [0, 1]" in r for r in refusals)
