"""A learner's state on disk: learner.npz (arrays, never pickled) + learner.json (scalars).

Both are written atomically; `load_state` continues bit for bit. A learner that adapts a
deployed policy is restored only onto that policy (the state records its digest).
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
from edge_rl.stream.learner import StreamQ

ARRAYS, SCALARS = "learner.npz", "learner.json"


def save_state(learner: StreamQ, directory: Path) -> None:
    state = learner.state_dict()
    buffer = io.BytesIO()
    np.savez(buffer, **state["arrays"])
    write_atomic(directory / ARRAYS, buffer.getvalue())
    write_atomic(directory / SCALARS, json.dumps(state["scalars"], indent=1, allow_nan=False) + "\n")


def load_state(directory: Path, policy: Any = None) -> StreamQ:
    """The learner saved in `directory`; `policy` is the deployed policy it adapts, if it adapts one."""
    try:
        scalars = json.loads((directory / SCALARS).read_text())
        with np.load(directory / ARRAYS, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError as e:
        raise BadInput(f"{directory}: no learner state ({e.filename} is missing)") from None
    except (ValueError, OSError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{directory}: learner state is damaged ({e})") from None
    if not isinstance(scalars, dict):
        raise BadInput(f"{directory}/{SCALARS}: not a JSON object")
    try:
        return StreamQ.from_state_dict({"scalars": scalars, "arrays": arrays}, policy)
    except (KeyError, TypeError) as e:
        raise BadInput(f"{directory}: learner state is incomplete ({e})") from None
