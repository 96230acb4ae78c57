"""A simulated fleet: hundreds of devices' telemetry from a few MQTT connections, to load and try the monitor.

Each simulated device publishes what a daemon publishes (`telemetry.schema`): a retained `online`
status at start, a `sample` every 1/rate seconds with evolving figures (a learning curve of success
rate and return, loop latency, safe actions), now and then a `candidate_promoted`, `rollback` or
`drift_alarm` event, and an `offline` status at a clean stop. `wall` is stamped just before the
PUBLISH, so a reader measures lag as its clock minus `wall` (same host, same clock). Devices are
spread evenly over each period and shared out over `connections` clients (one scheduling thread
plus paho's network thread each), not one client per device: so there is no per-device will.
Every message kind is checked against the schema's field lists before the first one is sent.

    python -m edge_rl.monitor.simulate mqtt://127.0.0.1:1883 --devices 200 --rate 1
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt

from edge_rl.errors import BadInput
from edge_rl.monitor.subscribe import Broker, parse_url
from edge_rl.telemetry import schema
from edge_rl.telemetry.process import jsonable
from edge_rl.telemetry.publish import WINDOW

CONNECT_TIMEOUT = 10.0  # seconds every connection has to come up before the simulation gives up
EVENT_CHANCE = {"candidate_promoted": 1 / 300, "rollback": 1 / 3000, "drift_alarm": 1 / 3000}  # per sample


class SimDevice:
    """One device's evolving state; `tick` returns the messages of one sample period, newest figures last."""

    def __init__(self, name: str, seed: int, rate_hz: float, events: float) -> None:
        self.name, self.topics = schema.check_device(name), schema.topics(name)
        self.rng = random.Random(seed)
        # a fresh boot per start, as a daemon's: a restarted simulator is a new boot, not duplicates
        self.boot = uuid.uuid4().hex
        self.interval = 1.0 / rate_hz
        self.events = events  # scale of EVENT_CHANCE (0: no events)
        self.seq = self.event_seq = 0
        self.t = 0  # samples so far
        self.start, self.target = self.rng.uniform(0.1, 0.4), self.rng.uniform(0.6, 0.95)
        self.tau = self.rng.uniform(60, 300)  # samples to learn ~63 % of the way
        self.dip = 0.0  # success lost to a drift, recovering
        self.counts = {"steps": 0, "episodes": 0, "promotions": 0, "rollbacks": 0, "drift_alarms": 0, "trials": 0}
        self.safe = 0
        self.returns: list[float] = []
        self.model_id = f"{self.rng.getrandbits(64):016x}"
        self.last_sample: dict[str, Any] = {}
        self.sent = 0  # messages handed to the client (statuses included)

    def status(self, state: str) -> tuple[str, bytes]:
        doc = self._head("status", with_seq=False)
        doc.update(state=state, bundle_version=3, model_id=self.model_id, precision="int8", adapt="head")
        return self.topics.status, self._encode(doc)

    def tick(self) -> list[tuple[str, bytes]]:
        """An event now and then, then this period's sample."""
        self.t += 1
        out = [self.event(name) for name, p in EVENT_CHANCE.items() if self.rng.random() < p * self.events]
        return [*out, (self.topics.telemetry, self._encode(self._sample()))]

    def _success(self) -> float:
        learned = self.start + (self.target - self.start) * (1 - math.exp(-self.t / self.tau))
        self.dip *= 0.9
        return min(1.0, max(0.0, learned - self.dip + self.rng.gauss(0, 0.03)))

    def _sample(self) -> dict[str, Any]:
        c, rng = self.counts, self.rng
        rate = rng.gauss(100.0, 1.0)
        steps = round(rate * self.interval)
        success = self._success()
        ended = [round(50 * success + rng.gauss(0, 2), 2) for _ in range(steps // 50)]
        self.returns = (self.returns + ended)[-20:]
        c["steps"] += steps
        c["episodes"] += len(ended)
        self.safe += (rng.random() < 0.05) + (25 if rng.random() < 0.0005 * self.events else 0)
        act_p50 = rng.uniform(90, 150)
        doc = self._head("sample")
        doc.update(
            interval_s=round(self.interval, 4),
            steps=c["steps"],
            rate_hz=round(rate, 2),
            episodes=c["episodes"],
            returns=ended,
            return_mean=round(sum(self.returns) / len(self.returns), 3) if self.returns else None,
            reward_mean=round(success - 0.05, 4),
            success_rate=round(success, 4),
            period_p50_us=round(rng.gauss(10_000, 20)),
            period_p99_us=round(rng.uniform(10_300, 12_000)),
            act_p50_us=round(act_p50),
            act_p99_us=round(act_p50 * rng.uniform(1.8, 4.0)),
            learn_us=round(rng.uniform(300, 500), 1),
            td_error=round(0.3 * math.exp(-self.t / self.tau) + rng.uniform(0.01, 0.05), 4),
            updates=c["steps"],
            epsilon=0.05,
            adapt="head",
            paused=False,
            gate_phase="cooldown" if self.dip > 0.05 else "learning",
            **{k: c[k] for k in ("promotions", "rollbacks", "drift_alarms", "trials")},
            safe_actions=self.safe,
            fallbacks={"deadline": self.safe} if self.safe else {},
            deadline_misses=self.safe,
            link={"state": "ready", "frames": 2 * c["steps"], "crc_errors": 0, "seq_gaps": 0},
            rss_mb=round(rng.gauss(82, 0.5), 1),
            cpu_pct=round(rng.uniform(8, 14), 2),
            bundle_version=3,
            mqtt={
                **{"connects": 1, "disconnects": 0, "refused": 0, "published": self.seq, "acked": self.seq - 1},
                **{"half_open": 0, "connected": True, "outbox_rows": 1, "outbox_bytes": 1500},
                **{"dropped_samples": 0, "dropped_events": 0, "outbox_on_disk": True, "queue_dropped": 0},
            },
        )
        self.last_sample = doc
        return doc

    def event(self, name: str) -> tuple[str, bytes]:
        c, rng = self.counts, self.rng
        self.event_seq += 1
        data: dict[str, Any] = {"event_seq": self.event_seq}
        if name == "candidate_promoted":
            c["trials"] += 1
            c["promotions"] += 1
            self.target = min(0.98, self.target + 0.02)
            digest = f"{rng.getrandbits(64):016x}"
            data.update(step=c["steps"], baseline=0.5, trial=0.52, trial_steps=2000, digest=digest)
        else:  # a daemon's rollback comes of a drift alarm (daemon/gate.py): both counts rise
            c["drift_alarms"] += 1
            c["rollbacks"] += name == "rollback"
            self.dip = 0.3
            data.update(incumbent=f"{rng.getrandbits(64):016x}", learning_frozen_until_step=c["steps"] + 5000)
        doc = self._head("event")
        doc.update(event=name, data=data)
        return self.topics.telemetry, self._encode(doc)

    def _head(self, kind: str, with_seq: bool = True) -> dict[str, Any]:
        """The common fields; `wall` is now, the send time (the caller publishes at once)."""
        doc: dict[str, Any] = {"v": schema.VERSION, "device": self.name, "boot": self.boot}
        if with_seq:
            self.seq += 1
            doc["seq"] = self.seq
        doc.update(kind=kind, wall=round(time.time(), 6), mono=round(time.monotonic(), 6))
        return doc

    def _encode(self, doc: dict[str, Any]) -> bytes:
        self.sent += 1
        return json.dumps(jsonable(doc), separators=(",", ":"), allow_nan=False).encode()


def check_against_schema() -> None:
    """Every simulated message kind has exactly the schema's top-level fields and parses (the schema lists no
    nested keys: tests compare `mqtt`'s against a real Publisher's sample)."""
    probe = SimDevice("schema-probe", 0, 1.0, events=0)
    common = set(schema.COMMON_FIELDS)
    expected = {
        "status": common - {"seq"} | set(schema.STATUS_FIELDS),
        "event": common | set(schema.EVENT_FIELDS),
        "sample": common | set(schema.SAMPLE_FIELDS),
    }
    for _, payload in (probe.status("online"), probe.event("rollback"), *probe.tick()):
        doc = schema.parse_message(payload)
        if set(doc) != expected[doc["kind"]]:
            drift = sorted(set(doc) ^ expected[doc["kind"]])
            raise AssertionError(f"the simulated {doc['kind']} drifted from telemetry.schema: {drift}")


class Simulator:
    """`devices` simulated daemons on `connections` MQTT clients; `run` publishes until the duration or `stop`."""

    def __init__(
        self,
        broker: Broker,
        devices: int,
        rate_hz: float = 1.0,
        connections: int = 4,
        seed: int = 0,
        prefix: str = "sim",
        events: float = 1.0,
    ) -> None:
        check_against_schema()
        self.broker, self.rate_hz = broker, rate_hz
        self.devices = [SimDevice(f"{prefix}-{i:04d}", seed * 100_003 + i, rate_hz, events) for i in range(devices)]
        run = uuid.uuid4().hex[:8]  # two simulators of one prefix must not take each other's client ids
        self.clients = [self._client(f"edgerl-{prefix}-{run}-{c}") for c in range(min(connections, devices))]
        self.late = [0] * len(self.clients)  # per client: samples sent over a period behind schedule (overloaded)
        self.failed = [0] * len(self.clients)  # per client: publishes paho refused

    def _client(self, client_id: str) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set(ca_certs=str(self.broker.ca) if self.broker.ca else None)
        client.max_inflight_messages_set(WINDOW)
        client.reconnect_delay_set(1, 10)
        return client

    def run(self, duration: float | None, stop: threading.Event) -> None:
        """Connect every client, say `online` for every device, publish on schedule, say `offline`, disconnect."""
        for client in self.clients:
            client.connect_async(self.broker.host, self.broker.port, self.broker.keepalive)
            client.loop_start()
        try:
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while not all(c.is_connected() for c in self.clients):
                if time.monotonic() > deadline:
                    raise BadInput(f"{self.broker.url}: not connected within {CONNECT_TIMEOUT:.0f} s")
                time.sleep(0.05)
            self._publish_all(d.status("online") for d in self.devices)
            start = time.monotonic()
            end = math.inf if duration is None else start + duration
            threads = [
                threading.Thread(target=self._shard, args=(c, start, end, stop), name=f"sim-{c}", daemon=True)
                for c in range(len(self.clients))
            ]
            for t in threads:
                t.start()
            try:
                for t in threads:
                    t.join()
            except KeyboardInterrupt:  # Ctrl-C ends the simulation like SIGTERM: the offline statuses still go out
                stop.set()
                for t in threads:
                    t.join()
            self._publish_all(d.status("offline") for d in self.devices)
        finally:
            for client in self.clients:
                client.disconnect()
                client.loop_stop()

    def _shard(self, c: int, start: float, end: float, stop: threading.Event) -> None:
        """Device i of n publishes at start + (k + i/n) / rate, k = 0, 1, ...: the fleet spread over each period."""
        n, period = len(self.devices), 1.0 / self.rate_hz
        mine = [(i, d) for i, d in enumerate(self.devices) if i % len(self.clients) == c]
        for k in range(sys.maxsize):
            for i, device in mine:
                due = start + (k + i / n) * period
                if due >= end or stop.wait(max(0.0, due - time.monotonic())):
                    return
                self.late[c] += time.monotonic() - due > period
                self._publish(c, device.tick())

    def _publish_all(self, messages: Iterator[tuple[str, bytes]]) -> None:
        """Retained statuses, device i on client i % connections (the client its telemetry uses), acknowledged
        within one CONNECT_TIMEOUT for them all (a broker gone at shutdown costs 10 s, not 10 s per device)."""
        infos = [
            self.clients[i % len(self.clients)].publish(t, p, qos=1, retain=True) for i, (t, p) in enumerate(messages)
        ]
        deadline = time.monotonic() + CONNECT_TIMEOUT
        for i, info in enumerate(infos):
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):  # the connection is gone: counted, the simulation still ends cleanly
                pass
            self.failed[i % len(self.clients)] += not info.is_published()

    def _publish(self, c: int, messages: list[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            info = self.clients[c].publish(topic, payload, qos=1)
            self.failed[c] += info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m edge_rl.monitor.simulate",
        description="Publish schema-valid telemetry and status for a simulated fleet (evolving success rate, "
        "return and latency; occasional promotions, rollbacks and drift alarms) to an MQTT broker, to try or "
        "load `edge-rl monitor`. Exit codes: 0 done (after --duration, Ctrl-C or SIGTERM); 2 bad arguments or "
        "no broker.",
    )
    p.add_argument("url", metavar="URL", help="broker: mqtt://host:port or mqtts://host:port (required)")
    p.add_argument("--devices", type=int, default=200, metavar="N", help="simulated devices (default: 200)")
    p.add_argument("--rate", type=float, default=1.0, metavar="HZ", help="samples per device per second (default: 1)")
    p.add_argument(
        "--connections", type=int, default=4, metavar="N", help="MQTT clients shared by the devices (default: 4)"
    )
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C or SIGTERM)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the curves and events (default: 0)")
    p.add_argument("--prefix", default="sim", help="device ids are PREFIX-0000, PREFIX-0001, ... (default: sim)")
    p.add_argument(
        "--events", type=float, default=1.0, metavar="X", help="scale of the event chances, 0 for none (default: 1)"
    )
    args = p.parse_args(argv)
    try:
        return _simulate(args)
    except BadInput as e:
        print(f"edge-rl simulate: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the simulation started (while connecting)
        return 130


def _simulate(args: argparse.Namespace) -> int:
    checks = (
        (args.devices >= 1, "--devices must be at least 1"),
        (args.connections >= 1, "--connections must be at least 1"),
        (math.isfinite(args.rate) and args.rate > 0, "--rate must be a positive number"),
        (args.duration is None or args.duration > 0, "--duration must be positive"),
        (args.events >= 0, "--events must be 0 or more"),
    )
    for ok, message in checks:
        if not ok:
            raise BadInput(message)
    host, port, tls, user = parse_url(args.url)
    schema.check_device(f"{args.prefix}-0000")
    simulator = Simulator(
        Broker(host, port, tls, user or "edge-rl-simulator"),
        args.devices,
        args.rate,
        args.connections,
        args.seed,
        args.prefix,
        args.events,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    print(f"edge-rl simulate: {args.devices} devices at {args.rate:g} Hz on {args.url}", file=sys.stderr)
    simulator.run(args.duration, stop)
    sent, late, failed = sum(d.sent for d in simulator.devices), sum(simulator.late), sum(simulator.failed)
    print(f"edge-rl simulate: {sent} messages, {late} late, {failed} refused", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
