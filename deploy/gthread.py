"""gunicorn's gthread worker, with new connections spread over the workers.

The workers share one listening socket and whichever wakes first accepts. A client that opens
its keep-alive connections all at once (a gateway's upstream pool, a load generator) can land
every one of them on the same worker, which then serves them all with its threads and one
core's worth of GIL while the other workers idle: /login, bounded by one hashing thread per
worker, ran at half its ceiling that way (bench/PROFILE.md).

This worker, once it holds as many connections as it has threads, leaves a waiting connection
to the other workers for ACCEPT_DELAY before taking it itself: a worker with room wins, and
when every worker is full the connection is still taken, a few milliseconds later (the idea of
nginx's accept_mutex_delay). deploy/gunicorn.conf.py selects it.

It also stops listening at once on SIGTERM. A listening socket shared by the master and its
workers listens as long as one process holds it open; gunicorn's master closes its copy at once,
but a worker kept its copy until its last request in flight had finished, so the kernel went on
completing new connections that nobody would accept, and reset them when the worker exited. Here
a stopping worker takes the connections the kernel has already queued, then closes its copy:
once every process has done so, a new connection is refused (ECONNREFUSED) and the client or load
balancer tries another instance, while the requests in flight finish.

And it keeps liveness answering when every thread is busy. A request thread waiting on a slow
or locked database holds it for up to the bound (DATABASE_STATEMENT_TIMEOUT), and gthread queued
every new connection behind such waits: a liveness probe took seconds and the kubelet, past its
timeout, restarted pods whose only trouble was the database. Here the event loop reads a new
connection's request head itself (after the TLS handshake, non-blocking, when gunicorn serves
TLS) before choosing a thread: `GET` or `HEAD` of `<URL_PREFIX>/health`, head complete and
without a body, goes to a thread of its own (PROBE_LANE), which /health never makes wait (it
touches nothing); every other request goes to the pool as before, with the bytes read handed to
its parser. Kept-alive connections are read the same way for their next request. A connection
that has sent nothing yet no longer holds a request thread while it waits (gthread gave it one
for up to 5 s): it waits on the event loop.

Last, gunicorn's own refusals (a malformed request line or header, a head over its limits, an
unsupported transfer coding) are the service's problem+json documents with the headers every
answer carries (write_problem), not gunicorn's HTML page: an API client gets the same kind of
error whoever refused the request.
"""

from __future__ import annotations

import errno
import os
import selectors
import ssl
import time
from collections.abc import Callable
from concurrent import futures
from functools import partial

from gunicorn import http, util
from gunicorn import sock as gsock
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, TConn, ThreadWorker

ACCEPT_DELAY = 0.005  # seconds a full worker leaves a new connection to the others
PROBE_PATH = "/health"  # under URL_PREFIX: the liveness endpoint (app/api/meta.py), answered on its own thread
HEAD_LIMIT = 8192  # bytes of a request head read on the event loop; a probe's is a few hundred
HEAD_WAIT = 1.0  # seconds a request that starts like a probe has to complete its head; then it is any request
_WAIT = object()  # the head so far could still be a probe's: read more


class SniffedConn(TConn):
    """A connection whose TLS handshake and first bytes the event loop has taken care of."""

    def __init__(self, *args, **kwargs) -> None:
        """Nothing read yet."""
        super().__init__(*args, **kwargs)
        self.buffered = b""  # read from the socket by the event loop; the parser gets it back
        self.wrapped = False  # the event loop wrapped the socket in TLS (the handshake may be under way)
        self.handshaken = False
        self.deadline = 0.0  # when the event loop gives up waiting for the head (monotonic)

    def init(self) -> None:
        """As TConn.init, on the socket the event loop already wrapped, with the bytes it read."""
        if self.initialized:
            return
        if not self.wrapped:
            super().init()  # plain HTTP: the parser is made there (or HTTP/2 prior knowledge sniffed)
        else:
            self.initialized = True
            self.sock.setblocking(True)
            if gsock.is_http2_negotiated(self.sock):
                self.is_http2 = True
                self.parser = http.get_parser(self.cfg, self.sock, self.client, http2_connection=True)
                self.parser.initiate_connection()
            else:
                self.parser = http.get_parser(self.cfg, self.sock, self.client)
        self.hand_back()

    def hand_back(self) -> None:
        """Give the bytes the event loop read to the parser, ahead of what is still on the socket."""
        if self.buffered and self.parser is not None:
            if self.is_http2:
                self.parser.receive_data(self.buffered)
            else:
                self.parser.unreader.unread(self.buffered)
            self.buffered = b""


# gunicorn's refusals, said in the service's words (the detail never echoes what the client sent).
REFUSALS = {
    400: "The request line or a header is malformed.",
    403: "The request is forbidden.",
    414: "The request line is too long.",
    417: "The expectation cannot be met.",
    431: "The request's headers are too large.",
    500: "The server could not answer this request.",
    501: "The transfer coding is not supported.",
}


def write_problem(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's util.write_error, as problem+json (app/errors.py problem_body) with the envelope headers.

    gunicorn calls it for a request it refused before any application saw it; its own `mesg`
    (which quotes the request) goes to gunicorn's log only.
    """
    import json

    from app.errors import HTTP_CODES, HTTP_ERROR, PROBLEM_CONTENT_TYPE, problem_body  # the worker has the app loaded
    from app.http import choose_request_id, envelope_headers

    request_id = choose_request_id(None)
    detail = REFUSALS.get(status_int, reason)
    body = json.dumps(problem_body(status_int, HTTP_CODES.get(status_int, HTTP_ERROR), detail, request_id=request_id))
    headers = [("Connection", "close"), ("Content-Type", PROBLEM_CONTENT_TYPE), ("Content-Length", str(len(body)))]
    headers += envelope_headers((), request_id, https=False)  # HSTS is the TLS answer's, which this may not be
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    util.write_nonblock(sock, f"HTTP/1.1 {status_int} {reason}\r\n{head}\r\n{body}".encode("latin-1"))


class BalancedThreadWorker(ThreadWorker):
    """ThreadWorker that defers accepting while full, stops listening on SIGTERM, and gives /health its own thread."""

    def __init__(self, *args, **kwargs) -> None:
        """Not pausing, to begin with."""
        super().__init__(*args, **kwargs)
        self.paused_until: float | None = None  # accepting is off until then
        self.take_next = False  # the pause is over: accept the next connection even when full
        self.sniffing: set[SniffedConn] = set()  # connections whose request head the event loop is reading
        self.probe_lane: futures.ThreadPoolExecutor | None = None
        self.probe_targets: tuple[bytes, ...] = ()
        self.tls_cache: tuple[list[tuple[str, int, int, int]], ssl.SSLContext] | None = None

    def run(self) -> None:
        """Serve, with a thread of its own for the liveness probe."""
        util.write_error = write_problem  # gunicorn's handle_error writes through it (this process only)
        prefix = str(getattr(self.wsgi, "config", {}).get("URL_PREFIX", "") or "")
        path = (prefix.rstrip("/") + PROBE_PATH).encode("ascii")
        self.probe_targets = (b"GET " + path, b"HEAD " + path)
        self.probe_lane = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe")
        try:
            super().run()
        finally:
            self.probe_lane.shutdown(wait=False)

    def accept(self, listener) -> None:
        """Accept, unless this worker is full and has not yet left the connection to the others."""
        if self.nr_conns >= self.cfg.threads and not self.take_next:
            self.paused_until = time.monotonic() + ACCEPT_DELAY
            super().set_accept_enabled(False)
            return
        self.take_next = False
        self.take(listener)

    def take(self, listener) -> None:
        """Accept one connection, if one waits, and start reading its request head on the event loop."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = SniffedConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        conn.deadline = time.monotonic() + DEFAULT_WORKER_DATA_TIMEOUT + self.cfg.keepalive
        if not self.cfg.is_ssl and negotiation.prior_knowledge_allowed(self.cfg, client_addr):
            self.dispatch(conn, self.tpool)  # HTTP/2 prior knowledge: TConn.init reads the preface itself
            return
        if self.cfg.is_ssl:
            try:
                conn.sock = self.tls_context().wrap_socket(
                    conn.sock,
                    server_side=True,
                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
                    do_handshake_on_connect=False,
                )
            except (OSError, ValueError) as error:
                self.log.warning("TLS set-up failed for a new connection: %s", error)
                self.drop(conn)
                return
            conn.wrapped = True
        self.sniffing.add(conn)
        self.watch(conn, selectors.EVENT_READ, register=True)

    def tls_context(self) -> ssl.SSLContext:
        """gunicorn's TLS context (deploy/gunicorn.conf.py's ssl_context hook), made again only when its files change.

        gunicorn makes a new one per connection, which reads the system's CA store and the key
        every time: a few milliseconds that the event loop would now spend for every connection.
        Made again when a file's size or time changes, so a renewed certificate (a Secret's files
        replaced) is served from the next connection on, as before.
        """
        files = [name for name in (self.cfg.certfile, self.cfg.keyfile, self.cfg.ca_certs) if name]
        stamp = []
        for name in files:
            status = os.stat(name)
            stamp.append((name, status.st_mtime_ns, status.st_size, status.st_ino))
        if self.tls_cache is None or self.tls_cache[0] != stamp:
            self.tls_cache = (stamp, gsock.ssl_context(self.cfg))
        return self.tls_cache[1]

    def watch(self, conn: SniffedConn, events: int, *, register: bool = False) -> None:
        """Call read_head when `conn` is readable (or writable, for a TLS handshake that must write)."""
        callback: Callable[[object], None] = partial(self.read_head, conn)
        if register:
            self.poller.register(conn.sock, events, callback)
        else:
            self.poller.modify(conn.sock, events, callback)

    def read_head(self, conn: SniffedConn, _fileobj=None) -> None:
        """On the event loop: shake hands, read what has come, and send the connection to its thread."""
        try:
            if conn.wrapped and not conn.handshaken:
                conn.sock.do_handshake()
                conn.handshaken = True
                if gsock.is_http2_negotiated(conn.sock):
                    self.unwatch(conn)
                    self.dispatch(conn, self.tpool)
                    return
            while len(conn.buffered) < HEAD_LIMIT:
                chunk = conn.sock.recv(HEAD_LIMIT - len(conn.buffered))
                if not chunk:  # closed before (or in the middle of) a request
                    self.unwatch(conn)
                    self.drop(conn)
                    return
                conn.buffered += chunk
                if not conn.wrapped:
                    break  # a plain socket gave all it had; TLS may hold more decrypted already
        except ssl.SSLWantWriteError:
            self.watch(conn, selectors.EVENT_WRITE)
            return
        except (ssl.SSLWantReadError, BlockingIOError):
            if not conn.buffered:
                self.watch(conn, selectors.EVENT_READ)
                return
        except (OSError, ssl.SSLError) as error:  # a failed handshake, a reset
            self.log.debug("connection closed before its request: %s", error)
            self.unwatch(conn)
            self.drop(conn)
            return
        lane = self.lane_for(conn.buffered)
        if lane is _WAIT and len(conn.buffered) < HEAD_LIMIT:
            conn.deadline = min(conn.deadline, time.monotonic() + HEAD_WAIT)
            self.watch(conn, selectors.EVENT_READ)
            return
        self.unwatch(conn)
        self.dispatch(conn, lane if isinstance(lane, futures.Executor) else self.tpool)

    def lane_for(self, head: bytes) -> object:
        """The probe lane for a complete, bodiless GET/HEAD of the probe path; _WAIT while it may be one; else None."""
        line, crlf, _ = head.partition(b"\r\n")
        if not crlf:  # the request line is not complete yet
            could_be = any(target.startswith(line) or line.startswith(target) for target in self.probe_targets)
            return _WAIT if could_be else None
        method_path, _, version = line.rpartition(b" ")
        path = method_path.split(b"?", 1)[0]
        if path not in self.probe_targets or version not in (b"HTTP/1.1", b"HTTP/1.0"):
            return None
        end = head.find(b"\r\n\r\n")
        if end < 0:
            return _WAIT
        fields = head[:end].lower()
        if b"\r\ncontent-length:" in fields or b"\r\ntransfer-encoding:" in fields:
            return None  # a body: the pool reads it, not the lane
        return self.probe_lane

    def dispatch(self, conn: SniffedConn, pool: futures.Executor) -> None:
        """Serve `conn` on a thread of `pool`; the event loop takes it back when the request is done."""
        conn.data_ready = True  # its bytes are here (or buffered): no thread waits for them
        if conn.initialized:
            conn.hand_back()  # a kept-alive connection: its parser exists already
        future = pool.submit(self.handle, conn)
        future.add_done_callback(lambda done: self.method_queue.defer(self.finish_request, conn, done))

    def unwatch(self, conn: SniffedConn) -> None:
        """Stop reading `conn`'s head on the event loop."""
        self.sniffing.discard(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def drop(self, conn: TConn) -> None:
        """Close a connection that will carry no request."""
        self.nr_conns -= 1
        conn.close()

    def on_client_socket_readable(self, conn, client) -> None:
        """A kept-alive connection's next request: its head is read on the event loop too."""
        if not isinstance(conn, SniffedConn):
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        conn.deadline = max(conn.timeout or 0.0, time.monotonic() + HEAD_WAIT)  # its keep-alive, at least
        self.sniffing.add(conn)
        self.watch(conn, selectors.EVENT_READ, register=True)
        self.read_head(conn)  # readable already

    def murder_pending(self) -> None:
        """Also: a connection that sent no request in time is closed; a head that stalled goes to the pool."""
        super().murder_pending()
        now = time.monotonic()
        for conn in [conn for conn in self.sniffing if conn.deadline <= now]:
            self.unwatch(conn)
            if conn.buffered:
                self.dispatch(conn, self.tpool)  # the pool's parser waits for the rest, as it always did
            else:
                self.drop(conn)

    def set_accept_enabled(self, enabled: bool) -> None:
        """The run loop turns accepting back on every turn; not while paused, and never once stopping."""
        if not self.alive:
            super().set_accept_enabled(False)
            self.stop_listening()
            return
        if enabled and self.paused_until is not None:
            return
        super().set_accept_enabled(enabled)

    def stop_listening(self) -> None:
        """Take the connections the kernel has already completed, then close this process's listeners.

        Runs on the event loop's thread, the first thing the loop does once SIGTERM (or
        max_requests) has ended it; the listeners are out of the poller by then.
        """
        for listener in self.sockets:
            if listener.sock is None:  # closed already
                continue
            while True:
                before = self.nr_conns
                try:
                    self.take(listener)  # non-blocking; nothing taken when none waits
                except OSError:  # out of file descriptors, say: what is left is reset, as before
                    break
                if self.nr_conns == before:
                    break
            listener.close()

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """Wake when the pause ends; after it, take the next waiting connection whatever the load."""
        if self.paused_until is not None:
            remaining = self.paused_until - time.monotonic()
            if remaining > 0:
                timeout = min(timeout, remaining)
            else:
                self.paused_until = None
                self.take_next = True
                self.set_accept_enabled(self.alive and self.nr_conns < self.worker_connections)
        super().wait_for_and_dispatch_events(timeout)
        if self.paused_until is None:
            self.take_next = False  # only for the connection that waited: it was taken or went elsewhere
