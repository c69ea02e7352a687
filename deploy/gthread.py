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
"""

from __future__ import annotations

import time

from gunicorn.workers.gthread import ThreadWorker

ACCEPT_DELAY = 0.005  # seconds a full worker leaves a new connection to the others


class BalancedThreadWorker(ThreadWorker):
    """ThreadWorker that defers accepting while it already has a connection per thread."""

    def __init__(self, *args, **kwargs) -> None:
        """Not pausing, to begin with."""
        super().__init__(*args, **kwargs)
        self.paused_until: float | None = None  # accepting is off until then
        self.take_next = False  # the pause is over: accept the next connection even when full

    def accept(self, listener) -> None:
        """Accept, unless this worker is full and has not yet left the connection to the others."""
        if self.nr_conns >= self.cfg.threads and not self.take_next:
            self.paused_until = time.monotonic() + ACCEPT_DELAY
            super().set_accept_enabled(False)
            return
        self.take_next = False
        super().accept(listener)

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
                    ThreadWorker.accept(self, listener)  # non-blocking; nothing taken when none waits
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
