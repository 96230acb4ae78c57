"""OBS -> ACTION round trips over a pty and over MQTT: edge-rl's protocol against pymavlink.

A device sends an observation, the host answers with an action, the device sends the next
observation as soon as the action arrives. The host times each round trip (action written ->
next observation decoded) with the full link stack a daemon uses (`firmware_bridge.open_link`:
framing, CRC, sequence checks, session). Rows:

- raw echo: 41 bytes back and forth with os.read/os.write, no protocol (the floor of this pty);
- edge-rl, Python <-> Python: both ends `open_link` (serial over a pty);
- edge-rl, Python <-> C: the device is the reference C firmware's bench peer (firmware_bridge/firmware);
  once more with `spin_us=200` on the host's serial link (it polls up to 200 us before sleeping, so an
  answer due within microseconds does not wait for a wake-up from an idle CPU);
- pymavlink, Python <-> Python: ATTITUDE (28-byte payload, the size of a 5-float OBS) answered by
  SET_MODE (6 bytes, the size of an ACTION), MAVLink 2, `robust_parsing`;
- edge-rl over MQTT: both ends `open_link("mqtt://...")` through a Mosquitto on loopback (QoS 1).

Each device runs in its own process on the pty's master side; the host opens the slave with
pyserial. Every row runs twice: on idle CPUs, and with a nice-19 spinning process per core (CPUs
that never idle, as on a device whose learner runs; the spinners yield to the link at once).
Medians over --repeats runs of --trips round trips.

    python benchmarks/link.py                    # ~4 min
    python benchmarks/link.py --trips 5000       # quicker

Prints a table and writes benchmarks/results/link.json.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import time
import tty
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_rl.table import format_table  # noqa: E402
from firmware_bridge import open_link  # noqa: E402
from firmware_bridge.protocol import Action, Hello, Obs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FIRMWARE = ROOT / "firmware_bridge" / "firmware"
OBS_VALUES = 5  # OBS payload 28 bytes = MAVLink ATTITUDE's; on the wire 41 bytes with COBS and delimiter
HOST = Hello("bench-host", (OBS_VALUES,), 4, heartbeat_ms=100)
DEVICE = Hello("bench-device", (OBS_VALUES,), 4, heartbeat_ms=100)


# -- device peers (run in a child process: `link.py --peer KIND --fd N`) ------------------------------
def peer_echo(fd: int) -> None:
    while True:
        data = os.read(fd, 4096)
        if not data:
            return
        os.write(fd, data)


def peer_edge_rl(fd: int) -> None:
    """The device side with the same Link stack, over the pty master (a path pyserial cannot open)."""
    from firmware_bridge.links.serial_port import SerialTransport
    from firmware_bridge.links.session import Link

    class MasterFd(SerialTransport):
        def open(self) -> None:
            self.attach(_FdPort(fd), fd)

    serve_actions(Link(MasterFd("pty-master", 115200, 0.5, False), DEVICE, "device"))


def serve_actions(link) -> None:  # type: ignore[no-untyped-def]
    """Answer every ACTION with the next OBS; nudge with an OBS when the link is quiet after the handshake."""
    obs = np.arange(OBS_VALUES, dtype=np.float32)
    while True:
        msg = link.recv(0.1)
        if isinstance(msg, Action):
            link.send(Obs(obs + msg.action, reward=1.0))
        elif msg is None and link.ready:
            link.send(Obs(obs))


class _FdPort:
    """The few pyserial calls SerialTransport (and pymavlink's writer) make, on a raw file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @property
    def in_waiting(self) -> int:
        return 4096

    def read(self, n: int) -> bytes:
        return os.read(self.fd, n)

    def write(self, data: bytes) -> int:
        return os.write(self.fd, data)

    def close(self) -> None:
        pass


def peer_mavlink(fd: int) -> None:
    from pymavlink.dialects.v20 import common as mavlink

    out = _FdPort(fd)
    mav = mavlink.MAVLink(out, srcSystem=2, srcComponent=1)
    mav.robust_parsing = True
    mav.attitude_send(0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0)
    while True:
        for msg in mav.parse_buffer(os.read(fd, 4096)) or ():
            if msg.get_type() == "SET_MODE":
                mav.attitude_send(msg.custom_mode, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0)


PEERS: dict[str, Callable[[int], None]] = {"echo": peer_echo, "edge-rl": peer_edge_rl, "mavlink": peer_mavlink}


# -- host side -------------------------------------------------------------------------------------
def pty_pair() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


def spawn(cmd: list[str], master: int) -> subprocess.Popen:
    return subprocess.Popen(cmd, pass_fds=(master,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def python_peer(kind: str, master: int) -> subprocess.Popen:
    return spawn([sys.executable, __file__, "--peer", kind, "--fd", str(master)], master)


def time_echo(trips: int) -> list[float]:
    master, slave, _ = pty_pair()
    peer = python_peer("echo", master)
    frame = bytes(range(1, 41)) + b"\x00"
    times = []
    try:
        for _ in range(trips):
            t0 = time.perf_counter()
            os.write(slave, frame)
            got = 0
            while got < len(frame):
                got += len(os.read(slave, 4096))
            times.append(time.perf_counter() - t0)
    finally:
        peer.kill()
        os.close(master)
        os.close(slave)
    return times


def time_link(url: str, trips: int) -> list[float]:
    """Round trips through a host Link: action sent -> the observation it caused decoded."""
    times = []
    with open_link(url, HOST) as link:
        deadline = time.monotonic() + 10
        msg = None
        while not (link.ready and isinstance(msg, Obs)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no handshake on {url}: {list(link.events)}")
            msg = link.recv(0.1)
        for i in range(trips):
            t0 = time.perf_counter()
            link.send(Action(i % 4, answers=msg.seq))
            msg = link.recv(1.0)
            while not isinstance(msg, Obs):
                if msg is None:
                    raise RuntimeError(f"round trip {i} on {url} timed out: {link.counters()}")
                msg = link.recv(1.0)
            times.append(time.perf_counter() - t0)
        counters = link.counters()
    lost = {k: v for k, v in counters.items() if k in ("crc_errors", "malformed", "seq_gaps", "losses") and v}
    if lost:
        raise RuntimeError(f"{url}: frames lost in a clean run: {lost}")
    return times


def time_edge_rl_over_pty(trips: int, peer_command: Callable[[int], list[str]], query: str = "") -> list[float]:
    """A host Link on the pty's slave, the device `peer_command(master_fd)` on its master."""
    master, slave, path = pty_pair()
    peer = spawn(peer_command(master), master)
    try:
        return time_link(f"serial://{path}{query}", trips)
    finally:
        peer.kill()
        os.close(master)
        os.close(slave)


def time_edge_rl_python(trips: int) -> list[float]:
    return time_edge_rl_over_pty(trips, lambda fd: [sys.executable, __file__, "--peer", "edge-rl", "--fd", str(fd)])


def time_edge_rl_c(trips: int, query: str = "") -> list[float]:
    binary = build_c_peer()
    return time_edge_rl_over_pty(trips, lambda fd: [str(binary), "--fd", str(fd)], query)


def time_edge_rl_c_spin(trips: int) -> list[float]:
    return time_edge_rl_c(trips, "?spin_us=200")


def time_mavlink(trips: int) -> list[float]:
    from pymavlink.dialects.v20 import common as mavlink

    master, slave, _ = pty_pair()
    peer = python_peer("mavlink", master)
    mav = mavlink.MAVLink(_FdPort(slave), srcSystem=1, srcComponent=1)
    mav.robust_parsing = True
    times: list[float] = []
    try:
        pending: list = []
        while not pending:  # the first ATTITUDE
            pending = [m for m in mav.parse_buffer(os.read(slave, 4096)) or () if m.get_type() == "ATTITUDE"]
        for i in range(trips):
            t0 = time.perf_counter()
            mav.set_mode_send(2, 1, i)
            got = []
            while not got:
                if not select.select([slave], [], [], 1.0)[0]:
                    raise RuntimeError(f"pymavlink round trip {i} timed out")
                got = [m for m in mav.parse_buffer(os.read(slave, 4096)) or () if m.get_type() == "ATTITUDE"]
            times.append(time.perf_counter() - t0)
    finally:
        peer.kill()
        os.close(master)
        os.close(slave)
    return times


def time_mqtt(trips: int) -> list[float]:
    from tests.mosquitto import Mosquitto

    broker = Mosquitto(persistence=False, extra=("set_tcp_nodelay true",)).start()
    device = subprocess.Popen(
        [sys.executable, __file__, "--peer", "mqtt", "--url", f"mqtt://127.0.0.1:{broker.port}/bench"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        return time_link(f"mqtt://127.0.0.1:{broker.port}/bench", trips)
    finally:
        device.kill()
        broker.cleanup()


def peer_mqtt(url: str) -> None:
    serve_actions(open_link(url, DEVICE, role="device"))


def build_c_peer() -> Path:
    """The C firmware's bench peer, built with the firmware's Makefile (cc -O2)."""
    if shutil.which("cc") is None:
        raise RuntimeError("no C compiler: run .ci/system-deps")
    subprocess.run(["make", "-s", "-C", str(FIRMWARE), "bench"], check=True)
    return FIRMWARE / "build" / "bench_device"


ROWS: dict[str, tuple[str, Callable[[int], list[float]]]] = {
    "raw-echo": ("raw 41-byte echo, no protocol (floor)", time_echo),
    "edge-rl-py": ("edge-rl, Python <-> Python, pty", time_edge_rl_python),
    "edge-rl-c": ("edge-rl, Python <-> C firmware, pty", time_edge_rl_c),
    "edge-rl-c-spin": ("edge-rl, Python <-> C firmware, pty, spin_us=200", time_edge_rl_c_spin),
    "pymavlink": ("pymavlink, Python <-> Python, pty", time_mavlink),
    "mqtt": ("edge-rl over MQTT (Mosquitto, loopback)", time_mqtt),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trips", type=int, default=20_000, help="round trips per run (default: 20000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; medians reported (default: 3)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to run (default: {','.join(ROWS)})")
    parser.add_argument(
        "--background",
        default="idle,busy",
        help="CPU conditions to run every row in: idle (nothing else runs) and/or busy (a nice-19 spinning "
        "process per core keeps the CPUs out of their idle states, as a device's learner would; it yields "
        "to the link at once) (default: idle,busy)",
    )
    parser.add_argument("--peer", choices=(*PEERS, "spin", "mqtt"), help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer == "mqtt":
        return peer_mqtt(args.url)
    if args.peer == "spin":
        os.nice(19)
        while True:
            pass
    if args.peer:
        return PEERS[args.peer](args.fd)

    results: dict[str, dict] = {}
    table = []
    for background in args.background.split(","):
        spinners = (
            []
            if background == "idle"
            else [subprocess.Popen([sys.executable, __file__, "--peer", "spin"]) for _ in range(os.cpu_count() or 1)]
        )
        try:
            for key in args.rows.split(","):
                label, run = ROWS[key]
                runs = []
                for repeat in range(args.repeats):
                    print(f"{background}: {label}: run {repeat + 1}/{args.repeats}", file=sys.stderr, flush=True)
                    times = np.asarray(run(args.trips))
                    runs.append(
                        {
                            "p50_us": float(np.median(times) * 1e6),
                            "p99_us": float(np.percentile(times, 99) * 1e6),
                            "per_s": float(len(times) / times.sum()),
                        }
                    )
                summary = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                results.setdefault(background, {})[key] = {"label": label, **summary, "runs": runs}
                table.append([background, label, summary["p50_us"], summary["p99_us"], summary["per_s"]])
        finally:
            for spinner in spinners:
                spinner.kill()
    print(format_table(["CPUs", "link", "p50 us", "p99 us", "round trips/s"], table))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "link.json"
    out.write_text(json.dumps({"trips": args.trips, "repeats": args.repeats, "rows": results}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
