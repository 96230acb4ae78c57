"""An embedded MQTT 3.1.1 broker for demos and tests: amqtt in a thread with its own asyncio loop.

    with Broker(port=0) as broker:       # port 0: a free port, read it back from broker.port / broker.url
        run_demo(broker.url)             # mqtt://127.0.0.1:PORT

`edge-rl broker` runs one in the foreground. It binds 127.0.0.1 by default, keeps everything in memory
(a restart forgets sessions and retained messages), has no TLS and no ACL, and accepts any client that
sends a non-empty username, whatever the password: a loopback demo broker, not a production one (use
Mosquitto with `examples/deploy/mosquitto.conf`).

Why a username is required: amqtt never queues messages for an offline persistent session
(clean_session=False) that connected anonymously, so telemetry published while the monitor is away would
be lost. Its `AnonymousAuthPlugin` with `allow_anonymous: False` accepts exactly the clients that send a
username; paho clients of edge-rl send one (the device id, or "edge-rl-monitor").

A quirk clients must live with (amqtt 0.12): on connect, a client is sent every retained message that
matches *any* subscription on the broker, its own or another client's, at QoS 0 with the retain flag.
A daemon subscribed only to its `cmd` topic may so receive other devices' retained `status`; route
messages by topic (paho's `message_callback_add`) and drop the rest.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from types import TracebackType
from typing import Any

from edge_rl.errors import BadInput

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883
SESSION_EXPIRY_S = 24 * 3600  # a persistent session offline longer than this is dropped with its queue

# amqtt logs a startup failure with its traceback; without a handler Python's last-resort handler would print
# it on stderr. The errors reach the caller as BrokerError; an application that configures logging sees the rest.
for _name in ("amqtt", "transitions"):
    logging.getLogger(_name).addHandler(logging.NullHandler())


class BrokerError(BadInput):
    """The broker could not start: the port is in use, the address is not this host's, ... (one line)."""


def format_url(host: str, port: int) -> str:
    return f"mqtt://[{host}]:{port}" if ":" in host else f"mqtt://{host}:{port}"


class Broker:
    """One amqtt broker on host:port, served by a daemon thread; `start()` returns once it accepts connections.

    `port=0` binds a free port (read `.port`). `stop()` closes every connection and forgets every session;
    both are idempotent, and the context manager does them. Not restartable: make a new Broker.
    """

    def __init__(
        self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, session_expiry_s: int | None = SESSION_EXPIRY_S
    ) -> None:
        if not 0 <= port <= 65535:
            raise BrokerError(f"port {port}: use 0-65535")
        self.host = host
        self.port = port
        self.session_expiry_s = session_expiry_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._amqtt: Any = None

    @property
    def url(self) -> str:
        return format_url(self.host, self.port)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._error is None

    def config(self) -> dict[str, Any]:
        """The amqtt configuration: one TCP listener, usernames required (any password), no $SYS topics."""
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "session_expiry_interval": self.session_expiry_s,
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False}},
        }

    def start(self, timeout: float = 10.0) -> Broker:
        """Bind and serve; BrokerError (one line) if the address cannot be bound."""
        if self._thread is not None:
            raise RuntimeError("this Broker was started already: make a new one")
        import amqtt.broker  # noqa: F401  (here, in the caller's thread: a missing amqtt is a ModuleNotFoundError)

        self._thread = threading.Thread(target=self._serve, name=f"edge-rl-broker-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise BrokerError(f"the broker did not start within {timeout:g} s")
        if self._error is not None:
            self._thread.join(timeout)
            raise self._explain(self._error) from None
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every client connection, then end the thread (no-op when not running)."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop closed in between
                pass
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> Broker:
        return self.start() if self._thread is None else self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # reported to start(); a thread must not die with a traceback on stderr
            self._error = self._error or e
        finally:
            self._ready.set()
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _main(self) -> None:
        from amqtt.broker import Broker as AmqttBroker

        self._stop = asyncio.Event()
        broker = AmqttBroker(self.config())
        await broker.start()
        self._amqtt = broker
        sockets = broker._servers["default"].instance.sockets  # amqtt keeps no public handle on the bound port
        self.host, self.port = sockets[0].getsockname()[:2]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await broker.shutdown()

    def _explain(self, error: BaseException) -> BaseException:
        """amqtt wraps the bind's OSError in its BrokerError: one line that names the fix."""
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__
        where = f"{self.host}:{self.port}"
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            return BrokerError(
                f"{where} is in use (another MQTT broker, e.g. a mosquitto service on 1883?): "
                "stop it or choose another --port"
            )
        if isinstance(cause, OSError) and cause.errno == errno.EACCES:
            return BrokerError(f"{where}: permission denied (ports below 1024 need root): choose a --port above 1023")
        if isinstance(cause, OSError):
            return BrokerError(f"cannot listen on {where}: {cause.strerror or cause}")
        if isinstance(error, Exception):
            return BrokerError(
                f"the broker did not start on {where}: {str(error).splitlines()[0] if str(error) else error!r}"
            )
        return error
