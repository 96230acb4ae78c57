"""Frames on the wire: COBS(header + payload + CRC-32) followed by a 0x00 delimiter.

Header, 7 bytes little-endian: major version u8, message type u8, flags u8, sequence u16,
payload length u16. The CRC-32 (IEEE, as `zlib.crc32`) covers header and payload. The decoder
never raises: every byte it cannot turn into a message is counted under one reason and dropped,
and it resynchronises at the next delimiter. It never buffers more than one maximal frame.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, fields

from .cobs import CobsError, cobs_decode, cobs_encode
from .codes import MAJOR, MAX_PAYLOAD, Flags, MessageType
from .messages import Message, PayloadError, hello_prefix, pack, unpack
from .sequence import SequenceTracker

HEADER = struct.Struct("<BBBHH")
CRC_SIZE = 4
MAX_FRAME = HEADER.size + MAX_PAYLOAD + CRC_SIZE  # 1023 decoded bytes
MAX_ENCODED = MAX_FRAME + -(-MAX_FRAME // 254)  # COBS adds one byte per started 254; delimiter extra
DELIMITER = b"\x00"
_TYPES = {t.value: t for t in MessageType}


def encode(msg: Message, seq: int | None = None) -> bytes:
    """One complete frame for `msg` (numbered `seq`, else `msg.seq`), delimiter included.

    Raises ValueError if the message cannot fit in one frame.
    """
    kind, flags, payload = pack(msg)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"{kind.name} payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    header = HEADER.pack(MAJOR, kind, flags, (msg.seq if seq is None else seq) & 0xFFFF, len(payload))
    body = header + payload
    return cobs_encode(body + zlib.crc32(body).to_bytes(CRC_SIZE, "little")) + DELIMITER


@dataclass
class DecoderCounters:
    """Why bytes did not become messages, and what the sequence numbers say was lost."""

    frames: int = 0  # messages delivered
    crc_errors: int = 0
    malformed: int = 0  # bad COBS, too short, length field wrong, payload not matching its layout
    oversize: int = 0  # more than MAX_ENCODED bytes without a delimiter: dropped without buffering
    unknown_type: int = 0
    foreign_version: int = 0  # another major version: only its HELLO is understood
    seq_gaps: int = 0  # frames missing between consecutive sequence numbers
    duplicates: int = 0
    reorders: int = 0  # frames older than one already delivered: dropped (latest wins)

    @property
    def rejected(self) -> int:
        """Frames (or fragments) that arrived but were not delivered."""
        return self.crc_errors + self.malformed + self.oversize + self.unknown_type + self.foreign_version

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ForeignHello:
    """A HELLO from another major version: enough to name both versions, nothing to act on."""

    major: int
    minor: int
    schema_hash: int
    reply_requested: bool = False

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor} (schema {self.schema_hash:08x})"


class FrameDecoder:
    """Bytes in, messages out; counts everything it drops and never raises on any input."""

    def __init__(self) -> None:
        self.counters = DecoderCounters()
        self.sequence = SequenceTracker(self.counters)
        self._buffer = bytearray()
        self._discarding = False  # inside an oversize run: skip to the next delimiter

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for a delimiter (never more than MAX_ENCODED)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message | ForeignHello]:
        """Consume `data`; return the messages completed by it, in order."""
        out: list[Message | ForeignHello] = []
        pieces = bytes(data).split(DELIMITER)
        for index, piece in enumerate(pieces):
            complete = index < len(pieces) - 1
            if not self._discarding:
                if len(self._buffer) + len(piece) > MAX_ENCODED:
                    self.counters.oversize += 1
                    self._buffer.clear()
                    self._discarding = True
                else:
                    self._buffer += piece
            if complete:
                if not self._discarding and self._buffer:
                    msg = self._frame(bytes(self._buffer))
                    if msg is not None:
                        out.append(msg)
                self._buffer.clear()
                self._discarding = False
        return out

    def _frame(self, encoded: bytes) -> Message | ForeignHello | None:
        counters = self.counters
        try:
            frame = cobs_decode(encoded)
        except CobsError:
            counters.malformed += 1
            return None
        if len(frame) < HEADER.size + CRC_SIZE:
            counters.malformed += 1
            return None
        body, crc = frame[:-CRC_SIZE], int.from_bytes(frame[-CRC_SIZE:], "little")
        if zlib.crc32(body) != crc:
            counters.crc_errors += 1
            return None
        major, kind, flags, seq, length = HEADER.unpack_from(body)
        payload = body[HEADER.size :]
        if length != len(payload) or length > MAX_PAYLOAD:  # COBS slack lets a few bytes more arrive
            counters.malformed += 1
            return None
        if kind not in _TYPES:
            counters.unknown_type += 1
            return None
        if major != MAJOR:
            return self._foreign(kind, flags, payload)
        try:
            msg = unpack(_TYPES[kind], flags, seq, payload)
        except PayloadError:
            counters.malformed += 1
            return None
        if kind == MessageType.HELLO:
            self.sequence.restart(seq)  # the peer (re)started: its numbering starts over
        elif not flags & Flags.UNSEQUENCED and not self.sequence.accept(seq):
            return None
        counters.frames += 1
        return msg

    def _foreign(self, kind: int, flags: int, payload: bytes) -> ForeignHello | None:
        if kind == MessageType.HELLO:
            try:
                self.counters.frames += 1
                return ForeignHello(*hello_prefix(payload), bool(flags & Flags.HELLO_REPLY_REQUESTED))
            except PayloadError:
                self.counters.frames -= 1
        self.counters.foreign_version += 1
        return None
