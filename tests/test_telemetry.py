"""Telemetry parts on their own: command validation, the outbox (bound, order, restarts, a damaged file),
settings (refusals with one line), and docs/telemetry.md documenting exactly the fields the schema has."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_rl.daemon import config as config_file
from edge_rl.daemon.config import TelemetryConfig
from edge_rl.errors import BadInput
from edge_rl.telemetry import schema
from edge_rl.telemetry.outbox import Outbox
from edge_rl.telemetry.settings import from_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "telemetry.md"


# --- commands ----------------------------------------------------------------------------------------


def test_valid_commands_parse_to_what_they_say() -> None:
    assert schema.parse_command(b'{"cmd": "pause"}') == schema.Command("pause")
    assert schema.parse_command(b'{"cmd": "set_epsilon", "value": 0.25, "id": "x1"}') == schema.Command(
        "set_epsilon", "x1", 0.25
    )
    assert schema.parse_command(b'{"cmd": "rollback", "to": "bundle"}').to == "bundle"
    assert schema.parse_command(b'{"cmd": "set_epsilon", "value": 1}').value == 1.0


@pytest.mark.parametrize(
    "payload, words",
    [
        (b"x" * 1025, "1025 bytes"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"cmd": "format_disk"}', "format_disk"),
        (b'{"cmd": "pause", "shell": "rm -rf /"}', "unknown key 'shell'"),
        (b'{"cmd": "set_epsilon"}', "needs a number"),
        (b'{"cmd": "set_epsilon", "value": true}', "needs a number"),
        (b'{"cmd": "set_epsilon", "value": NaN}', "needs a number"),
        (b'{"cmd": "set_epsilon", "value": -0.1}', "outside [0, 1]"),
        (b'{"cmd": "pause", "value": 1}', "takes no value"),
        (b'{"cmd": "rollback", "to": "yesterday"}', "rollback to 'yesterday'"),
        (b'{"cmd": "pause", "to": "bundle"}', "takes no `to`"),
        (b'{"cmd": "pause", "id": 7}', "id must be at most 64"),
        (b'{"cmd": "pause", "id": "a\\nforged log line"}', "id must be at most 64"),
        (b"[" * 1000, "nested too deeply"),
    ],
)
def test_bad_commands_are_refused_with_one_line(payload: bytes, words: str) -> None:
    with pytest.raises(BadInput) as e:
        schema.parse_command(payload)
    assert words in str(e.value) and "\n" not in str(e.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200) | st.text(max_size=300).map(str.encode))
def test_parsers_raise_only_bad_input_whatever_arrives(payload: bytes) -> None:
    for parse in (schema.parse_command, schema.parse_message):
        try:
            parse(payload)
        except BadInput:
            pass


def test_messages_are_checked_before_a_reader_trusts_them() -> None:
    good = {"v": 1, "kind": "sample", "device": "radio-1", "boot": "a" * 32, "seq": 4, "wall": 0, "mono": 0}
    assert schema.parse_message(json.dumps(good).encode())["seq"] == 4
    for change in ({"v": 2}, {"kind": "x"}, {"device": "a/b"}, {"boot": "nothex"}, {"seq": 0}, {"seq": True}):
        with pytest.raises(BadInput):
            schema.parse_message(json.dumps({**good, **change}).encode())
    with pytest.raises(BadInput):
        schema.parse_message(b"{" * (schema.MAX_MESSAGE_BYTES + 1))


def test_topics_are_per_device_and_refuse_wildcards() -> None:
    t = schema.topics("radio-1")
    assert (t.telemetry, t.status, t.cmd) == ("edgerl/radio-1/telemetry", "edgerl/radio-1/status", "edgerl/radio-1/cmd")
    for bad in ("a/b", "+", "#", "", "$SYS", "x" * 65):
        with pytest.raises(BadInput):
            schema.topics(bad)


# --- the outbox --------------------------------------------------------------------------------------


def rows(outbox: Outbox) -> list[bytes]:
    return [body for _, body in outbox.pending(0, 10_000)]


def test_the_outbox_keeps_order_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    box = Outbox(path, 1 << 20)
    box.add([(b"e1", True), (b"s1", False), (b"s2", False)])
    first = box.pending(0, 2)
    box.remove([first[0][0]])
    box.close()
    again = Outbox(path, 1 << 20)
    assert rows(again) == [b"s1", b"s2"] and again.rows == 2 and again.bytes == 4
    again.add([(b"e2", True)])
    assert rows(again) == [b"s1", b"s2", b"e2"]
    assert again.pending(again.first_id(), 10) == again.pending(0, 10)


def test_the_bound_drops_the_oldest_samples_never_events_nor_what_is_in_flight(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "t.sqlite", 64 << 10)
    sample, event = b"s" * 1000, b"e" * 1000
    box.add([(sample, False)] * 10)
    box.in_flight_upto = box.pending(0, 3)[-1][0]  # the first three are with the MQTT client
    for _ in range(40):
        box.add([(event, True), (sample, False)])
    kept = box.pending(0, 10_000)
    assert sum(body == event for _, body in kept) == 40  # every event
    assert box.dropped_samples > 0
    assert [row for row, _ in kept[:3]] == [1, 2, 3]  # in flight: kept (and not counted against the bound)
    assert kept[3][0] > 10 and kept[3][1] == event  # the other old samples went first
    waiting = sum(len(body) for row, body in kept if row > box.in_flight_upto)
    assert waiting <= 64 << 10 < box.bytes
    for _ in range(100):  # events alone past the bound: kept all the same
        box.add([(event, True)])
    assert box.over_bound and sum(body == event for body in rows(box)) == 140


def test_past_the_ceiling_even_the_oldest_events_go_counted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "t.sqlite", 64 << 10)
    event = b"e" * 1000
    for _ in range(300):
        box.add([(event, True)])
    assert box.bytes <= 4 * (64 << 10) and box.dropped_events > 0 and box.dropped_samples == 0
    assert box.rows + box.dropped_events == 300
    assert box.pending(0, 1)[0][0] == box.dropped_events + 1  # the oldest went


def test_a_disk_that_refuses_the_outbox_moves_it_into_memory(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "t.sqlite"
    box = Outbox(missing, 1 << 20)
    assert not box.on_disk and "in memory" in box.notes[0]
    box.add([(b"e", True)])
    assert rows(box) == [b"e"]
    locked = tmp_path / "ro"
    locked.mkdir()
    box = Outbox(locked / "t.sqlite", 1 << 20)
    box.add([(b"first", True)])
    (locked / "t.sqlite").chmod(0o444)
    locked.chmod(0o555)
    try:
        if os.access(locked / "t.sqlite", os.W_OK):  # root ignores permissions: break the file instead
            box.db.close()
            box.db = sqlite3.connect(":memory:")  # a connection without the table: the next write fails
            box.path = locked / "t.sqlite"
        box.add([(b"second", True)])
    finally:
        locked.chmod(0o755)
    assert not box.on_disk and any("in memory" in n for n in box.notes)
    assert rows(box)[-1] == b"second"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_outbox_is_set_aside_and_a_new_one_started(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "t.sqlite"
    box = Outbox(path, 1 << 20)
    box.add([(b"x" * 5000, True)] * 20)
    box.close()
    data = path.read_bytes()
    path.write_bytes(b"this is no database" * 200 if damage == "garbage" else data[: len(data) // 3])
    fresh = Outbox(path, 1 << 20)
    assert fresh.notes and "set aside" in fresh.notes[0] and fresh.rows == 0
    assert path.with_name("t.sqlite.bad").exists()
    fresh.add([(b"y", True)])
    assert rows(fresh) == [b"y"]
    fresh.close()
    path.write_bytes(b"damaged again" * 300)
    assert "t.sqlite.bad.1" in Outbox(path, 1 << 20).notes[0]  # the first one set aside is kept


# --- settings ---------------------------------------------------------------------------------------


def test_settings_take_the_device_id_as_user_name_and_the_password_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("EDGERL_PW", "s3cret")
    s = from_config(TelemetryConfig(url="mqtt://broker.local", password_env="EDGERL_PW"), "radio-1")
    assert s is not None
    assert (s.host, s.port, s.tls, s.username, s.password) == ("broker.local", 1883, False, "radio-1", "s3cret")
    assert from_config(TelemetryConfig(url="mqtts://b"), "x").port == 8883  # type: ignore[union-attr]
    assert from_config(TelemetryConfig(), "x") is None


@pytest.mark.parametrize(
    "given, words",
    [
        ({"url": "http://b"}, "mqtt://host:port"),
        ({"url": "mqtt://u:p@b"}, "only host and port"),
        ({"url": "mqtt://b/radio-1"}, "only host and port"),
        ({"url": "mqtt://b:99999"}, "bad port"),
        ({"url": "mqtt://b", "password_env": "EDGERL_NOT_SET_ANYWHERE"}, "is not set"),
        ({"url": "mqtt://b", "ca": "/etc/hostname"}, "not mqtts://"),
        ({"url": "mqtts://b", "ca": "/nonexistent/ca.pem"}, "cannot read"),
        ({"url": "mqtts://b", "certfile": "/etc/hostname"}, "go together"),
        ({"url": "mqtt://b", "device": "a/b"}, "device id"),
    ],
)
def test_bad_settings_are_refused_with_one_line(given: dict, words: str) -> None:
    with pytest.raises(BadInput) as e:
        from_config(TelemetryConfig(**given), "radio-1")
    assert words in str(e.value)


def test_tls_insecure_is_refused_in_the_config() -> None:
    with pytest.raises(BadInput, match="tls_insecure: refused"):
        config_file.parse(b'[telemetry]\nurl = "mqtts://b"\ntls_insecure = true\n')


# --- the documentation --------------------------------------------------------------------------------


def test_docs_telemetry_documents_exactly_the_schema() -> None:
    """Every field, status field and command has a row `| \\`name\\` | ... |`, and no row names anything else."""
    rows = set(re.findall(r"^\| `([a-z_0-9]+)` \|", DOC.read_text(), re.M))
    names = {*schema.COMMON_FIELDS, *schema.SAMPLE_FIELDS, *schema.EVENT_FIELDS, *schema.STATUS_FIELDS}
    names |= set(schema.COMMANDS)
    assert rows == names, f"undocumented: {sorted(names - rows)}; documented but unknown: {sorted(rows - names)}"
