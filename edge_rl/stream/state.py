"""A learner's state on disk: one file, `learner.npz` (arrays plus the scalars as JSON), never pickled.

One file written atomically is one unit: a crash or power cut leaves the previous state or the
new one, never the arrays of one step beside the scalars of another. `restore` rebuilds the
learner the state describes and continues bit for bit; a learner that adapts a deployed policy
is restored only onto that policy (the state records its digest).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_rl.atomic import write_atomic
from edge_rl.errors import BadInput
from edge_rl.stream.adapt import from_policy
from edge_rl.stream.learner import StreamQ
from edge_rl.stream.network import LayerSpec, StreamNet

STATE_FILE = "learner.npz"
SCALARS = "scalars.json"  # the member of learner.npz that holds the scalars, as UTF-8 JSON bytes
MAX_STATE_BYTES = 1 << 30


def restore(state: dict[str, Any], policy: Any = None) -> StreamQ:
    """The learner `state_dict` saved; a learner adapting a deployed policy needs that policy back.

    The network is rebuilt from the saved layers (scratch) or from `policy` (full, head), which
    must be the one adapted (its digest is in the state); then every piece of state is checked
    against it and loaded.
    """
    s = state["scalars"]
    settings = {k: s[k] for k in StreamQ.HYPERPARAMETERS}
    mode = s.get("mode", "scratch")
    if mode == "scratch":
        net = StreamNet([LayerSpec(int(i), int(o), bool(ln), act) for i, o, ln, act in s["layers"]])
        hidden, raw_tail = tuple(s["hidden"]), int(s["raw_tail"])
        learner = StreamQ(int(s["obs_dim"]), int(s["n_actions"]), hidden, raw_tail=raw_tail, net=net, **settings)
    else:
        if policy is None:
            raise BadInput(f"this learner state adapts a deployed policy ({mode}): pass that policy to restore it")
        if s.get("source") != policy.digest():
            raise BadInput("this learner state adapted another policy (its digest differs)")
        learner = from_policy(policy, mode, **settings)
    learner.load_state_dict(state)
    return learner


def save_state(learner: StreamQ, directory: Path) -> Path:
    """Write `directory/learner.npz` atomically; returns its path."""
    state = learner.state_dict()
    scalars = json.dumps(state["scalars"], allow_nan=False).encode("utf-8")
    buffer = io.BytesIO()
    np.savez(buffer, **state["arrays"], **{SCALARS: np.frombuffer(scalars, np.uint8)})
    path = Path(directory) / STATE_FILE
    write_atomic(path, buffer.getvalue())
    return path


def load_state(directory: Path, policy: Any = None) -> StreamQ:
    """The learner saved in `directory`; `policy` is the deployed policy it adapts, if it adapts one."""
    path = Path(directory) / STATE_FILE
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            raise BadInput(f"{path}: {path.stat().st_size} bytes is no learner state this project writes")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        scalars = json.loads(arrays.pop(SCALARS).tobytes().decode("utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{directory}: no learner state ({STATE_FILE} is missing)") from None
    except KeyError:
        raise BadInput(f"{path}: learner state without its scalars") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: learner state is damaged ({e})") from None
    if not isinstance(scalars, dict):
        raise BadInput(f"{path}: learner scalars are not a JSON object")
    try:
        return restore({"scalars": scalars, "arrays": arrays}, policy)
    except (KeyError, TypeError) as e:
        raise BadInput(f"{path}: learner state is incomplete ({e})") from None
