"""Serial transport through pyserial's `serial_for_url`: real UARTs, ptys, `socket://`, `loop://`.

`serial:///dev/ttyUSB0?baud=115200` opens a device path; `socket://host:port`, `loop://` and
`rfc2217://` are handed to pyserial whole. Reads wait in `poll` on the port's descriptor (no
polling), writes give up after `write_timeout` so a peer that stops reading cannot stall the
loop; a half-written frame is harmless, the receiver drops it at the next delimiter.
"""

from __future__ import annotations

import os
import select
import time

from ..protocol import ForeignHello, FrameDecoder, Hello, Message, encode
from .base import LinkDown, LinkError, LinkUrl, Role, Transport, number

OPTIONS = ("baud", "write_timeout", "exclusive", "spin_us")


class SerialTransport(Transport):
    """One byte stream, one decoder, one sequence space per direction."""

    def __init__(self, port: str, baud: int, write_timeout: float, exclusive: bool, spin_us: float = 0.0) -> None:
        self.port, self.baud, self.write_timeout, self.exclusive = port, baud, write_timeout, exclusive
        self.spin_us = spin_us
        self.describe = port
        self.decoder = FrameDecoder()
        self.write_timeouts = 0
        self._seq = 0
        self._serial = None
        self._fd: int | None = None
        self._poller: select.poll | None = None

    def open(self) -> None:
        import serial

        try:
            self._serial = serial.serial_for_url(
                self.port, baudrate=self.baud, timeout=0, write_timeout=self.write_timeout, exclusive=self.exclusive
            )
        except ValueError as exc:  # a malformed URL or setting: retrying cannot help
            raise LinkError(f"{self.port}: {_reason(exc)}") from None
        except (serial.SerialException, OSError) as exc:
            raise LinkDown(_reason(exc)) from None  # the Link names the port; a USB adapter may appear later
        try:
            fd = self._serial.fileno()
        except (AttributeError, OSError, NotImplementedError):
            fd = None  # loop:// and friends: fall back to pyserial's own timeout
        self.attach(self._serial, fd)
        try:
            self._serial.write(b"\x00")  # ends whatever partial frame the peer holds from before
        except (serial.SerialException, OSError):
            pass  # the first real write will report a dead port

    def attach(self, port, fd: int | None) -> None:  # type: ignore[no-untyped-def]
        """Use an open `port` (pyserial-like) whose descriptor `fd` can be polled; a new byte stream."""
        self._serial, self._fd, self.decoder = port, fd, FrameDecoder()
        self._poller = None
        if fd is not None:
            self._poller = select.poll()
            self._poller.register(fd, select.POLLIN)

    def send(self, msg: Message) -> int:
        import serial

        seq = self._seq
        frame = encode(msg, seq)
        self._seq = (seq + 1) & 0xFFFF  # a frame lost on the way still used its number: the peer counts a gap
        try:
            rest = self._write_now(frame)
            if rest:
                self._port().write(rest)  # the kernel buffer is full: pyserial waits up to write_timeout
        except serial.SerialTimeoutException:
            self.write_timeouts += 1  # the peer is not reading: drop this frame, keep the loop moving
        except (serial.SerialException, OSError) as exc:
            raise LinkDown(f"{self.port}: {_reason(exc)}") from None
        return seq

    def _write_now(self, frame: bytes) -> bytes:
        """Write what the kernel takes at once with one syscall; return the rest (usually nothing)."""
        if self._fd is None:
            return frame
        port = self._port()
        try:
            written = os.write(self._fd, frame)
        except BlockingIOError:
            written = 0
        return frame[written:] if port is not None else b""

    def _ready(self, timeout: float) -> bool:
        """Wait for bytes: spin up to `spin_us` first (an answer due within microseconds skips a
        wake-up from an idle CPU), then sleep in poll()."""
        if self.spin_us and timeout > 0:
            end = time.perf_counter() + min(self.spin_us * 1e-6, timeout)
            while time.perf_counter() < end:
                if self._poller.poll(0):
                    return True
            timeout = max(timeout - self.spin_us * 1e-6, 0.0)
        return bool(self._poller.poll(timeout * 1000.0))

    def receive(self, timeout: float) -> list[Message | ForeignHello]:
        import serial

        port = self._port()
        try:
            if self._fd is not None:  # one poll and one read: pyserial's read() adds an ioctl and a select
                if not self._ready(timeout):
                    return []
                try:
                    data = os.read(self._fd, 65536)
                except BlockingIOError:
                    return []  # readiness without data: a spurious wake-up
                if not data:
                    raise LinkDown("the device reports readiness to read but returned no data (unplugged?)")
            else:
                port.timeout = timeout
                data = port.read(1)
                data += port.read(port.in_waiting)
                port.timeout = 0
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkDown(f"{self.port}: {_reason(exc)}") from None
        return self.decoder.feed(data)

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except (OSError, ValueError):
                pass  # already gone with the device
            self._serial = None
            self._fd = None

    def counters(self) -> dict[str, int]:
        return {**self.decoder.counters.as_dict(), "write_timeouts": self.write_timeouts}

    def _port(self):  # type: ignore[no-untyped-def]
        if self._serial is None:
            raise LinkDown(f"{self.port}: not open")
        return self._serial


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def open_transport(url: LinkUrl, local: Hello, role: Role) -> SerialTransport:
    """`serial:///dev/X?baud=N&write_timeout=S&exclusive=1&spin_us=U`, or any URL pyserial knows.

    `spin_us` (default 0) polls that long before sleeping when waiting for bytes: lower latency on a
    CPU that would otherwise idle, at the cost of up to that much CPU per wait.
    """
    options = url.take(OPTIONS)
    baud = int(number(options, "baud", 115200, 50, 16_000_000))
    write_timeout = number(options, "write_timeout", 0.02, 0.0, 10.0)
    exclusive = options.get("exclusive", "0") not in ("0", "", "false", "no")
    spin_us = number(options, "spin_us", 0.0, 0.0, 10_000.0)
    if url.scheme == "serial":
        if not url.path:
            raise LinkError(f"{url.url!r} names no device (e.g. serial:///dev/ttyUSB0?baud=115200)")
        port = url.path
    else:
        base, _, _ = url.url.partition("?")
        port = base  # pyserial parses its own schemes (socket://, loop://, rfc2217://)
    return SerialTransport(port, baud, write_timeout, exclusive, spin_us)
