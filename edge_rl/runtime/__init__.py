"""Run a policy on a device: the numpy IR, ONNX Runtime or LiteRT behind one interface (never torch).

    backend, bundle, report = load_bundle("bundle/")   # checked, verified, fastest passing backend
    backend = OnnxBackend(model_bytes, observation, action)
    backend.q_values(obs)   # (n,) for one observation, (batch, n) for a batch
    backend.act(obs)        # int, or int64 (batch,)

Every backend checks observations with `ObservationSpec.batch` first (shape, NaN, infinity) and
runs on one thread: on a Pi the other cores belong to the control loop and the link.
"""

from edge_rl.runtime.backends import (
    BACKENDS,
    Backend,
    BackendUnavailable,
    LiteRTBackend,
    NumpyBackend,
    OnnxBackend,
    available_backends,
)
from edge_rl.runtime.loader import load_bundle

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "LiteRTBackend",
    "NumpyBackend",
    "OnnxBackend",
    "available_backends",
    "load_bundle",
]
