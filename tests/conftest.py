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
