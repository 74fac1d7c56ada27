"""The LMTP listener (RFC 2033): Postfix's lmtp(8) client delivers bounces to the running service
over cached connections, with no process per message.

The same contract as the pipe(8) command: a recipient is answered ``250`` only after the
transaction that recorded its message committed; ``451`` on a database failure or any doubt, so
Postfix keeps the message and retries. A message is never refused permanently for its content:
past ``ingest.max_message_size`` it is cut and recorded as truncated, as the pipe command does.
A command that is unknown or out of order gets a ``5xx`` (Postfix never sends one); a problem
with an argument (address syntax, control characters, an over-long line) a ``4xx`` naming it.

Each recipient of a message is its own hand-off to :class:`sidecar.bounce.group.GroupCommit`,
the content preceded by the lines pipe(8) adds with its ``DOR`` flags (``Return-Path:``,
``X-Original-To:``, ``Delivered-To:``) and with LF line ends, as the pipe command reads it: each
recipient's copy has its own digest (so the duplicate check does not take a second recipient's
copy, with its own VERP token, for the first's), a retried copy is recognised as a duplicate,
and the stored message is the one the pipe transport would have stored.

Framing works on whole buffers (one search per chunk, no callback per line): commands are
lines of at most :data:`MAX_LINE` bytes; the message ends at ``CRLF.CRLF`` and is
dot-unstuffed in bulk while it is spooled (:class:`sidecar.bounce.lmtp_data.DataSink`).
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from sidecar import metrics
from sidecar.bounce.envelope import Envelope
from sidecar.bounce.lmtp_data import DataSink, RecipientCopy, SharedBody
from sidecar.bounce.lmtp_syntax import (
    HEAD,
    CommandError,
    parse_mail,
    parse_rcpt,
    parse_xforward,
    received_queue_id,
    split_extension,
)

log = logging.getLogger("sidecar.bounce.lmtp")

MAX_LINE = 4096  # a command line (RFC 5321's 512 plus room for XFORWARD and parameters)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed
MAX_PENDING = 65536  # input kept unread while a commit is awaited; past it, reading pauses
NULL_SENDER = "MAILER-DAEMON"  # what pipe(8) passes as ${sender} for <> (its null_sender default)

# Postfix's client sends XFORWARD only with an attribute it has: SOURCE (local/remote) always is,
# and IDENT (the queue id) travels in the same command. Only IDENT is used.
EXTENSIONS = (
    b"PIPELINING",
    b"8BITMIME",
    b"SMTPUTF8",
    b"ENHANCEDSTATUSCODES",
    b"XFORWARD NAME ADDR PORT PROTO HELO SOURCE IDENT",
)


class LmtpProtocol(protocol.Protocol, TimeoutMixin):
    """One LMTP connection: LHLO, then any number of transactions (XFORWARD, MAIL, RCPT..., DATA)."""

    def __init__(self, factory: LmtpFactory) -> None:
        self.factory = factory
        if factory.clock is not None:
            self.callLater = factory.clock.callLater  # type: ignore[method-assign]
        self.buf = bytearray()
        self.greeted = False
        self.sink: DataSink | None = None  # set while the message itself arrives
        self.busy = False  # waiting for commits: input is kept, not read
        self.closing = False
        self.paused = False
        self._reset()

    def _reset(self) -> None:
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.ident = ""

    # -- connection -----------------------------------------------------------------------
    def connectionMade(self) -> None:
        self.factory.active += 1
        metrics.LMTP_CONNECTIONS.inc()
        self.setTimeout(self.factory.idle_timeout)
        self._send(f"220 {self.factory.hostname} LMTP postfix-sidecar ready")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.factory.active -= 1
        self.setTimeout(None)
        if self.sink is not None:
            self.sink.close()
            self.sink = None

    def timeoutConnection(self) -> None:
        self._close("421 4.4.2 idle timeout, closing connection")

    def _send(self, *lines: str) -> None:
        tr: Any = self.transport
        if tr is not None and self.connected:
            tr.write("".join(f"{line}\r\n" for line in lines).encode("utf-8", "replace"))

    def _close(self, line: str) -> None:
        self._send(line)
        self.closing = True
        self.buf = bytearray()
        tr: Any = self.transport
        if tr is not None:
            tr.loseConnection()

    # -- input ----------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self.resetTimeout()
        if self.sink is not None and not self.busy:
            rest = self.sink.feed(data)
            if rest is None:
                return
            self._message_done(rest)
            return
        self.buf += data
        if self.busy and len(self.buf) > MAX_PENDING and not self.paused:
            # pipelined input while the commit is awaited: stop reading until the answer is out
            self.paused = True
            tr: Any = self.transport
            tr.pauseProducing()
        self._commands()

    def _commands(self) -> None:
        pos = 0  # lines are read by offset and the buffer cut once: no copy of the rest per line
        try:
            while not self.busy and not self.closing:
                if self.sink is not None:  # DATA accepted with more input pipelined behind it
                    data, self.buf, pos = bytes(self.buf[pos:]), bytearray(), 0
                    rest = self.sink.feed(data)
                    if rest is not None:
                        self._message_done(rest)
                    return
                nl = self.buf.find(b"\n", pos)
                if (nl if nl >= 0 else len(self.buf)) - pos > MAX_LINE:
                    metrics.LMTP_REPLIES.labels("refused").inc()
                    self._close(f"421 4.5.2 line too long (limit {MAX_LINE} bytes), closing connection")
                    return
                if nl < 0:
                    return
                line = bytes(self.buf[pos:nl]).rstrip(b"\r")
                pos = nl + 1
                try:
                    self._command(line)
                except CommandError as e:
                    metrics.LMTP_REPLIES.labels("refused").inc()
                    self._send(str(e))
        finally:
            if pos:
                del self.buf[:pos]

    def _command(self, line: bytes) -> None:
        if _CONTROL.search(line):
            raise CommandError("451 4.5.2 control character in command")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError("451 4.5.2 command is not UTF-8") from None
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        handler = getattr(self, f"do_{verb}", None) if verb.isalpha() else None
        if handler is None:
            raise CommandError(f"500 5.5.2 command not recognised: {verb[:20]!r}")
        handler(arg.strip())

    # -- commands -------------------------------------------------------------------------
    def do_LHLO(self, arg: str) -> None:
        if not arg:
            raise CommandError("501 5.5.4 LHLO needs a host name")
        self._reset()
        self.greeted = True
        ext = [e.decode() for e in EXTENSIONS]
        self._send(f"250-{self.factory.hostname}", *(f"250-{e}" for e in ext[:-1]), f"250 {ext[-1]}")

    def do_HELO(self, arg: str) -> None:
        raise CommandError("500 5.5.1 this is LMTP: say LHLO")

    do_EHLO = do_HELO

    def do_XFORWARD(self, arg: str) -> None:
        self._need_greeting()
        if self.sender is not None:
            raise CommandError("503 5.5.1 XFORWARD belongs before MAIL")
        ident = parse_xforward(arg).get("IDENT")
        if ident is not None:
            self.ident = ident
        self._send("250 2.0.0 Ok")

    def do_MAIL(self, arg: str) -> None:
        self._need_greeting()
        if self.sender is not None:
            raise CommandError("503 5.5.1 nested MAIL command")
        self.sender = parse_mail(arg)
        self._send("250 2.1.0 Ok")

    def do_RCPT(self, arg: str) -> None:
        if self.sender is None:
            raise CommandError("503 5.5.1 need MAIL before RCPT")
        address = parse_rcpt(arg)
        if len(self.recipients) >= self.factory.max_recipients:
            raise CommandError(
                f"452 4.5.3 too many recipients (ingest.lmtp_max_recipients = {self.factory.max_recipients})"
            )
        self.recipients.append(address)
        self._send("250 2.1.5 Ok")

    def do_DATA(self, arg: str) -> None:
        if self.sender is None:
            raise CommandError("503 5.5.1 need MAIL before DATA")
        if not self.recipients:
            raise CommandError("503 5.5.1 need RCPT before DATA")
        self.sink = DataSink(self.factory.max_size)
        self._send("354 End data with <CR><LF>.<CR><LF>")

    def do_RSET(self, arg: str) -> None:
        self._reset()
        self._send("250 2.0.0 Ok")

    def do_NOOP(self, arg: str) -> None:
        self._send("250 2.0.0 Ok")

    def do_QUIT(self, arg: str) -> None:
        self._close("221 2.0.0 Bye")

    def do_VRFY(self, arg: str) -> None:
        self._send("252 2.5.2 Cannot VRFY")

    def _need_greeting(self) -> None:
        if not self.greeted:
            raise CommandError("503 5.5.1 say LHLO first")

    # -- the message ----------------------------------------------------------------------
    def _message_done(self, rest: bytes) -> None:
        sink, self.sink = self.sink, None
        assert sink is not None and self.sender is not None
        sender, recipients, ident = self.sender or NULL_SENDER, self.recipients, self.ident
        self._reset()  # before any answer: a commit may answer at once, and pipelined commands follow
        self.buf = bytearray(rest)
        self.busy = True
        self.setTimeout(None)
        if not ident:  # Postfix sends IDENT only for mail that came with one: its own Received: line has it
            sink.spool.seek(0)
            ident = received_queue_id(sink.spool.read(HEAD))
        body = SharedBody(sink.spool, len(recipients))
        waits: list[Deferred[Any]] = []
        for rcpt in recipients:
            prefix = f"Return-Path: <{sender}>\nX-Original-To: {rcpt}\nDelivered-To: {rcpt}\n".encode()
            env = Envelope(
                sender=sender,
                recipient=rcpt,
                queue_id=ident,
                extension=split_extension(rcpt, self.factory.delimiter),
                size=len(prefix) + sink.total,
                truncated=sink.truncated,
            )
            waits.append(self.factory.group.submit(RecipientCopy(prefix, body), env, len(prefix) + sink.kept))
        metrics.LMTP_MESSAGES.inc()
        metrics.LMTP_RECIPIENTS.inc(len(recipients))
        DeferredList(waits, consumeErrors=True).addCallback(self._answer)

    def _answer(self, results: list[tuple[bool, Any]]) -> None:
        lines = []
        for ok, value in results:
            if ok:
                metrics.LMTP_REPLIES.labels("accepted").inc()
                lines.append(f"250 2.0.0 Ok: {value.summary()}")
            else:
                metrics.LMTP_REPLIES.labels("tempfail").inc()
                f: Failure = value
                log.error("LMTP delivery not recorded: %s", f.getErrorMessage(), exc_info=(f.type, f.value, f.tb))
                reason = " ".join(f"{f.type.__name__}: {f.getErrorMessage()}".split())[:200]
                lines.append(f"451 4.3.0 not recorded, try again later: {reason}")
        self.busy = False
        if not self.connected:
            return
        self._send(*lines)
        if self.paused:
            self.paused = False
            tr: Any = self.transport
            tr.resumeProducing()
        self.setTimeout(self.factory.idle_timeout)
        self._commands()


class LmtpFactory(protocol.Factory):
    """``group``: the :class:`~sidecar.bounce.group.GroupCommit` shared with the hand-off socket."""

    def __init__(
        self,
        group: Any,
        *,
        max_size: int,
        max_connections: int = 64,
        max_recipients: int = 100,
        idle_timeout: float = 300.0,
        delimiter: str = "+",
        hostname: str | None = None,
        clock: Any = None,
    ) -> None:
        self.group = group
        self.max_size = max_size
        self.max_connections = max_connections
        self.max_recipients = max_recipients
        self.idle_timeout = idle_timeout
        self.delimiter = delimiter
        self.hostname = hostname or socket.getfqdn()
        self.clock = clock  # for the idle timeout (None: the global reactor, as TimeoutMixin has it)
        self.active = 0
        self.refused = 0

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        if self.active >= self.max_connections:
            self.refused += 1
            metrics.LMTP_REPLIES.labels("busy").inc()
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning(
                    "LMTP: %d connections open (ingest.lmtp_max_connections); refused %d so far",
                    self.active,
                    self.refused,
                )
            return Busy()
        p = LmtpProtocol(self)
        p.factory = self
        return p


class Busy(protocol.Protocol):
    """Over ``ingest.lmtp_max_connections``: 421 and close; Postfix defers and tries again."""

    def connectionMade(self) -> None:
        tr: Any = self.transport
        tr.write(b"421 4.3.2 too many connections (ingest.lmtp_max_connections), try again later\r\n")
        tr.loseConnection()
