"""Ed25519 signatures over bundle manifests (the `cryptography` package; no torch, device-safe).

Keys are PEM files: the private key PKCS#8 (written 0600), the public key SubjectPublicKeyInfo.
The manifest holds every file's SHA-256, so signing its bytes signs the whole bundle. The
signature record (`manifest.sig`) is the signer's raw public key followed by the signature, so
it can be checked before the manifest is parsed, with or without a pinned key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge_rl.errors import BadInput


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BadInput("signing needs the cryptography package: pip install cryptography") from None
    return ed25519


def generate_keypair(private_path: str | Path) -> tuple[Path, Path]:
    """Write a new private key to `private_path` (0600, refusing to overwrite) and its public key next to it.

    A missing parent directory is created owner-only (0700): it is where private keys live.
    """
    from cryptography.hazmat.primitives import serialization as ser

    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise BadInput(f"{path} exists; refusing to overwrite a key")
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise BadInput(f"cannot create the key directory {private_path.parent}: {e.strerror}") from None
    key = _ed25519().Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    public_pem = key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def _read_key(path: str | Path, private: bool) -> Any:
    from cryptography.hazmat.primitives import serialization as ser

    ed25519 = _ed25519()
    try:
        data = Path(path).read_bytes()
        key = ser.load_pem_private_key(data, None) if private else ser.load_pem_public_key(data)
    except (OSError, ValueError, TypeError) as e:
        raise BadInput(f"cannot read {'private' if private else 'public'} key {path}: {e}") from None
    expected = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, expected):
        raise BadInput(f"{path} is not an Ed25519 {'private' if private else 'public'} key")
    return key


def signer(private_path: str | Path) -> Any:
    """A function bytes -> signature record (raw 32-byte public key + 64-byte Ed25519 signature)."""
    from cryptography.hazmat.primitives import serialization as ser

    key = _read_key(private_path, private=True)
    public = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    return lambda data: public + key.sign(data)


def read_public_key(path: str | Path) -> bytes:
    """The raw 32-byte public key from a PEM file (what `verify_signature` takes)."""
    from cryptography.hazmat.primitives import serialization as ser

    return _read_key(path, private=False).public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)


def verify_record(record: bytes, data: bytes, trusted: bytes | None) -> bool:
    """True if `record` (public key + signature) signs `data`, and its key is `trusted` when one is given.

    Without a trusted key this proves integrity (the manifest is what its signer signed), not
    who signed it; devices pin their key with `edge-rl verify --public-key`.
    """
    from cryptography.exceptions import InvalidSignature

    if len(record) != 96 or (trusted is not None and record[:32] != trusted):
        return False
    try:
        _ed25519().Ed25519PublicKey.from_public_bytes(record[:32]).verify(record[32:], data)
    except (InvalidSignature, ValueError):
        return False
    return True
