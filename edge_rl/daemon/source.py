"""Where the running bundle comes from, and checking it again when an operator sends SIGHUP.

A bundle is verified before it acts, at start and at every reload, in the same order: listing,
checksum, signature (when a key is configured), hashes, schema, version against the installed
one (an older bundle is refused, exit 6, unless downgrades are allowed), golden I/O on the backend
that will act. A reload verifies in a thread (the loop keeps acting meanwhile) and any failure
leaves the running bundle untouched. The installed version is recorded in the state directory.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_rl.atomic import write_atomic
from edge_rl.bundle import Bundle
from edge_rl.errors import BadInput, ExitCode
from edge_rl.runtime import load_bundle
from edge_rl.runtime.backends import Backend

INSTALLED = "installed.json"
VERIFY_EXTRA = 200  # jittered states beyond the golden ones, on every backend, before a bundle acts


@dataclass(frozen=True)
class BundleSource:
    path: Path
    public_key: bytes | None = None
    backend: str = "auto"
    allow_downgrade: bool = False

    def load(self, installed: int | None) -> tuple[Backend, Bundle, dict[str, Any]]:
        """The verified bundle and the backend that will act (BundleError with its exit code otherwise)."""
        return load_bundle(self.path, self.backend, self.public_key, installed, self.allow_downgrade, VERIFY_EXTRA)


def installed_version(state_dir: Path | None) -> int | None:
    """The version of the bundle this device ran last (None: nothing installed yet)."""
    if state_dir is None:
        return None
    path = state_dir / INSTALLED
    try:
        record = json.loads(path.read_bytes()[:4096])
        version = record["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError(version)
        return version
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise BadInput(f"{path} is damaged: remove it to accept a bundle of any version") from None


def record_installed(state_dir: Path, bundle: Bundle) -> None:
    write_atomic(state_dir / INSTALLED, json.dumps({"version": bundle.version, "digest": bundle.policy.digest()}))


class BundleCheck:
    """The bundle at `source.path` verified again, in a thread; `result` None if it is the running one."""

    def __init__(self, source: BundleSource, running: Bundle) -> None:
        self.source, self.running = source, running
        self.result: tuple[Backend, Bundle] | None = None
        self.error: str | None = None
        self.exit_code: str | None = None
        self._thread = threading.Thread(target=self._check, name="edge-rl-bundle-check", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def abandon(self, timeout: float = 30.0) -> None:
        """At shutdown: let the check finish (a runtime torn down mid-load aborts the process), drop its result."""
        self._thread.join(timeout)
        if self.result is not None:
            self.result[0].close()
            self.result = None

    def _check(self) -> None:
        """Verify the whole bundle again (a file changed in place must be caught even if the manifest was not)."""
        try:
            actor, bundle, _ = self.source.load(self.running.version)
        except BadInput as e:
            self.error, self.exit_code = str(e), ExitCode(e.exit_code).name
            return
        except OSError as e:
            self.error, self.exit_code = f"{self.source.path}: {e.strerror or e}", ExitCode.BUNDLE_DAMAGED.name
            return
        if bundle.policy.digest() == self.running.policy.digest() and bundle.version == self.running.version:
            actor.close()  # the same bundle: nothing to switch
            return
        self.result = (actor, bundle)
