import pytest
from twisted.internet.testing import StringTransport

from sidecar.policy.protocol import PolicyFactory
from tests.harness.policy import encode, fixtures


class Recorder:
    def __init__(self, action="DUNNO"):
        self.seen = []
        self.action = action

    def __call__(self, attrs):
        self.seen.append(dict(attrs))
        return self.action


def connect(**kw):
    rec = Recorder()
    f = PolicyFactory(rec, **kw)
    p = f.buildProtocol(None)
    t = StringTransport()
    p.makeConnection(t)
    return rec, f, p, t


@pytest.mark.parametrize("chunk", [1, 16, 4096])
def test_every_fixture_in_chunks(chunk):
    recs = fixtures()
    rec, _, p, t = connect()
    stream = b"".join(encode(r["attrs"]) for r in recs)
    for i in range(0, len(stream), chunk):
        p.dataReceived(stream[i : i + chunk])
    assert len(rec.seen) == len(recs)
    for got, r in zip(rec.seen, recs, strict=True):
        assert got == dict(r["attrs"])
    assert t.value() == b"action=DUNNO\n\n" * len(recs)
    assert not t.disconnecting


def test_unknown_attributes_are_kept_and_ignored():
    rec, _, p, t = connect()
    p.dataReceived(b"request=smtpd_access_policy\nprotocol_state=RCPT\nfuture_attr=1\n\n")
    assert rec.seen[0]["future_attr"] == "1" and t.value() == b"action=DUNNO\n\n"


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"request=smtpd_access_policy\nno equals here\n\n", "line without '='"),
        (b"request=smtpd_access_policy\n" + b"x=" + b"a" * 5000 + b"\n\n", "line over"),
        (b"request=smtpd_access_policy\n" + b"x=" + b"a" * (1024 * 1024), "line over"),
        (b"".join(b"a%d=1\n" % i for i in range(200)) + b"\n", "more than 100 attributes"),
        (b"request=smtpd_access_policy\nx=\x00\xff\xfe\n\n", "NUL byte"),
        (b"\n", "empty request"),
        (b"protocol_state=RCPT\n\n", "expected request=smtpd_access_policy"),
    ],
)
def test_bad_input_costs_the_connection(data, problem, caplog):
    rec, _, p, t = connect()
    p.dataReceived(data)
    assert t.disconnecting
    assert rec.seen == []
    assert t.value() == b""
    assert problem in caplog.text


def test_request_size_limit():
    rec, _, p, t = connect(max_request_size=1000, max_line_length=900)
    p.dataReceived(b"request=smtpd_access_policy\n" + b"".join(b"a%d=%s\n" % (i, b"x" * 50) for i in range(30)))
    assert t.disconnecting


def test_good_requests_before_bad_one_are_answered():
    rec, _, p, t = connect()
    good = encode({"request": "smtpd_access_policy", "protocol_state": "RCPT"})
    p.dataReceived(good + good + b"garbage\n\n" + good)
    assert t.value() == b"action=DUNNO\n\n" * 2
    assert t.disconnecting


def test_half_request_then_close_is_logged(caplog):
    import logging

    caplog.set_level(logging.INFO)
    rec, f, p, t = connect()
    p.dataReceived(b"request=smtpd_access_policy\nprotocol_state=RC")
    p.connectionLost(None)
    assert "went away in the middle of a request" in caplog.text
    assert p not in f.connections


def test_idle_sweep():
    from twisted.internet.task import Clock

    clock = Clock()
    rec, f, p1, t1 = connect(clock=clock)
    clock.advance(400)
    p2, t2 = _open(f)
    clock.advance(201)  # p1 idle for 601 s, p2 for 201 s
    assert f.sweep_idle(600) == 1 and t1.disconnecting and not t2.disconnecting
    p1.connectionLost(None)  # what the close does (StringTransport only records it)
    p2.dataReceived(encode({"request": "smtpd_access_policy", "protocol_state": "RCPT"}))
    clock.advance(599)
    assert f.sweep_idle(600) == 0 and not t2.disconnecting
    clock.advance(2)
    assert f.sweep_idle(600) == 1 and t2.disconnecting


def _open(f):
    p = f.buildProtocol(None)
    t = StringTransport()
    p.makeConnection(t)
    return p, t


def test_deferred_decisions_answer_in_order_one_at_a_time():
    from twisted.internet.defer import Deferred

    pending = []

    def decide(attrs):
        d = Deferred()
        pending.append((attrs["n"], d))
        return d

    f = PolicyFactory(decide)
    p = f.buildProtocol(None)
    t = StringTransport()
    p.makeConnection(t)
    req = b"request=smtpd_access_policy\nn=%d\n\n"
    p.dataReceived(req % 1 + req % 2)  # a client that pipelines two requests
    assert [n for n, _ in pending] == ["1"]  # the second waits for the first answer
    pending[0][1].callback("DUNNO")
    assert t.value() == b"action=DUNNO\n\n" and [n for n, _ in pending] == ["1", "2"]
    p.dataReceived(req % 3)
    pending[1][1].callback("REJECT no")
    assert t.value() == b"action=DUNNO\n\naction=REJECT no\n\n"
    pending[2][1].callback("DUNNO")
    assert t.value().count(b"action=") == 3


def test_request_reads_attributes_like_a_dict_of_its_lines():
    f = PolicyFactory(Recorder())
    block = b"request=smtpd_access_policy\nsender=a@x.test\nrecipient=b=c@y.test\nsender=last@x.test\nempty="
    req = f.parse(block)
    expect = dict(line.split("=", 1) for line in block.decode().split("\n"))
    assert dict(req) == expect and len(req) == len(expect)
    for name in ("request", "sender", "recipient", "empty", "missing", "ender", "request=smtpd"):
        assert req.get(name, "-") == expect.get(name, "-")
    assert "empty" in req and "missing" not in req and req["recipient"] == "b=c@y.test"


@pytest.mark.parametrize(
    "block, bad",
    [
        (b"no equals\nrequest=smtpd_access_policy", "no equals"),
        (b"request=smtpd_access_policy\nmiddle\nx=1", "middle"),
        (b"request=smtpd_access_policy\nx=a=b\nlast", "last"),
        (b"request=smtpd_access_policy\n\xc3\xa9t\xc3\xa9\nx=1", "\u00e9t\u00e9"),
        (b"alone", "alone"),
    ],
)
def test_parse_names_the_first_line_without_equals(block, bad):
    from sidecar.policy.request import BadRequest

    with pytest.raises(BadRequest, match="line without '='") as e:
        PolicyFactory(Recorder()).parse(block)
    assert repr(bad) in str(e.value)


def test_parse_request_type_is_the_last_request_line():
    from sidecar.policy.request import BadRequest

    f = PolicyFactory(Recorder())
    assert f.parse(b"request=smtpd_access_policy\nsender=a@x.test")["sender"] == "a@x.test"
    assert f.parse(b"sender=a@x.test\nrequest=smtpd_access_policy").get("request") == "smtpd_access_policy"
    with pytest.raises(BadRequest, match="expected request=smtpd_access_policy"):
        f.parse(b"request=smtpd_access_policy\nrequest=other")


class FakeSocket:
    def __init__(self, take):
        self.take, self.sent = take, []

    def send(self, data):
        n = self.take(data)
        if isinstance(n, Exception):
            raise n
        self.sent.append(bytes(data[:n]))
        return n


class SocketTransport(StringTransport):
    """Enough of Twisted's TCP connection for the direct-send path."""

    TLS = False

    def __init__(self, sock):
        super().__init__()
        self.socket, self.dataBuffer, self._tempDataBuffer = sock, b"", []
        self.connected, self.disconnecting = True, False


@pytest.mark.parametrize(
    "take, sent, queued",
    [
        (len, [b"action=DUNNO\n\n"] * 2, b""),  # all sent at once
        (lambda d: 4, [b"acti"], b"on=DUNNO\n\naction=DUNNO\n\n"),  # partial: rest queued, order kept
        (lambda d: BlockingIOError(), [], b"action=DUNNO\n\n" * 2),  # would block: Twisted's queue
    ],
)
def test_replies_go_straight_to_the_socket_when_nothing_is_queued(take, sent, queued):
    rec = Recorder()
    f = PolicyFactory(rec)
    p = f.buildProtocol(None)
    sock = FakeSocket(take)
    t = SocketTransport(sock)
    p.makeConnection(t)
    req = b"request=smtpd_access_policy\nprotocol_state=RCPT\n\n"
    p.dataReceived(req)
    t._tempDataBuffer = [t.value()] if t.value() else []  # what Twisted would still hold
    p.dataReceived(req)
    assert sock.sent == sent and t.value() == queued
