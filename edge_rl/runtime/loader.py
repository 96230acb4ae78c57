"""Open a bundle on a device: check it, verify its backends on the golden I/O, run the fastest that passed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_rl.bundle import Bundle, open_bundle
from edge_rl.errors import BundleError, ExitCode
from edge_rl.runtime.backends import Backend
from edge_rl.runtime.verify import make_backend, verify_bundle


def load_bundle(
    path: str | Path,
    backend: str = "auto",
    public_key: bytes | None = None,
    installed_version: int | None = None,
    allow_downgrade: bool = False,
    extra: int = 200,
) -> tuple[Backend, Bundle, dict[str, Any]]:
    """The backend to act with, the checked bundle and the verification report.

    `backend="auto"` verifies every backend the bundle has files for and picks the fastest that
    passed (never a kernel set that deviated); a named backend must pass itself. Refusals are
    `BundleError`s with their exit codes; the caller closes the backend (it is a context manager).
    """
    bundle = open_bundle(path, public_key, installed_version, allow_downgrade)
    report = verify_bundle(bundle, None if backend == "auto" else [backend], extra=extra)
    name = report["fastest"] if backend == "auto" else backend
    if name is None or not report["backends"][name]["passed"]:
        raise BundleError(f"no backend of {path} passed verification on this device", ExitCode.FAILURE)
    return make_backend(name, bundle), bundle, report
