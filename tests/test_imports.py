"""The import rules of design.md, as import-linter contracts: they hold, and a forbidden import breaks them."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_rl", "quantize", "export", "firmware_bridge")
LINT = Path(sys.executable).with_name("lint-imports")
DEVICE = "device side: no export, torch, gymnasium"


def lint(tree: Path) -> subprocess.CompletedProcess:
    """lint-imports on the packages in `tree`, with the project's contracts."""
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A copy of the four packages and pyproject.toml, to break on purpose."""
    if not LINT.exists():
        pytest.skip("import-linter is a dev dependency: pip install -e '.[dev]'")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("edge_rl/runtime/backends.py", "import torch", "torch is imported only on the training side"),
        ("edge_rl/runtime/backends.py", "import gymnasium", "device side: no export, torch, gymnasium"),
        ("edge_rl/bundle/manifest.py", "from export import ExportError", "device side: no export, torch, gymnasium"),
        (
            "edge_rl/stream/learner.py",
            "from edge_rl.train.config import DQNConfig",
            "device side: no export, torch, gymnasium",
        ),
        ("firmware_bridge/__init__.py", "import edge_rl", "firmware_bridge stands alone"),
        ("edge_rl/stream/learner.py", "from edge_rl.stream import adapt", "no import cycles"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tree: Path, module: str, line: str, contract: str) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n\ndef _breaks_the_rule() -> None:\n    {line}  # noqa\n")
    result = lint(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert contract in result.stdout.split("Broken contracts")[-1], result.stdout
