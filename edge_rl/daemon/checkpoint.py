"""Crash-safe generations of one opaque payload on disk: after any crash a whole one loads, never half of one.

The recipe (the reliability notes, "Atomic checkpoints"): write `.ckpt.<gen>.tmp.<pid>` in the same directory (O_EXCL,
short-write loop), fsync it, rename it to `ckpt.<gen:08d>`, fsync the directory, and only then prune old
generations. Each file carries a header (magic, version, generation, length, schema hash) and a SHA-256 over
that header and the payload, so a torn, truncated, swapped or foreign file is recognised and quarantined as
`.bad` (evidence is kept, never deleted), and the next older generation is loaded instead.

Two kinds of crash, two guarantees. SIGKILL loses the process but not the kernel's page cache: the rename is
atomic, so the final name always holds a whole file and only stray temps are left (startup removes them).
Power loss also loses what was not fsynced: without the file fsync before the rename, ext4 may keep the new
name with garbage or zero-filled data; without the directory fsync, the rename itself may be lost, so after a
reboot the newest generation may be the one before the last `write()` that returned -- never older.

A failed fsync is not retried (PostgreSQL "fsyncgate", 2018): after EIO the kernel may have dropped the dirty
pages and marked them clean, so a second fsync can succeed with the data gone. The write fails, the temp is
removed, the previous generation stays the newest valid one, and the caller backs off and writes a fresh
payload later. All file operations go through `FileOps`, so tests can inject faults and simulate power cuts.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"EDGERLCK"
FORMAT_VERSION = 1
# magic, format version, generation, payload length, schema hash (crc32); then SHA-256 of these 30 bytes and the payload
_FIELDS = struct.Struct("<8sHQQI")
HEADER_SIZE = _FIELDS.size + hashlib.sha256().digest_size  # 62 bytes
DEFAULT_MAX_BYTES = 256 * 2**20

_FINAL = re.compile(r"ckpt\.(\d{8,})")
_BAD = re.compile(r"ckpt\.(\d{8,})\.bad")
_TEMP = re.compile(r"\.ckpt\.\d+\.tmp\.\d+")


class CheckpointError(OSError):
    """A checkpoint could not be written (the previous generation stays the newest valid one) or the directory
    cannot be read; `str(e)` is one line."""


class InvalidCheckpoint(ValueError):
    """A checkpoint file's bytes fail a check; `str(e)` is the short reason ("sha256 mismatch")."""


class FileOps:
    """The file operations a `CheckpointStore` uses, on the real OS; tests substitute doubles."""

    def listdir(self, directory: Path) -> list[str]:
        return os.listdir(directory)

    def open_excl(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def rename(self, src: Path, dst: Path) -> None:
        os.rename(src, dst)

    def read(self, path: Path, max_bytes: int) -> bytes | None:
        """The whole file, or None if it holds more than `max_bytes` (then it is not read)."""
        # O_NOFOLLOW: a symlink is not ours; O_NONBLOCK: a FIFO must not hang the daemon at startup
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        with open(fd, "rb", buffering=0) as f:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            if info.st_size > max_bytes:
                return None
            data = f.read()
        return None if len(data) > max_bytes else data


@dataclass(frozen=True)
class Recovered:
    """The newest valid generation found by `CheckpointStore.recover()`."""

    generation: int
    payload: bytes
    path: Path


def schema_hash(schema: str) -> int:
    return zlib.crc32(schema.encode("utf-8"))


def encode_header(generation: int, payload: bytes | memoryview, schema: str) -> bytes:
    """The header that precedes `payload` in the file of `generation`."""
    fields = _FIELDS.pack(MAGIC, FORMAT_VERSION, generation, len(payload), schema_hash(schema))
    digest = hashlib.sha256(fields)
    digest.update(payload)
    return fields + digest.digest()


def decode(data: bytes, generation: int, schema: str) -> bytes:
    """The payload of a file named for `generation`; raises InvalidCheckpoint naming the first failed check."""
    if len(data) < HEADER_SIZE:
        raise InvalidCheckpoint(f"{len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, gen, length, schash = _FIELDS.unpack_from(data)
    if magic != MAGIC:
        raise InvalidCheckpoint("bad magic")
    if version != FORMAT_VERSION:
        raise InvalidCheckpoint(f"unknown format version {version}")
    if schash != schema_hash(schema):
        raise InvalidCheckpoint(f"schema hash {schash:08x}, expected {schema_hash(schema):08x} for {schema}")
    if length != len(data) - HEADER_SIZE:
        raise InvalidCheckpoint(f"length {length} in header, {len(data) - HEADER_SIZE} bytes follow")
    payload = memoryview(data)[HEADER_SIZE:]
    digest = hashlib.sha256(memoryview(data)[: _FIELDS.size])
    digest.update(payload)
    if digest.digest() != data[_FIELDS.size : HEADER_SIZE]:
        raise InvalidCheckpoint("sha256 mismatch")
    if gen != generation:
        raise InvalidCheckpoint(f"generation {gen} in a file named for {generation}")
    return bytes(payload)


def final_name(generation: int) -> str:
    return f"ckpt.{generation:08d}"


def _generation(pattern: re.Pattern[str], name: str) -> int | None:
    """The generation in `name` if it matches `pattern` and is spelt as this module writes it (8+ digits)."""
    match = pattern.fullmatch(name)
    if match is None:
        return None
    gen = int(match.group(1))
    return gen if match.group(1) == f"{gen:08d}" else None


def _why(error: OSError) -> str:
    return (error.strerror or str(error)).replace("\n", " ")


def _listed(generations: list[int]) -> str:
    return ", ".join(str(gen) for gen in generations)


class CheckpointStore:
    """Generations `ckpt.00000001`, `ckpt.00000002`, ... of one payload in `directory`, the newest `keep` kept.

    Call `recover()` once at start, then `write()` for each new checkpoint. `generation` is the last generation
    written or recovered (0 = none). New generations are numbered after the highest one ever seen on disk,
    valid or quarantined, and a failed write uses up its number too, so no name that may exist (or may be
    evidence) is ever written again. One writer per directory; the directory must exist.
    """

    def __init__(
        self,
        directory: str | Path,
        keep: int = 3,
        schema: str = "edge-rl-daemon/1",
        ops: FileOps | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.schema = schema
        self.ops = ops if ops is not None else FileOps()
        self.max_bytes = max_bytes
        self.generation = 0
        self._last_used: int | None = None  # highest generation number used or seen; None until the directory is read

    def recover(self) -> tuple[Recovered | None, list[str]]:
        """Remove stray temps, load the newest valid generation, quarantine newer invalid ones; never raises for
        bad files. Returns the generation (None if there is no valid one) and one log line per action."""
        names = self._listdir()
        log: list[str] = []
        for name in names:
            if _TEMP.fullmatch(name):
                try:
                    self.ops.unlink(self.directory / name)
                    log.append(f"removed stray temp {name}")
                except OSError as e:
                    log.append(f"could not remove stray temp {name}: {_why(e)}")
        self.generation, self._last_used = 0, self._highest(names)
        skipped: list[int] = []
        for gen in sorted(self._finals(names), reverse=True):
            path = self.directory / final_name(gen)
            try:
                payload = self._load(path, gen)
            except InvalidCheckpoint as e:
                skipped.append(gen)
                log.append(self._quarantine(path, str(e)))
                continue
            choice = f"skipped generation {_listed(skipped)}, loaded {gen}" if skipped else f"loaded generation {gen}"
            log.append(choice)
            self.generation = gen
            return Recovered(gen, payload, path), log
        if skipped:
            log.append(f"skipped generation {_listed(skipped)}, no valid checkpoint in {self.directory}")
        else:
            log.append(f"no checkpoint in {self.directory}")
        return None, log

    def write(self, payload: bytes) -> int:
        """Make `payload` the newest generation, durably; returns its number. Raises CheckpointError (not retried)."""
        if self._last_used is None:
            self._last_used = self._highest(self._listdir())
        if HEADER_SIZE + len(payload) > self.max_bytes:
            raise CheckpointError(
                errno.EFBIG, f"checkpoint not written: {len(payload)} bytes is over max_bytes {self.max_bytes}"
            )
        gen = self._last_used = self._last_used + 1
        tmp = self.directory / f".ckpt.{gen}.tmp.{os.getpid()}"
        step = "create"
        try:
            fd = self.ops.open_excl(tmp)
            step = "write"
            try:
                self._write_all(fd, encode_header(gen, payload, self.schema))
                self._write_all(fd, payload)
                step = "fsync"
                self.ops.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    self.ops.close(fd)
                raise
            step = "close"
            self.ops.close(fd)
            step = "rename"
            self.ops.replace(tmp, self.directory / final_name(gen))
        except BaseException as e:
            if step != "create":  # an existing file of that name is not ours to remove
                self._discard(tmp)
            if isinstance(e, OSError):
                why = f"{step} {tmp.name} failed: {_why(e)}"
                raise CheckpointError(e.errno, f"checkpoint {gen} not written: {why}") from e
            raise
        try:
            self.ops.fsync_dir(self.directory)
        except OSError as e:
            raise CheckpointError(
                e.errno, f"checkpoint {gen} may not survive a power cut: fsync of {self.directory} failed: {_why(e)}"
            ) from e
        self.generation = gen
        self._prune()
        return gen

    def _listdir(self) -> list[str]:
        try:
            return self.ops.listdir(self.directory)
        except OSError as e:
            raise CheckpointError(e.errno, f"cannot list checkpoint directory {self.directory}: {_why(e)}") from e

    @staticmethod
    def _finals(names: list[str]) -> list[int]:
        return [gen for gen in (_generation(_FINAL, name) for name in names) if gen is not None]

    @classmethod
    def _highest(cls, names: list[str]) -> int:
        """The highest generation named by a final or a quarantined file (0 if none): numbering continues after it."""
        bad = [gen for gen in (_generation(_BAD, name) for name in names) if gen is not None]
        return max([*cls._finals(names), *bad], default=0)

    def _load(self, path: Path, gen: int) -> bytes:
        try:
            data = self.ops.read(path, self.max_bytes)
        except OSError as e:
            raise InvalidCheckpoint(f"unreadable: {_why(e)}") from e
        if data is None:
            raise InvalidCheckpoint(f"larger than max_bytes {self.max_bytes}")
        return decode(data, gen, self.schema)

    def _quarantine(self, path: Path, reason: str) -> str:
        try:
            self.ops.rename(path, path.with_name(path.name + ".bad"))
        except OSError as e:
            return f"could not quarantine {path.name} ({reason}): {_why(e)}"
        return f"quarantined {path.name} ({reason})"

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self.ops.write(fd, view)
            if written <= 0:
                raise OSError(errno.EIO, f"write made no progress ({len(view)} bytes left)")
            view = view[written:]

    def _discard(self, tmp: Path) -> None:
        try:
            self.ops.unlink(tmp)
        except OSError:
            pass  # best effort: recover() removes stray temps at the next start

    def _prune(self) -> None:
        """Remove all but the newest `keep` generations, oldest first; a failure is retried at the next write."""
        try:
            finals = sorted(self._finals(self.ops.listdir(self.directory)))
            for gen in finals[: -self.keep]:
                self.ops.unlink(self.directory / final_name(gen))
        except OSError:
            pass  # the new generation is durable; extra old files are harmless and pruned next time
