"""Postfix policy delegation framing (SMTPD_POLICY_README): whole requests, not lines.

A request is ``name=value`` lines ending with an empty line; the reply is
``action=...`` and an empty line; the connection stays open for the next request.
The protocol only frames: deciding is the engine's job. Bad input costs only the
connection it came on, with one log line saying what was wrong.

Whatever the engine returns, a reply is one ``action=`` line (``request.reply_bytes``). Postfix
sends each request whole, so a request must be complete ``request_timeout`` seconds after
its first byte; when the connection table is full a newcomer evicts a connection that is
stalled or has never been answered (see ``PolicyFactory.make_room``) rather than being
refused, so clients that hold connections open cannot lock Postfix out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol

from sidecar import metrics
from sidecar.policy.request import BadRequest, Request, reply_bytes

log = logging.getLogger("sidecar.policy")


_ALL_BUT_EQUALS_AND_NEWLINE = bytes(b for b in range(256) if b not in b"=\n")


class PolicyProtocol(Protocol):
    def __init__(self, factory: PolicyFactory) -> None:
        self.f = factory
        self.buf = b""
        self.waiting = False
        self.answered = False  # has a request been answered on this connection?
        self._seconds = factory.clock.seconds
        self.last_seen = self._seconds()
        self.peer = "?"
        self._sock: Any = None
        self._deadline: IDelayedCall | None = None  # set while a request is incomplete

    def connectionMade(self) -> None:
        f = self.f
        if len(f.connections) >= f.max_connections and not f.make_room():
            self._drop(
                "too-many-connections",
                f"more than {f.max_connections} open connections, all of them awaiting a decision",
            )
            return
        f.connections[self] = None
        metrics.POLICY_CONNECTIONS.inc()
        t = self.transport
        if getattr(t, "TLS", True) is False and hasattr(t, "_tempDataBuffer") and hasattr(t, "dataBuffer"):
            self._sock = getattr(t, "socket", None)  # a plain TCP or UNIX connection: see _write
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.peer = f"{getattr(peer, 'host', '')}:{getattr(peer, 'port', '')}".strip(":") or "unix"

    def connectionLost(self, reason: Any = None) -> None:
        self.connected = False
        self._forget()
        self._stop_deadline()
        if self.buf.strip():
            log.info(
                "policy client %s went away in the middle of a request (%d bytes unanswered)", self.peer, len(self.buf)
            )
        self.buf = b""

    def _forget(self) -> None:
        """Leave the connection table (at once when evicted: the close itself may take a while)."""
        conns = self.f.connections
        if self in conns:
            del conns[self]
            metrics.POLICY_CONNECTIONS.dec()

    def dataReceived(self, data: bytes) -> None:
        self.last_seen = self._seconds()
        self.buf = self.buf + data if self.buf else data
        if self.waiting:
            if len(self.buf) > 4 * self.f.max_request_size:
                self.buf = b""
                self._drop("request-too-large", "too much data sent while a request was being decided")
            return
        self._process()

    def _process(self) -> None:
        buf = self.buf
        f = self.f
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                if buf == b"\n":
                    self.buf = b""
                    self._drop("empty-request", "empty request (a lone empty line)")
                    return
                if len(buf) - buf.rfind(b"\n") - 1 > f.max_line_length:
                    self.buf = b""
                    self._drop("line-too-long", f"line over {f.max_line_length} bytes")
                    return
                if len(buf) > f.max_request_size:
                    self.buf = b""
                    self._drop("request-too-large", f"request over {f.max_request_size} bytes")
                    return
                self.buf = buf
                if self._deadline is None:  # this request's first bytes: it has request_timeout to finish
                    self._deadline = f.clock.callLater(f.request_timeout, self._too_slow)
                return
            if self._deadline is not None:  # the request it timed is complete
                self._stop_deadline()
            if end + 2 == len(buf):  # the usual case: exactly one request arrived
                block, buf = buf[:end], b""
            else:
                block, buf = buf[:end], buf[end + 2 :]
            if end > f.max_request_size:
                self._drop("request-too-large", f"request over {f.max_request_size} bytes")
                return
            try:
                attrs = f.parse(block)
                action = f.decide(attrs)
            except BadRequest as e:
                self._drop(e.problem, str(e))
                return
            self.answered = True
            if action.__class__ is not str and not isinstance(action, str):  # a Deferred: answer when it fires
                self.buf = buf
                self.waiting = True
                action.addCallback(self._answer_later)
                return
            reply = f.replies.get(action)
            self._write(reply if reply is not None else f.reply(action))
            if not buf:
                self.buf = b""
                return

    def _stop_deadline(self) -> None:
        d = self._deadline
        self._deadline = None
        if d is not None and d.active():
            d.cancel()

    def _too_slow(self) -> None:
        self._deadline = None
        if self.connected and self.buf and not self.waiting:
            self._drop(
                "request-timeout",
                f"request not complete {self.f.request_timeout:g}s after its first byte ({len(self.buf)} bytes so far)",
                abort=True,
            )

    def _answer_later(self, action: str) -> None:
        self.waiting = False
        if not self.connected:
            return
        reply = self.f.replies.get(action)
        self._write(reply if reply is not None else self.f.reply(action))
        if self.buf:
            self._process()

    def _write(self, reply: bytes) -> None:
        """Send a reply: straight on the socket when nothing is queued before it, else through Twisted.

        Twisted's write only queues: the reply waits for the next poll, costing a writer
        registration, a poll and a removal per request. Postfix waits for each reply, so
        one send now is both faster and sooner; whatever the socket does not take at once
        (or any error) goes the ordinary way, after which Twisted's queue keeps the order.
        """
        t: Any = self.transport
        sock = self._sock
        if sock is not None and not t.dataBuffer and not t._tempDataBuffer and t.connected and not t.disconnecting:
            try:
                n = sock.send(reply)
            except OSError:  # would block, interrupted, or the connection broke: Twisted sees to it
                n = 0
            if n == len(reply):
                return
            reply = reply[n:]
        t.write(reply)

    def _drop(self, problem: str, detail: str, abort: bool = False) -> None:
        """Close the connection with one log line. ``abort``: at once, unsent replies and all, and
        out of the connection table now (a client that does not read could hold a close up)."""
        metrics.POLICY_BAD_INPUT.labels(problem).inc()
        log.warning("policy client %s: %s; closing the connection", self.peer, detail)
        if abort:
            self._forget()
            self.transport.abortConnection()  # type: ignore[union-attr]
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]


def _stalled_or_unanswered(p: PolicyProtocol) -> bool:
    return not p.waiting and (not p.answered or bool(p.buf))


class PolicyFactory(Factory):
    """Holds limits, the decide callable and the open connections (oldest first, for eviction and idle sweeps)."""

    noisy = False

    def __init__(
        self,
        decide: Callable[[Mapping[str, str]], Any],
        *,
        max_line_length: int = 2048,
        max_attributes: int = 100,
        max_request_size: int = 65536,
        max_connections: int = 2000,
        request_timeout: float = 5.0,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self.clock: Any = clock
        self.decide = decide
        self.max_line_length = max_line_length
        self.max_attributes = max_attributes
        self.max_request_size = max_request_size
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.connections: dict[PolicyProtocol, None] = {}  # insertion-ordered: oldest connection first
        self.replies: dict[str, bytes] = {}

    def reply(self, action: str) -> bytes:
        """The bytes answering ``action`` (reply_bytes); the first few distinct actions (DUNNO ...) are kept."""
        out = reply_bytes(action)
        if len(self.replies) < 32:
            self.replies[action] = out
        return out

    def make_room(self) -> bool:
        """The table is full: evict one connection for a newcomer; False if none may go.

        Postfix sends each request whole and keeps its connections for many requests, so the
        first to go is the oldest connection that is stalled mid-request or has never had a
        request answered (a slow or idle client holding a slot, not Postfix); failing that, the
        least recently active one that is not awaiting a decision. A Postfix connection closed
        that way is reopened by Postfix at its next request, and as a newcomer it gets in.
        """
        victim = next(filter(_stalled_or_unanswered, self.connections), None)
        if victim is None:
            idle = [p for p in self.connections if not p.waiting]
            if not idle:
                return False
            victim = min(idle, key=attrgetter("last_seen"))
        state = "mid-request" if victim.buf else "idle"
        victim._drop(
            "evicted",
            f"evicted for a new connection: {self.max_connections} connections open, this "
            f"one {state}{'' if victim.answered else ' and never answered'}",
            abort=True,
        )
        return True

    def buildProtocol(self, addr: Any) -> PolicyProtocol:
        return PolicyProtocol(self)

    def parse(self, block: bytes) -> Request:
        """Check one request block and wrap it as a Request, or raise BadRequest naming the problem."""
        if b"\0" in block:
            raise BadRequest("binary", "NUL byte in request (binary data?)")
        # Only the '=' and newline bytes: a line without '=' shows as an empty line there.
        shape = block.translate(None, _ALL_BUT_EQUALS_AND_NEWLINE)
        if shape.count(b"\n") >= self.max_attributes:
            raise BadRequest("too-many-attributes", f"more than {self.max_attributes} attributes")
        text = block.decode("utf-8", "surrogateescape")
        if b"\n\n" in shape or shape[:1] != b"=" or shape[-1:] == b"\n":
            bad = next(line for line in text.split("\n") if "=" not in line)
            raise BadRequest("no-equals", f"line without '=': {bad[:80]!r}")
        if len(text) > self.max_line_length and max(map(len, text.split("\n"))) > self.max_line_length:
            raise BadRequest("line-too-long", f"line over {self.max_line_length} bytes")
        req = Request(text)
        if not (text.startswith("request=smtpd_access_policy\n") and "\nrequest=" not in text):
            kind = req.get("request")
            if kind != "smtpd_access_policy":
                raise BadRequest(
                    "bad-request-type", f"request={(kind or '')[:40]!r}, expected request=smtpd_access_policy"
                )
        return req

    def sweep_idle(self, idle_timeout: float) -> int:
        cutoff = self.clock.seconds() - idle_timeout
        idle = [p for p in self.connections if p.last_seen < cutoff and not p.waiting]
        for p in idle:
            log.info("policy client %s idle for over %.0fs; closing", p.peer, idle_timeout)
            p.transport.loseConnection()  # type: ignore[union-attr]
        return len(idle)
