"""The messages of protocol 1.0 and their payload codecs (little-endian, fixed order).

Every message is a frozen dataclass; `seq` is the sender's 16-bit sequence number for its
direction and travels in the frame header, not in the payload. The first six bytes of HELLO
(major, minor, schema hash) are frozen forever, so any two versions can tell each other apart.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .codes import (
    MAJOR,
    MAX_CONFIG_KEY,
    MAX_DEVICE_ID,
    MAX_ERROR_TEXT,
    MAX_OBS_DIMS,
    MAX_PAYLOAD,
    MINOR,
    SCHEMA_HASH,
    Capability,
    Flags,
    MessageType,
    ObsDtype,
    PeerState,
)


@dataclass(frozen=True, slots=True)
class Hello:
    """Who the sender is and what it speaks; devices also describe their observation and actions."""

    device_id: str
    obs_shape: tuple[int, ...] = ()
    n_actions: int = 0
    safe_action: int = 0
    obs_dtype: ObsDtype = ObsDtype.FLOAT32
    heartbeat_ms: int = 100
    capabilities: Capability = Capability.NONE
    major: int = MAJOR
    minor: int = MINOR
    schema_hash: int = SCHEMA_HASH
    reply_requested: bool = False
    seq: int = 0

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor} (schema {self.schema_hash:08x})"


@dataclass(frozen=True, slots=True)
class Obs:
    """One observation with the reward and episode flags of the step that produced it."""

    observation: np.ndarray
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    t_us: int = 0  # the device's monotonic clock in microseconds, wrapping at 2**32
    int16_scale: float = 0.0  # > 0: send the observation as int16 codes of this scale
    seq: int = 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Obs):
            return NotImplemented
        return (self.reward, self.terminated, self.truncated, self.t_us, self.int16_scale, self.seq) == (
            other.reward,
            other.terminated,
            other.truncated,
            other.t_us,
            other.int16_scale,
            other.seq,
        ) and np.array_equal(self.observation, other.observation)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Action:
    """An absolute setpoint answering observation `answers`, valid for `valid_ms` after receipt."""

    action: int
    answers: int = 0
    valid_ms: int = 200
    fallback: bool = False
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Proof of life, sent both ways by each side's working loop."""

    state: PeerState = PeerState.READY
    t_us: int = 0
    unsequenced: bool = False
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Reset:
    """Start a new episode; `seed` None keeps the device's own randomness."""

    seed: int | None = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Error:
    """A peer's one-line complaint, with a numeric code for machines."""

    code: int
    text: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Config:
    """Set one named device parameter to a number (absolute, never an increment)."""

    key: str
    value: float
    seq: int = 0


Message = Hello | Obs | Action | Heartbeat | Reset | Error | Config

_HELLO = struct.Struct("<BBIIHHHBB")
_OBS = struct.Struct("<If")
_OBS16 = struct.Struct("<Iff")
_ACTION = struct.Struct("<HHH")
_HEARTBEAT = struct.Struct("<IB")
_RESET = struct.Struct("<BI")
_ERROR = struct.Struct("<H")
_CONFIG = struct.Struct("<f")


class PayloadError(ValueError):
    """A payload that does not match its type's layout."""


def pack(msg: Message) -> tuple[MessageType, int, bytes]:
    """Serialise a message into (type, header flags, payload); raise ValueError if it cannot fit."""
    if isinstance(msg, Obs):
        return _pack_obs(msg)
    if isinstance(msg, Action):
        flags = Flags.ACTION_FALLBACK if msg.fallback else Flags.NONE
        return MessageType.ACTION, flags, _ACTION.pack(msg.answers & 0xFFFF, msg.action, msg.valid_ms)
    if isinstance(msg, Heartbeat):
        flags = Flags.UNSEQUENCED if msg.unsequenced else Flags.NONE
        return MessageType.HEARTBEAT, flags, _HEARTBEAT.pack(msg.t_us & 0xFFFFFFFF, msg.state)
    if isinstance(msg, Hello):
        return _pack_hello(msg)
    if isinstance(msg, Reset):
        return MessageType.RESET, Flags.NONE, _RESET.pack(msg.seed is not None, msg.seed or 0)
    if isinstance(msg, Error):
        text = _truncate_utf8(msg.text, MAX_ERROR_TEXT)
        return MessageType.ERROR, Flags.NONE, _ERROR.pack(msg.code) + bytes([len(text)]) + text
    if isinstance(msg, Config):
        key = msg.key.encode()
        if not key or len(key) > MAX_CONFIG_KEY:
            raise ValueError(f"config key must be 1-{MAX_CONFIG_KEY} bytes, got {len(key)}")
        return MessageType.CONFIG, Flags.NONE, _CONFIG.pack(msg.value) + bytes([len(key)]) + key
    raise TypeError(f"not a protocol message: {type(msg).__name__}")


def unpack(kind: MessageType, flags: int, seq: int, payload: bytes) -> Message:
    """Parse a payload of a known type; raise PayloadError when it does not match the layout."""
    try:
        return _UNPACK[kind](flags, seq, payload)
    except (struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise PayloadError(f"bad {kind.name} payload: {exc}") from None


def hello_prefix(payload: bytes) -> tuple[int, int, int]:
    """(major, minor, schema hash) of any version's HELLO: these six bytes never change."""
    if len(payload) < 6:
        raise PayloadError("HELLO shorter than its frozen prefix")
    major, minor, schema_hash = struct.unpack_from("<BBI", payload)
    return major, minor, schema_hash


def _pack_obs(msg: Obs) -> tuple[MessageType, int, bytes]:
    values = np.asarray(msg.observation).reshape(-1)
    flags = Flags.NONE
    if msg.terminated:
        flags |= Flags.OBS_TERMINATED
    if msg.truncated:
        flags |= Flags.OBS_TRUNCATED
    t_us = msg.t_us & 0xFFFFFFFF
    if msg.int16_scale > 0:
        scale = np.float32(msg.int16_scale)
        if not (np.isfinite(scale) and scale > 0 and np.all(np.isfinite(values))):
            raise ValueError("an int16 observation needs finite values and a finite positive float32 scale")
        # float32 arithmetic, as a device computes it: the same codes on both ends
        codes = np.clip(np.rint(values.astype(np.float32) / scale), -32768, 32767).astype("<i2")
        body = _OBS16.pack(t_us, msg.reward, msg.int16_scale) + codes.tobytes()
        flags |= Flags.OBS_INT16
    else:
        body = _OBS.pack(t_us, msg.reward) + values.astype("<f4").tobytes()
    if len(body) > MAX_PAYLOAD:
        raise ValueError(f"observation of {values.size} values does not fit one frame ({MAX_PAYLOAD} bytes)")
    return MessageType.OBS, flags, body


def _unpack_obs(flags: int, seq: int, payload: bytes) -> Obs:
    terminated, truncated = bool(flags & Flags.OBS_TERMINATED), bool(flags & Flags.OBS_TRUNCATED)
    if flags & Flags.OBS_INT16:
        t_us, reward, scale = _OBS16.unpack_from(payload)
        tail = payload[_OBS16.size :]
        if len(tail) % 2 or not (np.isfinite(scale) and scale > 0):
            raise ValueError("int16 observation needs an even tail and a positive scale")
        with np.errstate(over="ignore"):
            values = np.frombuffer(tail, "<i2").astype(np.float32) * np.float32(scale)
        if not np.all(np.isfinite(values)):
            raise ValueError("int16 codes times the scale overflow float32")
        return Obs(values, reward, terminated, truncated, t_us, scale, seq)
    t_us, reward = _OBS.unpack_from(payload)
    tail = payload[_OBS.size :]
    if len(tail) % 4:
        raise ValueError("float32 observation tail not a multiple of 4 bytes")
    values = np.frombuffer(tail, "<f4").astype(np.float32)
    return Obs(values, reward, terminated, truncated, t_us, 0.0, seq)


def _pack_hello(msg: Hello) -> tuple[MessageType, int, bytes]:
    device_id = msg.device_id.encode()
    if len(device_id) > MAX_DEVICE_ID:
        raise ValueError(f"device id longer than {MAX_DEVICE_ID} bytes")
    if len(msg.obs_shape) > MAX_OBS_DIMS or any(not 0 < d <= 0xFFFF for d in msg.obs_shape):
        raise ValueError(f"observation shape {msg.obs_shape} not describable (<= 8 dims of 1..65535)")
    head = _HELLO.pack(
        msg.major,
        msg.minor,
        msg.schema_hash,
        msg.capabilities,
        msg.n_actions,
        msg.safe_action,
        msg.heartbeat_ms,
        msg.obs_dtype,
        len(msg.obs_shape),
    )
    dims = struct.pack(f"<{len(msg.obs_shape)}H", *msg.obs_shape)
    flags = Flags.HELLO_REPLY_REQUESTED if msg.reply_requested else Flags.NONE
    return MessageType.HELLO, flags, head + dims + bytes([len(device_id)]) + device_id


def _unpack_hello(flags: int, seq: int, payload: bytes) -> Hello:
    major, minor, schema_hash, caps, n_actions, safe, heartbeat_ms, dtype, ndim = _HELLO.unpack_from(payload)
    at = _HELLO.size
    if ndim > MAX_OBS_DIMS:
        raise ValueError(f"{ndim} observation dimensions (at most {MAX_OBS_DIMS})")
    dims = struct.unpack_from(f"<{ndim}H", payload, at)
    if 0 in dims:
        raise ValueError("an observation dimension of 0")
    at += 2 * ndim
    id_len = payload[at]
    device_id = payload[at + 1 : at + 1 + id_len]
    if len(device_id) != id_len or at + 1 + id_len != len(payload) or id_len > MAX_DEVICE_ID:
        raise ValueError("device id length does not match the payload")
    return Hello(
        device_id.decode(),
        tuple(dims),
        n_actions,
        safe,
        ObsDtype(dtype),
        heartbeat_ms,
        Capability(caps),
        major,
        minor,
        schema_hash,
        bool(flags & Flags.HELLO_REPLY_REQUESTED),
        seq,
    )


def _counted_text(payload: bytes, at: int, limit: int) -> str:
    length = payload[at]
    text = payload[at + 1 : at + 1 + length]
    if len(text) != length or at + 1 + length != len(payload) or length > limit:
        raise ValueError("text length does not match the payload")
    return text.decode()


def _truncate_utf8(text: str, limit: int) -> bytes:
    return text.encode()[:limit].decode(errors="ignore").encode()


def _fixed(layout: struct.Struct, payload: bytes) -> tuple:
    if len(payload) != layout.size:
        raise ValueError(f"expected {layout.size} bytes, got {len(payload)}")
    return layout.unpack(payload)


def _unpack_action(flags: int, seq: int, payload: bytes) -> Action:
    answers, action, valid_ms = _fixed(_ACTION, payload)
    return Action(action, answers, valid_ms, bool(flags & Flags.ACTION_FALLBACK), seq)


def _unpack_heartbeat(flags: int, seq: int, payload: bytes) -> Heartbeat:
    t_us, state = _fixed(_HEARTBEAT, payload)
    return Heartbeat(PeerState(state), t_us, bool(flags & Flags.UNSEQUENCED), seq)


def _unpack_reset(flags: int, seq: int, payload: bytes) -> Reset:
    has_seed, seed = _fixed(_RESET, payload)
    if has_seed > 1:
        raise ValueError("has_seed must be 0 or 1")
    return Reset(seed if has_seed else None, seq)


def _unpack_error(flags: int, seq: int, payload: bytes) -> Error:
    (code,) = _ERROR.unpack_from(payload)
    return Error(code, _counted_text(payload, _ERROR.size, MAX_ERROR_TEXT), seq)


def _unpack_config(flags: int, seq: int, payload: bytes) -> Config:
    (value,) = _CONFIG.unpack_from(payload)
    key = _counted_text(payload, _CONFIG.size, MAX_CONFIG_KEY)
    if not key:
        raise ValueError("empty config key")
    return Config(key, value, seq)


_UNPACK = {
    MessageType.HELLO: _unpack_hello,
    MessageType.OBS: _unpack_obs,
    MessageType.ACTION: _unpack_action,
    MessageType.HEARTBEAT: _unpack_heartbeat,
    MessageType.RESET: _unpack_reset,
    MessageType.ERROR: _unpack_error,
    MessageType.CONFIG: _unpack_config,
}
