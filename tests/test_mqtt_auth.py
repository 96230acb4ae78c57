"""S11: the production broker setup (examples/deploy/mosquitto.conf and mosquitto.acl) on a real Mosquitto.

The example config runs with its paths moved into a temporary directory (Mosquitto runs as `nobody` here, so
every file it reads is world-readable) and its TLS listener on a free loopback port; the password file is made
by `mosquitto_passwd`, the CA and the server certificate by `cryptography`. Asserted: anonymous clients and
wrong passwords are refused; a device reads and writes only its own subtree (a denied publish is acknowledged
and reaches no subscriber); the monitor reads telemetry and status and writes commands, and cannot pose as a
device; over TLS a client that trusts the CA connects and one that trusts another CA is refused.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_rl.telemetry import schema
from tests.mosquitto import Mosquitto, free_port
from tests.mqtt_probe import ACCEPTED, BAD_CREDENTIALS, NOT_AUTHORIZED, Probe

DEPLOY = Path(__file__).resolve().parents[1] / "examples" / "deploy"
PASSWORDS = {"dev-a": "pa-7f3c", "dev-b": "pb-19de", "edge-rl-monitor": "pm-c04a"}
BOOT = uuid.uuid4().hex


def message(device: str, kind: str, seq: int = 1, **fields: object) -> bytes:
    doc = {"v": 1, "device": device, "boot": BOOT, "seq": seq, "kind": kind, "wall": time.time(), "mono": 1.0}
    return json.dumps({**doc, **fields}).encode()


def mosquitto_passwd() -> str:
    found = shutil.which("mosquitto_passwd")
    if found is None:
        pytest.fail("mosquitto_passwd is missing: run .ci/system-deps (Debian package mosquitto)", pytrace=False)
    return found


def write_certificates(where: Path) -> None:
    """ca.crt + server.crt/server.key (for 127.0.0.1 and localhost), and other-ca.crt that signed nothing here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )  # key_cert_sign, crl_sign
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("edge-rl test CA")
    _, other_cert = ca("some other CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (where / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    (where / "other-ca.crt").write_bytes(other_cert.public_bytes(pem))
    (where / "server.crt").write_bytes(server_cert.public_bytes(pem))
    (where / "server.key").write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def example_config(files: Path, tls_port: int) -> list[str]:
    """examples/deploy/mosquitto.conf with its paths in `files` and its TLS listener on 127.0.0.1:tls_port.

    The fixture's own listener (loopback, a free port) stands for the example's plain loopback listener; its
    log file and persistence directory replace the example's."""
    moved = {
        "password_file /etc/mosquitto/passwd": f"password_file {files}/passwd",
        "acl_file /etc/mosquitto/acl": f"acl_file {files}/acl",
        "listener 8883": f"listener {tls_port} 127.0.0.1",
        "cafile /etc/mosquitto/certs/ca.crt": f"cafile {files}/ca.crt",
        "certfile /etc/mosquitto/certs/server.crt": f"certfile {files}/server.crt",
        "keyfile /etc/mosquitto/certs/server.key": f"keyfile {files}/server.key",
        "listener 1883 127.0.0.1": None,
        "persistence_location /var/lib/mosquitto/": None,
    }
    lines, seen = [], set()
    for raw in (DEPLOY / "mosquitto.conf").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("log_dest"):
            continue
        if line in moved:
            seen.add(line)
            line = moved[line]
        if line is not None:
            lines.append(line)
    assert seen == set(moved), f"the example config changed: {sorted(set(moved) - seen)} not found"
    return lines


@pytest.fixture(scope="module")
def files() -> Iterator[Path]:
    """Passwords, the example ACL and the certificates, in a directory Mosquitto (as nobody) can read."""
    where = Path(tempfile.mkdtemp(prefix="edgerl-mqtt-auth-"))
    where.chmod(0o755)
    try:
        passwd = where / "passwd"
        for i, (user, password) in enumerate(PASSWORDS.items()):
            create = ["-c"] if i == 0 else []
            subprocess.run([mosquitto_passwd(), *create, "-b", str(passwd), user, password], check=True, timeout=10)
        shutil.copyfile(DEPLOY / "mosquitto.acl", where / "acl")
        write_certificates(where)
        for path in where.iterdir():
            path.chmod(0o644)
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


class Fleet:
    def __init__(self, broker: Mosquitto, tls_port: int, files: Path) -> None:
        self.broker, self.tls_port, self.files = broker, tls_port, files
        self.clients: list[Probe] = []

    def client(self, user: str | None, password: str | None = None, *, tls: bool = False, ca: str = "ca.crt") -> Probe:
        port = self.tls_port if tls else self.broker.port
        host = "localhost" if tls else "127.0.0.1"
        secret = PASSWORDS.get(user or "") if password is None else password
        probe = Probe(
            port, f"{user}-{len(self.clients)}", username=user, password=secret, ca=self.files / ca if tls else None
        )
        probe.host = host
        self.clients.append(probe)
        return probe

    def connected(self, user: str) -> Probe:
        probe = self.client(user)
        assert probe.connect() == ACCEPTED, self.broker.log_text()
        return probe


@pytest.fixture
def fleet(mosquitto_factory: Callable[..., Mosquitto], files: Path) -> Iterator[Fleet]:
    tls_port = free_port()
    broker = mosquitto_factory(extra=example_config(files, tls_port)).start()
    fleet = Fleet(broker, tls_port, files)
    yield fleet
    for probe in fleet.clients:
        try:
            probe.close()
        except Exception:  # refused or killed clients: nothing to close
            pass


def test_anonymous_clients_and_wrong_passwords_are_refused(fleet: Fleet) -> None:
    assert fleet.client(None).connect() == NOT_AUTHORIZED
    # Mosquitto 2.0.11 answers 5 (not authorized) to all three; other versions say 4 (bad user name or password)
    assert fleet.client("dev-a", "not-the-password").connect() in (BAD_CREDENTIALS, NOT_AUTHORIZED)
    assert fleet.client("dev-x", "pa-7f3c").connect() in (BAD_CREDENTIALS, NOT_AUTHORIZED)  # no such user
    assert fleet.client("dev-a").connect() == ACCEPTED


def test_a_device_reads_and_writes_only_its_own_topics(fleet: Fleet) -> None:
    a, b = schema.topics("dev-a"), schema.topics("dev-b")
    monitor, dev_a, dev_b = fleet.connected("edge-rl-monitor"), fleet.connected("dev-a"), fleet.connected("dev-b")
    assert monitor.subscribe("edgerl/+/telemetry") == [1]
    assert dev_b.subscribe("edgerl/dev-b/#") == [1]
    # dev-a subscribing to dev-b's commands or to everyone's telemetry: Mosquitto 2.0 grants it in the SUBACK
    # (3.1.1) and then delivers nothing the ACL does not let dev-a read
    dev_a.subscribe(b.cmd)
    dev_a.subscribe("edgerl/+/telemetry")
    assert dev_a.subscribe(a.cmd) == [1]

    dev_a.publish(b.telemetry, message("dev-b", "sample", seq=666))  # acknowledged (3.1.1 cannot refuse), dropped
    dev_a.publish(b.cmd, json.dumps({"cmd": "rollback"}).encode())
    dev_a.publish(a.telemetry, message("dev-a", "sample", seq=1))  # its own: allowed
    got = monitor.expect()
    assert (got.topic, schema.parse_message(got.payload)["seq"]) == (a.telemetry, 1)  # the spoof came first, if at all

    monitor.publish(b.cmd, json.dumps({"cmd": "pause", "id": "m1"}).encode())  # after dev-a's, in broker order
    got = dev_b.expect()
    assert got.topic == b.cmd and schema.parse_command(got.payload).id == "m1"  # never dev-a's rollback
    dev_b.publish(b.telemetry, message("dev-b", "sample", seq=1))
    assert schema.parse_message(monitor.expect().payload)["device"] == "dev-b"
    monitor.publish(a.cmd, json.dumps({"cmd": "resume", "id": "m2"}).encode())  # the last message of the test
    seen = [dev_a.expect(), dev_a.expect()]  # its own telemetry via edgerl/+/telemetry, then the command
    assert [m.topic for m in seen] == [a.telemetry, a.cmd]  # never dev-b's command or telemetry
    assert schema.parse_command(seen[1].payload).id == "m2"
    assert monitor.drain() == [] and dev_a.drain() == []
    assert [m.topic for m in dev_b.drain()] == [b.telemetry]  # its own telemetry, echoed by its # subscription


def test_the_monitor_reads_telemetry_and_status_and_sends_commands(fleet: Fleet) -> None:
    a = schema.topics("dev-a")
    dev_a = fleet.connected("dev-a")
    assert dev_a.subscribe(a.cmd) == [1]
    dev_a.publish(a.status, message("dev-a", "status", seq=0, state="online"), retain=True)

    monitor = fleet.connected("edge-rl-monitor")
    assert monitor.subscribe("edgerl/+/telemetry") == [1]
    assert monitor.subscribe("edgerl/+/status") == [1]
    status = monitor.expect()
    assert status.retain and schema.parse_message(status.payload)["state"] == "online"
    dev_a.publish(a.telemetry, message("dev-a", "sample", seq=7))
    assert schema.parse_message(monitor.expect().payload)["seq"] == 7

    monitor.publish(a.cmd, json.dumps({"cmd": "set_epsilon", "value": 0.1, "id": "e1"}).encode())
    command = schema.parse_command(dev_a.expect().payload)
    assert (command.name, command.value, command.id) == ("set_epsilon", 0.1, "e1")

    # the monitor cannot pose as a device
    monitor.publish(a.telemetry, message("dev-a", "sample", seq=999))
    monitor.publish(a.status, message("dev-a", "status", seq=0, state="offline"), retain=True)
    dev_a.publish(a.telemetry, message("dev-a", "sample", seq=8))
    assert schema.parse_message(monitor.expect().payload)["seq"] == 8
    late = fleet.connected("edge-rl-monitor")
    assert late.subscribe(a.status) == [1]
    assert schema.parse_message(late.expect().payload)["state"] == "online"  # the forged retained offline was dropped


def test_tls_needs_the_right_ca(fleet: Fleet) -> None:
    a = schema.topics("dev-a")
    good = fleet.client("dev-a", tls=True)
    assert good.connect() == ACCEPTED, fleet.broker.log_text()
    assert good.subscribe(a.cmd) == [1]
    good.publish(a.cmd, b'{"cmd": "resume"}')
    assert good.expect().payload == b'{"cmd": "resume"}'

    wrong = fleet.client("dev-a", tls=True, ca="other-ca.crt")
    with pytest.raises(ssl.SSLCertVerificationError):
        wrong.connect(timeout=5)
    assert fleet.client("dev-a", tls=True).connect() == ACCEPTED  # the broker is fine after the refused handshake

    plain = Probe(fleet.tls_port, "plain", username="dev-a", password=PASSWORDS["dev-a"])  # no TLS on the TLS port
    with pytest.raises((AssertionError, OSError)):
        plain.connect(timeout=1)
    plain.client.loop_stop()


def test_the_example_monitor_unit_is_valid(tmp_path: Path) -> None:
    """edge-rl-monitor.service: a persistent session, the password from the environment, checked by systemd."""
    unit = (DEPLOY / "edge-rl-monitor.service").read_text()
    command = unit.split("ExecStart=", 1)[1].split("\n[", 1)[0].replace("\\\n", " ").splitlines()[0].split()
    assert command[1:3] == ["monitor", "mqtts://mqtt.example.net:8883"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert options["--username"] == "edge-rl-monitor" and options["--client-id"] == "edge-rl-monitor"
    assert options["--password-env"] == "EDGE_RL_MQTT_PASSWORD" and "--password" not in options
    assert "\nEnvironmentFile=/etc/edge-rl/monitor.env\n" in unit
    from edge_rl.cli import COMMANDS, build_parser

    if "monitor" in COMMANDS:  # every flag the unit gives is one `edge-rl monitor` takes
        args = build_parser().parse_args(command[1:])
        assert (args.client_id, args.prometheus, args.bind) == ("edge-rl-monitor", 9108, "127.0.0.1")
    analyze = shutil.which("systemd-analyze")
    if analyze:  # systemd's own parser, with ExecStart pointing at this checkout's edge-rl
        local = tmp_path / "edge-rl-monitor.service"
        local.write_text(unit.replace("/opt/edge-rl/.venv/bin/edge-rl", str(Path(sys.executable).with_name("edge-rl"))))
        result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60)
        problems = [line for line in result.stderr.splitlines() if "edge-rl-monitor.service" in line]
        assert not problems, problems


def test_the_daemon_telemetry_client_speaks_tls_with_a_password_and_reports_a_refusal(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's own client (edge_rl.telemetry) under the production config: over TLS with the CA and the
    password from the environment its messages reach the monitor; with a wrong password it is refused, says
    so once, and keeps its messages for later."""
    from edge_rl.daemon.config import TelemetryConfig
    from edge_rl.telemetry.publish import Publisher
    from edge_rl.telemetry.settings import from_config

    monitor = fleet.connected("edge-rl-monitor")
    assert monitor.subscribe("edgerl/+/telemetry") == [1]
    url = f"mqtts://localhost:{fleet.tls_port}"
    config = TelemetryConfig(url=url, password_env="EDGERL_TEST_MQTT", ca=str(fleet.files / "ca.crt"), keepalive_s=2)
    record = {"kind": "verified", "seq": 1, "boot": BOOT, "mono": 1.0, "wall": time.time(), "version": 3}

    monkeypatch.setenv("EDGERL_TEST_MQTT", PASSWORDS["dev-a"])
    good = Publisher(from_config(config, "dev-a"), BOOT, {"bundle_version": 3}, None)
    good.event(record)
    got = json.loads(monitor.expect(timeout=10).payload)
    good.close()
    assert (got["device"], got["event"], got["data"]["version"]) == ("dev-a", "verified", 3)

    monkeypatch.setenv("EDGERL_TEST_MQTT", "not-the-password")
    bad = Publisher(from_config(config, "dev-a"), BOOT, {"bundle_version": 3}, None)
    bad.event(record)
    deadline = time.monotonic() + 10
    while not bad.notices and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # a few more attempts: still one notice
    bad.close()
    assert [kind for kind, _ in bad.notices] == ["telemetry_down"], list(bad.notices)
    assert "refused" in bad.notices[0][1]["reason"]
    assert bad.counters["refused"] >= 1 and bad.counters["connects"] == 0
    assert monitor.drain() == []
