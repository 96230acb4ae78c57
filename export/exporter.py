"""`export_bundle`: IR -> verified bundle directory, all or nothing.

Everything is written into `OUT/.partial/` first; the bundle is opened and verified from there
exactly as a device would, and only then are the files moved up into OUT (manifest.sha256 last,
so an interrupted move leaves a bundle that refuses to load, never one that half works). Any
failure removes `.partial` (and OUT, if this export created it). Nothing is written elsewhere.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from edge_rl.bundle import FORMAT_FILES, build_manifest, open_bundle, write_bundle
from edge_rl.card import model_card
from edge_rl.errors import BadInput, BundleError, ExitCode
from edge_rl.policy import Policy
from edge_rl.runtime.verify import BACKEND_FILES, verify_bundle

STAGING = ".partial"
CARD_KEYS = ("params", "weight_bytes", "fp32_bytes", "compression_ratio", "macs", "precisions")


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _versions() -> dict[str, str | None]:
    names = ("edge-rl", "numpy", "onnx", "onnxruntime", "ai-edge-litert", "flatbuffers", "cryptography")
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _check_every_file_ran(report: dict[str, Any], files: dict[str, bytes]) -> None:
    """Each model file written must have been loaded back and passed on at least one backend here."""
    for file in sorted(set(BACKEND_FILES.values()) & files.keys()):
        runs = [r for name, r in report["backends"].items() if BACKEND_FILES.get(name) == file]
        if not any(r["available"] and r["passed"] for r in runs):
            reasons = "; ".join(r.get("reason", "failed") for r in runs)
            raise BundleError(f"{file} could not be loaded back and checked here ({reasons})", ExitCode.FAILURE)


def _model_files(policy: Policy, formats: list[str], golden_obs: np.ndarray, golden_actions: np.ndarray) -> dict:
    files = {}
    for fmt in formats:
        if fmt == "onnx":
            from export.onnx_graph import to_onnx

            files[FORMAT_FILES[fmt]] = to_onnx(policy)
        elif fmt == "tflite":
            from export.tflite_model import to_tflite

            files[FORMAT_FILES[fmt]] = to_tflite(policy)
        else:
            from export.c_header import to_c_header

            files[FORMAT_FILES[fmt]] = to_c_header(policy, golden_obs, golden_actions).encode("ascii")
    return files


def export_bundle(
    policy: Policy,
    out: str | Path,
    formats: list[str],
    golden_states: np.ndarray,
    verify_states: np.ndarray | None = None,
    bundle_version: int | None = None,
    sign_key: str | Path | None = None,
    provenance: dict[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write and verify a bundle at `out` (which must not exist or be empty); returns it and the verification."""
    unknown = sorted(set(formats) - set(FORMAT_FILES))
    if unknown or not formats:
        raise BadInput(f"unknown export format(s) {unknown}; choose from {', '.join(FORMAT_FILES)}")
    card = model_card(policy)
    manifest = build_manifest(
        policy,
        golden_states,
        formats,
        bundle_version,
        card={k: card[k] for k in CARD_KEYS},
        provenance={
            "env_id": policy.metadata.get("env_id"),
            "env_kwargs": policy.metadata.get("env_kwargs"),
            "seed": policy.metadata.get("seed"),
            "git_commit": _git_commit(),
            "versions": _versions(),
            **(provenance or {}),
        },
    )
    signer = None
    if sign_key is not None:
        from edge_rl.signing import signer as make_signer

        signer = make_signer(sign_key)
    out = Path(out)
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise BadInput(f"output {out} exists and is not an empty directory; choose a new path")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = out / STAGING
    moved: list[Path] = []
    try:
        staging.mkdir()
        golden = np.asarray(manifest["golden"]["observations"], np.float32)
        model_files = _model_files(policy, formats, golden, np.asarray(manifest["golden"]["actions"]))
        names = write_bundle(staging, policy, manifest, model_files, signer)
        report = verify_bundle(open_bundle(staging), states=verify_states)
        if not report["passed"]:
            failed = [n for n, r in report["backends"].items() if not (r["passed"] or r["optional"])]
            raise BundleError(f"export verification failed for {', '.join(failed)}", ExitCode.FAILURE)
        _check_every_file_ran(report, model_files)
        for name in names:  # manifest.sha256 last: a bundle interrupted here refuses to load
            os.replace(staging / name, out / name)
            moved.append(out / name)
        staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for path in moved:
            path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out, report
