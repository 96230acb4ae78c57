"""Run every backend of a checked bundle on its golden I/O and extra states; pick the fastest that passed.

Golden I/O is compared with the Q-values recorded at export time (so a device whose numpy or
runtime computes differently is caught); the extra states with the numpy IR run here and now.
Extra states need no environment: they are golden observations jittered by the policy's own
normalisation spread, or a batch the caller recorded (`states`). Runs on the device: numpy and
the runtimes only.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from edge_rl.errors import BadInput
from edge_rl.runtime.backends import BACKENDS, Backend, BackendUnavailable, LiteRTBackend, NumpyBackend, OnnxBackend
from export.bundle import Bundle
from export.parity import compare, tolerance

BACKEND_FILES = {"onnxruntime": "model.onnx", "litert": "model.tflite"}


def make_backend(name: str, bundle: Bundle) -> Backend:
    """The backend `name` on the bundle's verified bytes; BackendUnavailable if it cannot run here."""
    policy = bundle.policy
    if name == "numpy":
        return NumpyBackend(policy)
    if name not in BACKEND_FILES:
        raise BadInput(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    data = bundle.files.get(BACKEND_FILES[name])
    if data is None:
        raise BackendUnavailable(f"the bundle has no {BACKEND_FILES[name]}")
    if name == "onnxruntime":
        return OnnxBackend(data, policy.observation, policy.action)
    return LiteRTBackend(data, policy.observation, policy.action, builtin_kernels=needs_builtin_kernels(policy))


def needs_builtin_kernels(policy) -> bool:
    """1-bit layers take a square root, which XNNPACK rounds differently (see LiteRTBackend)."""
    return any(layer.kind == "dense_binary" for layer in policy.layers)


def golden(bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
    """The recorded observations (N, *obs_shape) and their Q-values (N, n) from the manifest."""
    g = bundle.manifest.get("golden", {})
    try:
        obs = np.asarray(g["observations"], np.float32).reshape(-1, *bundle.policy.observation.shape)
        q = np.asarray(g["q_values"], np.float32).reshape(len(obs), bundle.policy.action.n)
    except (KeyError, TypeError, ValueError) as e:
        raise BadInput(f"manifest golden I/O is malformed: {e}") from None
    return obs, q


def jittered_states(bundle: Bundle, n: int, seed: int = 0) -> np.ndarray:
    """`n` states around the golden observations, spread by the normalisation's standard deviation."""
    obs, _ = golden(bundle)
    spec = bundle.policy.observation
    rng = np.random.default_rng(seed)
    std = np.sqrt(spec.var + spec.eps)
    states = obs[rng.integers(0, len(obs), n)] + rng.normal(size=(n, *spec.shape)).astype(np.float32) * 0.5 * std
    return np.clip(states, spec.low, spec.high).astype(np.float32)


def latency_us(backend: Backend, obs: np.ndarray, calls: int = 300) -> float:
    """Median microseconds of one single-observation `act` call."""
    for _ in range(30):
        backend.act(obs)
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        backend.act(obs)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def verify_bundle(
    bundle: Bundle,
    backends: list[str] | None = None,
    states: np.ndarray | None = None,
    extra: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per backend: golden and extra-state comparisons, latency, and `passed`; plus the overall verdict.

    `backends=None` means every backend the bundle has files for; a named backend that cannot
    run here fails the verification, an unnamed one is reported as unavailable.
    """
    names = backends or ["numpy", *(b for b, f in BACKEND_FILES.items() if f in bundle.files)]
    golden_obs, golden_q = golden(bundle)
    extra_states = jittered_states(bundle, extra, seed) if states is None else states
    reference = NumpyBackend(bundle.policy).q_values(extra_states) if len(extra_states) else golden_q[:0]
    tol = tolerance(bundle.policy, np.concatenate([golden_q, reference]))
    results: dict[str, Any] = {}
    for name in names:
        try:
            backend = make_backend(name, bundle)
        except BackendUnavailable as e:
            results[name] = {"available": False, "reason": str(e), "passed": backends is None}
            continue
        g = compare(golden_q, backend.q_values(golden_obs), tol)
        x = compare(reference, backend.q_values(extra_states), tol) if len(extra_states) else None
        results[name] = {
            "available": True,
            "golden": g,
            "extra": x,
            "latency_us": latency_us(backend, golden_obs[0]),
            "passed": g["passed"] and (x is None or x["passed"]),
        }
    passed = [n for n, r in results.items() if r["available"] and r["passed"]]
    fastest = min(passed, key=lambda n: results[n]["latency_us"]) if passed else None
    return {
        "passed": all(r["passed"] for r in results.values()),
        "tolerance": tol,
        "golden_states": len(golden_obs),
        "extra_states": len(extra_states),
        "backends": results,
        "fastest": fastest,
    }
