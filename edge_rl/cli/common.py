"""Argument helpers shared by subcommands: JSON kwargs, integer lists, dataclass-driven options."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import Any

from edge_rl.errors import BadInput


def json_object(text: str) -> dict[str, Any]:
    """argparse type for --env-kwargs: a JSON object, or a clear error."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg} at column {e.colno}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object like '{{\"key\": 1}}', got {text!r}")
    return value


def _bounded(kind: type, low: float, inclusive: bool, high: float | None = None) -> Any:
    """An argparse type: a number of `kind` above `low` (or at it, if inclusive), at most `high`."""
    bound = f">= {low}" if inclusive else f"> {low}"
    if high is not None:
        bound += f" and <= {high}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        ok = value is not None and (value >= low if inclusive else value > low) and (high is None or value <= high)
        if not ok:  # also refuses NaN, which compares false with everything
            raise argparse.ArgumentTypeError(
                f"must be {'an integer' if kind is int else 'a number'} {bound}, got {text!r}"
            )
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _bounded(int, 1, inclusive=True)
count = _bounded(int, 0, inclusive=True)  # seeds, versions, sizes that may be zero
positive_float = _bounded(float, 0.0, inclusive=False)
nonnegative_float = _bounded(float, 0.0, inclusive=True)
unit_float = _bounded(float, 0.0, inclusive=True, high=1.0)
milliseconds = _bounded(float, 0.0, inclusive=True, high=60_000.0)  # waits a device may take: at most a minute
positive_milliseconds = _bounded(float, 0.0, inclusive=False, high=60_000.0)


def int_list(text: str) -> tuple[int, ...]:
    """argparse type for widths like 64,64."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 64,64, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive widths like 64,64, got {text!r}")
    return values


def add_dataclass_options(group: argparse._ArgumentGroup, cls: type, skip: set[str]) -> None:
    """One --option per dataclass field, help text from the field's metadata, default None (= unset)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint, default = hints[f.name], f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif hint is tuple:
            group.add_argument(flag, type=int_list, default=None, metavar="N,N", help=help_text)
        elif hint is dict:
            group.add_argument(flag, type=json_object, default=None, metavar="JSON", help=help_text)
        else:
            base = float if hint in (float, float | None) else int if hint is int else str
            group.add_argument(flag, type=base, default=None, metavar=base.__name__.upper(), help=help_text)


def add_env_options(p: argparse.ArgumentParser, default: str = "the policy's") -> None:
    """--env and --env-kwargs, which every command that runs a policy in its environment takes."""
    p.add_argument("--env", default=None, metavar="ENV_ID", help=f"environment id (default: {default})")
    p.add_argument(
        "--env-kwargs",
        type=json_object,
        default=None,
        metavar="JSON",
        help=f"kwargs for gymnasium.make (default: {default})",
    )


def policy_env(policy: Any, env: str | None, env_kwargs: dict | None, where: object) -> tuple[str, dict]:
    """The env a command should use: explicit flags first, else what the policy was trained on."""
    env_id = env or policy.metadata.get("env_id")
    if not env_id:
        raise BadInput(f"{where} does not record its environment; pass --env ENV_ID")
    return env_id, env_kwargs if env_kwargs is not None else policy.metadata.get("env_kwargs", {})


def load_states(path: Any, spec: Any) -> Any:
    """Observations (N, *obs_shape) from a .npy file (never unpickled), checked against `spec`."""
    import numpy as np

    from edge_rl.policy import ObservationError

    try:
        states = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read states {path}: {e}") from None
    if states.ndim != len(spec.shape) + 1 or states.shape[1:] != spec.shape:
        raise ObservationError(f"states {path} have shape {states.shape}; the policy takes (N, {spec.shape})")
    if not np.isfinite(states).all():
        raise ObservationError(f"states {path} contain NaN or infinity")
    return states.astype(np.float32)
