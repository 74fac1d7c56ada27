"""The Redis backend's batching, timeouts and fallbacks, over a fake connection and a fake clock."""

import hiredis
import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport

from sidecar import metrics
from sidecar.config import LimitConfig, RateLimitRule
from sidecar.policy.limits import RateLimiter
from sidecar.policy.redis_limits import RedisRateLimiter
from tests.harness.policy import rcpt

NOW = 1_795_000_000.0


def rule(name="r", key=("sender",), rate=2, per=60.0, count="recipients"):
    return RateLimitRule(name=name, key=key, limits=(LimitConfig(rate, per, 0),), count=count)


class Redis:
    """The far end of the limiter's connection: the commands it sent, and replies to feed it."""

    def __init__(self, limiter):
        self.reactor = limiter.reactor
        self.factory = self.reactor.tcpClients[0][2]
        self.transport = StringTransport()
        self.reader = hiredis.Reader()
        self.proto = None

    def connect(self):
        self.proto = self.factory.buildProtocol(None)
        self.proto.makeConnection(self.transport)

    def commands(self):
        self.reader.feed(self.transport.value())
        self.transport.clear()
        out = []
        while (c := self.reader.gets()) is not False:
            out.append(c)
        return out

    def reply(self, raw: bytes):
        self.proto.dataReceived(raw)


@pytest.fixture
def setup():
    reactor = MemoryReactorClock()
    reactor.advance(NOW)
    local = RateLimiter([rule(), rule("per-domain", ("sender_domain",), rate=1)])
    lim = RedisRateLimiter(local, "redis://127.0.0.1:6379/2", 0.05, "local", reactor)
    redis = Redis(lim)
    return lim, redis, reactor


def fallbacks(cause):
    return metrics.RATELIMIT_FALLBACK.labels(cause)._value.get()


def connected(lim, redis):
    """Connect; the commands sent after the set-up (SELECT, SCRIPT LOAD), which comes first."""
    redis.connect()
    cmds = redis.commands()
    assert [c[0] for c in cmds[:2]] == [b"SELECT", b"SCRIPT"]
    assert cmds[1][2] == lim.redis.script
    redis.reply(b"+OK\r\n$40\r\n" + lim.redis.sha.encode() + b"\r\n")
    return cmds[2:]


def ask(lim, reactor, sender="a@x.test"):
    """One RCPT decision, sent at the end of the reactor turn; the list its answer goes into."""
    results = []
    lim.check(rcpt(sender=sender), "RCPT", NOW).addCallback(results.append)
    reactor.advance(0)
    return results


def test_one_turn_one_script_call_and_only_refusals_come_back(setup):
    lim, redis, reactor = setup
    connected(lim, redis)
    results = []
    for sender in ("a@x.test", "b@y.test", "a@x.test"):
        lim.check(rcpt(sender=sender), "RCPT", NOW).addCallback(results.append)
    assert redis.commands() == []  # queued until the end of the reactor turn
    reactor.advance(0)
    (cmd,) = redis.commands()
    assert cmd[:3] == [b"EVALSHA", lim.redis.sha.encode(), b"6"]
    assert cmd[3:5] == [b"sidecar:rl:{r:a@x.test}#0", b"sidecar:rl:{per-domain:x.test}#0"]
    assert cmd[9:] == [b"\x00\x01\x00\x04"] * 3  # rule 0 and rule 1, both CONSUME, per decision
    redis.reply(b"*3\r\n:3\r\n:2\r\n:1\r\n")  # decision 3: its second rule, first window
    assert results[:2] == [None, None]
    assert results[2][:2] == ("per-domain", "per-domain:x.test")
    assert "1 per 1m" in results[2][2]
    assert lim.local.state == {}  # Redis counted, not the local limiter


def test_no_answer_within_redis_timeout_the_fallback_decides_and_the_late_answer_is_ignored(setup):
    lim, redis, reactor = setup
    connected(lim, redis)
    before = fallbacks("timeout")
    results = ask(lim, reactor)
    assert len(redis.commands()) == 1
    reactor.advance(0.049)
    assert results == []
    reactor.advance(0.002)
    assert results == [None]  # the local limiter admitted it, and counted it
    assert "r:a@x.test" in lim.local.state
    assert fallbacks("timeout") == before + 1
    redis.reply(b"*3\r\n:1\r\n:1\r\n:1\r\n")  # too late: no second answer
    assert results == [None]


def test_connection_lost_with_decisions_in_flight_the_fallback_decides_at_once(setup):
    lim, redis, reactor = setup
    connected(lim, redis)
    before = fallbacks("error")
    results = ask(lim, reactor)
    redis.proto.connectionLost(None)
    assert results == [None]
    assert fallbacks("error") == before + 1
    down = fallbacks("down")
    # down: the local limiter answers at once (no Deferred); it counted the first decision too
    assert lim.check(rcpt(sender="a@x.test"), "RCPT", NOW)[0] == "per-domain"
    assert fallbacks("down") == down + 1


def test_decisions_before_the_first_connection_wait_for_it_within_redis_timeout(setup):
    lim, redis, reactor = setup
    results = []
    lim.check(rcpt(sender="a@x.test"), "RCPT", NOW).addCallback(results.append)  # not connected yet
    reactor.advance(0.01)
    (cmd,) = connected(lim, redis)  # sent once the connection is set up, after SCRIPT LOAD
    assert cmd[0] == b"EVALSHA"
    redis.reply(b"*0\r\n")
    assert results == [None]
    assert lim.local.state == {}


def test_a_decision_that_waited_too_long_for_the_first_connection_is_never_sent(setup):
    lim, redis, reactor = setup
    results = ask(lim, reactor)
    reactor.advance(0.06)
    assert results == [None]  # the fallback decided at the deadline
    assert connected(lim, redis) == []  # so Redis does not count it a second time


def test_noscript_sends_the_script_itself_and_answers(setup):
    lim, redis, reactor = setup
    connected(lim, redis)
    results = ask(lim, reactor)
    redis.commands()
    redis.reply(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")  # e.g. SCRIPT FLUSH meanwhile
    (cmd,) = redis.commands()
    assert cmd[:3] == [b"EVAL", lim.redis.script, b"2"]
    redis.reply(b"*0\r\n")
    assert results == [None]


def test_an_error_reply_lets_the_fallback_decide(setup):
    lim, redis, reactor = setup
    connected(lim, redis)
    results = ask(lim, reactor)
    redis.reply(b"-ERR something went wrong\r\n")
    assert results == [None]
    assert "r:a@x.test" in lim.local.state
