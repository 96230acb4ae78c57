"""The C device library (firmware_bridge/firmware) against the Python protocol it mirrors.

Everything C is built once per session with AddressSanitizer and UBSan (any report fails the test
that ran it). The library is driven over pty pairs: a corrupted 10,000-frame stream, the AntiJam
device simulator with a Python host in a separate process (S5 deadman, S6 version mismatch). Every
wait has a deadline; randomised tests print their seed.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import tty
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.protocol import (
    HEADER,
    MAJOR,
    MAX_ENCODED,
    MAX_FRAME,
    MAX_PAYLOAD,
    MINOR,
    SCHEMA_HASH,
    Action,
    Capability,
    CobsError,
    Config,
    Error,
    ErrorCode,
    ForeignHello,
    FrameDecoder,
    Heartbeat,
    Hello,
    Message,
    MessageType,
    Obs,
    ObsDtype,
    PeerState,
    Reset,
    cobs_decode,
    cobs_encode,
    encode,
)
from firmware_bridge.protocol.codes import SCHEMA_TEXT
from tests.c_device import (
    CFLAGS,
    FIRMWARE,
    POLICY,
    ROOT,
    SANITIZE,
    assert_clean,
    compile_c,
    exit_counters,
    read_log,
    slots,
)

CONSTANT_LINES = 3  # `driver vectors` starts with the constants, the capability bits and the error codes


def run_driver(build: Path, *args: str, stdin: str = "") -> list[str]:
    result = subprocess.run([build / "driver", *args], input=stdin, capture_output=True, text=True, timeout=60)
    assert_clean(result.returncode, result.stderr)
    return result.stdout.splitlines()


def f32_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def bits_f32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


# --- constants, codec, vectors ---------------------------------------------------------------------


def test_constants_and_schema_hash_equal_python(build: Path) -> None:
    constants, capabilities, errors = run_driver(build, "vectors")[:CONSTANT_LINES]
    assert zlib.crc32(SCHEMA_TEXT.encode()) == SCHEMA_HASH
    assert constants == (
        f"constants major={MAJOR} minor={MINOR} schema={SCHEMA_HASH:08x} max_payload={MAX_PAYLOAD} "
        f"max_frame={MAX_FRAME} max_encoded={MAX_ENCODED} wire_max={MAX_ENCODED + 1}"
    )
    assert capabilities == "capabilities " + " ".join(f"{c.name.lower()}={c.value}" for c in Capability if c)
    assert errors == "errors " + " ".join(f"{e.name.lower()}={e.value}" for e in ErrorCode)


def test_cobs_and_crc_equal_python(build: Path) -> None:
    seed = 1234
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    run = bytes(range(1, 256)) * 2
    inputs = [b"", b"\x00", b"\x00\x00", b"\x01", b"\x00" + run[:254], run[:254] + b"\x00" + run[:254]]
    inputs += [run[:n] for n in (253, 254, 255, 508, 509)] + [run[:254] + b"\x00", run[:254] + b"\x00\x00"]
    for _ in range(200):  # random lengths and zero densities
        data = rng.integers(0, 256, int(rng.integers(0, 1100)), dtype=np.uint8)
        data[rng.random(data.size) < rng.choice([0.0, 0.002, 0.05, 0.5])] = 0
        inputs.append(data.tobytes())
    encoded = [cobs_encode(data) for data in inputs]
    garbage = [rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes() for _ in range(300)]
    garbage += [b"\x00", b"\x05\x01", b"\x02\x00", b"\x03\x01", b"\xff" + b"\x01" * 253]
    to_decode = encoded + garbage

    def py_decode(data: bytes) -> str:
        try:
            return cobs_decode(data).hex()
        except CobsError:
            return "error"

    lines = [f"e {d.hex()}" for d in inputs] + [f"d {d.hex()}" for d in to_decode] + [f"c {d.hex()}" for d in inputs]
    out = run_driver(build, "codec", stdin="\n".join(lines) + "\n")
    expected = [e.hex() for e in encoded] + [py_decode(d) for d in to_decode]
    expected += [f"{zlib.crc32(d):08x}" for d in inputs]
    assert out == expected
    assert sum(line == "error" for line in out) > 100  # the garbage really exercised the error paths


def python_vectors() -> dict[str, Message]:
    """The messages tests/driver.c builds in C, field for field (`reject_*`: both sides refuse them)."""
    full_bits = [0x3F000000 | (i % 200 + 1) << 16 | (i % 250 + 1) << 8 | (i % 254 + 1) for i in range(252)]
    full = np.array(full_bits, dtype=np.uint32).view(np.float32)
    ties = np.array([0.25, 0.75, -0.25, -0.75, 1.25, -1.25, 1e6, -1e6, 16383.75, -16384.25, 0.0], np.float32)
    mismatch = "host 1.0 (schema f5542274) vs device 2.0 (schema f5542274)"
    return {
        "hello_device": Hello(
            "antijam-sim",
            (72,),
            8,
            0,
            heartbeat_ms=100,
            reply_requested=True,
            capabilities=Capability.DEADMAN | Capability.RESET,
            seq=0,
        ),
        "hello_host": Hello("host", heartbeat_ms=100, seq=7),
        "hello_3d": Hello(
            "",
            (3, 4, 5),
            65535,
            4,
            ObsDtype.INT16,
            250,
            Capability(0xFFFFFFFF),
            minor=3,
            schema_hash=0x12345678,
            seq=65535,
        ),
        "reject_hello_9_dims": Hello("x", (1,) * 9, seq=1),
        "reject_hello_long_id": Hello("0123456789abcdef0123456789abcdefX", (72,), seq=1),
        "obs_f32": Obs(
            np.arange(72, dtype=np.float32) * np.float32(0.125) - np.float32(3), 0.95, t_us=123456789, seq=1
        ),
        "obs_i16_ties": Obs(ties, -0.05, True, True, int16_scale=0.5, seq=2),
        "obs_i16": Obs(
            np.arange(300, dtype=np.float32) * np.float32(0.0137) - np.float32(2),
            t_us=2**32 - 1,
            int16_scale=0.01,
            seq=3,
        ),
        "obs_max": Obs(full[:251], bits_f32(0x3F7AE148), t_us=0x01020304, seq=4),
        "obs_empty": Obs(np.zeros(0, np.float32), seq=5),
        "reject_obs_too_big": Obs(full, seq=6),
        "action": Action(5, answers=2, valid_ms=100, seq=3),
        "action_fallback": Action(65535, answers=65535, valid_ms=65535, fallback=True, seq=3),
        "heartbeat_unsequenced": Heartbeat(PeerState.SAFE, 4_000_000_000, unsequenced=True, seq=4),
        "heartbeat": Heartbeat(PeerState.READY, 4_000_000_000, seq=4),
        "reset_seed": Reset(42, seq=5),
        "reset": Reset(None, seq=5),
        "error": Error(1, mismatch, seq=6),
        "error_truncated": Error(65535, "a" * 63 + "é" + "bc", seq=6),  # é straddles byte 64: cut before it
        "config": Config("period_ms", 12.5, seq=7),
        "reject_config_empty_key": Config("", 12.5, seq=7),
    }


def test_c_frames_equal_python_encode_byte_for_byte(build: Path) -> None:
    c_frames = dict(line.partition(" ")[::2] for line in run_driver(build, "vectors")[CONSTANT_LINES:])
    vectors = python_vectors()
    assert c_frames.keys() == vectors.keys()
    for name, msg in vectors.items():
        if name.startswith("reject_"):
            assert c_frames[name] == "", name
            with pytest.raises(ValueError):
                encode(msg)
            continue
        frame = bytes.fromhex(c_frames[name])
        assert frame == encode(msg), name
        decoder = FrameDecoder()
        (decoded,) = decoder.feed(frame)  # Python reads it back (floats as float32) and writes the same bytes
        assert type(decoded) is type(msg) and decoder.counters.rejected == 0
        assert encode(decoded) == frame, name
    assert {type(m) for m in vectors.values()} == {Hello, Obs, Action, Heartbeat, Reset, Error, Config}


# --- 10,000 frames with corruption over a pty --------------------------------------------------------


def random_text(rng: np.random.Generator, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(list(alphabet), int(rng.integers(low, high + 1))))


def random_message(rng: np.random.Generator, seq: int) -> Message:
    """Any message type with random fields (finite floats: NaN payloads need not survive a float round trip)."""
    kind = rng.choice(7, p=[0.03, 0.25, 0.30, 0.17, 0.05, 0.08, 0.12])

    def u16() -> int:
        return int(rng.integers(0, 65536))

    def u32() -> int:
        return int(rng.integers(0, 2**32))

    def f32() -> float:
        return float(np.float32(rng.standard_normal() * 10))

    if kind == 0:
        shape = tuple(int(d) for d in rng.integers(1, 100, int(rng.integers(0, 4))))
        return Hello(
            random_text(rng, "abcxyz-_0", 0, 32),
            shape,
            u16(),
            u16(),
            ObsDtype(int(rng.integers(2))),
            u16(),
            Capability(u32()),
            MAJOR,
            int(rng.integers(4)),
            u32(),
            bool(rng.integers(2)),
            seq,
        )
    if kind == 1:
        if rng.random() < 0.5:
            values = (rng.standard_normal(int(rng.integers(0, 252))) * 100).astype(np.float32)
            return Obs(values, f32(), bool(rng.integers(2)), bool(rng.integers(2)), u32(), seq=seq)
        values = (rng.standard_normal(int(rng.integers(0, 501))) * 100).astype(np.float32)
        scale = float(np.float32(rng.uniform(0.001, 1.0)))
        return Obs(values, f32(), bool(rng.integers(2)), bool(rng.integers(2)), u32(), scale, seq)
    if kind == 2:
        return Action(u16(), u16(), u16(), bool(rng.integers(2)), seq)
    if kind == 3:
        return Heartbeat(PeerState(int(rng.integers(4))), u32(), seq=seq)
    if kind == 4:
        return Reset(u32() if rng.random() < 0.5 else None, seq)
    if kind == 5:
        return Error(u16(), random_text(rng, "ab zé✓", 0, 70), seq)
    return Config(random_text(rng, "abk_", 1, 32), f32(), seq)


def raw_frame(major: int, kind: int, flags: int, seq: int, payload: bytes, length: int | None = None) -> bytes:
    """A frame with a correct CRC around any header and payload."""
    body = HEADER.pack(major, kind, flags, seq & 0xFFFF, len(payload) if length is None else length) + payload
    return cobs_encode(body + zlib.crc32(body).to_bytes(4, "little")) + b"\x00"


HELLO_HEAD = struct.Struct("<BBIIHHHBB")
# CRC-correct frames whose payload does not match its layout (the decoder counts them as malformed)
MALFORMED = [
    raw_frame(1, MessageType.ACTION, 0, 0, bytes(5)),
    raw_frame(1, MessageType.ACTION, 0, 0, bytes(6), length=7),
    raw_frame(1, MessageType.HEARTBEAT, 0, 0, struct.pack("<IB", 1, 7)),
    raw_frame(1, MessageType.RESET, 0, 0, struct.pack("<BI", 2, 1)),
    raw_frame(1, MessageType.OBS, 0, 0, struct.pack("<If", 0, 0) + bytes(5)),
    raw_frame(1, MessageType.OBS, 0x04, 0, struct.pack("<Iff", 0, 0, 0.0) + bytes(4)),
    raw_frame(1, MessageType.OBS, 0x04, 0, struct.pack("<Iff", 0, 0, float("nan")) + bytes(4)),
    raw_frame(1, MessageType.OBS, 0x04, 0, struct.pack("<Iff", 0, 0, 1.0) + bytes(3)),
    raw_frame(1, MessageType.ERROR, 0, 0, struct.pack("<HB", 1, 5) + b"abc"),
    raw_frame(1, MessageType.ERROR, 0, 0, struct.pack("<HB", 1, 65) + b"a" * 65),
    raw_frame(1, MessageType.CONFIG, 0, 0, struct.pack("<fB", 1.0, 0)),
    raw_frame(1, MessageType.CONFIG, 0, 0, struct.pack("<fB", 1.0, 33) + b"k" * 33),
    raw_frame(1, MessageType.HELLO, 0, 0, HELLO_HEAD.pack(1, 0, SCHEMA_HASH, 0, 0, 0, 100, 3, 0) + b"\x00"),
    raw_frame(1, MessageType.HELLO, 0, 0, HELLO_HEAD.pack(1, 0, SCHEMA_HASH, 0, 0, 0, 100, 0, 0)[:10]),
    raw_frame(1, MessageType.HELLO, 0, 0, HELLO_HEAD.pack(1, 0, SCHEMA_HASH, 0, 0, 0, 100, 0, 0) + b"\x05ab"),
    cobs_encode(bytes(5)) + b"\x00",  # shorter than header + CRC
]


def flip_bits(frame: bytes, rng: np.random.Generator) -> bytes:
    """1-3 distinct bits flipped anywhere but the delimiter."""
    body = bytearray(frame[:-1])
    for index in rng.choice(len(body) * 8, int(rng.integers(1, 4)), replace=False):
        body[index // 8] ^= 1 << (index % 8)
    return bytes(body) + b"\x00"


def build_stream(rng: np.random.Generator, events: int) -> tuple[bytes, list, Counter]:
    """A byte stream of intact, corrupted and hostile frames; the messages it must yield; what was injected."""
    out, expected, injected = bytearray(), [], Counter()
    seq = 65_000  # wraps past 65535 during the run

    def intact(frame: bytes) -> None:
        out.extend(frame)
        expected.extend(FrameDecoder().feed(frame))

    intact(encode(Hello("peer", seq=seq)))
    # the size limits exactly: a frame of MAX_ENCODED bytes is decoded, a run one byte longer is oversize
    largest = encode(Obs(python_vectors()["obs_max"].observation, bits_f32(0x3F7AE148), t_us=0x01020304, seq=seq + 1))
    assert len(largest) == MAX_ENCODED + 1
    intact(largest)
    out += b"\x01" * MAX_ENCODED + b"\x00" + b"\x01" * (MAX_ENCODED + 1) + b"\x00"
    injected["garbage"] += 1
    injected["oversize"] += 1
    last, seq = seq + 1, seq + 2  # `last`: the sequence number the receiver's tracker holds
    for _ in range(events):
        r = rng.random()
        if r < 0.62:  # a fresh message, sometimes corrupted in flight
            frame = encode(random_message(rng, seq & 0xFFFF))
            if rng.random() < 0.08:
                out += flip_bits(frame, rng)
                injected["flipped"] += 1
            else:
                intact(frame)
                last = seq & 0xFFFF
            seq += 1
        elif r < 0.68:
            out += rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes() + b"\x00"
            injected["garbage"] += 1
        elif r < 0.69:
            out += rng.integers(1, 256, int(rng.integers(MAX_ENCODED + 1, 3000)), dtype=np.uint8).tobytes() + b"\x00"
            injected["oversize"] += 1
        elif r < 0.73:
            out += encode(Heartbeat(seq=last))
            injected["duplicates"] += 1
        elif r < 0.77:
            out += encode(Heartbeat(seq=(last - int(rng.integers(1, 100))) & 0xFFFF))
            injected["reorders"] += 1
        elif r < 0.80:
            kind = int(rng.choice([0, *range(8, 256)]))
            out += raw_frame(int(rng.choice([1, 2])), kind, 0, 0, rng.bytes(int(rng.integers(0, 20))))
            injected["unknown_type"] += 1
        elif r < 0.83:
            major = int(rng.choice([0, 2, 3, 255]))
            if rng.random() < 0.5:  # another version's HELLO: its frozen prefix is understood
                intact(raw_frame(major, MessageType.HELLO, 0, 0, struct.pack("<BBI", major, 7, 0xDEADBEEF) + b"xy"))
            else:
                out += raw_frame(major, int(rng.integers(2, 8)), 0, 0, bytes(6))
                injected["foreign_version"] += 1
        elif r < 0.88:
            out += MALFORMED[int(rng.integers(len(MALFORMED)))]
            injected["malformed"] += 1
        else:
            intact(encode(Heartbeat(PeerState.READY, int(rng.integers(2**32)), unsequenced=True, seq=0)))
    intact(encode(Error(0xFFFF, "end", seq & 0xFFFF)))
    return bytes(out), expected, injected


def describe(msg: Message | ForeignHello) -> str:
    """The line tests/driver.c prints for a decoded message."""
    if isinstance(msg, ForeignHello):
        return f"FOREIGN major={msg.major} minor={msg.minor} schema={msg.schema_hash:08x}"
    if isinstance(msg, Hello):
        return (
            f"HELLO seq={msg.seq} major={msg.major} minor={msg.minor} schema={msg.schema_hash:08x} "
            f"caps={int(msg.capabilities)} n_actions={msg.n_actions} safe={msg.safe_action} hb={msg.heartbeat_ms} "
            f"dtype={int(msg.obs_dtype)} shape={','.join(map(str, msg.obs_shape))} id={msg.device_id.encode().hex()} "
            f"reply={int(msg.reply_requested)}"
        )
    if isinstance(msg, Obs):
        values = zlib.crc32(np.asarray(msg.observation, "<f4").tobytes())
        return (
            f"OBS seq={msg.seq} t_us={msg.t_us} reward={f32_bits(msg.reward):08x} "
            f"scale={f32_bits(msg.int16_scale):08x} term={int(msg.terminated)} trunc={int(msg.truncated)} "
            f"n={msg.observation.size} values={values:08x}"
        )
    if isinstance(msg, Action):
        return (
            f"ACTION seq={msg.seq} action={msg.action} answers={msg.answers} valid_ms={msg.valid_ms} "
            f"fallback={int(msg.fallback)}"
        )
    if isinstance(msg, Heartbeat):
        return f"HEARTBEAT seq={msg.seq} t_us={msg.t_us} state={int(msg.state)} unseq={int(msg.unsequenced)}"
    if isinstance(msg, Reset):
        return f"RESET seq={msg.seq} has_seed={int(msg.seed is not None)} seed={msg.seed or 0}"
    if isinstance(msg, Error):
        return f"ERROR seq={msg.seq} code={msg.code} text={msg.text.encode().hex()}"
    return f"CONFIG seq={msg.seq} value={f32_bits(msg.value):08x} key={msg.key.encode().hex()}"


def echo_frame(msg: Message | ForeignHello) -> bytes:
    """The frame the driver sends back for a decoded message (a foreign HELLO as a HELLO of its prefix)."""
    if isinstance(msg, ForeignHello):
        return encode(Hello("", heartbeat_ms=0, major=msg.major, minor=msg.minor, schema_hash=msg.schema_hash))
    return encode(msg)


def exchange_over_pty(command: list, data: bytes, until: bytes, timeout: float) -> tuple[bytes, int | None, str]:
    """Write `data` to a process on a raw pty while reading what it writes back, up to `until`."""
    master, slave = os.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=subprocess.PIPE, text=True)
    os.close(slave)
    os.set_blocking(master, False)
    received, sent = bytearray(), 0
    deadline = time.monotonic() + timeout
    try:
        while not received.endswith(until):
            assert time.monotonic() < deadline, f"timed out: {sent}/{len(data)} bytes sent, {len(received)} back"
            writers = [master] if sent < len(data) else []
            readable, writable, _ = select.select([master], writers, [], 0.2)
            if writable:
                try:
                    sent += os.write(master, data[sent : sent + 4096])
                except BlockingIOError:
                    pass
            if readable:
                received += os.read(master, 65536)
    finally:
        os.close(master)  # the driver sees EIO: end of input
        try:
            _, stderr = proc.communicate(timeout=20)
        finally:
            proc.kill()
    return bytes(received), proc.returncode, stderr


def test_decodes_10000_frames_with_corruption_over_pty(build: Path, tmp_path: Path) -> None:
    seed = 20_240_601
    print(f"seed={seed}")
    data, expected, injected = build_stream(np.random.default_rng(seed), 10_000)
    print(f"{len(data)} bytes, {len(expected)} intact messages, injected {dict(injected)}")
    reference = FrameDecoder()
    assert reference.feed(data) == expected  # the generator's own bookkeeping is right
    py = reference.counters.as_dict()
    described = tmp_path / "described.txt"
    echo = b"".join(echo_frame(m) for m in expected)

    received, returncode, stderr = exchange_over_pty([build / "driver", "stream", described], data, echo[-20:], 60)
    assert_clean(returncode, stderr)
    *lines, counters = described.read_text().splitlines()
    c = {k: int(v) for k, v in (item.split("=") for item in counters.split()[1:])}

    assert lines == [describe(m) for m in expected]  # every intact frame, nothing corrupted, same fields
    assert received == echo  # and re-encoded by C byte for byte as Python encodes it
    assert c == py  # every drop counted under the same reason as Python's decoder
    assert c["frames"] == len(expected)
    for reason in ("oversize", "duplicates", "reorders", "unknown_type", "foreign_version"):
        assert c[reason] == injected[reason], reason
    assert c["malformed"] >= injected["malformed"]
    assert c["crc_errors"] + c["malformed"] >= injected["flipped"] + injected["malformed"]
    assert c["seq_gaps"] > 0


# --- the AntiJam device simulator with a Python host (S5, S6) ---------------------------------------


class Rig:
    """The simulator on a pty slave and a host process on its master, both stopped cleanly on exit."""

    def __init__(self, build: Path, tmp_path: Path, sim_args: list[str], host_args: list[str]) -> None:
        self.sim_log, self.host_log = tmp_path / "sim.log", tmp_path / "host.log"
        master, self.slave = os.openpty()  # the slave stays open here until the end: the pty lives on
        tty.setraw(self.slave)
        self.sim = subprocess.Popen(
            [build / "antijam_device", *sim_args, "--log", self.sim_log, os.ttyname(self.slave)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        host_cmd = [sys.executable, FIRMWARE / "tests" / "host.py", "--fd", str(master), "--log", self.host_log]
        self.host = subprocess.Popen([*host_cmd, *host_args], pass_fds=(master,), env=env, cwd=ROOT)
        os.close(master)

    def __enter__(self) -> Rig:
        return self

    def wait_for(self, condition: Callable[[list], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition(read_log(self.sim_log)):
            assert self.sim.poll() is None, f"simulator exited: {self.sim.stderr.read() if self.sim.stderr else ''}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self.host.send_signal(signal.SIGCONT)
        for proc in (self.host, self.sim):
            proc.terminate()
        try:
            self.host.wait(timeout=10)
            _, self.sim_stderr = self.sim.communicate(timeout=10)
        finally:
            for proc in (self.host, self.sim):
                proc.kill()
            os.close(self.slave)


def test_s5_deadman_applies_safe_action_and_waits_for_a_fresh_hello(build: Path, tmp_path: Path) -> None:
    seed, period_ms, valid_ms = 5, 10, 100
    print(f"seed={seed}")
    sim_args = ["--period-ms", str(period_ms), "--host-timeout-ms", "1000", "--seed", str(seed)]
    host_args = ["--valid-ms", str(valid_ms), "--rehello-after", "0.3"]
    with Rig(build, tmp_path, sim_args, host_args) as rig:
        rig.wait_for(lambda log: sum(r in POLICY for *_, r in slots(log)) >= 30, 10, "30 policy slots")
        t_stop = time.monotonic()
        rig.host.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        t_cont = time.monotonic()
        rig.host.send_signal(signal.SIGCONT)
        rig.wait_for(lambda log: sum(r in POLICY and t > t_cont for t, _, r in slots(log)) >= 10, 10, "resumption")
    assert_clean(rig.sim.returncode, rig.sim_stderr)
    log, host_log = read_log(rig.sim_log), read_log(rig.host_log)
    applied = slots(log)

    # within the validity (+ one slot) of the last ACTION, the safe action, logged as the deadman
    (t_trip, trip), *_ = [(t, text) for t, text in log if text.startswith("deadman tripped") and t > t_stop]
    age = int(re.search(r"action_age_ms=(\d+)", trip)[1])
    print(f"trip {1000 * (t_trip - t_stop):.1f} ms after SIGSTOP: {trip}")
    assert "action expired" in trip and valid_ms <= age <= valid_ms + period_ms + 5
    assert t_trip - t_stop <= (valid_ms + period_ms + 50) / 1000
    after_stop = [(t, a, r) for t, a, r in applied if t > t_stop]
    first_safe = next((t, a, r) for t, a, r in after_stop if r not in POLICY)
    assert first_safe[1:] == (0, "deadman") and first_safe[0] >= t_trip

    # after SIGCONT the host answers OBS with ACTIONs for 0.3 s before its HELLO: all ignored
    (t_rehello,) = [t for t, text in host_log if text == "rehello"]
    assert any(text.startswith("action=") and t_cont < t < t_rehello for t, text in host_log)
    (t_hello,) = [t for t, text in log if text.startswith("hello host") and t > t_trip]
    assert t_hello > t_rehello
    assert any(text.startswith("ignored action=") and "reason=deadman" in text for t, text in log if t > t_cont)
    between = [r for t, _, r in applied if t_trip <= t < t_hello]
    assert between and set(between) == {"deadman"}
    first_policy_after = next(t for t, _, r in applied if t > t_trip and r in POLICY)
    assert first_policy_after > t_hello
    counters = exit_counters(log)
    assert counters["deadman_trips"] == "1" and counters["host_quiet_trips"] == "0"
    assert int(counters["actions_ignored"]) >= 1 and counters["crc_errors"] == "0"


@pytest.mark.parametrize(
    "mismatch, device_version",
    [(["--major", "2"], "2.0 (schema f5542274)"), (["--schema-hash", "12345678"], "1.0 (schema 12345678)")],
    ids=["major", "schema"],
)
def test_s6_version_mismatch_never_actuates(build: Path, tmp_path: Path, mismatch: list, device_version: str) -> None:
    seed = 6
    print(f"seed={seed}")
    host_version = f"{MAJOR}.{MINOR} (schema {SCHEMA_HASH:08x})"
    sim_args = [*mismatch, "--period-ms", "10", "--seed", str(seed)]
    # a host that sends ACTIONs whatever it heard: the device alone must refuse them
    with Rig(build, tmp_path, sim_args, ["--blind-period", "0.01"]) as rig:
        rig.wait_for(lambda log: sum(r == "incompatible" for *_, r in slots(log)) >= 50, 10, "50 refused slots")
    assert_clean(rig.sim.returncode, rig.sim_stderr)
    log, host_log = read_log(rig.sim_log), read_log(rig.host_log)
    applied = slots(log)

    assert not [s for s in applied if s[2] in POLICY]
    assert {r for *_, r in applied} <= {"no-host", "incompatible"} and {a for _, a, _ in applied} == {0}
    naming_both = [text for _, text in log if host_version in text and device_version in text]
    assert len(naming_both) == 1, naming_both
    print(naming_both[0])
    counters = exit_counters(log)
    assert counters["actions_accepted"] == "0" and int(counters["incompatible_hellos"]) >= 1
    refused = int(counters["foreign_version"]) if mismatch[0] == "--major" else int(counters["actions_ignored"])
    assert refused >= 10
    host_saw = [text for _, text in host_log if device_version in text]
    assert host_saw, "the host never learned the device's version"


def test_simulator_switches_the_jammer_mid_run_and_logs_true_delivery(build: Path, tmp_path: Path) -> None:
    """--switch-at/--then change the jammer at a slot (mid-episode); --window lines count true deliveries."""
    master, slave = os.openpty()  # no host: the safe channel 0 every slot, which a reactive jammer always follows
    tty.setraw(slave)
    log_path = tmp_path / "sim.log"
    args = ["--period-ms", "1", "--steps", "400", "--seed", "3", "--switch-at", "150", "--then", "reactive"]
    try:
        sim = subprocess.run(
            [build / "antijam_device", *args, "--window", "100", "--log", log_path, os.ttyname(slave)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(master)
        os.close(slave)
    assert_clean(sim.returncode, sim.stderr)
    log = read_log(log_path)
    texts = [text for _, text in log]
    assert "scheduled switch_at=150 then=reactive" in texts
    switch = texts.index("switch slot=150 jammer=sweeping then=reactive")
    assert texts[switch - 1].startswith("slot=149 ") and texts[switch + 1].startswith("slot=150 ")
    delivered = [float(re.search(r"reward=(\S+)", t)[1]) >= 0.5 for t in texts if t.startswith("slot=")]
    windows = [dict(kv.split("=", 1) for kv in t.split()[1:]) for t in texts if t.startswith("window ")]
    assert [w["slots"] for w in windows] == ["0-99", "100-199", "200-299", "300-399"]
    assert [w["jammer"] for w in windows] == ["sweeping", "reactive", "reactive", "reactive"]
    assert [int(w["delivered"]) for w in windows] == [sum(delivered[i : i + 100]) for i in range(0, 400, 100)]
    assert int(exit_counters(log)["delivered"]) == sum(delivered)
    assert sum(delivered[:150]) / 150 > 0.4  # the sweeper leaves channel 0 clean most slots
    assert sum(delivered[150:]) / 250 < 0.1  # the reactive jammer sits on it (but for episode starts)
    for bad in (["--switch-at", "10"], ["--then", "reactive"], ["--switch-at", "10", "--then", "loud"]):
        refused = subprocess.run([build / "antijam_device", *bad, "-"], capture_output=True, text=True, timeout=10)
        assert refused.returncode == 2 and "usage:" in refused.stderr, bad


# --- the Arduino sketch and the Makefile -----------------------------------------------------------


def test_arduino_sketch_runs_on_a_simulated_board(tmp_path: Path) -> None:
    """The sketch compiles as C++ against a small Arduino shim, answers a HELLO and obeys the deadman."""
    cxx = shutil.which("c++")
    if cxx is None:
        pytest.fail("no C++ compiler: run .ci/system-deps (installs g++)")
    tests = FIRMWARE / "tests"
    sketch = FIRMWARE / "examples" / "arduino" / "edgerl_device" / "edgerl_device.ino"
    compile_c(*CFLAGS, "-c", FIRMWARE / "edgerl.c", "-o", tmp_path / "edgerl.o")
    cxxflags = ("-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", *SANITIZE)
    includes = ("-I", tests, "-I", FIRMWARE, "-include", "arduino_shim.h")
    sources = ("-x", "c++", sketch, "-x", "none", tests / "arduino_shim.cpp", tmp_path / "edgerl.o")
    compile_c(*cxxflags, *includes, *sources, "-o", tmp_path / "board", compiler=cxx)
    host = encode(Hello("host", reply_requested=True, seq=0)) + encode(Action(2, valid_ms=150, seq=1))
    board = subprocess.run([tmp_path / "board", "400"], input=host, capture_output=True, timeout=60)
    stderr = board.stderr.decode()
    assert_clean(board.returncode, stderr)
    decoder = FrameDecoder()
    messages = decoder.feed(board.stdout)
    assert decoder.counters.rejected == 0
    hellos = [m for m in messages if isinstance(m, Hello)]
    assert [h.reply_requested for h in hellos] == [True, False] and hellos[0].obs_shape == (4,)
    assert sum(isinstance(m, Obs) for m in messages) == 20  # one per 20 ms
    # the ACTION arrives at 1 ms: PWM 255 from the first step, the safe 0 at the first step after 151 ms
    pwm = [tuple(int(v) for v in re.findall(r"\d+", line)) for line in stderr.splitlines()]
    assert pwm == [(0, 0), (20, 255), (160, 0)]


def test_makefile_builds_lib_sim_and_driver(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.fail("no make: run .ci/system-deps (installs make)")
    result = subprocess.run(
        ["make", "-C", FIRMWARE, f"BUILD={tmp_path}", "all"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert {p.name for p in tmp_path.iterdir()} >= {"libedgerl.a", "antijam_device", "driver"}
    usage = subprocess.run([tmp_path / "antijam_device", "--help"], capture_output=True, text=True, timeout=10)
    assert usage.returncode == 0 and "--valid-timeout-ms" in usage.stdout and "--switch-at" in usage.stdout
