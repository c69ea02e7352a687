"""The machine's real RabbitMQ for the events tests: a fresh exchange and queue per test, and a
TCP forwarder that a test can open and close to play a broker outage without touching the
shared server (never stopped: other suites use it).

Under CI=true an unreachable broker fails the test instead of skipping it (.ci/run starts one).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import pika
import pytest

from tests.databases import IN_CI

BROKER_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
_params = pika.URLParameters(BROKER_URL)
BROKER_HOST, BROKER_PORT = _params.host, _params.port


def url_on_port(port: int) -> str:
    """BROKER_URL pointed at another port of the same host (the forwarder, or a closed one)."""
    return f"amqp://{_params.credentials.username}:{_params.credentials.password}@127.0.0.1:{port}/%2F"


def require_broker() -> None:
    """Skip, or under CI=true fail, when RabbitMQ does not answer."""
    try:
        pika.BlockingConnection(pika.URLParameters(BROKER_URL + "?socket_timeout=3&connection_attempts=1")).close()
    except Exception as error:  # any failure to connect means: not reachable
        if IN_CI:
            pytest.fail(f"CI=true and RabbitMQ at {BROKER_HOST}:{BROKER_PORT} is unreachable: {error}")
        pytest.skip(f"RabbitMQ unreachable: {error}")


@dataclass
class Exchange:
    """A durable topic exchange made for one test, with a queue bound to every routing key."""

    name: str
    queue: str

    @classmethod
    def make(cls) -> Exchange:
        """Declare both (the queue before any event is published: an unbound exchange drops them)."""
        tag = uuid.uuid4().hex[:10]
        made = cls(f"test.auth.events.{tag}", f"test.auth.consumer.{tag}")
        with _channel() as channel:
            channel.exchange_declare(made.name, exchange_type="topic", durable=True)
            channel.queue_declare(made.queue, durable=True)
            channel.queue_bind(made.queue, made.name, routing_key="#")
        return made

    def delete(self) -> None:
        """Remove the queue and the exchange."""
        with _channel() as channel:
            channel.queue_delete(self.queue)
            channel.exchange_delete(self.name)

    def drain(self, count: int, *, timeout: float = 30.0, settle: float = 0.3) -> list[tuple[str, dict, dict]]:
        """Take messages off the queue until `count` arrived and `settle` s pass with no more, or `timeout`.

        Returns (routing key, properties, parsed body) in arrival order.
        """
        received: list[tuple[str, dict, dict]] = []
        deadline = time.monotonic() + timeout
        with _channel() as channel:
            quiet_since = time.monotonic()
            while time.monotonic() < deadline:
                method, properties, body = channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    if len(received) >= count and time.monotonic() - quiet_since >= settle:
                        break
                    time.sleep(0.02)
                    continue
                quiet_since = time.monotonic()
                props = {
                    "delivery_mode": properties.delivery_mode,
                    "content_type": properties.content_type,
                    "message_id": properties.message_id,
                    "type": properties.type,
                }
                received.append((method.routing_key, props, json.loads(body)))
        return received

    def depth(self) -> int:
        """How many messages wait in the queue."""
        with _channel() as channel:
            return channel.queue_declare(self.queue, passive=True).method.message_count


class _channel:
    """A short-lived connection and channel to the broker."""

    def __enter__(self):
        self.connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
        return self.connection.channel()

    def __exit__(self, *_):
        self.connection.close()


def free_port() -> int:
    """A loopback port nothing listens on (just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Forwarder:
    """A TCP relay from a port of ours to the broker: closed, it is a broker outage for whoever uses it.

    close() stops listening and cuts every connection through it, as a crashed or partitioned
    broker would; open() listens again on the same port.
    """

    def __init__(self, port: int) -> None:
        """Not listening yet."""
        self.port = port
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        """Listen and forward every connection to the broker."""
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection((BROKER_HOST, BROKER_PORT))
            with self._lock:
                self._sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """Stop listening and cut every forwarded connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for end in sockets:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()
