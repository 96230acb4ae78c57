"""A minimal edge-rl host for the firmware tests, speaking firmware_bridge.protocol over an inherited fd.

It sends HELLO (reply requested) at start, answers a HELLO that asks for one, and answers each OBS of a
compatible device with an ACTION valid for --valid-ms. After SIGCONT it keeps answering for
--rehello-after seconds, then sends a fresh HELLO: the device must ignore those ACTIONs in between.
With --blind-period it also sends an ACTION every that many seconds whatever the device said, to
check that the device, not the host, enforces "no actuation on a mismatch". Every event is logged
with a time.monotonic() stamp, the clock the device simulator logs with.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import time

import numpy as np

from firmware_bridge.protocol import (
    MAJOR,
    SCHEMA_HASH,
    Action,
    Error,
    ForeignHello,
    FrameDecoder,
    Hello,
    Message,
    Obs,
    encode,
)

N_CHANNELS = 8


class Host:
    def __init__(self, fd: int, log_path: str, valid_ms: int) -> None:
        self.fd = fd
        self.log_file = open(log_path, "w", buffering=1)
        self.valid_ms = valid_ms
        self.decoder = FrameDecoder()
        self.seq = 0
        self.compatible = False

    def log(self, text: str) -> None:
        self.log_file.write(f"t={time.monotonic():.6f} {text}\n")

    def send(self, make: type, **fields: object) -> None:
        os.write(self.fd, encode(make(**fields, seq=self.seq)))
        self.seq = (self.seq + 1) & 0xFFFF

    def hello(self, reply_requested: bool) -> None:
        self.send(Hello, device_id="test-host", reply_requested=reply_requested)

    def action(self, action: int, answers: int) -> None:
        self.send(Action, action=action, answers=answers, valid_ms=self.valid_ms)
        self.log(f"action={action} answers={answers}")

    def handle(self, msg: Message | ForeignHello) -> None:
        if isinstance(msg, ForeignHello):
            self.compatible = False
            self.log(f"foreign-hello {msg.version}")
        elif isinstance(msg, Hello):
            self.compatible = msg.major == MAJOR and msg.schema_hash == SCHEMA_HASH
            self.log(f"hello {msg.version} compatible={int(self.compatible)}")
            if msg.reply_requested:
                self.hello(reply_requested=False)
        elif isinstance(msg, Error):
            self.log(f"error code={msg.code} text={msg.text}")
        elif isinstance(msg, Obs):
            values = msg.observation
            if values.size % N_CHANNELS or not np.all((values >= 0) & (values <= 1)):  # (history + 1) x 8
                self.log(f"bad-obs shape={values.shape}")
            elif self.compatible:  # the least jammed channel of the newest scan
                self.action(int(np.argmin(values[:N_CHANNELS])), msg.seq)

    def receive(self, timeout: float) -> None:
        if select.select([self.fd], [], [], timeout)[0]:
            for msg in self.decoder.feed(os.read(self.fd, 65536)):
                self.handle(msg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="inherited descriptor of the link (a pty master)")
    parser.add_argument("--log", required=True)
    parser.add_argument("--valid-ms", type=int, default=100)
    parser.add_argument("--rehello-after", type=float, default=0.3, help="seconds after SIGCONT")
    parser.add_argument("--blind-period", type=float, default=0.0, help="0: only answer OBS of a compatible device")
    args = parser.parse_args()

    host = Host(args.fd, args.log, args.valid_ms)
    resumed: list[float] = []
    running = [True]
    signal.signal(signal.SIGCONT, lambda *_: resumed.append(time.monotonic()))
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    host.hello(reply_requested=True)
    host.log("start")
    next_blind = time.monotonic()
    rehello_done = False
    while running[0]:
        host.receive(0.005)
        now = time.monotonic()
        if resumed and not rehello_done and now - resumed[0] >= args.rehello_after:
            host.log("rehello")
            host.hello(reply_requested=True)
            rehello_done = True
        if args.blind_period and now >= next_blind:
            host.action(1, 0)
            next_blind = now + args.blind_period
    host.log(f"exit counters {host.decoder.counters.as_dict()}")


if __name__ == "__main__":
    main()
