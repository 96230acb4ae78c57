"""Consistent Overhead Byte Stuffing: frames without 0x00 bytes, so 0x00 can delimit them.

A receiver that loses sync (noise, a false start, a cable plugged in mid-frame) finds the next
frame at the next 0x00: no length byte can make it swallow good frames. The overhead for a frame
of at most 254 bytes is exactly one byte.
"""

from __future__ import annotations


class CobsError(ValueError):
    """The bytes are not a valid COBS encoding."""


def cobs_encode(data: bytes) -> bytes:
    """Encode `data` into bytes free of 0x00 (the delimiter is not appended)."""
    out = bytearray()
    blocks = bytes(data).split(b"\x00")
    last = len(blocks) - 1
    for index, block in enumerate(blocks):
        full = 0
        while len(block) >= 254:  # a run of 254 non-zero bytes: code 0xFF, no implied zero
            out.append(0xFF)
            out += block[:254]
            block = block[254:]
            full += 1
        if index == last and full and not block:
            break  # the data ended exactly on a full run: no trailing code byte
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(encoded: bytes) -> bytes:
    """Invert `cobs_encode`; raise CobsError on a zero byte or a code that runs past the end.

    Decoding is the encoded bytes shifted by one with a zero where each later code byte stood;
    only 0xFF codes (runs of 254 non-zero bytes) imply no zero, and take the general path.
    """
    n = len(encoded)
    if 0 in encoded:
        raise CobsError("zero byte inside a COBS frame")
    out = bytearray(encoded[1:])
    at = 0
    while at < n:
        code = encoded[at]
        if code == 0xFF:
            return _decode_with_full_runs(encoded)
        at += code
        if at > n:
            raise CobsError("invalid COBS code")
        if at < n:
            out[at - 1] = 0
    return bytes(out)


def _decode_with_full_runs(encoded: bytes) -> bytes:
    out = bytearray()
    i, n = 0, len(encoded)
    while i < n:
        code = encoded[i]
        end = i + code
        if end > n:
            raise CobsError("invalid COBS code")
        out += encoded[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)
