"""How close a backend must come to the numpy IR, and the measurement itself (numpy only).

fp32: |dQ| <= 1e-5 * max(1, max |Q|). An absolute 1e-5 is below float32's own resolution for
the Q-values these tasks have (~40 on CartPole, ~95 on AntiJam, where one ulp is 4e-6 and
8e-6): numpy alone differs by 2e-5 to 5e-5 between a batched and a single-observation call of
the same 256-wide network, because BLAS sums in a different order.

Quantized policies: one output quantization step, i.e. the largest change of any Q-value that
one int8 code of the head's input can make (s_in * |w_q| * s_w, through the split head). A
backend that rounds one activation differently (a tie, or an ulp at a rounding boundary)
stays within it; a wrong scale, zero point or layout does not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_rl.layers import DuelingSum
from edge_rl.policy import Policy
from edge_rl.qlayers import DenseInt8

FP32_RTOL = 1e-5


def output_step(policy: Policy) -> float | None:
    """One quantization step of the Q-values, or None for a float head."""
    layers = policy.layers
    split = isinstance(layers[-1], DuelingSum)
    head = layers[-2] if split else layers[-1]
    if not isinstance(head, DenseInt8):
        return None
    per_code = np.abs(head.weight.astype(np.float64)) * head._multiplier[:, None].astype(np.float64)  # (rows, in)
    if split:
        per_code = per_code[:1] + per_code[1:]  # a code moves the shared row and an action row together
    return float(per_code.max())


def tolerance(policy: Policy, reference_q: np.ndarray) -> float:
    """The max |dQ| a backend may show against `reference_q` (the numpy IR's Q-values)."""
    step = output_step(policy)
    if step is not None:
        return step
    return FP32_RTOL * max(1.0, float(np.abs(reference_q).max()))


def compare(reference_q: np.ndarray, q: np.ndarray, tol: float) -> dict[str, Any]:
    """max |dQ|, greedy-action agreement and whether both meet the bar (|dQ| <= tol, agreement 100%)."""
    dq = float(np.abs(np.asarray(q, np.float64) - reference_q).max())
    agreement = float((np.asarray(q).argmax(axis=1) == reference_q.argmax(axis=1)).mean())
    return {
        "states": len(reference_q),
        "max_abs_dq": dq,
        "tolerance": tol,
        "agreement": agreement,
        "passed": bool(dq <= tol and agreement == 1.0),
    }
