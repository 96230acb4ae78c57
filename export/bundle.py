"""Bundles: a directory a device can trust, written all at once and checked before anything is parsed.

Layout (flat, nothing else allowed):

    manifest.json         what the bundle is: specs, hashes, card, provenance, golden I/O
    manifest.sha256       hex SHA-256 of manifest.json (a flipped byte in either file is caught)
    manifest.sig          optional: signer's Ed25519 public key + signature of manifest.json
    policy.json, policy.safetensors   the IR (the numpy backend and the reference)
    model.onnx, model.tflite, policy.h   the exported formats asked for

`open_bundle` checks, in this order and before parsing any of it: the directory listing (no
symlinks, subdirectories, pickles or unknown files), manifest.sha256, the signature (when
present, and required when a public key is given); then the manifest's schema, every file's
size and SHA-256, and only then loads the IR. Each refusal is a `BundleError` whose exit code names the reason.
Reading needs numpy only (and `cryptography` for signatures): this runs on the device.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_rl.errors import BundleError, ExitCode
from edge_rl.policy import Policy

FORMAT = "edge-rl-bundle"
SCHEMA_VERSION = 1
MANIFEST, CHECKSUM, SIGNATURE = "manifest.json", "manifest.sha256", "manifest.sig"
IR_FILES = ("policy.json", "policy.safetensors")
FORMAT_FILES = {"onnx": "model.onnx", "tflite": "model.tflite", "c": "policy.h"}
CONTENT_FILES = frozenset((*IR_FILES, *FORMAT_FILES.values()))
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib")
MAX_MANIFEST_BYTES = 64 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bundle:
    """A checked bundle: its manifest, the IR, and the verified bytes of every file."""

    path: Path
    manifest: dict[str, Any]
    policy: Policy
    files: dict[str, bytes]
    signer: str | None  # hex public key of a valid signature, None if unsigned
    pinned: bool  # the signer is the public key the caller trusts

    @property
    def version(self) -> int:
        return int(self.manifest["bundle_version"])


def _listing(path: Path) -> dict[str, Path]:
    """Regular files of the bundle by name; anything a device must not follow or load is refused."""
    if path.is_symlink():
        raise BundleError(f"bundle {path} is a symlink; refusing to follow it")
    if not path.is_dir():
        raise BundleError(f"bundle {path} is not a directory", ExitCode.BAD_INPUT)
    allowed = CONTENT_FILES | {MANIFEST, CHECKSUM, SIGNATURE}
    files = {}
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        mode = os.lstat(entry.path).st_mode
        if stat.S_ISLNK(mode):
            raise BundleError(f"bundle file {entry.name} is a symlink; refusing to follow it")
        if entry.name.endswith(PICKLE_SUFFIXES):
            raise BundleError(f"bundle holds a pickle file {entry.name}; bundles never carry pickles")
        if not stat.S_ISREG(mode):
            raise BundleError(f"bundle entry {entry.name} is not a regular file")
        if entry.name not in allowed:
            raise BundleError(f"unexpected file {entry.name} in the bundle")
        files[entry.name] = Path(entry.path)
    for required in (MANIFEST, CHECKSUM):
        if required not in files:
            raise BundleError(f"bundle {path} has no {required}")
    return files


def _check_signature(manifest_bytes: bytes, record: bytes | None, public_key: bytes | None) -> None:
    """A present signature must verify (against the pinned key, if any); a pinned key requires one."""
    from edge_rl.signing import verify_record

    if record is None:
        if public_key is not None:
            raise BundleError("bundle is not signed, but a public key was given", ExitCode.BAD_SIGNATURE)
        return
    if not verify_record(record, manifest_bytes, public_key):
        whom = "the given public key" if public_key is not None else "its own signer key"
        raise BundleError(f"manifest signature does not verify with {whom}", ExitCode.BAD_SIGNATURE)


def _parse_manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"manifest.json is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"manifest.json is not an {FORMAT} manifest", ExitCode.UNKNOWN_SCHEMA)
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise BundleError(
            f"bundle schema version {version!r} is not supported (this edge-rl reads {SCHEMA_VERSION})",
            ExitCode.UNKNOWN_SCHEMA,
        )
    if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("bundle_version"), int):
        raise BundleError("manifest.json lacks its file table or bundle version")
    return manifest


def _check_files(manifest: dict[str, Any], present: dict[str, Path]) -> dict[str, bytes]:
    listed = manifest["files"]
    for name in listed:
        if not isinstance(name, str) or name not in CONTENT_FILES or Path(name).name != name:
            raise BundleError(f"manifest lists {name!r}, which is not a bundle file name (paths may not escape it)")
    for name in IR_FILES:
        if name not in listed:
            raise BundleError(f"manifest does not list {name}")
    extra = sorted(set(present) - set(listed) - {MANIFEST, CHECKSUM, SIGNATURE})
    if extra:
        raise BundleError(f"file {extra[0]} is in the bundle but not in its manifest")
    contents = {}
    for name, entry in listed.items():
        if name not in present:
            raise BundleError(f"bundle file {name} is missing")
        data = present[name].read_bytes()
        if not isinstance(entry, dict) or len(data) != entry.get("bytes") or sha256(data) != entry.get("sha256"):
            raise BundleError(f"bundle file {name} does not match its SHA-256 in the manifest (modified or truncated)")
        contents[name] = data
    return contents


def open_bundle(
    path: str | Path,
    public_key: bytes | None = None,
    installed_version: int | None = None,
    allow_downgrade: bool = False,
) -> Bundle:
    """Check and load a bundle; raises BundleError (with its exit code) on the first problem."""
    path = Path(path)
    present = _listing(path)
    manifest_bytes = present[MANIFEST].read_bytes()
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise BundleError(f"manifest.json is {len(manifest_bytes)} bytes; refusing more than {MAX_MANIFEST_BYTES}")
    recorded = present[CHECKSUM].read_bytes().decode("ascii", errors="replace").strip()
    if recorded != sha256(manifest_bytes):
        raise BundleError("manifest.json does not match manifest.sha256 (modified or truncated)")
    signature = present[SIGNATURE].read_bytes() if SIGNATURE in present else None
    _check_signature(manifest_bytes, signature, public_key)
    manifest = _parse_manifest(manifest_bytes)
    contents = _check_files(manifest, present)
    if installed_version is not None and manifest["bundle_version"] < installed_version and not allow_downgrade:
        raise BundleError(
            f"bundle version {manifest['bundle_version']} is older than the installed {installed_version}"
            " (pass --allow-downgrade to install it anyway)",
            ExitCode.DOWNGRADE,
        )
    policy = Policy.from_bytes(contents["policy.json"], contents["policy.safetensors"], str(path))
    signer = signature[:32].hex() if signature is not None else None
    return Bundle(path, manifest, policy, contents, signer, public_key is not None and signer is not None)


def write_files(staging: Path, files: dict[str, bytes], manifest: dict[str, Any], signer: Any = None) -> None:
    """Write content files, then the manifest with their hashes, its checksum and signature, into `staging`."""
    manifest["files"] = {name: {"sha256": sha256(data), "bytes": len(data)} for name, data in sorted(files.items())}
    for name, data in files.items():
        (staging / name).write_bytes(data)
    manifest_bytes = (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode("utf-8")
    (staging / MANIFEST).write_bytes(manifest_bytes)
    (staging / CHECKSUM).write_text(sha256(manifest_bytes) + "\n", encoding="ascii")
    if signer is not None:
        (staging / SIGNATURE).write_bytes(signer(manifest_bytes))
