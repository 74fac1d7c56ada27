"""The rate-limit backend's connection to Redis: one script, run in order, with no Deferred per call.

hiredis packs each command (``pack_command``) and parses the replies (``Reader``), both in C;
Twisted's ReconnectingClientFactory connects and reconnects with back-off. What is left here
is the order: Redis answers the commands of one connection in the order they were sent, so
the callables waiting for replies form a queue. On connecting, AUTH and SELECT (when the URL
asks for them) and SCRIPT LOAD go first; a script call is then EVALSHA, sent again as EVAL
after a NOSCRIPT answer (an operator's SCRIPT FLUSH).

Profiled under the policy server's load, a general client's per-call work (an argument
encoder in Python, a Deferred with its own timeout per command) cost more than Redis itself.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol, ReconnectingClientFactory

log = logging.getLogger("sidecar.ratelimit")

Reply = Any  # a parsed reply, or an Exception (an error reply, or the connection lost)


class RedisReplyError(Exception):
    """An error reply from Redis (``-ERR ...``, ``-NOSCRIPT ...``)."""


class RedisConnectionLost(ConnectionError):
    """The connection ended before Redis answered."""


class _Connection(Protocol):
    factory: RedisScriptClient
    transport: Any

    def connectionMade(self) -> None:
        self.reader = hiredis.Reader(replyError=RedisReplyError)
        self.waiting: deque[Callable[[Reply], None]] = deque()
        self.factory.made(self)

    def send(self, command: Sequence[Any], on_reply: Callable[[Reply], None]) -> None:
        """Send now when nothing is queued before it (as the policy protocol's replies are).

        Twisted's write only queues until the reactor's next poll, after every request that
        poll reads: the script call would leave after them, and its answers come later.
        """
        self.waiting.append(on_reply)
        data = hiredis.pack_command(tuple(command))
        t = self.transport
        sock = getattr(t, "socket", None)
        if sock is not None and not t.dataBuffer and not t._tempDataBuffer and t.connected and not t.disconnecting:
            try:
                n = sock.send(data)
            except OSError:  # would block, interrupted, or broken: Twisted sees to it
                n = 0
            if n == len(data):
                return
            data = data[n:]
        t.write(data)

    def dataReceived(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        try:
            reply = reader.gets()
            while reply is not False:
                self.waiting.popleft()(reply)
                reply = reader.gets()
        except (hiredis.ProtocolError, IndexError) as e:  # garbled, or an answer nobody asked for
            log.error("Redis rate-limit connection: %s; reconnecting", e or type(e).__name__)
            self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        waiting, self.waiting = self.waiting, deque()
        self.factory.lost(self)
        err = RedisConnectionLost(reason.getErrorMessage() if reason is not None else "connection lost")
        for on_reply in waiting:
            on_reply(err)


class RedisScriptClient(ReconnectingClientFactory):
    """One connection to Redis that runs one Lua script; ``connected`` while it is usable."""

    protocol = _Connection  # type: ignore[assignment]
    maxDelay = 5  # back-off between reconnection attempts, at most

    def __init__(
        self,
        reactor: Any,
        script: str,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 2.0,
    ) -> None:
        self.reactor = self.clock = reactor  # clock: the reconnection delays run on this reactor
        self.script = script.encode()
        self.sha = hashlib.sha1(self.script).hexdigest()
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.connect_timeout = connect_timeout
        self.conn: _Connection | None = None
        self.on_connect: Callable[[], None] | None = None  # called once each new connection is usable
        self._closed: Deferred[None] | None = None
        reactor.connectTCP(host, port, self, timeout=connect_timeout)

    @property
    def connected(self) -> bool:
        return self.conn is not None

    def made(self, conn: _Connection) -> None:
        self.resetDelay()
        if self.password:
            auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
            conn.send(auth, self._setup_reply)
        if self.db:
            conn.send(("SELECT", self.db), self._setup_reply)
        conn.send(("SCRIPT", "LOAD", self.script), self._setup_reply)
        self.conn = conn  # commands sent from now on follow the set-up on the same connection
        if self.on_connect is not None:
            self.on_connect()

    def _setup_reply(self, reply: Reply) -> None:
        if isinstance(reply, RedisReplyError):
            log.error("Redis rate-limit connection set-up failed: %s", reply)
            if self.conn is not None:
                self.conn.transport.loseConnection()

    def lost(self, conn: _Connection) -> None:
        if self.conn is conn:
            self.conn = None
        if self._closed is not None:
            d, self._closed = self._closed, None
            d.callback(None)

    def run(self, keys: Sequence[bytes], args: Sequence[bytes], on_reply: Callable[[Reply], None]) -> None:
        """Run the script; ``on_reply`` gets its reply or an Exception. Raises when not connected."""
        conn = self.conn
        if conn is None:
            raise RedisConnectionLost("not connected to Redis")

        def reply(r: Reply) -> None:
            if isinstance(r, RedisReplyError) and str(r).startswith("NOSCRIPT") and self.conn is not None:
                self.conn.send(("EVAL", self.script, len(keys), *keys, *args), on_reply)  # flushed meanwhile
            else:
                on_reply(r)

        conn.send(("EVALSHA", self.sha, len(keys), *keys, *args), reply)

    def close(self) -> Deferred[None]:
        """Stop reconnecting and close the connection; fires once it is closed."""
        self.stopTrying()
        if self.conn is None:
            return succeed(None)
        self._closed = Deferred()
        self.conn.transport.loseConnection()
        return self._closed
