"""The policy IR: one framework-neutral Q-network description that every stage reads and writes.

A `Policy` is an observation spec (shape, bounds, normalisation baked in), an action spec (count,
names, the safe fallback action) and an ordered list of layers with a numpy reference forward
pass. The trainer produces it, quantizers transform it, exporters translate it and the device
runs it, so there is one converter per stage instead of one per pair of stages.

On disk it is `policy.json` (structure, JSON) next to `policy.safetensors` (arrays). Loading
checks the schema version, the exact set of arrays, their dtypes, shapes and finiteness, and
refuses anything else with a `PolicyFormatError` that names the problem. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import edge_rl.qlayers  # noqa: F401 - registers the quantized layer kinds
from edge_rl.atomic import write_atomic
from edge_rl.errors import BadInput, ExitCode, PolicyFormatError
from edge_rl.layers import LAYER_KINDS, Activation, Dense, Layer, LayerNorm
from edge_rl.tensorfile import TensorFileError, parse_tensors, tensor_bytes

__all__ = [
    "ActionSpec",
    "Activation",
    "Dense",
    "Layer",
    "LayerNorm",
    "ObservationSpec",
    "Policy",
    "PolicyFormatError",
]

FORMAT = "edge-rl-policy"
SCHEMA_VERSION = 1
JSON_FILE = "policy.json"
TENSOR_FILE = "policy.safetensors"


# ---------------------------------------------------------------------------------------------
# specs

SMALL = 1e30  # |x| below it cannot overflow float32 when normalised (scale <= 1e4); beyond, inputs are clamped first


class ObservationError(BadInput):
    """An observation a policy cannot take: wrong shape, NaN or infinity."""

    exit_code = ExitCode.OBSERVATION_MISMATCH


@dataclass(frozen=True, eq=False)
class ObservationSpec:
    """What the policy expects to see, with the normalisation that training used baked in.

    The forward pass maps raw observations through `clip((obs - mean) / sqrt(var + eps))`, so
    deployment never needs the training-time statistics from anywhere else.
    """

    shape: tuple[int, ...]
    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    clip: float = 10.0
    eps: float = 1e-8
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        shape = tuple(int(d) for d in self.shape)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "_size", int(np.prod(shape, dtype=np.int64)))  # read on every decision
        for name in ("low", "high", "mean", "var"):
            arr = np.asarray(getattr(self, name), dtype=np.float32)
            if arr.shape != shape:
                raise PolicyFormatError(f"observation {name} has shape {arr.shape}, expected {shape}")
            object.__setattr__(self, name, arr)
        if np.isnan(self.low).any() or np.isnan(self.high).any() or (self.low > self.high).any():
            raise PolicyFormatError("observation bounds must be ordered and not NaN")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.var).all() and (self.var >= 0).all()):
            raise PolicyFormatError("observation normalisation must be finite with var >= 0")
        if not (math.isfinite(self.clip) and self.clip > 0 and math.isfinite(self.eps) and self.eps > 0):
            raise PolicyFormatError("observation clip and eps must be positive and finite")
        if self.names and len(self.names) != self.size:
            raise PolicyFormatError(f"{len(self.names)} observation names for {self.size} features")
        scale = (1.0 / np.sqrt(self.var.astype(np.float64) + self.eps)).astype(np.float32)
        for array in (self.low, self.high, self.mean, self.var, scale):
            array.setflags(write=False)  # a spec is a value: every stage must see the same numbers
        object.__setattr__(self, "_flat", (self.mean.ravel(), scale.ravel(), np.float32(self.clip)))
        object.__setattr__(self, "_raw_range", self._overflow_free_range())

    def _overflow_free_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Raw bounds beyond which every value normalises to exactly -clip / +clip.

        Clamping a finite input to them changes no result, and keeps (x - mean) * scale finite
        for inputs up to float32's maximum (so no overflow warning, no infinity).
        """
        mean, scale, _ = (np.asarray(a, np.float64) for a in self._flat)
        reach = 4.0 * self.clip / scale + 1.0  # four clips away, and at least 1: rounding cannot bring it back
        top = float(np.finfo(np.float32).max)
        return np.clip(mean - reach, -top, top).astype(np.float32), np.clip(mean + reach, -top, top).astype(np.float32)

    @property
    def size(self) -> int:
        return self._size

    @property
    def scale(self) -> np.ndarray:
        """Multiplier equivalent to dividing by sqrt(var + eps), as the forward pass applies it."""
        return self._flat[1].reshape(self.shape)

    @property
    def flat_normalization(self) -> tuple[np.ndarray, np.ndarray, np.float32]:
        """(mean, scale, clip) over flattened features, float32: what every exported graph computes with."""
        return self._flat

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """The forward pass's input transform on flattened observations (..., size), float32.

        The one implementation every stage uses (training, distillation, calibration, runtime), so
        they cannot drift apart.
        """
        mean, scale, clip = self._flat
        return np.clip((np.asarray(obs, np.float32) - mean) * scale, -clip, clip)

    def batch(self, obs: np.ndarray) -> tuple[np.ndarray, bool]:
        """`obs` (one observation or a batch) as float32 (batch, size), and whether it was a single one.

        Every runtime calls this first, so a wrong shape, NaN or infinity is refused the same way
        everywhere, before any backend sees the values.
        """
        x = np.asarray(obs, dtype=np.float32)
        single = x.shape == self.shape
        if single:  # the control loop's case: one observation, checked in ~0.3-1.5 us
            flat = x.reshape(1, self._size)
            # a float64 sum of float32 values is finite exactly when every value is (it cannot overflow);
            # Python floats beat numpy's per-call cost up to ~64 values
            if self._size <= 64:
                values = flat[0].tolist()
                total, low, high = sum(values), min(values), max(values)
            else:
                total, low, high = float(flat[0].sum(dtype=np.float64)), flat[0].min(), flat[0].max()
            if math.isfinite(total) and -SMALL < low and high < SMALL:
                return flat, True
        elif x.ndim != len(self.shape) + 1 or x.shape[1:] != self.shape:
            raise ObservationError(f"observation shape {x.shape} does not match the policy's {self.shape}")
        flat = x.reshape(-1, self._size)
        if not np.isfinite(flat).all():
            raise ObservationError("observation contains NaN or infinity")
        low, high = self._raw_range  # finite but huge values: the same rule and result as for small ones
        return np.clip(flat, low, high), single

    @classmethod
    def unnormalized(cls, low: np.ndarray, high: np.ndarray, names: tuple[str, ...] = ()) -> ObservationSpec:
        low = np.asarray(low, dtype=np.float32)
        return cls(low.shape, low, high, np.zeros_like(low), np.ones_like(low), names=names)


@dataclass(frozen=True)
class ActionSpec:
    """Discrete actions with names, and the action a device falls back to when input is bad."""

    n: int
    names: tuple[str, ...] = ()
    safe: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "safe", int(self.safe))
        if self.n < 1:
            raise PolicyFormatError(f"action count must be >= 1, got {self.n}")
        names = tuple(str(s) for s in self.names) or tuple(f"a{i}" for i in range(self.n))
        if len(names) != self.n:
            raise PolicyFormatError(f"{len(names)} action names for {self.n} actions")
        object.__setattr__(self, "names", names)
        if not 0 <= self.safe < self.n:
            raise PolicyFormatError(f"safe action {self.safe} is not one of the {self.n} actions")


@dataclass(eq=False)
class Policy:
    """A Q-network with its observation and action contract and a numpy reference forward."""

    observation: ObservationSpec
    action: ActionSpec
    layers: list[Layer]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        width, kind = self.observation.size, "float"
        for i, layer in enumerate(self.layers):
            if layer.input_kind != kind:
                raise PolicyFormatError(f"layer {i} ({layer.kind}) takes {layer.input_kind} input, gets {kind}")
            try:
                width = layer.out_features(width)
            except PolicyFormatError as e:
                raise PolicyFormatError(f"layer {i} ({layer.kind}): {e}") from None
            kind = layer.output_kind
        if kind != "float":
            raise PolicyFormatError(f"the last layer must produce float Q-values, not {kind}")
        if width != self.action.n:
            raise PolicyFormatError(f"network outputs {width} values for {self.action.n} actions")
        try:
            json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise PolicyFormatError(f"metadata must be plain JSON: {e}") from None

    # -- inference ------------------------------------------------------------------------------

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values for one observation (-> (n,)) or a batch (-> (batch, n)), float32."""
        x, single = self.observation.batch(obs)
        q = self.forward(x)
        return q[0] if single else q

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Q-values of checked, flattened raw observations (batch, size): normalisation, then the layers."""
        x = self.observation.normalize(x)
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def act(self, obs: np.ndarray) -> int | np.ndarray:
        """Greedy action: an int for one observation, an int64 array for a batch."""
        q = self.q_values(obs)
        return int(q.argmax()) if q.ndim == 1 else q.argmax(axis=1)

    @property
    def n_params(self) -> int:
        return sum(layer.n_params for layer in self.layers)

    # -- persistence ----------------------------------------------------------------------------

    def _parts(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The JSON document and the tensors that `save` writes."""
        obs = self.observation
        tensors = {f"observation.{k}": getattr(obs, k) for k in ("low", "high", "mean", "var")}
        layers_json = []
        for i, layer in enumerate(self.layers):
            layers_json.append({"kind": layer.kind, **layer.config()})
            tensors.update({f"layers.{i}.{k}": v for k, v in layer.arrays().items()})
        doc = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "observation": {"shape": list(obs.shape), "clip": obs.clip, "eps": obs.eps, "names": list(obs.names)},
            "action": {"n": self.action.n, "names": list(self.action.names), "safe": self.action.safe},
            "layers": layers_json,
            "metadata": self.metadata,
        }
        return doc, tensors

    def to_bytes(self) -> tuple[bytes, bytes]:
        """The contents of policy.json and policy.safetensors."""
        doc, tensors = self._parts()
        return (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode("utf-8"), tensor_bytes(
            tensors, {"format": FORMAT}
        )

    def save(self, directory: str | Path) -> Path:
        """Write policy.json + policy.safetensors into `directory` (created if needed), each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        json_bytes, tensors = self.to_bytes()
        write_atomic(directory / TENSOR_FILE, tensors)
        write_atomic(directory / JSON_FILE, json_bytes)
        return directory

    def digest(self) -> str:
        """SHA-256 of what the policy computes (spec, layers, tensors; not its metadata): its identity.

        A learner adapting this policy records it, so its saved state is restored only onto it.
        """
        doc, tensors = self._parts()
        h = hashlib.sha256(json.dumps({**doc, "metadata": None}, sort_keys=True).encode())
        for name in sorted(tensors):
            array = np.ascontiguousarray(tensors[name])
            h.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            h.update(array.tobytes())
        return h.hexdigest()

    @classmethod
    def load(cls, directory: str | Path) -> Policy:
        """Load and validate a saved policy; any defect raises PolicyFormatError."""
        directory = Path(directory)
        paths = [directory / JSON_FILE, directory / TENSOR_FILE]
        for path in paths:
            if not path.is_file() or path.is_symlink():
                raise PolicyFormatError(f"{path}: missing (or not a regular file); is {directory} a policy directory?")
        return cls.from_bytes(paths[0].read_bytes(), paths[1].read_bytes(), str(directory))

    @classmethod
    def from_bytes(cls, json_bytes: bytes, tensor_bytes: bytes, where: str = "policy") -> Policy:
        """Validate and build a policy from the bytes of its two files (e.g. already hash-checked ones)."""
        try:
            doc = json.loads(json_bytes.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PolicyFormatError(f"{where}/{JSON_FILE}: not valid JSON ({e})") from None
        try:
            tensors, _ = parse_tensors(tensor_bytes, f"{where}/{TENSOR_FILE}")
        except TensorFileError as e:
            raise PolicyFormatError(str(e)) from None
        try:
            return _from_parts(doc, tensors)
        except PolicyFormatError as e:
            raise PolicyFormatError(f"{where}: {e}") from None


def _from_parts(doc: Any, tensors: dict[str, np.ndarray]) -> Policy:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PolicyFormatError(f"policy.json is not an {FORMAT} document")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise PolicyFormatError(f"unsupported schema version {version!r} (this edge-rl reads {SCHEMA_VERSION})")
    expected: dict[str, np.dtype] = {f"observation.{k}": np.dtype(np.float32) for k in ("low", "high", "mean", "var")}
    try:
        obs_doc, act_doc, layer_docs = doc["observation"], doc["action"], doc["layers"]
        kinds = [LAYER_KINDS[d["kind"]] for d in layer_docs]
    except KeyError as e:
        raise PolicyFormatError(f"policy.json lacks or misnames {e}") from None
    except TypeError:
        raise PolicyFormatError("policy.json has the wrong structure") from None
    for i, kind in enumerate(kinds):
        present = {k for k in kind.array_dtypes if f"layers.{i}.{k}" in tensors}
        expected.update({f"layers.{i}.{k}": kind.array_dtypes[k] for k in present})
    if set(tensors) != set(expected):
        extra, missing = sorted(set(tensors) - set(expected)), sorted(set(expected) - set(tensors))
        raise PolicyFormatError(f"array set mismatch (unexpected: {extra}, missing: {missing})")
    for name, dtype in expected.items():
        if tensors[name].dtype != dtype:
            raise PolicyFormatError(f"array {name} is {tensors[name].dtype}, expected {dtype}")
    try:
        observation = ObservationSpec(
            shape=tuple(obs_doc["shape"]),
            clip=float(obs_doc["clip"]),
            eps=float(obs_doc["eps"]),
            names=tuple(obs_doc.get("names", ())),
            **{k: tensors[f"observation.{k}"] for k in ("low", "high", "mean", "var")},
        )
        action = ActionSpec(n=int(act_doc["n"]), names=tuple(act_doc["names"]), safe=int(act_doc["safe"]))
        layers = []
        for i, (kind, layer_doc) in enumerate(zip(kinds, layer_docs, strict=True)):
            config = {k: v for k, v in layer_doc.items() if k != "kind"}
            prefix = f"layers.{i}."
            arrays = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            layers.append(kind.from_parts(config, arrays))
        metadata = doc.get("metadata", {})
        if not isinstance(metadata, dict):
            raise PolicyFormatError("metadata must be a JSON object")
        return Policy(observation, action, layers, metadata)
    except PolicyFormatError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise PolicyFormatError(f"policy.json has a malformed field ({type(e).__name__}: {e})") from None
