"""Protocol 1.0 frames: round trips, corruption, garbage and fuzzing (scenarios S1-S3 of the reliability note)."""

from __future__ import annotations

import os
import struct
import threading
import tty
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.protocol import (
    HEADER,
    MAJOR,
    MAX_ENCODED,
    MAX_PAYLOAD,
    SCHEMA_HASH,
    Action,
    Capability,
    Config,
    Error,
    ForeignHello,
    FrameDecoder,
    Heartbeat,
    Hello,
    MessageType,
    Obs,
    ObsDtype,
    PeerState,
    Reset,
    cobs_decode,
    cobs_encode,
    encode,
)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)  # <= 32 UTF-8 bytes: an id fits
messages = st.one_of(
    st.builds(
        Hello,
        text,
        st.lists(st.integers(1, 0xFFFF), max_size=8).map(tuple),
        u16,
        u16,
        st.sampled_from(ObsDtype),
        u16,
        st.integers(0, 15).map(Capability),
        st.just(MAJOR),
        st.integers(0, 255),
        st.just(SCHEMA_HASH),
        st.booleans(),
        u16,
    ),
    st.builds(
        Obs,
        st.lists(finite32, max_size=200).map(lambda v: np.asarray(v, np.float32)),
        finite32,
        st.booleans(),
        st.booleans(),
        u32,
        st.just(0.0),
        u16,
    ),
    st.builds(Action, u16, u16, u16, st.booleans(), u16),
    st.builds(Heartbeat, st.sampled_from(PeerState), u32, st.booleans(), u16),
    st.builds(Reset, st.none() | u32, u16),
    st.builds(Error, u16, st.text(max_size=20), u16),
    st.builds(
        Config, st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=32), finite32, u16
    ),
)


def obs_for(seq: int) -> Obs:
    """A deterministic observation per sequence number, so a receiver can tell a true frame from a forged one."""
    rng = np.random.default_rng(seq)
    return Obs(
        rng.normal(size=int(rng.integers(2, 12))).astype(np.float32),
        float(seq) * 0.5,
        seq % 7 == 0,
        False,
        seq * 10_000,
        0.0,
        seq & 0xFFFF,
    )


def test_cobs_overhead_is_one_byte_up_to_254_and_never_contains_zero() -> None:
    rng = np.random.default_rng(0)
    for n in range(0, 1100):
        data = (
            rng.integers(0, 3, n).astype(np.uint8).tobytes()
            if n % 2
            else rng.integers(1, 256, n).astype(np.uint8).tobytes()
        )
        encoded = cobs_encode(data)
        assert 0 not in encoded and cobs_decode(encoded) == data
        assert len(encoded) <= n + max(1, -(-n // 254))
        if n <= 254:
            assert len(encoded) == n + 1


@settings(max_examples=2000, deadline=None)
@given(messages)
def test_every_message_round_trips(msg) -> None:
    frame = encode(msg)
    assert frame.endswith(b"\x00") and 0 not in frame[:-1] and len(frame) <= MAX_ENCODED + 1
    decoder = FrameDecoder()
    assert decoder.feed(frame) == [msg]
    assert decoder.counters.frames == 1 and decoder.counters.rejected == 0


def test_int16_observations_keep_their_resolution() -> None:
    values = np.linspace(-3, 3, 40).astype(np.float32)
    (got,) = FrameDecoder().feed(encode(Obs(values, int16_scale=1e-3)))
    assert np.max(np.abs(got.observation - values)) <= 0.5e-3 + 1e-7
    assert len(encode(Obs(values, int16_scale=1e-3))) < len(encode(Obs(values)))
    with pytest.raises(ValueError, match="finite"):
        encode(Obs(np.array([np.nan], np.float32), int16_scale=1e-3))


def test_a_message_that_cannot_fit_is_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode(Obs(np.zeros(MAX_PAYLOAD // 4, np.float32)))
    encode(Obs(np.zeros((MAX_PAYLOAD - 8) // 4, np.float32)))  # the largest float32 observation fits


def test_header_layout_and_crc_are_as_documented() -> None:
    """docs/protocol.md's worked example: ACTION 3 answering OBS 0x0102, valid 250 ms, seq 7."""
    frame = encode(Action(3, answers=0x0102, valid_ms=250, seq=7))
    raw = cobs_decode(frame[:-1])
    assert raw[: HEADER.size] == bytes([MAJOR, MessageType.ACTION, 0, 7, 0, 6, 0])
    assert raw[HEADER.size : -4] == struct.pack("<HHH", 0x0102, 3, 250)
    assert int.from_bytes(raw[-4:], "little") == zlib.crc32(raw[:-4])


def test_sequence_gaps_duplicates_and_reorders_are_counted() -> None:
    decoder = FrameDecoder()
    seqs = [0, 1, 2, 5, 5, 4, 6, 0xFFFF]  # gap of 2, a duplicate, a reorder, then far behind (older)
    got = decoder.feed(b"".join(encode(Heartbeat(seq=s)) for s in seqs))
    assert [m.seq for m in got] == [0, 1, 2, 5, 6]
    c = decoder.counters
    assert (c.seq_gaps, c.duplicates, c.reorders) == (2, 1, 2)


def test_sequence_numbers_wrap_without_a_gap() -> None:
    decoder = FrameDecoder()
    got = decoder.feed(b"".join(encode(Heartbeat(seq=s & 0xFFFF)) for s in range(0xFFF0, 0x10010)))
    assert len(got) == 0x20 and decoder.counters.seq_gaps == 0


def test_a_hello_restarts_the_peers_numbering_and_unsequenced_frames_are_not_tracked() -> None:
    decoder = FrameDecoder()
    stream = [
        Heartbeat(seq=500),
        Hello("d", seq=0),
        Heartbeat(seq=1),
        Heartbeat(PeerState.OFFLINE, unsequenced=True, seq=0),
    ]
    got = decoder.feed(b"".join(encode(m) for m in stream))
    assert len(got) == 4 and decoder.counters.reorders == 0


def test_another_major_version_is_named_not_decoded() -> None:
    frame = bytearray(cobs_decode(encode(Hello("dev", (4,), 2))[:-1]))
    frame[0] = MAJOR + 1  # a version-2 device
    frame[HEADER.size] = MAJOR + 1
    frame[-4:] = zlib.crc32(frame[:-4]).to_bytes(4, "little")
    action = bytearray(cobs_decode(encode(Action(1))[:-1]))
    action[0] = MAJOR + 1
    action[-4:] = zlib.crc32(action[:-4]).to_bytes(4, "little")
    decoder = FrameDecoder()
    got = decoder.feed(cobs_encode(bytes(frame)) + b"\x00" + cobs_encode(bytes(action)) + b"\x00")
    assert got == [ForeignHello(MAJOR + 1, 0, SCHEMA_HASH)]
    assert decoder.counters.foreign_version == 1


def test_unknown_types_malformed_and_oversize_frames_are_counted_and_dropped() -> None:
    def frame(kind: int, payload: bytes, length: int | None = None) -> bytes:
        body = HEADER.pack(MAJOR, kind, 0, 0, len(payload) if length is None else length) + payload
        return cobs_encode(body + zlib.crc32(body).to_bytes(4, "little")) + b"\x00"

    decoder = FrameDecoder()
    stream = (
        frame(0x42, b"future")  # unknown type
        + frame(MessageType.ACTION, b"\x01\x02")  # too short for ACTION
        + frame(MessageType.ACTION, b"\x00" * 6, length=9)  # length field lies
        + b"\xff" * (MAX_ENCODED + 10)
        + b"\x00"  # no delimiter for too long
        + b"\x05\x01\x02\x00"  # COBS code running past the end
        + encode(Action(2, seq=1))
    )
    assert decoder.feed(stream) == [Action(2, seq=1)]
    c = decoder.counters
    assert (c.unknown_type, c.malformed, c.oversize) == (1, 3, 1)


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=1500), max_size=6))
def test_arbitrary_byte_streams_never_raise_or_overflow(chunks) -> None:
    """S3: whatever arrives, the decoder returns messages or counts, never holds more than one frame."""
    decoder = FrameDecoder()
    for chunk in chunks:
        for msg in decoder.feed(chunk):
            assert len(encode(msg)) <= MAX_ENCODED + 1
        assert decoder.buffered <= MAX_ENCODED


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), u16, st.binary(max_size=300))
def test_frames_with_a_valid_crc_and_any_header_or_payload_never_raise(major, kind, flags, seq, payload) -> None:
    """S3, CRC-aware: a forged frame passes the CRC, so the payload parsers themselves must hold."""
    body = HEADER.pack(major, kind, flags, seq, len(payload)) + payload
    frame = cobs_encode(body + zlib.crc32(body).to_bytes(4, "little")) + b"\x00"
    decoder = FrameDecoder()
    got = decoder.feed(frame)
    assert len(got) + decoder.counters.rejected + decoder.counters.duplicates + decoder.counters.reorders == 1


@given(st.lists(messages, min_size=1, max_size=10), st.lists(st.integers(1, 64), min_size=1, max_size=20))
@settings(max_examples=500, deadline=None)
def test_how_the_bytes_are_split_does_not_matter(msgs, cuts) -> None:
    stream = b"".join(encode(m) for m in msgs)
    decoder, got, at = FrameDecoder(), [], 0
    for cut in cuts * (len(stream) // sum(cuts) + 1):
        got += decoder.feed(stream[at : at + cut])
        at += cut
    assert got == FrameDecoder().feed(stream)


def test_garbage_bursts_never_cost_more_than_the_frame_they_touch() -> None:
    """S2: 1,000 bursts of 1-4096 random bytes (zeros, fake headers); every frame after the next delimiter decodes."""
    seed = 2
    print(f"seed {seed}")
    rng = np.random.default_rng(seed)
    decoder = FrameDecoder()
    fake = HEADER.pack(MAJOR, MessageType.OBS, 0, 0, 40)
    for burst in range(1000):
        garbage = bytearray(rng.integers(0, 256, int(rng.integers(1, 4097)), dtype=np.uint8).tobytes())
        for at in rng.integers(0, len(garbage), 3):
            garbage[at : at + len(fake)] = fake  # something that looks like a header
        garbage = bytes(garbage[:4096])
        seqs = [3 * burst, 3 * burst + 1, 3 * burst + 2]
        frames = [encode(obs_for(s)) for s in seqs]
        got = decoder.feed(garbage + b"".join(frames))
        true = [m for m in got if isinstance(m, Obs) and m == obs_for(m.seq)]
        assert len(true) == len(got), "a forged frame was accepted"
        received = {m.seq for m in got}
        first_clean = 0 if garbage.endswith(b"\x00") else 1  # frame 0 shares its bytes with the garbage tail
        assert set(seqs[first_clean:]) <= received, (burst, received)
        assert decoder.buffered <= MAX_ENCODED


def noisy_relay(src: int, dst: int, rng: np.random.Generator, flip: float, drop: float, stop: threading.Event) -> None:
    """Copy bytes from one pty to another, flipping and dropping bytes at the given rates."""
    import select

    while not stop.is_set():
        if not select.select([src], [], [], 0.05)[0]:
            continue
        data = np.frombuffer(os.read(src, 65536), np.uint8).copy()
        flips = rng.random(data.size) < flip
        data[flips] ^= rng.integers(1, 256, int(flips.sum()), dtype=np.uint8)
        data = data[rng.random(data.size) >= drop]
        view = memoryview(data.tobytes())
        while view:
            view = view[os.write(dst, view) :]


def raw_pty() -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    return master, slave


def run_noisy_wire(
    seed: int, n: int, flip: float = 0.01, drop: float = 0.001
) -> dict[str, tuple[FrameDecoder, list[int], int]]:
    """Send `n` frames each way over ptys through a noisy relay; per direction: decoder, delivered seqs, forged."""
    outcome: dict[str, tuple[FrameDecoder, list[int], int]] = {}
    stop = threading.Event()
    senders, receivers = [], []
    for index, direction in enumerate(("host->device", "device->host")):
        rng = np.random.default_rng([seed, index])
        tx_master, tx_slave = raw_pty()  # the sender writes the slave; the relay reads the master
        rx_master, rx_slave = raw_pty()  # the relay writes this master; the receiver reads its slave
        threading.Thread(target=noisy_relay, args=(tx_master, rx_master, rng, flip, drop, stop), daemon=True).start()

        def send(fd: int = tx_slave) -> None:
            batch = b""
            for seq in range(n):
                batch += encode(obs_for(seq))
                if seq % 64 == 63 or seq == n - 1:
                    view = memoryview(batch)
                    while view:
                        view = view[os.write(fd, view) :]
                    batch = b""
            os.write(fd, b"\x00")

        def receive(fd: int = rx_slave, name: str = direction) -> None:
            import select

            decoder, delivered, forged = FrameDecoder(), [], 0
            while select.select([fd], [], [], 0.5)[0]:  # until the sender finished and the wire went quiet
                for msg in decoder.feed(os.read(fd, 65536)):
                    forged += msg != obs_for(msg.seq)
                    delivered.append(msg.seq)
                assert decoder.buffered <= MAX_ENCODED
            outcome[name] = (decoder, delivered, forged)

        senders.append(threading.Thread(target=send))
        receivers.append(threading.Thread(target=receive))
    for t in senders + receivers:
        t.start()
    for t in senders + receivers:
        t.join(timeout=110)
    stop.set()
    return outcome


def test_a_noisy_wire_never_delivers_a_corrupted_frame_and_accounts_for_every_loss() -> None:
    """S1: 60,000 frames each way (10 minutes at 100 frames/s, compressed) over ptys with 1 % flips and 0.1 % drops."""
    seed, n = 1, 60_000
    print(f"seed {seed}")
    outcome = run_noisy_wire(seed, n)
    assert set(outcome) == {"host->device", "device->host"}
    for direction, (decoder, delivered, forged) in outcome.items():
        c = decoder.counters
        assert forged == 0, f"{direction}: {forged} corrupted frames accepted"
        assert len(delivered) == c.frames and delivered == sorted(delivered)
        tail = n - 1 - delivered[-1]  # frames after the last delivered one: no later seq reveals them
        lost = n - len(delivered)
        assert lost == c.seq_gaps + delivered[0] + tail, f"{direction}: unaccounted loss"
        corrupted = c.crc_errors + c.malformed + c.oversize + c.unknown_type + c.foreign_version
        # no loss is silent: a corrupted delimiter merges two frames into one rejected blob at most,
        # and a forged 0x00 splits one frame into a few rejected fragments at most
        assert lost <= 2 * corrupted and corrupted <= 3 * lost
        assert c.duplicates == c.reorders == 0
        print(
            f"{direction}: {n} sent, {len(delivered)} delivered, {lost} lost = {c.seq_gaps} gaps + "
            f"{delivered[0]} head + {tail} tail; rejected {c.as_dict()}"
        )
        assert 0.5 * n < len(delivered) < n  # the wire really was noisy, and most frames still got through


def test_the_worked_examples_in_the_docs_are_what_encode_produces() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    examples = [
        Action(3, answers=0x0102, valid_ms=250, seq=7),
        Obs(np.array([0.5, -1.0, 0.0, 2.0], np.float32), 1.0, False, False, 1000, seq=5),
        Heartbeat(PeerState.READY, 123456, seq=8),
        Hello(
            "radio-1",
            (72,),
            8,
            0,
            heartbeat_ms=100,
            capabilities=Capability.DEADMAN | Capability.RESET,
            reply_requested=True,
            seq=0,
        ),
    ]
    for msg in examples:
        assert encode(msg).hex(" ") in doc, type(msg).__name__
    assert f"0x{SCHEMA_HASH:08x}" in doc


def test_payloads_over_the_maximum_and_overflowing_int16_scales_are_malformed() -> None:
    """COBS slack lets a 1016-byte payload fit MAX_ENCODED; a huge int16 scale decodes to infinity: both refused."""
    values = np.zeros(252, np.float32)
    values[::4] = 1.0  # zeros spread through the payload keep the COBS encoding within MAX_ENCODED
    body = HEADER.pack(MAJOR, MessageType.OBS, 0, 0, 8 + 4 * 252) + struct.pack("<If", 0, 0.0) + values.tobytes()
    big = cobs_encode(body + zlib.crc32(body).to_bytes(4, "little"))
    assert len(big) <= MAX_ENCODED
    scale = struct.pack("<Iff", 0, 0.0, 3e38) + struct.pack("<2h", 32767, -32768)
    body16 = HEADER.pack(MAJOR, MessageType.OBS, 0x04, 1, len(scale)) + scale
    huge = cobs_encode(body16 + zlib.crc32(body16).to_bytes(4, "little"))
    decoder = FrameDecoder()
    assert decoder.feed(big + b"\x00" + huge + b"\x00") == []
    assert decoder.counters.malformed == 2
