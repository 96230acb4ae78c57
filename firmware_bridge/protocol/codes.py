"""The numbers of protocol 1.0: version, size limits, message types, flag bits, enums, schema hash.

Payload layouts are described by `LAYOUTS`, whose canonical text hashes to `SCHEMA_HASH`
(MAVLink's CRC_EXTRA idea): two ends that disagree on any layout disagree on the hash and never
actuate. The C library (firmware/edgerl.h) mirrors every number here; a test keeps them equal.
"""

from __future__ import annotations

import zlib
from enum import IntEnum, IntFlag

MAJOR, MINOR = 1, 0
MAX_PAYLOAD = 1012  # header 7 + payload + CRC 4 = 1023 bytes: 251 float32 or 500 int16 observation values
MAX_OBS_DIMS = 8
MAX_DEVICE_ID = 32
MAX_ERROR_TEXT = 64
MAX_CONFIG_KEY = 32


class MessageType(IntEnum):
    """The message type byte of the header."""

    HELLO = 0x01
    OBS = 0x02
    ACTION = 0x03
    HEARTBEAT = 0x04
    RESET = 0x05
    ERROR = 0x06
    CONFIG = 0x07


class Flags:
    """Header flag bits (plain ints: tested per frame); bits 0-3 mean something per type, 4-7 for every type."""

    NONE = 0
    HELLO_REPLY_REQUESTED = 0x01  # HELLO: answer with your HELLO (sent on open, reconnect, loss)
    OBS_TERMINATED = 0x01
    OBS_TRUNCATED = 0x02
    OBS_INT16 = 0x04  # OBS: observation as int16 codes times a float32 scale
    ACTION_FALLBACK = 0x01  # ACTION: the sender's fallback, not its policy, chose this action
    UNSEQUENCED = 0x80  # replayed out of band (an MQTT will or retained frame): not sequence-tracked


class PeerState(IntEnum):
    """What a HEARTBEAT says about its sender."""

    STARTING = 0
    READY = 1
    SAFE = 2  # applying the safe action (deadman, fallback, mismatch)
    OFFLINE = 3  # a will published by the broker for a vanished peer


class Capability(IntFlag):
    """Optional features a HELLO announces."""

    NONE = 0
    INT16_OBS = 0x01
    RESET = 0x02
    CONFIG = 0x04
    DEADMAN = 0x08
    POLICY = 0x10  # the device carries its own policy and can act from it
    SELF_TEST_PASSED = 0x20  # that policy reproduced its golden actions at start


class ErrorCode(IntEnum):
    """ERROR codes (free text travels with them; receivers may treat the text as bytes)."""

    INCOMPATIBLE = 1  # another protocol version, schema, observation shape or action count
    BAD_ACTION = 2  # an ACTION naming an action the device does not have
    UNKNOWN_CONFIG = 3
    BAD_CONFIG_VALUE = 4
    SELF_TEST_FAILED = 5  # the device's policy does not reproduce its golden actions: it never acts from it


class ObsDtype(IntEnum):
    """Observation element type announced in HELLO."""

    FLOAT32 = 0
    INT16 = 1


# Canonical layouts: struct formats for fixed parts, "*" for a counted tail. Change a layout and
# the hash changes, which is exactly what tells two builds they must not talk.
LAYOUTS: dict[MessageType, str] = {
    MessageType.HELLO: "<BBIIHHHBB ndim*H idlen*s",
    MessageType.OBS: "<If n*f | <Iff n*h",
    MessageType.ACTION: "<HHH",
    MessageType.HEARTBEAT: "<IB",
    MessageType.RESET: "<BI",
    MessageType.ERROR: "<H len*s",
    MessageType.CONFIG: "<f keylen*s",
}
SCHEMA_TEXT = ";".join(f"{t.name}={layout}" for t, layout in LAYOUTS.items())
SCHEMA_HASH = zlib.crc32(SCHEMA_TEXT.encode())
