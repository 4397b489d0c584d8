"""waitress, with a deadline for each request: a request not received in full within
``request_timeout`` seconds of its first byte is cut.

waitress closes a connection that stays silent for ``channel_timeout``, but a client that
sends one byte a second is never silent: with more such clients than the connection limit,
the receiver stops accepting and valid webhooks wait behind them. waitress has no option
for a minimum data rate, so this module uses its public extension points: a server class
(``TcpWSGIServer``, with its ``channel_class`` and ``maintenance`` hook, which waitress runs
every ``cleanup_interval`` seconds to close idle channels) and a channel class that notes
when the request it is receiving began. A request that is complete is being answered and is
never cut; our answers take milliseconds.
"""
from __future__ import annotations

import logging
import time

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from worker.ops.metrics import WEBHOOKS

log = logging.getLogger(__name__)

# a warning about cut requests at most this often (one attack is one line, not one a second)
CUT_LOG_INTERVAL = 10.0


class DeadlineChannel(HTTPChannel):
    """waitress's channel, noting when the request it is receiving (``request``, a parser
    until the request is whole) began."""

    request_began = 0.0

    def received(self, data):
        before = self.request
        done = super().received(data)
        if self.request is not None and self.request is not before:   # a new request began in data
            self.request_began = time.monotonic()
        return done


class DeadlineServer(TcpWSGIServer):
    """waitress's TCP server; each maintenance pass also cuts the connections whose request
    has taken longer than ``request_timeout`` to arrive."""

    channel_class = DeadlineChannel

    def __init__(self, *args, request_timeout: float, **kwargs):
        self.request_timeout = request_timeout
        self.cut = 0                    # connections cut since the last warning
        self.cut_logged = time.monotonic()
        super().__init__(*args, **kwargs)

    def maintenance(self, now):
        super().maintenance(now)
        cutoff = time.monotonic() - self.request_timeout
        late = [channel for channel in self.active_channels.values()
                if channel.request is not None and not channel.requests and not channel.will_close
                and channel.request_began < cutoff]
        for channel in late:
            channel.will_close = True   # waitress closes it on its next pass, as it does an idle one
        if late:
            WEBHOOKS.labels("unknown", "too-slow").inc(len(late))
            self.cut += len(late)
        if self.cut and time.monotonic() - self.cut_logged >= CUT_LOG_INTERVAL:
            log.warning("webhook receiver: cut %d connection(s) whose request was not received in full "
                        "within %gs", self.cut, self.request_timeout,
                        extra={"cut": self.cut, "request_timeout": self.request_timeout})
            self.cut, self.cut_logged = 0, time.monotonic()


def create_server(app, *, request_timeout: float, **adjustments):
    """What ``waitress.create_server`` makes for TCP addresses, with ``DeadlineServer``: one
    server per address the host resolves to, sharing one socket map and one thread pool."""
    adj = Adjustments(**adjustments)
    sockets: dict = {}
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    servers = [DeadlineServer(app, sockets, dispatcher=dispatcher, adj=adj, sockinfo=info,
                              request_timeout=request_timeout) for info in adj.listen]
    if len(servers) == 1:
        return servers[0]
    return MultiSocketServer(sockets, adj, [(s.effective_host, s.effective_port) for s in servers], dispatcher,
                             servers[-1].log_info)
