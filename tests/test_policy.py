"""Policy IR: forward pass, save/load round trip, and refusal of every kind of malformed file."""

import json
import struct

import numpy as np
import pytest

from edge_rl.policy import (
    ActionSpec,
    Activation,
    Dense,
    LayerNorm,
    ObservationSpec,
    Policy,
    PolicyFormatError,
)
from edge_rl.tensorfile import TensorFileError, load_tensors, save_tensors


def make_policy(seed: int = 0) -> Policy:
    rng = np.random.default_rng(seed)
    obs = ObservationSpec(
        shape=(3,),
        low=np.array([-1.0, -np.inf, 0.0]),
        high=np.array([1.0, np.inf, 5.0]),
        mean=np.array([0.1, -0.2, 2.0]),
        var=np.array([0.5, 4.0, 1.5]),
        names=("x", "v", "h"),
    )
    layers = [
        Dense(rng.normal(size=(8, 3)), rng.normal(size=8)),
        LayerNorm(1e-5, rng.normal(size=8), rng.normal(size=8)),
        Activation("relu"),
        Dense(rng.normal(size=(6, 8)), rng.normal(size=6)),
        LayerNorm(),
        Activation("leaky_relu", 0.01),
        Dense(rng.normal(size=(4, 6)), rng.normal(size=4)),
    ]
    return Policy(obs, ActionSpec(4, ("a", "b", "c", "d"), safe=2), layers, {"env_id": "Test-v0", "seed": seed})


def reference_forward(policy: Policy, x: np.ndarray) -> np.ndarray:
    """Straight float64 re-implementation, independent of the IR's code paths."""
    o = policy.observation
    h = np.clip((x - o.mean) / np.sqrt(o.var.astype(np.float64) + o.eps), -o.clip, o.clip)
    for layer in policy.layers:
        if isinstance(layer, Dense):
            h = h @ layer.weight.T.astype(np.float64) + layer.bias
        elif isinstance(layer, LayerNorm):
            h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + layer.eps)
            if layer.weight is not None:
                h = h * layer.weight + layer.bias
        elif layer.fn == "relu":
            h = np.maximum(h, 0)
        else:
            h = np.where(h >= 0, h, layer.slope * h)
    return h


def test_forward_matches_float64_reference() -> None:
    policy = make_policy()
    x = np.random.default_rng(1).normal(size=(64, 3)).astype(np.float32) * 3
    q = policy.q_values(x)
    assert q.dtype == np.float32 and q.shape == (64, 4)
    np.testing.assert_allclose(q, reference_forward(policy, x), rtol=1e-4, atol=1e-4)
    assert policy.act(x[0]) == int(np.argmax(q[0]))
    np.testing.assert_array_equal(policy.act(x), q.argmax(1))


def test_normalisation_clips_outliers() -> None:
    policy = make_policy()
    far = np.array([1e6, -1e6, 1e6], np.float32)
    clipped = np.array([policy.observation.mean + policy.observation.clip * np.sqrt(policy.observation.var)])
    clipped[0, 1] = policy.observation.mean[1] - policy.observation.clip * np.sqrt(policy.observation.var[1])
    np.testing.assert_allclose(policy.q_values(far), policy.q_values(clipped.astype(np.float32))[0], atol=1e-4)


def test_round_trip_is_exact(tmp_path) -> None:
    policy = make_policy()
    policy.save(tmp_path)
    loaded = Policy.load(tmp_path)
    x = np.random.default_rng(2).normal(size=(16, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.q_values(x), policy.q_values(x))
    assert loaded.action == policy.action
    assert loaded.metadata == policy.metadata
    assert loaded.observation.names == ("x", "v", "h")
    assert np.isinf(loaded.observation.high[1])
    assert [layer.kind for layer in loaded.layers] == [layer.kind for layer in policy.layers]
    assert loaded.n_params == policy.n_params == 8 * 3 + 8 + 16 + 6 * 8 + 6 + 4 * 6 + 4


def test_interoperates_with_the_safetensors_package(tmp_path) -> None:
    st = pytest.importorskip("safetensors.numpy")
    make_policy().save(tmp_path)
    theirs = st.load_file(str(tmp_path / "policy.safetensors"))
    ours, _ = load_tensors(tmp_path / "policy.safetensors")
    assert theirs.keys() == ours.keys()
    for k in ours:
        np.testing.assert_array_equal(theirs[k], ours[k])
    st.save_file({"w": np.arange(6, dtype=np.int8).reshape(2, 3)}, str(tmp_path / "x.safetensors"))
    loaded, _ = load_tensors(tmp_path / "x.safetensors")
    np.testing.assert_array_equal(loaded["w"], np.arange(6, dtype=np.int8).reshape(2, 3))


@pytest.mark.parametrize(
    "bad",
    [np.zeros(2, np.float32), np.zeros((1, 4), np.float32), np.array([0, np.nan, 0], np.float32)],
    ids=["short", "wrong-width", "nan"],
)
def test_rejects_bad_observations(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"shape|NaN"):
        make_policy().q_values(bad)


# -- malformed files ------------------------------------------------------------------------------


def edit_json(directory, fn) -> None:
    path = directory / "policy.json"
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def edit_tensors(directory, fn) -> None:
    path = directory / "policy.safetensors"
    tensors, meta = load_tensors(path)
    fn(tensors)
    save_tensors(path, tensors, meta)


CORRUPTIONS = {
    "schema-version": (lambda d: edit_json(d, lambda j: j.update(schema_version=99)), "schema version"),
    "not-json": (lambda d: (d / "policy.json").write_text("{nope"), "JSON"),
    "unknown-layer": (lambda d: edit_json(d, lambda j: j["layers"][2].update(kind="conv")), "conv"),
    "unknown-activation": (lambda d: edit_json(d, lambda j: j["layers"][2].update(fn="gelu")), "activation"),
    "missing-array": (lambda d: edit_tensors(d, lambda t: t.pop("layers.0.bias")), "missing"),
    "extra-array": (lambda d: edit_tensors(d, lambda t: t.update(evil=np.zeros(1, np.float32))), "unexpected"),
    "wrong-dtype": (
        lambda d: edit_tensors(d, lambda t: t.update({"layers.0.weight": t["layers.0.weight"].astype(np.float64)})),
        "float64",
    ),
    "wrong-shape": (
        lambda d: edit_tensors(d, lambda t: t.update({"layers.3.weight": np.zeros((6, 7), np.float32)})),
        "layer 3",
    ),
    "nan-weight": (
        lambda d: edit_tensors(d, lambda t: t["layers.6.bias"].__setitem__(0, np.nan)),
        "non-finite",
    ),
    "negative-var": (
        lambda d: edit_tensors(d, lambda t: t["observation.var"].__setitem__(0, -1)),
        "var",
    ),
    "bad-safe-action": (lambda d: edit_json(d, lambda j: j["action"].update(safe=7)), "safe action"),
    "truncated-tensors": (
        lambda d: (d / "policy.safetensors").write_bytes((d / "policy.safetensors").read_bytes()[:-5]),
        "truncated|outside",
    ),
    "trailing-bytes": (
        lambda d: (d / "policy.safetensors").write_bytes((d / "policy.safetensors").read_bytes() + b"\0" * 8),
        "unaccounted",
    ),
    "huge-header-length": (
        lambda d: (d / "policy.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}"),
        "header length",
    ),
    "missing-file": (lambda d: (d / "policy.safetensors").unlink(), "missing"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_refuses_malformed_policy(tmp_path, name: str) -> None:
    make_policy().save(tmp_path)
    corrupt, message = CORRUPTIONS[name]
    corrupt(tmp_path)
    with pytest.raises(PolicyFormatError, match=message):
        Policy.load(tmp_path)


def test_refuses_symlinked_file(tmp_path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_policy().save(src)
    make_policy().save(dst)
    (dst / "policy.safetensors").unlink()
    (dst / "policy.safetensors").symlink_to(src / "policy.safetensors")
    with pytest.raises(PolicyFormatError, match="regular file"):
        Policy.load(dst)


def test_overlapping_offsets_are_refused(tmp_path) -> None:
    header = json.dumps(
        {
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
        }
    ).encode()
    (tmp_path / "t.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    with pytest.raises(TensorFileError, match="overlaps"):
        load_tensors(tmp_path / "t.safetensors")


def test_spec_validation() -> None:
    with pytest.raises(PolicyFormatError, match="outputs 4 values for 3 actions"):
        Policy(make_policy().observation, ActionSpec(3), make_policy().layers)
    with pytest.raises(PolicyFormatError, match="names"):
        ActionSpec(2, ("only-one",))
    with pytest.raises(PolicyFormatError, match="JSON"):
        Policy(make_policy().observation, ActionSpec(4), make_policy().layers, {"x": object()})
