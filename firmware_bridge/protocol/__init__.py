"""Protocol 1.0: COBS-framed, CRC-32-checked, sequence-numbered messages between host and device.

`encode(msg) -> bytes` makes one frame; `FrameDecoder().feed(data) -> list[msg]` turns any byte
stream back into messages, counting (never raising on) everything it drops. The byte layout, the
message table and worked examples are in docs/protocol.md.
"""

from .cobs import CobsError, cobs_decode, cobs_encode
from .codes import (
    MAJOR,
    MAX_PAYLOAD,
    MINOR,
    SCHEMA_HASH,
    Capability,
    ErrorCode,
    Flags,
    MessageType,
    ObsDtype,
    PeerState,
)
from .frames import (
    DELIMITER,
    HEADER,
    MAX_ENCODED,
    MAX_FRAME,
    DecoderCounters,
    ForeignHello,
    FrameDecoder,
    encode,
)
from .messages import Action, Config, Error, Heartbeat, Hello, Message, Obs, Reset
from .sequence import SequenceTracker

__all__ = [
    "DELIMITER",
    "HEADER",
    "MAJOR",
    "MAX_ENCODED",
    "MAX_FRAME",
    "MAX_PAYLOAD",
    "MINOR",
    "SCHEMA_HASH",
    "Action",
    "Capability",
    "CobsError",
    "Config",
    "DecoderCounters",
    "Error",
    "ErrorCode",
    "Flags",
    "ForeignHello",
    "FrameDecoder",
    "Heartbeat",
    "Hello",
    "Message",
    "MessageType",
    "Obs",
    "ObsDtype",
    "PeerState",
    "Reset",
    "SequenceTracker",
    "cobs_decode",
    "cobs_encode",
    "encode",
]
