"""The delivery client's pure parts: bounded response reads, stale connections, error text."""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.web.client import RequestNotSent, ResponseDone, ResponseNeverReceived

from sidecar.webhooks.client import MAX_RESPONSE, TLS_MISSING, closed_before_answer, describe, response_code


class FakeResponse:
    code = 204

    def __init__(self) -> None:
        self.aborted = 0

    def deliverBody(self, proto) -> None:
        outer = self

        class Transport:
            def stopProducing(self) -> None:
                outer.aborted += 1

        self.proto = proto
        proto.makeConnection(Transport())


def test_at_most_max_response_bytes_are_read_then_the_connection_is_dropped():
    resp = FakeResponse()
    got = []
    response_code(resp).addCallback(got.append)
    for _ in range(MAX_RESPONSE // 4096):
        resp.proto.dataReceived(b"x" * 4096)
    assert got == [] and resp.aborted == 0
    resp.proto.dataReceived(b"x")
    assert got == [204] and resp.aborted == 1
    resp.proto.dataReceived(b"x" * 4096)  # whatever was still on its way is ignored
    resp.proto.connectionLost(Failure(ConnectionDone()))
    assert got == [204] and resp.aborted == 1


def test_a_short_body_ends_normally_and_a_lost_one_is_an_error():
    resp = FakeResponse()
    got = []
    response_code(resp).addCallback(got.append)
    resp.proto.dataReceived(b"ok")
    resp.proto.connectionLost(Failure(ResponseDone()))
    assert got == [204]
    resp = FakeResponse()
    errs = []
    response_code(resp).addErrback(errs.append)
    resp.proto.connectionLost(Failure(ConnectionRefusedError()))
    assert errs and errs[0].check(ConnectionRefusedError)


def test_stale_connections_are_told_apart_and_errors_are_one_line():
    assert closed_before_answer(Failure(RequestNotSent()))
    assert closed_before_answer(Failure(ResponseNeverReceived([Failure(ConnectionDone())])))
    assert not closed_before_answer(Failure(ResponseNeverReceived([Failure(CancelledError())])))
    assert not closed_before_answer(Failure(ConnectionRefusedError()))
    assert describe(Failure(NotImplementedError("SSL support unavailable"))) == TLS_MISSING
    text = describe(Failure(ResponseNeverReceived([Failure(ValueError("bad\ncert"))])))
    assert text == "ResponseNeverReceived: ValueError: bad cert"
