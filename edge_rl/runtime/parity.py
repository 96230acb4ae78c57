"""How close a backend must come to the numpy IR, and the measurement itself (numpy only).

Quantized policies (int8, 1-bit) must match exactly: every exported form performs the IR's
integer arithmetic and its float32 operations in the IR's order, so max |dQ| is 0 and anything
else is a bug (a wrong scale, rounding mode or summation order).

fp32: |dQ| <= 1e-6 * max |Q|. BLAS libraries sum in different orders (and batched and single
calls differ within one library), so float32 networks agree to a few ulps of the largest Q-value
(measured <= 6e-7 relative on the 48-wide test networks and the trained students), never exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_rl.policy import Policy

FP32_RTOL = 1e-6
QUANTIZED_KINDS = frozenset({"dense_int8", "dense_binary"})


def tolerance(policy: Policy, reference_q: np.ndarray) -> float:
    """The max |dQ| a backend may show against `reference_q` (the numpy IR's Q-values)."""
    if any(layer.kind in QUANTIZED_KINDS for layer in policy.layers) and not _float_tail(policy):
        return 0.0
    return FP32_RTOL * float(np.abs(reference_q).max(initial=0.0))


def _float_tail(policy: Policy) -> bool:
    """A float dense layer after the quantized body (an adapted head): float sums, so the fp32 rule."""
    kinds = [layer.kind for layer in policy.layers]
    last_quantized = max(i for i, k in enumerate(kinds) if k in QUANTIZED_KINDS)
    return "dense" in kinds[last_quantized + 1 :]


def compare(reference_q: np.ndarray, q: np.ndarray, tol: float) -> dict[str, Any]:
    """max |dQ|, greedy-action agreement and whether both meet the bar (|dQ| <= tol, agreement 100%)."""
    dq = float(np.abs(np.asarray(q, np.float64) - reference_q).max(initial=0.0))
    agreement = float((np.asarray(q).argmax(axis=1) == reference_q.argmax(axis=1)).mean()) if len(q) else 1.0
    return {
        "states": len(reference_q),
        "max_abs_dq": dq,
        "tolerance": tol,
        "agreement": agreement,
        "passed": bool(dq <= tol and agreement == 1.0),
    }
