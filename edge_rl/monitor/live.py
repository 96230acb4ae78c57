"""One live monitoring session: the subscriber's queue drained into the fleet (and the record), shown.

All fleet updates happen here, in the caller's thread, under `lock` (the Prometheus scrape
thread reads under the same lock). The loop ends after `duration`, when `stop` is set (SIGTERM)
or on Ctrl-C; either way the subscriber disconnects cleanly (a persistent session stays on the
broker) and what already arrived is accounted before the caller prints or plots.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable

from edge_rl.monitor.fleet import Fleet
from edge_rl.monitor.record import Recorder
from edge_rl.monitor.subscribe import Broker, Subscriber, new_inbox, subscriptions

BATCH = 1000  # messages accounted per lock hold: a scrape never waits long
TICK_S = 0.25  # longest wait for a message before the screen is refreshed


class Monitor:
    """Subscriber thread -> inbox -> Fleet (+ Recorder)."""

    def __init__(self, broker: Broker, fleet: Fleet, recorder: Recorder | None = None) -> None:
        self.fleet, self.recorder = fleet, recorder
        self.lock = threading.Lock()
        self.inbox = new_inbox()
        self.subscriber = Subscriber(broker, subscriptions(fleet.device), self.inbox)

    def drain(self, timeout: float) -> int:
        """Account what has arrived, waiting up to `timeout` for the first message; how many were accounted."""
        try:
            batch = [self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait()]
        except queue.Empty:
            return 0
        while len(batch) < BATCH:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        with self.lock:
            for topic, payload, at in batch:
                received = self.fleet.receive(topic, payload, at)
                if self.recorder is not None:
                    self.recorder.write(topic, payload, at, received)
        if self.recorder is not None:
            self.recorder.flush()
        return len(batch)

    def status(self) -> str:
        s = self.subscriber
        tries = f", attempt {s.attempts}" if s.attempts and not s.connected else ""
        dropped = f", {s.dropped} dropped (monitor too slow)" if s.dropped else ""
        return f"{s.broker.url}: {s.status}{tries}{dropped}"

    def run(self, duration: float | None, stop: threading.Event, show: Callable[[], None]) -> None:
        """Receive until `duration` seconds pass or `stop` is set, calling `show` after each wait."""
        deadline = math.inf if duration is None else time.monotonic() + duration
        self.subscriber.start()
        try:
            while not stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.drain(min(TICK_S, remaining))
                show()
        finally:
            self.subscriber.stop()
            while self.drain(0):
                pass
