"""`--prometheus PORT`: the table's figures as Prometheus metrics, labelled by device, read at scrape time.

A custom collector on a registry of its own (not the process-wide default): each scrape takes
the fleet's summary under the monitor's lock, so the numbers are one consistent snapshot and
nothing is copied between scrapes. Daemon counters that restart with a boot (steps, safe actions)
are exported as counters: Prometheus handles counter resets. Latencies are in seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edge_rl.errors import BadInput
from edge_rl.monitor.fleet import Fleet

# summary key -> (metric name, help, scale); counters get `_total` from prometheus_client
GAUGES = {
    "success_rate": ("edgerl_success_rate", "fraction of the last sample interval's transitions that succeeded", 1),
    "return_mean": ("edgerl_return_mean", "mean return of the last 20 episodes", 1),
    "rate_hz": ("edgerl_rate_hz", "observations answered per second over the last sample interval", 1),
    "period_p50_us": ("edgerl_period_p50_seconds", "loop period, median over the last sample interval", 1e-6),
    "period_p99_us": ("edgerl_period_p99_seconds", "loop period, 99th percentile over the last interval", 1e-6),
    "act_p50_us": ("edgerl_act_p50_seconds", "observation received to action written, median", 1e-6),
    "act_p99_us": ("edgerl_act_p99_seconds", "observation received to action written, 99th percentile", 1e-6),
    "seq_gaps": ("edgerl_seq_gaps", "telemetry messages still missing (seq gaps, all boots seen)", 1),
    "last_seen_age_s": ("edgerl_last_seen_age_seconds", "seconds since the monitor last heard from the device", 1),
}
COUNTERS = {
    "steps": ("edgerl_steps", "observations answered since the daemon started", 1),
    "promotions": ("edgerl_promotions", "candidates promoted (the daemon's count, resumed from its checkpoint)", 1),
    "rollbacks": ("edgerl_rollbacks", "rollbacks to last-good (the daemon's count, resumed from its checkpoint)", 1),
    "drift_alarms": ("edgerl_drift_alarms", "drift alarms (the daemon's count, resumed from its checkpoint)", 1),
    "safe_actions": ("edgerl_safe_actions", "steps answered with the safe action since the daemon started", 1),
    "deadline_misses": ("edgerl_deadline_misses", "steps whose action missed the deadline since the daemon started", 1),
    "messages": ("edgerl_messages", "messages the monitor received from the device", 1),
    "duplicates": ("edgerl_duplicates", "duplicate telemetry messages (same boot and seq) the monitor ignored", 1),
    "bad_messages": ("edgerl_bad_messages", "messages refused: not JSON, wrong schema, oversized", 1),
    "safe_bursts": ("edgerl_safe_bursts", "samples whose safe actions rose by more than the burst threshold", 1),
}


class FleetCollector:
    """Builds every metric from one `Fleet.summary()` per scrape."""

    def __init__(self, fleet: Fleet, lock: threading.Lock, clock: Callable[[], float]) -> None:
        self.fleet, self.lock, self.clock = fleet, lock, clock

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            summary = self.fleet.summary(self.clock())
        devices: dict[str, dict[str, Any]] = summary["devices"]
        online = GaugeMetricFamily("edgerl_online", "1 while the device is online and heard from", labels=["device"])
        alarms = GaugeMetricFamily("edgerl_alarms", "alarms the monitor shows for the device now", labels=["device"])
        for name, d in devices.items():
            online.add_metric([name], 1.0 if d["presence"] == "online" else 0.0)
            alarms.add_metric([name], float(len(d["alarms"])))
        yield online
        yield alarms
        for family, table in ((GaugeMetricFamily, GAUGES), (CounterMetricFamily, COUNTERS)):
            for key, (metric, help_text, scale) in table.items():
                out = family(metric, help_text, labels=["device"])
                for name, d in devices.items():
                    if d[key] is not None:
                        out.add_metric([name], float(d[key]) * scale)
                yield out
        unknown = CounterMetricFamily(
            "edgerl_monitor_unknown_bad_messages", "refused messages whose topic names no valid device"
        )
        unknown.add_metric([], float(summary["unknown_bad"]))
        yield unknown


class Exporter:
    """The HTTP endpoint (prometheus_client's server thread); `port` is the bound one (0 picks a free port)."""

    def __init__(
        self, fleet: Fleet, lock: threading.Lock, port: int, bind: str, clock: Callable[[], float] = time.time
    ) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(FleetCollector(fleet, lock, clock))  # type: ignore[arg-type]
        try:
            self.server, self.thread = start_http_server(port, addr=bind, registry=registry)
        except (OSError, ValueError) as e:
            raise BadInput(f"--prometheus {bind}:{port}: cannot listen: {getattr(e, 'strerror', None) or e}") from None
        self.port: int = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
