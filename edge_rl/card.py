"""Model card: what a policy costs on a device, layer by layer, and how close it acts to a reference.

Like Larq's `models.summary`, so a quantized policy can be judged before it is flashed: how many
parameters, how many bytes they really take, what fp32 would take, and how much work one decision
costs. Conventions (numpy only; gymnasium is imported only by `compare`):

- params: logical parameters, `layer.n_params`: weights and biases of dense kinds (a DenseBinary
  counts out * in_features weights, the unpadded map its sign bits stand for); quantization
  scales and zero points are metadata, counted in bytes but not as parameters.
- bytes: the sum of `nbytes` of the layer's stored arrays, i.e. what the device holds.
- fp32_bytes: the same layer in fp32: 4 * (out * in + out) for dense kinds (weights + bias),
  4 * 2 * features for an affine LayerNorm, 0 for parameter-free layers.
- matrix_bytes: the weight matrix alone with its per-row scales (int8 codes + float32 scales,
  sign bits + float16 scales, or fp32 weights), against matrix_fp32_bytes = 4 * in * out: the
  compression of the weights proper, without biases and quantization parameters.
- MACs per decision: in * out for Dense and DenseInt8. DenseBinary counts out * n XNOR-popcount
  MACs over the padded width n, plus n * n for the D @ H rotation taken as the dense matmul the
  reference forward performs (a fast Walsh-Hadamard transform would need n * log2(n) additions).
  Elementwise layers (activation, layernorm, quantize) count 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_rl.errors import BadInput
from edge_rl.layers import Dense, Layer, LayerNorm
from edge_rl.policy import Policy
from edge_rl.qlayers import DenseBinary, DenseInt8
from edge_rl.table import format_table

PRECISION = {"dense": "fp32", "dense_int8": "int8", "dense_binary": "1-bit"}
COLUMNS = {
    "index": "layer",
    "kind": "kind",
    "shape": "shape",
    "precision": "precision",
    "params": "params",
    "bytes": "bytes",
    "fp32_bytes": "fp32 bytes",
    "macs": "MACs",
}


def _matrix_bytes(layer: Layer) -> int:
    """Bytes of the weight matrix itself with its per-row scales; biases excluded."""
    if isinstance(layer, DenseBinary):
        return int(layer.sign_bits.nbytes + layer.weight_scale.nbytes)
    if isinstance(layer, DenseInt8):
        return int(layer.weight.nbytes + layer.weight_scale.nbytes)
    return int(layer.weight.nbytes)  # type: ignore[attr-defined]


def _row(index: int, layer: Layer, width: int) -> dict[str, Any]:
    """The card row of `layer` when it is fed `width` features."""
    out = layer.out_features(width)
    row: dict[str, Any] = {
        "index": index,
        "kind": layer.kind,
        "shape": str(width),
        "precision": PRECISION.get(layer.kind, "-"),
        "params": layer.n_params,
        "bytes": sum(int(a.nbytes) for a in layer.arrays().values()),
        "fp32_bytes": 0,
        "macs": 0,
        "matrix_bytes": 0,
        "matrix_fp32_bytes": 0,
    }
    if isinstance(layer, (Dense, DenseInt8, DenseBinary)):
        row.update(shape=f"{width}x{out}", fp32_bytes=4 * (width * out + out), macs=width * out)
        row.update(matrix_bytes=_matrix_bytes(layer), matrix_fp32_bytes=4 * width * out)
    if isinstance(layer, DenseBinary):
        n = layer.n
        row.update(shape=f"{width}x{out} (n={n})", macs=out * n + n * n)
    elif isinstance(layer, LayerNorm) and layer.weight is not None:
        row.update(precision="fp32", fp32_bytes=4 * 2 * width)
    return row


def model_card(policy: Policy) -> dict[str, Any]:
    """Per-layer rows and totals (params, bytes, fp32 bytes, compression, MACs) as plain JSON data."""
    rows, width = [], policy.observation.size
    for i, layer in enumerate(policy.layers):
        rows.append(_row(i, layer, width))
        width = layer.out_features(width)
    weight_bytes = sum(r["bytes"] for r in rows)
    fp32_bytes = sum(r["fp32_bytes"] for r in rows)
    binary = [layer for layer in policy.layers if isinstance(layer, DenseBinary)]
    binary_bytes = sum(int(b.sign_bits.nbytes + b.weight_scale.nbytes) for b in binary)
    binary_fp32 = sum(4 * b.bias.shape[0] * b.in_features for b in binary)
    return {
        "env_id": policy.metadata.get("env_id"),
        "observation_size": policy.observation.size,
        "actions": policy.action.n,
        "precisions": sorted({r["precision"] for r in rows} - {"-"}),
        "params": sum(r["params"] for r in rows),
        "weight_bytes": weight_bytes,
        "fp32_bytes": fp32_bytes,
        "compression_ratio": fp32_bytes / weight_bytes if weight_bytes else 1.0,
        "macs": sum(r["macs"] for r in rows),
        "matrix_bytes": sum(r["matrix_bytes"] for r in rows),
        "matrix_fp32_bytes": sum(r["matrix_fp32_bytes"] for r in rows),
        "binary_weight_bytes": binary_bytes,
        "binary_fp32_bytes": binary_fp32,
        "binary_compression_ratio": binary_fp32 / binary_bytes if binary_bytes else None,
        "layers": rows,
    }


def format_card(card: dict[str, Any]) -> str:
    """The card as text: a contract line, the layer table and the totals; deterministic for snapshots."""
    head = f"{card['observation_size']} observations, {card['actions']} actions"
    head = f"{card['env_id']}: {head}" if card["env_id"] else head
    head += f" · precision {', '.join(card['precisions']) or '-'}"
    table = format_table(list(COLUMNS.values()), [[r[k] for k in COLUMNS] for r in card["layers"]])
    lines = [
        head,
        table,
        f"total params {card['params']:,} · weights {card['weight_bytes']:,} B (fp32 {card['fp32_bytes']:,} B)"
        f" · compression {card['compression_ratio']:.2f}x · {card['macs']:,} MACs/decision",
    ]
    if card["binary_compression_ratio"] is not None:
        lines.append(
            f"1-bit weight matrices {card['binary_weight_bytes']:,} B (fp32 {card['binary_fp32_bytes']:,} B)"
            f" · compression {card['binary_compression_ratio']:.2f}x"
        )
    return "\n".join(lines)


def compare(
    policy: Policy,
    reference: Policy,
    env_id: str,
    env_kwargs: dict[str, Any] | None,
    episodes: int,
    seed: int,
    states: np.ndarray | None = None,
) -> dict[str, Any]:
    """Greedy returns of both policies and how often they pick the same action.

    Agreement is measured on the states the reference visits when it runs greedily for the same
    seeded episodes (episode i reset with seed + i), i.e. where the reference would actually take
    the policy, unless `states` (a batch of observations) is given.
    """
    from edge_rl.evaluate import evaluate
    from edge_rl.gymenv import check_fits

    if episodes < 1:
        raise BadInput(f"episodes must be >= 1, got {episodes}")
    for name, p in (("policy", policy), ("reference", reference)):
        check_fits(p, env_id, env_kwargs, name)
    visited: list[np.ndarray] = []

    def reference_act(obs: np.ndarray) -> np.ndarray:
        visited.append(obs.copy())
        return reference.act(obs)

    reference_return = evaluate(reference_act, env_id, episodes, seed, env_kwargs).mean_return
    policy_return = evaluate(policy.act, env_id, episodes, seed, env_kwargs).mean_return
    states = np.concatenate(visited) if states is None else np.asarray(states, np.float32)
    if len(states) == 0:
        raise BadInput("no states to measure action agreement on")
    return {
        "return": policy_return,
        "reference_return": reference_return,
        "return_ratio": policy_return / reference_return if reference_return else None,
        "agreement": float(np.mean(policy.act(states) == reference.act(states))),
        "states": len(states),
    }
