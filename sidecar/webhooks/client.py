"""The HTTP side of a delivery: the request body, a bounded read of the answer, TLS trust, error text.

A receiver's answer is only a status code to us: at most ``MAX_RESPONSE`` bytes of its body
are read, then the connection is dropped (a huge or endless body costs nothing).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from sidecar.webhooks.outbox import one_line

MAX_RESPONSE = 64 * 1024
TLS_MISSING = "https needs pyOpenSSL and service_identity: pip install 'twisted[tls]'"


@implementer(IBodyProducer)
class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred:
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Bounded(Protocol):
    """Counts a response body up to ``limit`` bytes, then drops the connection."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self.done: Deferred = Deferred(lambda _d: self.abort())

    def abort(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            (getattr(transport, "abortConnection", None) or transport.stopProducing)()

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit and not self.done.called:
            self.done.callback(self.size)
            self.abort()  # the rest is never read

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(self.size)
        else:
            self.done.errback(reason)


def response_code(response: Any, limit: int = MAX_RESPONSE) -> Deferred:
    """Fires with the response's status code once at most ``limit`` bytes of its body were read."""
    proto = _Bounded(limit)
    response.deliverBody(proto)
    return proto.done.addCallback(lambda _size: response.code)


def make_agent(
    reactor: Any, *, timeout: float, concurrency: int, ca_file: str = "", persistent: bool = True
) -> tuple[Any, Any]:
    """(agent, connection pool); with ``ca_file``, https servers are verified against those CAs only."""
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    pool.maxPersistentPerHost = concurrency
    if not ca_file:
        return Agent(reactor, connectTimeout=timeout, pool=pool), pool
    from twisted.internet.ssl import Certificate, trustRootFromCertificates
    from twisted.web.client import BrowserLikePolicyForHTTPS

    with open(ca_file, "rb") as fh:
        pem = fh.read()
    end = b"-----END CERTIFICATE-----"
    certs = [Certificate.loadPEM(block + end) for block in pem.split(end) if b"-----BEGIN CERTIFICATE-----" in block]
    policy = BrowserLikePolicyForHTTPS(trustRoot=trustRootFromCertificates(certs))
    return Agent(reactor, policy, connectTimeout=timeout, pool=pool), pool


def closed_before_answer(err: Failure) -> bool:
    """The connection closed before any answer, nothing else wrong: a pooled connection the receiver
    had closed meanwhile (Twisted retries only idempotent requests itself). Sent again at once."""
    if err.check(RequestNotSent):
        return True
    if not err.check(ResponseNeverReceived, RequestTransmissionFailed):
        return False
    return all(r.check(ConnectionDone, ConnectionLost) for r in err.value.reasons)


def describe(err: Failure | BaseException) -> str:
    """One line for ``last_error`` and the log: Twisted's wrapped failures unwrapped."""
    e = err.value if isinstance(err, Failure) else err
    reasons = getattr(e, "reasons", None)
    if reasons:
        return " ".join(f"{type(e).__name__}: {'; '.join(describe(r) for r in reasons)}".split())[:500]
    if isinstance(e, NotImplementedError) and "SSL" in str(e):
        return TLS_MISSING
    return one_line(e)
