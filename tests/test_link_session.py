"""The link session's rules on a scripted transport and a fake clock: no ACTION to a quiet or incompatible peer."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from firmware_bridge.links import IncompatiblePeer, Link, State, Transport
from firmware_bridge.protocol import Action, Error, Hello, Obs


class Scripted(Transport):
    """Delivers what the test queues; records what the session sends."""

    describe = "scripted"

    def __init__(self) -> None:
        self.inbox: deque = deque()
        self.sent: list = []

    def open(self) -> None:
        pass

    def send(self, msg) -> int:  # type: ignore[no-untyped-def]
        self.sent.append(msg)
        return len(self.sent) - 1

    def receive(self, timeout: float) -> list:
        out = list(self.inbox)
        self.inbox.clear()
        return out

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ready_link() -> tuple[Link, Scripted, Clock]:
    transport, clock = Scripted(), Clock()
    link = Link(transport, Hello("host", (4,), 2, heartbeat_ms=100), clock=clock)
    transport.inbox.append(Hello("dev", (4,), 2, heartbeat_ms=100))
    link.recv(0)
    assert link.state is State.READY
    return link, transport, clock


def test_an_action_after_a_silent_stall_is_refused_even_without_a_recv() -> None:
    link, transport, clock = ready_link()
    assert link.send(Action(1)) is not None
    clock.now += 10.0  # the loop stalled; the peer said nothing meanwhile
    assert link.send(Action(1)) is None
    assert link.state is State.LOST and link.session.refused_sends == 1
    assert sum(isinstance(m, Action) for m in transport.sent) == 1


def test_incompatible_is_final_and_reported_once() -> None:
    link, transport, _ = ready_link()
    transport.inbox.append(Hello("dev", (5,), 2))  # the device came back as another device
    with pytest.raises(IncompatiblePeer, match=r"observation shape \(5,\)"):
        link.recv(0)
    transport.inbox.append(Hello("dev", (4,), 2))  # and then looks compatible again
    for _ in range(3):
        with pytest.raises(IncompatiblePeer):
            link.recv(0)
    assert link.state is State.INCOMPATIBLE and link.send(Action(1)) is None
    assert sum(isinstance(m, Error) for m in transport.sent) == 1


def test_observations_of_another_size_than_announced_never_reach_the_loop() -> None:
    link, transport, _ = ready_link()
    transport.inbox.extend([Obs(np.zeros(5, np.float32)), Obs(np.zeros(4, np.float32))])
    got = link.recv(0)
    assert isinstance(got, Obs) and got.observation.size == 4 and link.session.wrong_shape == 1


def test_a_closed_link_stays_closed() -> None:
    link, transport, _ = ready_link()
    link.close()
    transport.inbox.append(Hello("dev", (4,), 2))
    assert link.recv(0) is None and link.state is State.CLOSED and link.send(Action(1)) is None


class Pipe(Transport):
    """One end of an in-memory link: what one end sends, the other receives (in order)."""

    describe = "pipe"

    def __init__(self) -> None:
        import threading

        self.inbox: deque = deque()
        self.peer: Pipe | None = None
        self.arrived = threading.Condition()
        self._seq = 0

    def open(self) -> None:
        pass

    def send(self, msg) -> int:  # type: ignore[no-untyped-def]
        from dataclasses import replace

        seq, self._seq = self._seq, self._seq + 1
        with self.peer.arrived:
            self.peer.inbox.append(replace(msg, seq=seq))
            self.peer.arrived.notify()
        return seq

    def receive(self, timeout: float) -> list:
        with self.arrived:
            self.arrived.wait_for(lambda: self.inbox, timeout)
            out = list(self.inbox)
            self.inbox.clear()
        return out

    def close(self) -> None:
        pass


def test_a_periodic_device_never_keeps_a_setpoint_across_a_lost_link() -> None:
    """A host that goes quiet and comes back without a new ACTION gets the safe action, not its old setpoint."""
    import threading
    import time

    from edge_rl.deviceloop import serve
    from edge_rl.envdevice import EnvDevice

    host_end, device_end = Pipe(), Pipe()
    host_end.peer, device_end.peer = device_end, host_end
    device = EnvDevice("CartPole-v1", device_id="cp", seed=0, heartbeat_ms=50)
    device_link = Link(device_end, device.hello, "device")
    host = Link(host_end, Hello("host", (4,), 2, heartbeat_ms=50))
    stop = threading.Event()
    runner = threading.Thread(target=serve, args=(device, device_link, 0, 10.0, stop.is_set))
    runner.start()
    try:
        obs = None
        while not isinstance(obs, Obs) or not host.ready:
            obs = host.recv(0.05)
        host.send(Action(0, answers=obs.seq, valid_ms=1000))  # the setpoint, valid for a second
        t0 = time.monotonic()
        while time.monotonic() < t0 + 0.2:
            host.recv(0.01)
        held = device.counters.steps - device.counters.safe_steps
        time.sleep(0.3)  # the host's loop stalls: no heartbeats, the device loses the link
        while not (host.ready and device_link.ready):
            host.recv(0.01)  # the host comes back: both ends shake hands again, no new ACTION
        before = (device.counters.steps, device.counters.safe_steps)
        while time.monotonic() < t0 + 0.9:  # the old setpoint would still be "valid" here
            host.recv(0.01)
        after = (device.counters.steps, device.counters.safe_steps)
    finally:
        stop.set()
        runner.join(5)
    assert held >= 10, "the setpoint was not applied while the host was there"
    assert after[0] - before[0] >= 10, "the device stopped stepping"
    assert after[1] - before[1] == after[0] - before[0], "the old setpoint survived the lost link"
