"""Bundles on disk: a flat directory a device can trust, checked before anything in it is parsed.

Layout (nothing else allowed):

    manifest.json         what the bundle is: specs, hashes and sizes, card, provenance, golden I/O
    manifest.sha256       hex SHA-256 of manifest.json (a flipped byte in either file is caught)
    manifest.sig          optional: the signer's Ed25519 public key + signature of manifest.json
    policy.json, policy.safetensors   the IR (the numpy backend and the reference)
    model.onnx, model.tflite, policy.h   the exported formats asked for

`open_bundle` checks, in this order: that the directory is a bundle at all, its listing (no
symlinks, subdirectories, pickles or unknown files), manifest.sha256, the signature (when present,
and required when a public key is given); then the manifest's schema, every file's size (before
reading it: a huge file is refused unread) and SHA-256, the IR, and that the manifest describes
that IR. Each refusal is a `BundleError` whose exit code names the reason. Needs numpy only
(and `cryptography` for signatures): this is the device's side.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_rl.bundle import manifest as schema
from edge_rl.errors import BadInput, BundleError, ExitCode
from edge_rl.policy import JSON_FILE, Policy

MANIFEST, CHECKSUM, SIGNATURE = "manifest.json", "manifest.sha256", "manifest.sig"
IR_FILES = ("policy.json", "policy.safetensors")
FORMAT_FILES = {"onnx": "model.onnx", "tflite": "model.tflite", "c": "policy.h"}
CONTENT_FILES = frozenset((*IR_FILES, *FORMAT_FILES.values()))
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib")
MAX_BYTES = {MANIFEST: 64 << 20, CHECKSUM: 256, SIGNATURE: 1024}
MAX_FILE_BYTES = 512 << 20  # far above any policy this project makes; a bigger file is not ours


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bundle:
    """A checked bundle: its manifest, the IR, the golden I/O and the verified bytes of every file."""

    path: Path
    manifest: dict[str, Any]
    policy: Policy
    golden: schema.Golden
    files: dict[str, bytes]
    signer: str | None  # hex public key of a valid signature, None if unsigned
    pinned: bool  # the signer is the public key the caller trusts

    @property
    def version(self) -> int:
        return int(self.manifest["bundle_version"])


def _read(path: Path, size: int, name: str) -> bytes:
    """Exactly `size` bytes of a regular file, refusing a symlink or a size that differs, before reading."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise BundleError(f"cannot open bundle file {name}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        actual = os.fstat(f.fileno()).st_size
        if actual != size:
            raise BundleError(f"bundle file {name} is {actual} bytes; the manifest says {size} (modified or truncated)")
        data = f.read(size + 1)
    if len(data) != size:
        raise BundleError(f"bundle file {name} changed size while it was read")
    return data


def _read_small(files: dict[str, Path], name: str) -> bytes:
    """A manifest-side file, refused by its size before it is read."""
    size = files[name].lstat().st_size
    if size > MAX_BYTES[name]:
        raise BundleError(f"{name} is {size} bytes; refusing more than {MAX_BYTES[name]}")
    return _read(files[name], size, name)


def _listing(path: Path) -> dict[str, Path]:
    """Regular files of the bundle by name; anything a device must not follow or load is refused."""
    if path.is_symlink():
        raise BundleError(f"bundle {path} is a symlink; refusing to follow it")
    if not path.is_dir():
        raise BadInput(f"bundle {path} is missing (or not a directory)")
    try:
        names = {entry.name for entry in os.scandir(path)}
    except OSError as e:
        raise BadInput(f"cannot list bundle {path}: {e.strerror}") from None
    if not names & {MANIFEST, CHECKSUM}:
        what = "a policy directory" if JSON_FILE in names else "a directory without manifest.json"
        raise BadInput(f"{path} is {what}, not a bundle; make one with `edge-rl export`")
    allowed = CONTENT_FILES | {MANIFEST, CHECKSUM, SIGNATURE}
    files = {}
    for name in sorted(names):
        mode = os.lstat(path / name).st_mode
        if stat.S_ISLNK(mode):
            raise BundleError(f"bundle file {name} is a symlink; refusing to follow it")
        if name.endswith(PICKLE_SUFFIXES):
            raise BundleError(f"bundle holds a pickle file {name}; bundles never carry pickles")
        if not stat.S_ISREG(mode):
            raise BundleError(f"bundle entry {name} is not a regular file")
        if name not in allowed:
            raise BundleError(f"unexpected file {name} in the bundle")
        files[name] = path / name
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


def _contents(manifest: dict[str, Any], present: dict[str, Path]) -> dict[str, bytes]:
    """Every listed file, size-checked before and hash-checked after it is read."""
    listed = manifest["files"]
    for name in listed:
        if name not in CONTENT_FILES:
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
        if entry["bytes"] > MAX_FILE_BYTES:
            raise BundleError(f"manifest says {name} is {entry['bytes']} bytes; refusing more than {MAX_FILE_BYTES}")
        data = _read(present[name], entry["bytes"], name)
        if sha256(data) != entry["sha256"]:
            raise BundleError(f"bundle file {name} does not match its SHA-256 in the manifest (modified)")
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
    manifest_bytes = _read_small(present, MANIFEST)
    recorded = _read_small(present, CHECKSUM).decode("ascii", errors="replace").strip()
    if recorded != sha256(manifest_bytes):
        raise BundleError("manifest.json does not match manifest.sha256 (modified or truncated)")
    signature = _read_small(present, SIGNATURE) if SIGNATURE in present else None
    _check_signature(manifest_bytes, signature, public_key)
    manifest = schema.parse(manifest_bytes)
    contents = _contents(manifest, present)
    if installed_version is not None and manifest["bundle_version"] < installed_version and not allow_downgrade:
        raise BundleError(
            f"bundle version {manifest['bundle_version']} is older than the installed {installed_version}"
            " (pass --allow-downgrade to install it anyway)",
            ExitCode.DOWNGRADE,
        )
    try:
        policy = Policy.from_bytes(contents["policy.json"], contents["policy.safetensors"], str(path))
    except BadInput as e:
        raise BundleError(str(e)) from None
    schema.check_describes(manifest, policy)
    golden = schema.golden(manifest, policy)
    signer = signature[:32].hex() if signature is not None else None
    return Bundle(path, manifest, policy, golden, contents, signer, public_key is not None and signer is not None)


def write_bundle(
    directory: Path,
    policy: Policy,
    manifest: dict[str, Any],
    model_files: dict[str, bytes] | None = None,
    sign: Callable[[bytes], bytes] | None = None,
) -> list[str]:
    """Write the IR, the model files, then the manifest with their hashes, its checksum and signature.

    `manifest` comes from `manifest.build`; `model_files` maps names in FORMAT_FILES' values to
    bytes (none: a bundle the numpy backend runs alone). Nothing is verified here: `export`
    verifies what it wrote before it moves the files into place. Returns the names written, in
    the order a reader should see them appear (manifest.sha256 last).
    """
    unknown = sorted(set(model_files or {}) - set(FORMAT_FILES.values()))
    if unknown:
        raise BadInput(f"{unknown} are not bundle model files ({', '.join(FORMAT_FILES.values())})")
    json_text, tensor_bytes = policy.to_bytes()
    files = {IR_FILES[0]: json_text, IR_FILES[1]: tensor_bytes, **(model_files or {})}
    manifest["files"] = {name: {"sha256": sha256(data), "bytes": len(data)} for name, data in sorted(files.items())}
    manifest_bytes = (json.dumps(manifest, indent=1, allow_nan=False) + "\n").encode("utf-8")
    written = {**files, MANIFEST: manifest_bytes}
    if sign is not None:
        written[SIGNATURE] = sign(manifest_bytes)
    written[CHECKSUM] = (sha256(manifest_bytes) + "\n").encode("ascii")
    for name, data in written.items():
        (directory / name).write_bytes(data)
    return list(written)
