"""Layers of the policy IR: fp32 kinds here, quantized kinds in `edge_rl.qlayers`.

Every kind subclasses `Layer`, names itself with `kind` and declares the dtypes of its arrays;
the registry (`LAYER_KINDS`) is how the loader finds it, so a new kind needs no loader change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edge_rl.errors import PolicyFormatError

LAYER_KINDS: dict[str, type[Layer]] = {}


class Layer:
    """One step of the forward pass. Subclasses declare `kind` and register themselves.

    `arrays()` and `config()` are what gets saved; `from_parts` rebuilds and validates a layer
    from them, so new kinds (int8, 1-bit, Hadamard) plug in without touching the loader.
    """

    kind: ClassVar[str]
    array_dtypes: ClassVar[dict[str, np.dtype]] = {}
    input_kind: ClassVar[str] = "float"  # "float" or "int8": what the previous layer must produce

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            LAYER_KINDS[cls.kind] = cls

    @property
    def output_kind(self) -> str:
        return "float"

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def out_features(self, in_features: int) -> int:
        """Output width for a given input width; raises PolicyFormatError if they do not fit."""
        return in_features

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def config(self) -> dict[str, Any]:
        return {}

    @property
    def n_params(self) -> int:
        return sum(int(a.size) for a in self.arrays().values())

    @classmethod
    def from_parts(cls, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Layer:
        return cls(**config, **arrays)


@dataclass(eq=False)
class Dense(Layer):
    """Fully connected fp32 layer: y = x @ weight.T + bias, weight shaped (out, in)."""

    weight: np.ndarray
    bias: np.ndarray
    kind: ClassVar[str] = "dense"
    array_dtypes: ClassVar[dict[str, np.dtype]] = {"weight": np.dtype(np.float32), "bias": np.dtype(np.float32)}

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight, dtype=np.float32)
        self.bias = np.asarray(self.bias, dtype=np.float32)
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise PolicyFormatError(f"dense weight {self.weight.shape} and bias {self.bias.shape} do not fit")
        if not (np.isfinite(self.weight).all() and np.isfinite(self.bias).all()):
            raise PolicyFormatError("dense layer holds non-finite values")

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T + self.bias

    def out_features(self, in_features: int) -> int:
        if in_features != self.weight.shape[1]:
            raise PolicyFormatError(f"dense layer expects {self.weight.shape[1]} inputs, gets {in_features}")
        return int(self.weight.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": self.bias}


@dataclass(eq=False)
class LayerNorm(Layer):
    """Normalise over features; `weight`/`bias` are None for the affine-free (stream-friendly) form."""

    eps: float = 1e-5
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    kind: ClassVar[str] = "layernorm"
    array_dtypes: ClassVar[dict[str, np.dtype]] = {"weight": np.dtype(np.float32), "bias": np.dtype(np.float32)}

    def __post_init__(self) -> None:
        if (self.weight is None) != (self.bias is None):
            raise PolicyFormatError("layernorm needs both weight and bias, or neither")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise PolicyFormatError(f"layernorm eps must be positive, got {self.eps}")
        if self.weight is not None:
            self.weight = np.asarray(self.weight, dtype=np.float32)
            self.bias = np.asarray(self.bias, dtype=np.float32)
            if self.weight.ndim != 1 or self.weight.shape != self.bias.shape:
                raise PolicyFormatError("layernorm weight and bias must be equal-length vectors")
            if not (np.isfinite(self.weight).all() and np.isfinite(self.bias).all()):
                raise PolicyFormatError("layernorm holds non-finite values")

    def forward(self, x: np.ndarray) -> np.ndarray:
        mu = x.mean(axis=-1, keepdims=True)
        centred = x - mu
        y = centred / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + np.float32(self.eps))
        return y if self.weight is None else y * self.weight + self.bias

    def out_features(self, in_features: int) -> int:
        if self.weight is not None and self.weight.shape[0] != in_features:
            raise PolicyFormatError(f"layernorm has {self.weight.shape[0]} features, gets {in_features}")
        return in_features

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.weight is None else {"weight": self.weight, "bias": self.bias}  # type: ignore[dict-item]

    def config(self) -> dict[str, Any]:
        return {"eps": float(self.eps)}


ACTIVATIONS = ("relu", "leaky_relu", "tanh")


@dataclass(eq=False)
class Activation(Layer):
    """Elementwise non-linearity; `slope` is LeakyReLU's negative slope."""

    fn: str = "relu"
    slope: float = 0.01
    kind: ClassVar[str] = "activation"

    def __post_init__(self) -> None:
        if self.fn not in ACTIVATIONS:
            raise PolicyFormatError(f"unknown activation {self.fn!r}; known: {', '.join(ACTIVATIONS)}")
        if not math.isfinite(self.slope):
            raise PolicyFormatError("activation slope must be finite")

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.fn == "relu":
            return np.maximum(x, 0)
        if self.fn == "leaky_relu":
            return np.where(x >= 0, x, x * np.float32(self.slope))
        return np.tanh(x)

    def config(self) -> dict[str, Any]:
        return {"fn": self.fn, "slope": float(self.slope)} if self.fn == "leaky_relu" else {"fn": self.fn}


@dataclass(eq=False)
class DuelingSum(Layer):
    """[v, a_1 .. a_n] -> [v + a_1 .. v + a_n]: Q-values from a shared value and per-action offsets.

    A quantized head stores the row shared by all actions once (the value) and the small
    per-action differences in rows of their own, each with its own int8 scale; Q-value gaps,
    which pick the action and are often a thousandth of the Q-values, then keep their precision.
    """

    kind: ClassVar[str] = "dueling_sum"

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x[..., :1] + x[..., 1:]

    def out_features(self, in_features: int) -> int:
        if in_features < 2:
            raise PolicyFormatError(f"dueling_sum needs a value and at least one action, gets {in_features} inputs")
        return in_features - 1


# ---------------------------------------------------------------------------------------------
# the policy
