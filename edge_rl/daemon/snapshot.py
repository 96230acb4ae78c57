"""What a checkpoint holds, and the thread that writes it so that fsync never delays an action.

One payload is one unit: the live learner, the incumbent's and last-good's learner snapshots (the
policies are rebuilt from them, exactly) and the daemon's JSON state (gate, counters, promotion
history, the bundle it belongs to), as one npz of plain arrays (never pickled). The loop hands a
copy of its state to `Persister.submit` and goes on; the newest submission wins if the disk is
slower than the interval. Results come back through `results()`, for the loop to report.
"""

from __future__ import annotations

import io
import json
import queue
import threading
import zipfile
from typing import Any

import numpy as np

from edge_rl.daemon.checkpoint import CheckpointError, CheckpointStore
from edge_rl.errors import BadInput

States = dict[str, dict[str, Any] | None]  # "learner", "incumbent", "last_good": learner state_dicts (None: bundle)
SLOTS = ("learner", "incumbent", "last_good")


def _blob(value: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(value, allow_nan=False).encode("utf-8"), np.uint8)


def pack(meta: dict[str, Any], states: States) -> bytes:
    arrays: dict[str, np.ndarray] = {"meta.json": _blob(meta)}
    for slot in SLOTS:
        state = states.get(slot)
        if state is not None:
            arrays[f"{slot}/scalars.json"] = _blob(state["scalars"])
            arrays.update({f"{slot}/{k}": v for k, v in state["arrays"].items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack(payload: bytes) -> tuple[dict[str, Any], States]:
    """The meta and learner states of a payload `pack` wrote; BadInput if it is not one."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop("meta.json").tobytes())
        states: States = {}
        for slot in SLOTS:
            key = f"{slot}/scalars.json"
            if key not in arrays:
                states[slot] = None
                continue
            prefix = f"{slot}/"
            own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix) and k != key}
            states[slot] = {"scalars": json.loads(arrays[key].tobytes()), "arrays": own}
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise BadInput(f"checkpoint payload is not the daemon's ({e})") from None
    if not isinstance(meta, dict) or states["learner"] is None:
        raise BadInput("checkpoint payload lacks the daemon's state or its learner")
    return meta, states


class Persister:
    """A writer thread over a CheckpointStore: `submit` never blocks; `flush` waits (at shutdown)."""

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store
        self._slot: tuple[dict[str, Any], States] | None = None
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._results: queue.SimpleQueue[tuple[int, str | None]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="edge-rl-checkpoint", daemon=True)
        self._thread.start()

    def submit(self, meta: dict[str, Any], states: States) -> None:
        with self._cond:
            self._slot = (meta, states)  # latest wins: an older state not yet written is superseded
            self._cond.notify()

    def results(self) -> list[tuple[int, str | None]]:
        """(generation, None) for each checkpoint written, (0, reason) for each that failed, since last asked."""
        out = []
        while not self._results.empty():
            out.append(self._results.get())
        return out

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted is written (or failed); False if `timeout` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._slot is None and not self._busy, timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._slot is not None or self._closed)
                if self._slot is None:
                    return
                job, self._slot, self._busy = self._slot, None, True
            try:
                self._results.put((self.store.write(pack(*job)), None))
            except (CheckpointError, OSError, ValueError) as e:
                self._results.put((0, str(e)))
            with self._cond:
                self._busy = False
                self._cond.notify_all()
