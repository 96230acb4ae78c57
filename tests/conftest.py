"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from tests.c_device import build  # noqa: F401  (the C device simulator, built once per session)
from tests.mosquitto import Mosquitto


@pytest.fixture
def mosquitto_factory() -> Iterator[Callable[..., Mosquitto]]:
    """Make brokers (not started: `.start()` them); all are killed and removed after the test."""
    brokers: list[Mosquitto] = []

    def make(port: int | None = None, *, persistence: bool = True, extra: Sequence[str] = ()) -> Mosquitto:
        brokers.append(Mosquitto(port, persistence=persistence, extra=extra))
        return brokers[-1]

    yield make
    for broker in brokers:
        broker.cleanup()


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A running Mosquitto on a free loopback port, persistence on (autosave on every change)."""
    return mosquitto_factory().start()


# Jammer-switch adaptation is judged over these teachers (tests/test_adapt.py, tests/test_cortex_m.py):
# DQNs whose weights depend on the CPU's torch kernels, so each is one draw of the training.
TEACHER_SEEDS = (0, 1, 2)


@pytest.fixture(scope="session")
def antijam_int8(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Three int8 AntiJam policies trained against the sweeping jammer (~30 s each on 2 cores)."""
    pytest.importorskip("torch")
    from tests.policies import antijam_teacher

    return [antijam_teacher(seed, tmp_path_factory.mktemp(f"aj{seed}")) for seed in TEACHER_SEEDS]
