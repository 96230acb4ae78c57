"""Run a policy on a device: the numpy IR, ONNX Runtime or LiteRT behind one interface (never torch).

    backend, bundle, report = load_bundle("bundle/")   # checked, verified, fastest passing backend
    with backend:
        backend.q_values(obs)   # (n,) for one observation, (batch, n) for a batch
        backend.act(obs)        # int, or int64 (batch,)

Every backend checks observations with `ObservationSpec.batch` first (shape, NaN, infinity) and
runs on one thread: on a Pi the other cores belong to the control loop and the link.
`verify_bundle` runs every backend and kernel set on a bundle's golden I/O (`verify`), within
the tolerance of `parity`.
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
from edge_rl.runtime.verify import make_backend, verify_bundle

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "LiteRTBackend",
    "NumpyBackend",
    "OnnxBackend",
    "available_backends",
    "load_bundle",
    "make_backend",
    "verify_bundle",
]
