"""FileOps doubles for the checkpoint tests: CrashFS (power cuts at every call, torn writes) and Faulty (I/O errors).

CrashFS follows SQLite's `src/test6.c`: the process sees volatile state, a power cut keeps only durable state,
and the test enumerates every state a cut may leave. Its model of one directory on a journalling file system:

- `write(fd)` changes a file's volatile bytes; `fsync(fd)` makes them durable.
- create, `replace`, `rename` and `unlink` change the volatile directory; `fsync_dir` makes the whole directory
  durable. Before that, a power cut keeps the directory as it was after any prefix of the pending operations
  (the journal commits them in order, so a later one never survives without the earlier ones).
- A file written since its last fsync may hold, after a cut, its old durable bytes, all the new bytes, a prefix,
  a prefix then zeros (size updated, blocks not written), a prefix then garbage, or zeros then the rest (pages
  written back out of order).
"""

from __future__ import annotations

import errno
import itertools
import os
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from edge_rl.daemon.checkpoint import FileOps


class PowerCut(BaseException):
    """The process stops here. A BaseException, so the store's `except OSError` cleanup cannot swallow it."""


@dataclass
class _Inode:
    data: bytearray  # what the process sees
    durable: bytes  # what a power cut keeps


class CrashFS(FileOps):
    """One directory in memory; `crash_after=k` lets k calls run, then every call raises PowerCut without effect."""

    def __init__(
        self,
        directory: Path,
        files: Mapping[str, bytes] | None = None,
        *,
        max_write: int | None = None,
        crash_after: int | None = None,
    ) -> None:
        self.directory = directory
        self.max_write = max_write  # a write takes at most this many bytes: exercises the short-write loop
        self.crash_after = crash_after
        self.calls: list[str] = []  # every call made, crashed or not
        self.crashed = False
        self._inodes: dict[int, _Inode] = {}
        self.entries: dict[str, int] = {}  # the volatile directory: name -> inode
        for name, data in (files or {}).items():
            self.entries[name] = self._new_inode(data, durable=True)
        self._dir_states = [dict(self.entries)]  # the durable directory, then one state per pending operation
        self._fds: dict[int, int] = {}
        self._next_fd = 3

    # what the test reads

    def files(self) -> dict[str, bytes]:
        """The directory as the process sees it now."""
        return {name: bytes(self._inodes[ino].data) for name, ino in self.entries.items()}

    def after_kill(self) -> CrashFS:
        """What a new process sees after SIGKILL: everything the kernel was told, durable or not."""
        return CrashFS(self.directory, self.files(), max_write=self.max_write)

    def power_cuts(self) -> Iterator[tuple[str, CrashFS]]:
        """Every state a power cut now may leave, each with a label naming the choices made."""
        pending = len(self._dir_states) - 1
        for prefix, entries in enumerate(self._dir_states):
            name_of = {ino: name for name, ino in entries.items()}
            dirty = [ino for ino in sorted(name_of) if self._inodes[ino].data != self._inodes[ino].durable]
            variants = [_torn(self._inodes[ino].durable, bytes(self._inodes[ino].data)) for ino in dirty]
            for choice in itertools.product(*variants):
                contents = {ino: self._inodes[ino].durable for ino in name_of}
                contents.update({ino: data for ino, (_, data) in zip(dirty, choice, strict=True)})
                label = f"{prefix} of {pending} pending directory ops durable"
                label += "".join(f"; {name_of[ino]}: {how}" for ino, (how, _) in zip(dirty, choice, strict=True))
                files = {name: contents[ino] for name, ino in entries.items()}
                yield label, CrashFS(self.directory, files, max_write=self.max_write)

    # FileOps

    def listdir(self, directory: Path) -> list[str]:
        self._call("listdir")
        if directory != self.directory:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(directory))
        return list(self.entries)

    def open_excl(self, path: Path) -> int:
        self._call("open_excl")
        name = self._name(path)
        if name in self.entries:
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
        ino = self._new_inode(b"", durable=False)
        self._change_dir(lambda: self.entries.__setitem__(name, ino))
        fd, self._next_fd = self._next_fd, self._next_fd + 1
        self._fds[fd] = ino
        return fd

    def write(self, fd: int, data: memoryview) -> int:
        self._call("write")
        chunk = bytes(data[: self.max_write] if self.max_write else data)
        self._inodes[self._fds[fd]].data += chunk
        return len(chunk)

    def fsync(self, fd: int) -> None:
        self._call("fsync")
        inode = self._inodes[self._fds[fd]]
        inode.durable = bytes(inode.data)

    def close(self, fd: int) -> None:
        self._call("close")
        del self._fds[fd]

    def replace(self, src: Path, dst: Path) -> None:
        self._call("replace")
        self._move(src, dst)

    def rename(self, src: Path, dst: Path) -> None:
        self._call("rename")
        self._move(src, dst)

    def fsync_dir(self, directory: Path) -> None:
        self._call("fsync_dir")
        self._dir_states = [dict(self.entries)]

    def unlink(self, path: Path) -> None:
        self._call("unlink")
        name = self._existing(path)
        self._change_dir(lambda: self.entries.pop(name))

    def read(self, path: Path, max_bytes: int) -> bytes | None:
        self._call("read")
        data = self._inodes[self.entries[self._existing(path)]].data
        return None if len(data) > max_bytes else bytes(data)

    # internals

    def _call(self, op: str) -> None:
        """Count the call, or die here (and at every later call)."""
        if self.crashed or len(self.calls) == self.crash_after:
            self.crashed = True
            raise PowerCut(op)
        self.calls.append(op)

    def _name(self, path: Path) -> str:
        if path.parent != self.directory:
            raise FileNotFoundError(errno.ENOENT, f"CrashFS holds only {self.directory}", str(path))
        return path.name

    def _existing(self, path: Path) -> str:
        name = self._name(path)
        if name not in self.entries:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        return name

    def _move(self, src: Path, dst: Path) -> None:
        source, target = self._existing(src), self._name(dst)
        self._change_dir(lambda: self.entries.__setitem__(target, self.entries.pop(source)))

    def _change_dir(self, change: Callable[[], object]) -> None:
        change()
        self._dir_states.append(dict(self.entries))

    def _new_inode(self, data: bytes, *, durable: bool) -> int:
        ino = len(self._inodes)
        self._inodes[ino] = _Inode(bytearray(data), bytes(data) if durable else b"")
        return ino


def _torn(old: bytes, new: bytes) -> list[tuple[str, bytes]]:
    """What a file holds after a power cut, if `old` was durable and `new` was written but not fsynced."""
    out = {"old bytes": old, "all new bytes": new}
    for k in sorted({1, len(new) // 4, len(new) // 2, 3 * len(new) // 4, len(new) - 1}):
        if 0 < k < len(new):
            tail = len(new) - k
            out[f"first {k} bytes"] = new[:k]
            out[f"first {k} bytes then zeros"] = new[:k] + bytes(tail)
            out[f"first {k} bytes then garbage"] = new[:k] + random.Random(k).randbytes(tail)
            out[f"zeros then bytes from {k}"] = bytes(k) + new[k:]
    return list(out.items())


class Faulty(FileOps):
    """Wraps `inner`: the `nth` call (1-based) of operation `op` raises OSError(`err`) once, without effect
    (except `close`, which closes anyway, as on Linux).

    `chunk` caps each write (short writes, so a cycle makes several write calls). `calls` records each call by name.
    """

    def __init__(
        self, inner: FileOps, op: str = "", nth: int = 0, err: int = errno.EIO, chunk: int | None = None
    ) -> None:
        self.inner, self.op, self.nth, self.err, self.chunk = inner, op, nth, err, chunk
        self.calls: list[str] = []

    def _check(self, op: str) -> None:
        self.calls.append(op)
        if op == self.op and self.calls.count(op) == self.nth:
            raise OSError(self.err, os.strerror(self.err))

    def listdir(self, directory: Path) -> list[str]:
        self._check("listdir")
        return self.inner.listdir(directory)

    def open_excl(self, path: Path) -> int:
        self._check("open_excl")
        return self.inner.open_excl(path)

    def write(self, fd: int, data: memoryview) -> int:
        self._check("write")
        return self.inner.write(fd, data[: self.chunk] if self.chunk else data)

    def fsync(self, fd: int) -> None:
        self._check("fsync")
        self.inner.fsync(fd)

    def close(self, fd: int) -> None:
        try:
            self.inner.close(fd)  # Linux releases the descriptor even when close() reports an error
        finally:
            self._check("close")

    def replace(self, src: Path, dst: Path) -> None:
        self._check("replace")
        self.inner.replace(src, dst)

    def fsync_dir(self, directory: Path) -> None:
        self._check("fsync_dir")
        self.inner.fsync_dir(directory)

    def unlink(self, path: Path) -> None:
        self._check("unlink")
        self.inner.unlink(path)

    def rename(self, src: Path, dst: Path) -> None:
        self._check("rename")
        self.inner.rename(src, dst)

    def read(self, path: Path, max_bytes: int) -> bytes | None:
        self._check("read")
        return self.inner.read(path, max_bytes)
