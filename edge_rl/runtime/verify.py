"""Run every backend of a checked bundle on its golden I/O and extra states; pick the fastest that passed.

Golden I/O is compared with the Q-values recorded at export time (so a device whose numpy or
runtime computes differently is caught); the extra states with the numpy IR run here and now.
Extra states need no environment: they are golden observations jittered by the policy's own
normalisation spread, or a batch the caller recorded (`states`).

Every kernel set the interpreter offers is run. LiteRT's XNNPACK delegate is an optimisation of
the same file as the builtin kernels: where it does not reproduce the IR (it requantizes int8 in
float and its SQRT is not correctly rounded), its deviation is reported and it is never chosen,
but the bundle still verifies. Every other backend must pass. Runs on the device: numpy and the
runtimes only.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from edge_rl.bundle import Bundle
from edge_rl.errors import BadInput, BundleError, ModelError
from edge_rl.runtime.backends import (
    BACKENDS,
    Backend,
    BackendUnavailable,
    LiteRTBackend,
    NumpyBackend,
    OnnxBackend,
)
from edge_rl.runtime.parity import compare, tolerance

BACKEND_FILES = {"onnxruntime": "model.onnx", "litert": "model.tflite", "litert-builtin": "model.tflite"}
OPTIONAL = frozenset({"litert"})  # reported when it deviates, never chosen then, never failing the bundle


def make_backend(name: str, bundle: Bundle) -> Backend:
    """The backend `name` on the bundle's verified bytes.

    BackendUnavailable if its runtime cannot run here; BundleError (damaged) if the runtime
    runs but cannot load the bundle's file.
    """
    policy = bundle.policy
    if name == "numpy":
        return NumpyBackend(policy)
    if name not in BACKEND_FILES:
        raise BadInput(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    file = BACKEND_FILES[name]
    data = bundle.files.get(file)
    if data is None:
        raise BackendUnavailable(f"the bundle has no {file}")
    try:
        if name == "onnxruntime":
            return OnnxBackend(data, policy.observation, policy.action)
        return LiteRTBackend(data, policy.observation, policy.action, builtin_kernels=name == "litert-builtin")
    except ModelError as e:
        raise BundleError(f"bundle file {file} is damaged: {e}") from None


def jittered_states(bundle: Bundle, n: int, seed: int = 0) -> np.ndarray:
    """`n` states around the golden observations, spread by the normalisation's standard deviation."""
    obs = bundle.golden.observations
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


def _check(name: str, backend: Backend, golden_obs, golden_q, states, reference, tol: float) -> dict[str, Any]:
    g = compare(golden_q, backend.q_values(golden_obs), tol)
    x = compare(reference, backend.q_values(states), tol) if len(states) else None
    return {
        "available": True,
        "optional": name in OPTIONAL,
        "golden": g,
        "extra": x,
        "latency_us": latency_us(backend, golden_obs[0]),
        "passed": g["passed"] and (x is None or x["passed"]),
    }


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
    if extra < 0:
        raise BadInput(f"--extra must be >= 0, got {extra}")
    names = backends or ["numpy", *(b for b, f in BACKEND_FILES.items() if f in bundle.files)]
    golden_obs, golden_q = bundle.golden.observations, bundle.golden.q_values
    extra_states = jittered_states(bundle, extra, seed) if states is None else states
    reference = NumpyBackend(bundle.policy).q_values(extra_states) if len(extra_states) else golden_q[:0]
    tol = tolerance(bundle.policy, np.concatenate([golden_q, reference]))
    results: dict[str, Any] = {}
    for name in names:
        try:
            backend = make_backend(name, bundle)
        except BackendUnavailable as e:
            results[name] = {
                "available": False,
                "optional": name in OPTIONAL,
                "reason": str(e),
                "passed": backends is None,
            }
            continue
        with backend:
            results[name] = _check(name, backend, golden_obs, golden_q, extra_states, reference, tol)
    passed = [n for n, r in results.items() if r["available"] and r["passed"]]
    return {
        "passed": all(r["passed"] or (r["optional"] and backends is None) for r in results.values()),
        "tolerance": tol,
        "golden_states": len(golden_obs),
        "extra_states": len(extra_states),
        "backends": results,
        "fastest": min(passed, key=lambda n: results[n]["latency_us"]) if passed else None,
    }
