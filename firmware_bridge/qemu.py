"""The Cortex-M firmware (firmware/cortex_m) built for a policy.h and booted under qemu-system-arm.

`build_firmware(policy_h, out)` runs its Makefile; `boot(elf, uarts=2)` starts QEMU's lm3s6965evb
with each UART on a pty and returns a `Machine`; `Plant` speaks the firmware's plant protocol (send
OBS, read the ACTION answering it) on one of those UARTs.

No byte the firmware sends is lost: QEMU starts halted (`-S`), every pty is opened here, and only
then does QMP's `cont` start the CPU. (QEMU drops what a pty's guest writes while no process holds
the other end, so a later open would miss the HELLO sent at boot.) `Machine.release(i)` closes our
end of UART i for another program, such as `edge-rl run --link serial://PATH`, to open.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import serial

from .protocol import Action, Config, Error, FrameDecoder, Hello, Message, Obs, encode

FIRMWARE_DIR = Path(__file__).resolve().parent / "firmware" / "cortex_m"
TOOLS = {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
    "arm-none-eabi-nm": "binutils-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi",
    "qemu-system-arm": "qemu-system-arm",
}


class QemuError(RuntimeError):
    """A firmware that does not build, a QEMU that does not start, a controller that does not answer."""


@dataclass(frozen=True)
class Firmware:
    """A linked image and its section sizes in bytes (`arm-none-eabi-size`)."""

    elf: Path
    text: int
    data: int
    bss: int  # the stack region included

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise QemuError(f"{tool} not found: install {TOOLS[tool]} (apt-get install --no-install-recommends)")
    return path


VARIANTS = {"firmware": "all", "budget": "budget", "bench": "bench"}


def symbol(elf: Path, name: str) -> int:
    """The address of the global `name` in `elf` (arm-none-eabi-nm)."""
    nm = _require("arm-none-eabi-nm")
    out = subprocess.run([nm, str(elf)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise QemuError(f"no symbol {name} in {elf}")


def build_firmware(policy_h: Path, out: Path, name: str = "firmware", variant: str = "firmware") -> Firmware:
    """Compile and link `variant` for `policy_h` into `out`: the firmware, the same linked into
    32 KB flash / 8 KB RAM ("budget"), or the instruction-count benchmark ("bench", cortex_m/bench.c)."""
    _require("arm-none-eabi-gcc")
    args = ["make", "-s", "-C", str(FIRMWARE_DIR), VARIANTS[variant], f"POLICY={Path(policy_h).resolve()}"]
    result = subprocess.run(
        [*args, f"BUILD={Path(out).resolve()}", f"NAME={name}"], capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        lines = result.stderr.splitlines()
        first = next((line for line in lines if re.search(r"error|overflow", line)), lines[0] if lines else "")
        raise QemuError(f"firmware for {policy_h} does not build: {first.strip()}")
    elf = Path(out).resolve() / f"{name}{'' if variant == 'firmware' else '-' + variant}.elf"
    size = subprocess.run([_require("arm-none-eabi-size"), str(elf)], capture_output=True, text=True, check=True)
    sizes = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s", size.stdout, re.MULTILINE)
    if sizes is None:
        raise QemuError(f"no arm-none-eabi-size figures for {elf}: {size.stdout.strip()[:200]}")
    return Firmware(elf, *map(int, sizes.groups()))


class Machine:
    """A running QEMU: `uarts` are the pty paths of UART0, UART1...; `ports` our open ends of them."""

    def __init__(self, process: subprocess.Popen, qmp: _Qmp, workdir: Path, uarts: list[str]) -> None:
        self._process, self._qmp, self._workdir = process, qmp, workdir
        self.uarts = uarts
        self._console: str | None = None
        self.ports: list[serial.Serial | None] = []
        try:
            for path in uarts:
                self.ports.append(serial.Serial(path, 115200, timeout=0))
        except BaseException:
            for port in self.ports:
                port.close()
            raise

    def port(self, index: int) -> serial.Serial:
        port = self.ports[index]
        if port is None:
            raise QemuError(f"UART{index} was released")
        return port

    def release(self, index: int) -> str:
        """Close our end of UART `index` and return its pty path for another program to open."""
        port = self.ports[index]
        if port is not None:
            port.close()
            self.ports[index] = None
        return self.uarts[index]

    def read_floats(self, address: int, count: int) -> np.ndarray:
        """`count` float32 values of guest RAM at `address` (QMP pmemsave), e.g. a learner's weights."""
        dump = self._workdir / "memory.bin"
        self._qmp.run("pmemsave", val=address, size=4 * count, filename=str(dump))
        return np.frombuffer(dump.read_bytes(), "<f4").copy()

    @property
    def console(self) -> str:
        """QEMU's own messages and the firmware's semihosting text (so far, or until close)."""
        if self._console is None:
            return (self._workdir / "console.log").read_text(errors="replace")
        return self._console

    def wait(self, timeout: float) -> int:
        """The exit status once the firmware stops QEMU (semihosting exit); QemuError after `timeout`."""
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise QemuError(f"QEMU still running after {timeout} s; console: {self.console.strip()[-200:]}") from None

    def close(self) -> int:
        """Stop QEMU (if still running), reap it and close everything; returns its exit status."""
        for index in range(len(self.ports)):
            self.release(index)
        self._qmp.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._console is None:
            self._console = self.console
            shutil.rmtree(self._workdir, ignore_errors=True)
        return self._process.returncode

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def boot(elf: Path, uarts: int = 1, timeout: float = 10.0, count_instructions: bool = False) -> Machine:
    """Start `elf` on an emulated lm3s6965evb with `uarts` (0 to 2) UARTs on ptys, all opened before it runs.

    `count_instructions` runs it under `-icount shift=0`: guest time advances 1 ns per instruction
    (so a millisecond is a million instructions), no longer the host's time.
    """
    qemu = _require("qemu-system-arm")
    workdir = Path(tempfile.mkdtemp(prefix="edgerl-qemu-"))
    qmp_path = workdir / "qmp.sock"
    command = [qemu, "-M", "lm3s6965evb", "-nographic", "-S", "-kernel", str(elf)]
    command += ["-icount", "shift=0,sleep=off"] if count_instructions else []
    command += ["-semihosting-config", "enable=on,target=native", "-qmp", f"unix:{qmp_path},server=on,wait=off"]
    command += ["-serial", "pty"] * uarts
    with open(workdir / "console.log", "wb") as console:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
    qmp = None
    try:
        qmp = _Qmp(qmp_path, process, time.monotonic() + timeout)
        chardevs = {c["label"]: c["filename"] for c in qmp.run("query-chardev")}
        paths = [chardevs[f"serial{i}"].removeprefix("pty:") for i in range(uarts)]
        machine = Machine(process, qmp, workdir, paths)
    except BaseException:
        if qmp is not None:
            qmp.close()
        process.kill()
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        qmp.run("cont")
    except BaseException:
        machine.close()
        raise
    return machine


BENCH_LINE = re.compile(r"bench n=(\d+) calibrate_ms=(\d+) decide_ms=(\d+) features_ms=(\d+) learn_ms=(\d+)")


@dataclass(frozen=True)
class Instructions:
    """Instructions per repetition measured by a "bench" image; the learning figures are 0 without a head section."""

    decision: int  # edge_rl_act
    learning_step: int  # features, the head's forward and choice, the update
    update: int  # edgerl_headq_learn alone


def count_instructions(bench_elf: Path, timeout: float = 300.0) -> Instructions:
    """Run a "bench" image under -icount shift=0 and read its figures; refuses a run whose
    10-million-instruction calibration loop did not take 10 guest milliseconds."""
    with boot(bench_elf, 0, count_instructions=True) as machine:
        status = machine.wait(timeout)
    found = BENCH_LINE.search(machine.console)
    if status != 0 or found is None:
        raise QemuError(f"the bench firmware failed (status {status}): {machine.console.strip()[-200:]}")
    n, calibrate, decide, features, learn = map(int, found.groups())
    if abs(calibrate - 10) > 1:
        raise QemuError(f"10 million instructions took {calibrate} guest ms, not 10: the count is off")
    per = 1e6 / n  # a guest millisecond is a million instructions
    return Instructions(round(decide * per), round(learn * per), round(max(learn - features, 0) * per))


class _Qmp:
    """QEMU's machine protocol on a Unix socket: one JSON command per line, one reply each."""

    def __init__(self, path: Path, process: subprocess.Popen, deadline: float) -> None:
        while True:
            if process.poll() is not None:
                raise QemuError(f"qemu-system-arm exited with status {process.returncode} before QMP was up")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise QemuError(f"no QMP socket from qemu-system-arm at {path}") from None
                time.sleep(0.01)
        self.sock.settimeout(max(deadline - time.monotonic(), 1.0))
        self.reader = self.sock.makefile("r")
        try:
            self.reader.readline()  # the greeting
            self.run("qmp_capabilities")
        except BaseException:
            self.close()
            raise

    def run(self, command: str, **arguments: object) -> list | dict:
        """One command's result (asynchronous events on the way are skipped)."""
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            line = self.reader.readline()
            if not line:
                raise QemuError(f"QMP closed while waiting for {command}")
            reply = json.loads(line)
            if "error" in reply:
                raise QemuError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")
            if "return" in reply:
                return reply["return"]

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class Plant:
    """The environment's side of the firmware's plant protocol on one UART.

    Sends OBS and reads the controller's ACTION answering each non-terminal one (a terminal OBS
    gets none); every ERROR the controller sends is also kept in `errors`. `timeout` bounds the wait
    for one answer: generous, as a busy host stalls every emulator at once (2 s seen here).
    """

    def __init__(self, port: serial.Serial, timeout: float = 30.0) -> None:
        self.port, self.timeout = port, timeout
        self.decoder = FrameDecoder()
        self.errors: list[Error] = []
        self._seq = 0
        self._inbox: list[Message] = []

    def send(self, msg: Message) -> int:
        seq, self._seq = self._seq, (self._seq + 1) & 0xFFFF
        self.port.write(encode(msg, seq))
        return seq

    def hello(self) -> Hello:
        """Start a session and return the controller's HELLO answering it.

        HELLOs already received (the one sent at boot, earlier answers) are dropped first, so the
        answer is also a barrier: the controller has handled every frame sent before it.
        """
        self._receive(self.port.in_waiting)
        self._inbox = [msg for msg in self._inbox if not isinstance(msg, Hello)]
        self.send(Hello("plant", reply_requested=True))
        return self._expect(lambda m: isinstance(m, Hello), "a HELLO")

    def configure(self, key: str, value: float) -> None:
        self.send(Config(key, value))

    def act(
        self, observation: np.ndarray, reward: float = 0.0, terminated: bool = False, truncated: bool = False
    ) -> tuple[int, bool] | None:
        """Send one OBS; (action, fallback) from the ACTION answering it, or None for a terminal OBS."""
        seq = self.send(Obs(np.asarray(observation, np.float32), reward, terminated, truncated))
        if terminated or truncated:
            return None
        answer = self._expect(lambda m: isinstance(m, Action) and m.answers == seq, f"the ACTION answering OBS {seq}")
        return answer.action, answer.fallback

    def wait_error(self) -> Error:
        """The oldest ERROR from the controller not yet waited for."""
        return self._expect(lambda m: isinstance(m, Error), "an ERROR")

    def _expect(self, wanted: Callable[[Message], bool], what: str) -> Message:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, msg in enumerate(self._inbox):
                if wanted(msg):
                    return self._inbox.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise QemuError(f"no answer from the controller: waited {self.timeout} s for {what}")
            self.port.timeout = min(left, 0.05)
            self._receive(max(self.port.in_waiting, 1))

    def _receive(self, size: int) -> None:
        """Read up to `size` bytes (within the port's timeout) into the inbox; ERRORs are also kept in `errors`."""
        for msg in self.decoder.feed(self.port.read(size)):
            self._inbox.append(msg)
            if isinstance(msg, Error):
                self.errors.append(msg)
