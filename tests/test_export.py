"""Export: ONNX / TFLite / C header against the numpy IR, bundles, signatures, and every refusal."""

import functools
import json
import os
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from edge_rl.cli import main
from edge_rl.errors import ExitCode
from edge_rl.layers import Activation, Dense
from edge_rl.policy import ActionSpec, ObservationError, ObservationSpec, Policy
from edge_rl.rollout import collect_states
from edge_rl.runtime import LiteRTBackend, NumpyBackend, OnnxBackend, load_bundle
from export.bundle import open_bundle
from export.c_header import to_c_header
from export.exporter import export_bundle
from export.onnx_graph import to_onnx
from export.parity import compare, tolerance
from export.tflite_model import to_tflite
from export.verify import needs_builtin_kernels
from quantize.convert import default_plan, quantize_policy
from quantize.equalize import equalize_ranges

ROOT = Path(__file__).resolve().parents[1]
ENVS = {
    "cartpole": ("CartPole-v1", {}, 40.0),  # Q offsets of the trained policies' magnitude
    "antijam": ("edge_rl/AntiJam-v0", {"jammer": "sweeping"}, 95.0),
}


def mlp(env: str, hidden: tuple[int, ...], seed: int) -> tuple[Policy, np.ndarray]:
    """A random MLP shaped for `env`, normalised on its states, Q-values around the trained ones' size."""
    env_id, kwargs, offset = ENVS[env]
    rng = np.random.default_rng(seed)
    probe = collect_states(lambda o: rng.integers(0, 2, len(o)), env_id, 3000, seed, 1.0, kwargs)
    n_actions = 2 if env == "cartpole" else 8
    sizes = [probe.shape[1], *hidden, n_actions]
    layers: list = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        last = i == len(sizes) - 2
        layers.append(Dense(rng.normal(size=(b, a)) / np.sqrt(a), rng.normal(size=b) * 0.1 + (offset if last else 0)))
        if not last:
            layers.append(Activation("relu"))
    spec = ObservationSpec(
        probe.shape[1:],
        np.full(probe.shape[1:], -np.inf),
        np.full(probe.shape[1:], np.inf),
        probe.mean(0),
        probe.var(0) + 1e-6,
    )
    policy = Policy(spec, ActionSpec(n_actions, safe=1), layers, {"env_id": env_id, "env_kwargs": kwargs, "seed": seed})
    return policy, probe


def make(env: str, precision: str) -> Policy:
    if precision == "1bit":
        policy, states = mlp(env, (64, 64, 64), 1)
        return quantize_policy(policy, states, default_plan(4, "1bit"))
    policy, states = mlp(env, (48, 48), 0)
    if precision == "int8":
        plan = default_plan(3, "int8")
        return quantize_policy(equalize_ranges(policy, states, plan), states, plan, correct_bias=True)
    return policy


@functools.cache
def case_for(env: str, precision: str) -> tuple[str, Policy, np.ndarray]:
    policy = make(env, precision)
    env_id, kwargs, _ = ENVS[env]
    return env, policy, collect_states(policy.act, env_id, 10_000, 77, 0.2, kwargs)


@pytest.fixture(params=[(e, p) for e in ENVS for p in ("fp32", "int8", "1bit")], ids=lambda x: "-".join(x))
def case(request) -> tuple[str, Policy, np.ndarray]:
    return case_for(*request.param)


def runtime_for(policy: Policy, backend: str):
    if backend == "onnxruntime":
        return OnnxBackend(to_onnx(policy), policy.observation, policy.action)
    return LiteRTBackend(to_tflite(policy), policy.observation, policy.action, needs_builtin_kernels(policy))


@pytest.mark.parametrize("backend", ["onnxruntime", "litert"])
def test_backend_matches_the_ir_on_10k_held_out_states(case, backend: str) -> None:
    _, policy, states = case
    runtime = runtime_for(policy, backend)
    reference = policy.q_values(states)
    result = compare(reference, runtime.q_values(states), tolerance(policy, reference))
    assert result["passed"], result
    assert (runtime.act(states) == policy.act(states)).all()
    assert all(runtime.act(s) == policy.act(s) for s in states[:200])  # the single-observation fast path


@pytest.mark.parametrize("backend", ["onnxruntime", "litert"])
@pytest.mark.parametrize("env", list(ENVS))
@pytest.mark.parametrize("precision", ["int8", "1bit"])
def test_quantized_exports_are_bit_exact(env: str, precision: str, backend: str) -> None:
    """Integer arithmetic, butterfly rotations and halving sums in the IR's order: equal, not close."""
    _, policy, states = case_for(env, precision)
    np.testing.assert_array_equal(runtime_for(policy, backend).q_values(states), policy.q_values(states))


def test_c_header_compiles_strictly_and_reproduces_the_actions(case, tmp_path: Path) -> None:
    _, policy, states = case
    golden = states[:64]
    (tmp_path / "policy.h").write_text(to_c_header(policy, golden, policy.act(golden)))
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "policy.h"\n'
        'int main(void) { float obs[EDGE_RL_OBS_SIZE]; int k; printf("%d\\n", edge_rl_self_test());\n'
        '  for (;;) { for (k = 0; k < EDGE_RL_OBS_SIZE; ++k) if (scanf("%f", &obs[k]) != 1) return 0;\n'
        '    printf("%d\\n", edge_rl_act(obs)); } }\n'
    )
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
    build = subprocess.run(["cc", *flags, "-o", "run", "main.c", "-lm"], cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    probe = np.concatenate([states[:2000], [np.full(states.shape[1], np.nan, np.float32)]])
    text = "\n".join(" ".join(f"{v:.9g}" for v in row) for row in probe)
    out = subprocess.run([str(tmp_path / "run")], input=text, capture_output=True, text=True, timeout=60).stdout.split()
    assert out[0] == "0"  # edge_rl_self_test: no golden action differs
    actions = np.array(out[1:], dtype=int)
    np.testing.assert_array_equal(actions[:-1], policy.act(states[:2000]))
    assert actions[-1] == policy.action.safe  # a NaN observation gets the safe action


def test_observation_checks_are_the_same_for_every_backend(case) -> None:
    _, policy, states = case
    for runtime in (NumpyBackend(policy), runtime_for(policy, "onnxruntime"), runtime_for(policy, "litert")):
        with pytest.raises(ObservationError, match="shape"):
            runtime.act(np.zeros(states.shape[1] + 1, np.float32))
        bad = states[0].copy()
        bad[0] = np.inf
        with pytest.raises(ObservationError, match="NaN or infinity"):
            runtime.act(bad)


# ---------------------------------------------------------------------------------------------
# bundles


@pytest.fixture(scope="module")
def int8_policy_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8")
    make("cartpole", "int8").save(out)
    return out


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    key = tmp_path_factory.mktemp("keys") / "key"
    assert main(["keygen", "--out", str(key)]) == 0
    assert key.stat().st_mode & 0o777 == 0o600  # the private key is readable by its owner only
    return key, key.with_name("key.pub")


@pytest.fixture()
def bundle(int8_policy_dir: Path, keys, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    args = ["export", str(int8_policy_dir), "--out", str(out), "--sign", str(keys[0]), "--bundle-version", "5"]
    assert main(args) == 0
    return out


def verify(bundle: Path, *extra: str) -> int:
    return main(["verify", str(bundle), *extra])


def test_manifest_records_everything_a_device_needs(bundle: Path, int8_policy_dir: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["bundle_version"] == 5 and manifest["precision"] == "int8"
    policy = Policy.load(int8_policy_dir)
    np.testing.assert_array_equal(np.float32(manifest["observation"]["mean"]), policy.observation.mean)
    assert manifest["action"]["safe"] == 1 and manifest["observation"]["clip"] == policy.observation.clip
    names = {"policy.json", "policy.safetensors", "model.onnx", "model.tflite", "policy.h"}
    assert set(manifest["files"]) == names
    for name, entry in manifest["files"].items():
        import hashlib

        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == entry["sha256"]
    assert manifest["card"]["params"] == policy.n_params and manifest["card"]["compression_ratio"] > 3
    assert manifest["provenance"]["env_id"] == "CartPole-v1" and manifest["provenance"]["versions"]["numpy"]
    assert len(manifest["provenance"]["git_commit"] or "") == 40
    golden = np.float32(manifest["golden"]["observations"])
    assert len(golden) >= 64
    np.testing.assert_array_equal(np.float32(manifest["golden"]["q_values"]), policy.q_values(golden))
    assert manifest["golden"]["actions"] == policy.act(golden).tolist()
    assert not (bundle / ".partial").exists()


def test_verify_passes_and_picks_the_fastest_passing_backend(bundle: Path, keys, capsys) -> None:
    assert verify(bundle, "--public-key", str(keys[1]), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["signer_pinned"] and report["bundle_version"] == 5
    assert set(report["backends"]) == {"numpy", "onnxruntime", "litert"}
    fastest = report["fastest"]
    assert all(report["backends"][fastest]["latency_us"] <= r["latency_us"] for r in report["backends"].values())
    runtime, loaded, _ = load_bundle(bundle, public_key=None)
    assert runtime.name == fastest or report["backends"][runtime.name]["passed"]
    golden = np.float32(loaded.manifest["golden"]["observations"])
    assert (runtime.act(golden) == np.array(loaded.manifest["golden"]["actions"])).all()


@pytest.mark.parametrize(
    "name",
    [
        "policy.json",
        "policy.safetensors",
        "model.onnx",
        "model.tflite",
        "policy.h",
        "manifest.json",
        "manifest.sha256",
        "manifest.sig",
    ],
)
def test_a_flipped_byte_in_any_file_is_refused(bundle: Path, name: str, capsys) -> None:
    path = bundle / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    code = verify(bundle)
    err = capsys.readouterr().err.strip()
    expected = ExitCode.BAD_SIGNATURE if name == "manifest.sig" else ExitCode.BUNDLE_DAMAGED
    assert code == expected, err
    assert len(err.splitlines()) == 1 and ("SHA-256" in err or "manifest" in err or "signature" in err)


@pytest.mark.parametrize("name", ["model.onnx", "policy.safetensors", "manifest.json"])
def test_missing_files_are_refused(bundle: Path, name: str, capsys) -> None:
    (bundle / name).unlink()
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert name in capsys.readouterr().err


def test_truncated_file_is_refused(bundle: Path, capsys) -> None:
    path = bundle / "model.tflite"
    path.write_bytes(path.read_bytes()[:-100])
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert "model.tflite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "message"), [("notes.txt", "unexpected file"), ("weights.pkl", "pickle"), ("model.pt", "pickle")]
)
def test_extra_and_pickle_files_are_refused(bundle: Path, name: str, message: str, capsys) -> None:
    (bundle / name).write_bytes(b"\x80\x04K\x01.")  # a pickle of the integer 1
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert message in capsys.readouterr().err


def test_symlinks_are_refused(bundle: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle / "model.onnx", target)
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to(target)
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert "symlink" in capsys.readouterr().err
    linked = tmp_path / "linked-bundle"
    linked.symlink_to(bundle)
    assert verify(linked) == ExitCode.BUNDLE_DAMAGED


def test_a_subdirectory_is_refused(bundle: Path, capsys) -> None:
    (bundle / "extra").mkdir()
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert "not a regular file" in capsys.readouterr().err


def rewrite_manifest(bundle: Path, change, keep_signature: bool = False) -> None:
    """Edit the manifest and fix its checksum: what an attacker without the signing key can do."""
    import hashlib

    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    data = json.dumps(manifest).encode()
    (bundle / "manifest.json").write_bytes(data)
    (bundle / "manifest.sha256").write_text(hashlib.sha256(data).hexdigest())
    if not keep_signature:
        (bundle / "manifest.sig").unlink()


def test_a_path_escaping_the_bundle_is_refused(bundle: Path, capsys) -> None:
    secret = bundle.parent / "outside.txt"
    secret.write_text("not part of the bundle")

    def escape(m: dict) -> None:
        import hashlib

        m["files"]["../outside.txt"] = {"sha256": hashlib.sha256(secret.read_bytes()).hexdigest(), "bytes": 22}

    rewrite_manifest(bundle, escape)
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert "escape" in capsys.readouterr().err


@pytest.mark.parametrize("keep_signature", [True, False])
def test_a_rewritten_manifest_fails_the_signature(bundle: Path, keys, keep_signature: bool, capsys) -> None:
    rewrite_manifest(bundle, lambda m: m.update(bundle_version=99), keep_signature)
    assert verify(bundle, "--public-key", str(keys[1])) == ExitCode.BAD_SIGNATURE
    assert ("does not verify" if keep_signature else "not signed") in capsys.readouterr().err
    if keep_signature:  # even without a pinned key, a signature that no longer matches is refused
        assert verify(bundle) == ExitCode.BAD_SIGNATURE


def test_another_key_is_refused(bundle: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "other"
    assert main(["keygen", "--out", str(other)]) == 0
    assert verify(bundle, "--public-key", str(other) + ".pub") == ExitCode.BAD_SIGNATURE
    assert main(["keygen", "--out", str(other)]) == ExitCode.BAD_INPUT  # never overwrites a key
    capsys.readouterr()


def test_unknown_schema_version_is_refused(bundle: Path, capsys) -> None:
    rewrite_manifest(bundle, lambda m: m.update(schema_version=2))
    assert verify(bundle) == ExitCode.UNKNOWN_SCHEMA
    assert "schema version 2" in capsys.readouterr().err


def test_older_bundle_than_installed_is_refused_unless_allowed(
    bundle: Path, int8_policy_dir: Path, tmp_path: Path
) -> None:
    newer = tmp_path / "newer"
    assert (
        main(["export", str(int8_policy_dir), "--out", str(newer), "--bundle-version", "9", "--formats", "onnx"]) == 0
    )
    assert verify(bundle, "--installed", str(newer)) == ExitCode.DOWNGRADE
    assert verify(bundle, "--installed", str(newer), "--allow-downgrade") == 0
    assert verify(newer, "--installed", str(bundle)) == 0


def test_states_of_the_wrong_shape_are_refused(bundle: Path, tmp_path: Path, capsys) -> None:
    wrong = tmp_path / "states.npy"
    np.save(wrong, np.zeros((10, 5), np.float32))
    assert verify(bundle, "--states", str(wrong)) == ExitCode.OBSERVATION_MISMATCH
    assert "shape" in capsys.readouterr().err
    right = tmp_path / "right.npy"
    np.save(right, collect_states(Policy.load(bundle).act, "CartPole-v1", 500, 3))
    assert verify(bundle, "--states", str(right)) == 0


def test_failed_export_leaves_nothing_behind(int8_policy_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import export.exporter as exporter

    def broken(*args, **kwargs):
        raise RuntimeError("writer crashed")

    monkeypatch.setattr(exporter, "_model_files", broken)
    before = set(tmp_path.iterdir())
    with pytest.raises(RuntimeError):
        main(["export", str(int8_policy_dir), "--out", str(tmp_path / "b")])
    assert set(tmp_path.iterdir()) == before  # no bundle, no staging directory, nothing beside it
    monkeypatch.undo()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(["export", str(int8_policy_dir), "--out", str(busy)]) == ExitCode.BAD_INPUT
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert "not an empty directory" in capsys.readouterr().err


def test_export_refuses_a_backend_that_misses_the_tolerance(int8_policy_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import export.exporter as exporter

    real = exporter._model_files

    def wrong_scale(policy, formats, golden_obs, golden_actions):
        broken = Policy.load(int8_policy_dir)
        broken.layers[-2].weight[:] = -broken.layers[-2].weight  # a sign error in the exported head
        return real(broken, formats, golden_obs, golden_actions)

    monkeypatch.setattr(exporter, "_model_files", wrong_scale)
    assert main(["export", str(int8_policy_dir), "--out", str(tmp_path / "b"), "--formats", "onnx"]) == ExitCode.FAILURE
    assert not (tmp_path / "b").exists()


def test_export_of_a_small_golden_set_is_refused(int8_policy_dir: Path, tmp_path: Path) -> None:
    policy = Policy.load(int8_policy_dir)
    with pytest.raises(ValueError, match="at least 64"):
        export_bundle(policy, tmp_path / "b", ["onnx"], np.zeros((10, 4), np.float32))


def test_device_side_never_imports_torch_or_onnx(bundle: Path, keys) -> None:
    probe = (
        "import sys; import edge_rl.cli as c; rc = c.main(sys.argv[1:]);"
        "bad = [m for m in ('torch', 'onnx') if m in sys.modules]; assert not bad, bad; sys.exit(rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["verify", str(bundle), "--public-key", str(keys[1])]
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    bundle_obj = open_bundle(bundle)
    assert bundle_obj.signer is not None and not bundle_obj.pinned
