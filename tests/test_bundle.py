"""Bundles as a device meets them: every damaged, hostile or inconsistent bundle is refused with one line.

Driven through `edge-rl export` / `edge-rl verify` as a user runs them; a bundle is rewritten the
way someone without the signing key could (manifest edited, its checksum fixed, signature dropped).
On a device install (no `export` extra) the bundles are written with `edge_rl.bundle` alone and
carry only the IR, so every check of the container and the manifest still runs there; the tests
of model files and of `edge-rl export` itself need the training box.
"""

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_rl.cli import main
from edge_rl.errors import ExitCode
from edge_rl.policy import Policy
from edge_rl.rollout import collect_states
from tests.policies import make

ROOT = Path(__file__).resolve().parents[1]
EXPORT = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("flatbuffers") is not None
needs_export = pytest.mark.skipif(not EXPORT, reason="writing model files needs the export extra (training box)")


def build_bundle(policy_dir: Path, out: Path, version: int, key: Path | None = None) -> Path:
    """`edge-rl export` where it can run; on a device, an IR-only bundle written by `edge_rl.bundle`."""
    if EXPORT:
        args = ["export", str(policy_dir), "--out", str(out), "--bundle-version", str(version)]
        assert main([*args, *(["--sign", str(key)] if key else [])]) == 0
        return out
    from edge_rl.bundle import build_manifest, write_bundle
    from edge_rl.signing import signer

    policy = Policy.load(policy_dir)
    golden = collect_states(policy.act, "CartPole-v1", 64, 0, 0.1)
    out.mkdir(parents=True)
    write_bundle(out, policy, build_manifest(policy, golden, [], version), sign=signer(key) if key else None)
    return out


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


@pytest.fixture(scope="module")
def signed_bundle(int8_policy_dir: Path, keys, tmp_path_factory) -> Path:
    return build_bundle(int8_policy_dir, tmp_path_factory.mktemp("signed") / "bundle", 5, keys[0])


@pytest.fixture()
def bundle(signed_bundle: Path, tmp_path: Path) -> Path:
    """A fresh copy of the signed bundle for a test to damage."""
    copy = tmp_path / "bundle"
    copy.mkdir()
    for path in signed_bundle.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


def verify(bundle: Path, *extra: str) -> int:
    return main(["verify", str(bundle), *extra])


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def rewrite_manifest(bundle: Path, change=None, text: str | None = None, keep_signature: bool = False) -> None:
    """Edit the manifest (or replace its text) and fix its checksum: what an attacker without the key can do."""
    if text is None:
        manifest = json.loads((bundle / "manifest.json").read_text())
        change(manifest)
        text = json.dumps(manifest)
    data = text.encode()
    (bundle / "manifest.json").write_bytes(data)
    (bundle / "manifest.sha256").write_text(hashlib.sha256(data).hexdigest())
    if not keep_signature:
        (bundle / "manifest.sig").unlink(missing_ok=True)


def replace_file(bundle: Path, name: str, data: bytes) -> None:
    """Swap a bundle file and record its new hash and size in the manifest (unsigned)."""
    (bundle / name).write_bytes(data)
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    rewrite_manifest(bundle, lambda m: m["files"].__setitem__(name, entry))


# ---------------------------------------------------------------------------------------------
# a good bundle, and the classic damage


@needs_export
def test_manifest_records_everything_a_device_needs(bundle: Path, int8_policy_dir: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["bundle_version"] == 5 and manifest["precision"] == "int8"
    policy = Policy.load(int8_policy_dir)
    np.testing.assert_array_equal(np.float32(manifest["observation"]["mean"]), policy.observation.mean)
    assert manifest["action"]["safe"] == 1 and manifest["observation"]["clip"] == policy.observation.clip
    names = {"policy.json", "policy.safetensors", "model.onnx", "model.tflite", "policy.h"}
    assert set(manifest["files"]) == names
    for name, entry in manifest["files"].items():
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
    assert set(report["backends"]) == ({"numpy", "onnxruntime", "litert", "litert-builtin"} if EXPORT else {"numpy"})
    fastest, results = report["fastest"], report["backends"]
    assert results[fastest]["passed"]
    assert all(results[fastest]["latency_us"] <= r["latency_us"] for r in results.values() if r["passed"])
    from edge_rl.runtime import load_bundle

    runtime, loaded, _ = load_bundle(bundle, public_key=None)
    with runtime:
        assert results[runtime.name]["passed"]
        assert (runtime.act(loaded.golden.observations) == loaded.golden.actions).all()
    with pytest.raises(ValueError, match="closed"):
        runtime.act(loaded.golden.observations[0])


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
    if not path.exists():
        pytest.skip(f"an IR-only bundle has no {name}")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    code = verify(bundle)
    err = capsys.readouterr().err.strip()
    expected = ExitCode.BAD_SIGNATURE if name == "manifest.sig" else ExitCode.BUNDLE_DAMAGED
    assert code == expected, err
    assert len(err.splitlines()) == 1 and ("SHA-256" in err or "manifest" in err or "signature" in err)


@pytest.mark.parametrize("name", ["policy.safetensors", "manifest.json"])
def test_missing_files_are_refused(bundle: Path, name: str, capsys) -> None:
    (bundle / name).unlink()
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert name in capsys.readouterr().err


def test_truncated_file_is_refused(bundle: Path, capsys) -> None:
    path = bundle / "policy.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert "policy.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "message"), [("notes.txt", "unexpected file"), ("weights.pkl", "pickle"), ("model.pt", "pickle")]
)
def test_extra_and_pickle_files_are_refused(bundle: Path, name: str, message: str, capsys) -> None:
    (bundle / name).write_bytes(b"\x80\x04K\x01.")  # a pickle of the integer 1
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert message in capsys.readouterr().err


def test_symlinks_are_refused(bundle: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "elsewhere.json"
    shutil.copy(bundle / "policy.json", target)
    (bundle / "policy.json").unlink()
    (bundle / "policy.json").symlink_to(target)
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert "symlink" in capsys.readouterr().err
    linked = tmp_path / "linked-bundle"
    linked.symlink_to(bundle)
    assert verify(linked) == ExitCode.BUNDLE_DAMAGED


def test_a_subdirectory_is_refused(bundle: Path, capsys) -> None:
    (bundle / "extra").mkdir()
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert "not a regular file" in capsys.readouterr().err


def test_a_path_escaping_the_bundle_is_refused(bundle: Path, capsys) -> None:
    secret = bundle.parent / "outside.txt"
    secret.write_text("not part of the bundle")

    def escape(m: dict) -> None:
        m["files"]["../outside.txt"] = {"sha256": hashlib.sha256(secret.read_bytes()).hexdigest(), "bytes": 22}

    rewrite_manifest(bundle, escape)
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert "escape" in capsys.readouterr().err


@pytest.mark.parametrize("keep_signature", [True, False])
def test_a_rewritten_manifest_fails_the_signature(bundle: Path, keys, keep_signature: bool, capsys) -> None:
    rewrite_manifest(bundle, lambda m: m.update(bundle_version=99), keep_signature=keep_signature)
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
    newer = build_bundle(int8_policy_dir, tmp_path / "newer", 9)
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


@needs_export
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


@needs_export
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


@needs_export
def test_export_of_a_small_golden_set_is_refused(int8_policy_dir: Path, tmp_path: Path) -> None:
    from export.exporter import export_bundle

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
    from edge_rl.bundle import open_bundle

    bundle_obj = open_bundle(bundle)
    assert bundle_obj.signer is not None and not bundle_obj.pinned


# ---------------------------------------------------------------------------------------------
# the manifest must describe the IR it carries


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("shape and actions", lambda m: (m["observation"].update(shape=[5]), m["action"].update(n=7))),
        ("action count", lambda m: m["action"].update(n=3, names=["a0", "a1", "a2"])),
        ("safe action", lambda m: m["action"].update(safe=0)),
        ("precision", lambda m: m.update(precision="fp32")),
        ("normalisation", lambda m: m["observation"].update(mean=[v + 1.0 for v in m["observation"]["mean"]])),
        ("clip", lambda m: m["observation"].update(clip=3.0)),
    ],
)
def test_a_manifest_that_misdescribes_its_ir_is_refused(bundle: Path, what: str, change, capsys) -> None:
    rewrite_manifest(bundle, change)
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED, what
    assert "manifest" in one_line(capsys)


# ---------------------------------------------------------------------------------------------
# model files that match their hash but cannot be loaded


@needs_export
@pytest.mark.parametrize("name", ["model.tflite", "model.onnx"])
def test_a_model_file_its_runtime_cannot_load_is_damaged(bundle: Path, name: str, capsys) -> None:
    replace_file(bundle, name, np.random.default_rng(0).bytes(4096))
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert name in one_line(capsys)
    from edge_rl.runtime import load_bundle

    with pytest.raises(ValueError, match=name) as refused:  # never a silent fallback to another backend
        load_bundle(bundle)
    assert refused.value.exit_code == ExitCode.BUNDLE_DAMAGED


@needs_export
def test_an_onnx_model_with_external_data_is_refused_before_parsing(bundle: Path, capsys) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string((bundle / "model.onnx").read_bytes())
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in {"location": "../../../etc/passwd", "offset": "0", "length": "64"}.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    replace_file(bundle, "model.onnx", model.SerializeToString())
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert "external data" in one_line(capsys)


@needs_export
def test_export_fails_when_a_file_it_wrote_cannot_be_loaded_back(int8_policy_dir: Path, tmp_path: Path, monkeypatch):
    import export.tflite_model as tflite_model

    monkeypatch.setattr(tflite_model, "to_tflite", lambda policy: b"TFL3 but not a model" * 8)
    out = tmp_path / "b"
    assert main(["export", str(int8_policy_dir), "--out", str(out), "--formats", "tflite"]) == ExitCode.BUNDLE_DAMAGED
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# golden I/O and manifest values


def invert_golden_actions(m: dict) -> None:
    m["golden"]["actions"] = [1 - a for a in m["golden"]["actions"]]


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("no golden rows", lambda m: m["golden"].update(observations=[], q_values=[], actions=[])),
        ("three golden rows", lambda m: m["golden"].update({k: v[:3] for k, v in m["golden"].items()})),
        ("inverted golden actions", invert_golden_actions),
        ("ragged golden Q-values", lambda m: m["golden"]["q_values"][0].append(1.0)),
        ("boolean bundle version", lambda m: m.update(bundle_version=True)),
        ("fractional bundle version", lambda m: m.update(bundle_version=5.5)),
        ("negative bundle version", lambda m: m.update(bundle_version=-1)),
        ("file size as text", lambda m: m["files"]["policy.json"].update(bytes="100")),
    ],
)
def test_malformed_manifest_values_are_refused(bundle: Path, what: str, change, capsys) -> None:
    rewrite_manifest(bundle, change)
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED, what
    one_line(capsys)


def test_duplicate_manifest_keys_are_refused(bundle: Path, capsys) -> None:
    text = (bundle / "manifest.json").read_text()
    rewrite_manifest(bundle, text=text.replace('"bundle_version": 5', '"bundle_version": 5, "bundle_version": 9', 1))
    assert verify(bundle) == ExitCode.BUNDLE_DAMAGED
    assert "duplicate" in one_line(capsys)


def test_boolean_schema_version_is_refused(bundle: Path, capsys) -> None:
    rewrite_manifest(bundle, lambda m: m.update(schema_version=True))
    assert verify(bundle) == ExitCode.UNKNOWN_SCHEMA
    one_line(capsys)


def test_sizes_are_checked_before_anything_is_read(bundle: Path) -> None:
    """A huge file in place of a small one is refused by its size, never read whole (a memory cap proves it)."""
    with open(bundle / "policy.safetensors", "r+b") as f:
        f.truncate(16 << 30)  # sparse: 16 GiB on paper, nothing on disk
    probe = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30));"
        "from edge_rl.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", probe, "verify", str(bundle)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == ExitCode.BUNDLE_DAMAGED, result.stderr
    assert "Traceback" not in result.stderr and "bytes" in result.stderr


def test_not_a_bundle_says_so(int8_policy_dir: Path, capsys) -> None:
    assert verify(int8_policy_dir) == ExitCode.BAD_INPUT
    err = one_line(capsys)
    assert "not a bundle" in err and "edge-rl export" in err


# ---------------------------------------------------------------------------------------------
# what a command writes for others to read


@needs_export
def test_written_files_are_world_readable_and_keys_private(int8_policy_dir: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        policy_dir = tmp_path / "policy"
        Policy.load(int8_policy_dir).save(policy_dir)
        out = tmp_path / "bundle"
        assert main(["keygen", "--out", str(tmp_path / "keys" / "fleet")]) == 0
        assert main(["export", str(policy_dir), "--out", str(out), "--sign", str(tmp_path / "keys" / "fleet")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [*policy_dir.iterdir(), *out.iterdir()]}
    assert set(modes.values()) == {0o644}, modes
    assert out.stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "keys" / "fleet").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys" / "fleet.pub").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------------------------
# one rule for one observation and for a batch


@pytest.mark.parametrize("value", [1e20, -3e38, 3.4e38])
def test_one_observation_and_a_batch_are_judged_alike(value: float) -> None:
    import warnings

    from edge_rl.runtime import NumpyBackend

    policy = make("cartpole", "fp32")
    backend = NumpyBackend(policy)
    obs = np.array([0.1, value, -0.2, 0.3], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single = backend.q_values(obs)
        batch = backend.q_values(np.stack([obs, obs]))
    np.testing.assert_allclose(single, batch[0], rtol=1e-6)  # accepted both ways (BLAS may round a row differently)
    assert np.isfinite(single).all() and backend.act(obs) == backend.act(np.stack([obs]))[0]


# ---------------------------------------------------------------------------------------------
# kernel sets that do not reproduce the IR


@needs_export
def test_a_deviating_kernel_set_is_reported_and_never_chosen(signed_bundle: Path, monkeypatch, capsys) -> None:
    """XNNPACK requantizes int8 in float: verify shows its deviation, and even as the fastest it is never run."""
    import edge_rl.runtime.verify as verify_module
    from edge_rl.runtime import load_bundle

    monkeypatch.setattr(verify_module, "latency_us", lambda backend, obs: 0.1 if backend.name == "litert" else 9.0)
    assert verify(signed_bundle, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    xnnpack = report["backends"]["litert"]
    assert xnnpack["optional"] and report["backends"]["litert-builtin"]["passed"]
    assert not xnnpack["passed"] and xnnpack["extra"]["max_abs_dq"] > 0  # int8 codes differ on some states
    assert report["fastest"] != "litert" and report["passed"]
    runtime, _, _ = load_bundle(signed_bundle)
    with runtime:
        assert runtime.name == report["fastest"]
    assert verify(signed_bundle) == 0
    assert "deviates: never used" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# a device process leaves no trace outside its bundle


def test_a_device_process_writes_nothing_outside_its_bundle(signed_bundle: Path, keys, tmp_path: Path) -> None:
    """verify, load and act in a fresh process: HOME, the working and temp directories stay empty, the bundle
    untouched (onnxruntime's native init would write ~/.cache/Microsoft/... and phone home, measured)."""
    home, work, temp = (tmp_path / name for name in ("home", "work", "tmp"))
    for directory in (home, work, temp):
        directory.mkdir()
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in signed_bundle.iterdir()}
    probe = (
        "import sys\n"
        "from edge_rl.runtime import available_backends, load_bundle\n"
        "from edge_rl.cli import main\n"
        "print(available_backends())\n"
        "backend, bundle, _ = load_bundle(sys.argv[1])\n"
        "with backend:\n"
        "    assert (backend.act(bundle.golden.observations) == bundle.golden.actions).all()\n"
        "sys.exit(main(['verify', sys.argv[1], '--public-key', sys.argv[2]]))\n"
    )
    env = {
        "HOME": str(home),
        "TMPDIR": str(temp),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",  # compiled bytecode belongs to the installation, not to the process
    }
    result = subprocess.run(
        [sys.executable, "-c", probe, str(signed_bundle), str(keys[1])],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    written = [str(p.relative_to(tmp_path)) for d in (home, work, temp) for p in d.rglob("*")]
    assert written == [], written
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in signed_bundle.iterdir()} == before
    assert "XNNPACK" not in result.stderr  # LiteRT's delegate notice is kept from users
