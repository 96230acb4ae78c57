"""The manifest schema: what a bundle says about itself, and the checks that it says it truly.

The manifest is written by `export` on the training box and read by every device, so this one
module holds both directions: `describe` turns a policy into the manifest's spec entries, and
`check_describes` refuses a manifest whose entries are not exactly what the bundle's IR says
(an edited manifest over an untouched IR must never verify). JSON is parsed strictly: no
duplicate keys (the last one would silently win), no NaN or Infinity, integers that are not
booleans. Golden I/O must have at least `MIN_GOLDEN` finite rows whose actions are the first
argmax of their Q-values, so a device never compares against a table that contradicts itself.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_rl.errors import BadInput, BundleError, ExitCode
from edge_rl.policy import Policy

FORMAT = "edge-rl-bundle"
SCHEMA_VERSION = 1
MIN_GOLDEN = 64
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def precision(policy: Policy) -> str:
    """fp32, int8 or 1bit: the most compressed kind of dense layer in the policy."""
    kinds = {layer.kind for layer in policy.layers}
    return "1bit" if "dense_binary" in kinds else "int8" if "dense_int8" in kinds else "fp32"


def _floats(values: np.ndarray) -> list[float | str]:
    """float32 values as JSON (repr round-trips them exactly); infinities as "inf" / "-inf"."""
    return [
        float(v) if np.isfinite(v) else ("inf" if v > 0 else "-inf") for v in np.asarray(values, np.float64).ravel()
    ]


def describe(policy: Policy) -> dict[str, Any]:
    """The manifest entries that restate the IR's contract: observation, action and precision."""
    obs, act = policy.observation, policy.action
    return {
        "precision": precision(policy),
        "observation": {
            "shape": list(obs.shape),
            "low": _floats(obs.low),
            "high": _floats(obs.high),
            "mean": _floats(obs.mean),
            "var": _floats(obs.var),
            "clip": obs.clip,
            "eps": obs.eps,
            "names": list(obs.names),
        },
        "action": {"n": act.n, "names": list(act.names), "safe": act.safe},
    }


def build(
    policy: Policy,
    golden_states: np.ndarray,
    formats: list[str],
    bundle_version: int | None = None,
    card: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A manifest for `policy` (its file table is added when the files are written).

    Golden I/O is the numpy IR's own output on `golden_states` (>= MIN_GOLDEN raw observations);
    the version defaults to Unix time, so later bundles are newer. The card summary and the
    provenance are the training box's to give.
    """
    golden_states = np.asarray(golden_states, np.float32)
    if len(golden_states) < MIN_GOLDEN:
        raise BadInput(f"need at least {MIN_GOLDEN} golden observations, got {len(golden_states)}")
    if bundle_version is not None and not is_count(bundle_version):
        raise BadInput(f"bundle version must be an integer >= 0, got {bundle_version!r}")
    q = policy.q_values(golden_states)
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "bundle_version": int(bundle_version if bundle_version is not None else time.time()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "formats": list(formats),
        **describe(policy),
        "card": card or {},
        "provenance": provenance or {},
        "golden": {
            "observations": golden_states.astype(np.float64).tolist(),
            "q_values": q.astype(np.float64).tolist(),
            "actions": q.argmax(axis=1).tolist(),
        },
    }


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise BundleError(f"manifest.json has a duplicate key {duplicate!r}")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise BundleError(f"manifest.json holds {name}, which JSON does not allow")


def is_count(value: Any) -> bool:
    """A non-negative JSON integer (a boolean is not one, though Python says it is an int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse(data: bytes) -> dict[str, Any]:
    """The manifest as a dict, with its format, schema version, version and file table checked."""
    try:
        manifest = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BundleError(f"manifest.json is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"manifest.json is not an {FORMAT} manifest", ExitCode.UNKNOWN_SCHEMA)
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise BundleError(
            f"bundle schema version {version!r} is not supported (this edge-rl reads {SCHEMA_VERSION})",
            ExitCode.UNKNOWN_SCHEMA,
        )
    if not is_count(manifest.get("bundle_version")):
        raise BundleError(f"manifest bundle_version {manifest.get('bundle_version')!r} is not an integer >= 0")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError("manifest.json lacks its file table")
    for name, entry in files.items():
        ok = isinstance(entry, dict) and set(entry) == {"sha256", "bytes"} and is_count(entry["bytes"])
        if not ok or not isinstance(entry["sha256"], str) or not SHA256_HEX.fullmatch(entry["sha256"]):
            raise BundleError(f"manifest entry for {name!r} must be {{sha256: 64 hex digits, bytes: integer >= 0}}")
    return manifest


def check_describes(manifest: dict[str, Any], policy: Policy) -> None:
    """Refuse a manifest whose observation, action or precision entries differ from the IR's."""
    for key, truth in describe(policy).items():
        if manifest.get(key) != truth:
            raise BundleError(f"manifest {key} does not match the bundle's policy IR (edited manifest?)")


@dataclass(frozen=True)
class Golden:
    """Recorded observations (N, *obs_shape) float32, their Q-values (N, n) float32 and greedy actions (N,)."""

    observations: np.ndarray
    q_values: np.ndarray
    actions: np.ndarray


def golden(manifest: dict[str, Any], policy: Policy) -> Golden:
    """The golden I/O table, refused unless it is large, finite, well-shaped and self-consistent."""
    table = manifest.get("golden")
    if not isinstance(table, dict) or set(table) != {"observations", "q_values", "actions"}:
        raise BundleError("manifest golden I/O must have observations, q_values and actions")
    shape, n = policy.observation.shape, policy.action.n
    try:
        obs = np.array(table["observations"], np.float32)
        q = np.array(table["q_values"], np.float32)
        actions = np.array(table["actions"])
    except (TypeError, ValueError, OverflowError):
        raise BundleError("manifest golden I/O holds ragged or non-numeric rows") from None
    rows = len(obs) if obs.ndim else 0
    if rows < MIN_GOLDEN:
        raise BundleError(f"manifest golden I/O has {rows} rows; a bundle carries at least {MIN_GOLDEN}")
    if obs.shape != (rows, *shape) or q.shape != (rows, n) or actions.shape != (rows,):
        raise BundleError(f"manifest golden I/O shapes {obs.shape}, {q.shape}, {actions.shape} do not fit the policy")
    if actions.dtype.kind not in "iu" or not (np.isfinite(obs).all() and np.isfinite(q).all()):
        raise BundleError("manifest golden I/O must hold finite values and integer actions")
    if not (actions == q.argmax(axis=1)).all():
        raise BundleError("manifest golden actions are not the greedy actions of its golden Q-values")
    return Golden(obs, q, actions.astype(np.int64))
