"""Issue 10: replies are one line whatever the engine returns (2); slow and idle clients cannot
hold the policy listener (9): a request deadline and eviction when the table is full."""

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from sidecar.policy.protocol import PolicyFactory
from sidecar.policy.request import MAX_ACTION_BYTES, reply_bytes
from tests.harness.policy import encode, rcpt

INJECTED = "hard\n\naction=REJECT injected\n\naction=OK"
REQUEST = encode(rcpt(recipient="someone@example.test"))


def frames(data: bytes) -> list[bytes]:
    """The replies as Postfix reads them: attribute lists ended by an empty line."""
    assert data.endswith(b"\n\n"), data
    return data[:-2].split(b"\n\n")


@pytest.mark.parametrize(
    "action",
    [
        INJECTED,
        "550 a\rb",
        "550 a\r\nb",
        "550 nul\0here",
        "550 esc\x1b[2J",
        "550 del\x7f",
        "550 ls\u2028ps\u2029",
        "550 \udcff\udcfe (a raw byte from the request)",
        "550 tab\there",
        "\n",
        "\n\n",
    ],
)
def test_reply_is_one_action_line_whatever_the_text(action):
    out = reply_bytes(action)
    assert out.startswith(b"action=") and out.endswith(b"\n\n") and out.count(b"\n") == 2
    assert b"\r" not in out and b"\0" not in out
    text = out[len(b"action=") : -2].decode("utf-8")  # strict: valid UTF-8
    assert text.isprintable() and "?" in text


def test_clean_replies_are_unchanged_and_long_ones_cut_on_a_character():
    for action in (
        "DUNNO",
        "550 5.1.1 <a@example.test>: recipient suppressed (bounce 2026-11-30)",
        "450 4.7.1 slow down: caf\u00e9 \u00fc\u00f1\u00ee\u00e7\u00f8d\u00e9",
    ):
        assert reply_bytes(action) == b"action=" + action.encode() + b"\n\n"
    out = reply_bytes("550 " + "\u00e9" * 2000)
    value = out[len(b"action=") : -2]
    assert MAX_ACTION_BYTES - 1 <= len(value) <= MAX_ACTION_BYTES and value.decode("utf-8")
    assert len(reply_bytes("x" * MAX_ACTION_BYTES)) == len(b"action=\n\n") + MAX_ACTION_BYTES


def connect(decide, **kw):
    clock = task.Clock()
    f = PolicyFactory(decide, clock=clock, **kw)
    p = f.buildProtocol(None)
    t = StringTransport()
    p.makeConnection(t)
    return clock, f, p, t


@pytest.mark.parametrize("chunk", [1, 16, 4096])
def test_injected_reason_cannot_answer_the_next_request(chunk):
    answers = iter([f"550 5.1.1 <a@example.test>: recipient suppressed ({INJECTED} 2026-11-30)", "DUNNO"])
    clock, f, p, t = connect(lambda attrs: next(answers))
    stream = REQUEST * 2
    for i in range(0, len(stream), chunk):
        p.dataReceived(stream[i : i + chunk])
    first, second = frames(t.value())
    assert first.startswith(b"action=550 5.1.1 <a@example.test>: recipient suppressed (hard??action=REJECT")
    assert second == b"action=DUNNO" and not t.disconnecting


def test_injected_reason_in_a_later_decision_is_one_line_too():
    pending: list[Deferred] = []
    clock, f, p, t = connect(lambda attrs: pending.append(Deferred()) or pending[-1])
    p.dataReceived(REQUEST)
    pending[0].callback(INJECTED)
    assert len(frames(t.value())) == 1 and t.value().count(b"action=") == 3  # two inside the text


@pytest.mark.parametrize("chunk", [1, 16, 4096])
def test_a_request_sent_at_once_sets_no_timer(chunk):
    clock, f, p, t = connect(lambda attrs: "DUNNO")
    stream = REQUEST * 3
    for i in range(0, len(stream), chunk):
        p.dataReceived(stream[i : i + chunk])
    assert t.value() == b"action=DUNNO\n\n" * 3
    assert clock.getDelayedCalls() == []
    clock.advance(3600)
    assert not t.disconnecting


def test_a_dribbled_request_is_cut_off_after_request_timeout(caplog):
    clock, f, p, t = connect(lambda attrs: "DUNNO", request_timeout=5)
    for byte in REQUEST[:5]:  # one byte a second: each byte used to reset the idle clock
        p.dataReceived(bytes([byte]))
        clock.advance(0.99)
    assert not t.disconnecting
    clock.advance(0.1)
    assert t.disconnected and p not in f.connections and t.value() == b""
    assert "request not complete 5s after its first byte (5 bytes so far)" in caplog.text


def test_the_deadline_is_per_request():
    clock, f, p, t = connect(lambda attrs: "DUNNO", request_timeout=5)
    p.dataReceived(REQUEST[:10])
    clock.advance(4)
    p.dataReceived(REQUEST[10:] + REQUEST[:10])  # finishes the first, starts the second
    clock.advance(4)
    assert not t.disconnecting and t.value() == b"action=DUNNO\n\n"
    p.dataReceived(REQUEST[10:])
    assert clock.getDelayedCalls() == []
    clock.advance(100)
    assert not t.disconnecting and t.value() == b"action=DUNNO\n\n" * 2


def test_no_deadline_while_the_server_is_deciding():
    pending: list[Deferred] = []
    clock, f, p, t = connect(lambda attrs: pending.append(Deferred()) or pending[-1], request_timeout=5)
    p.dataReceived(REQUEST + REQUEST[:10])  # a second request begins while the first is decided
    clock.advance(60)
    assert not t.disconnecting
    pending[0].callback("DUNNO")  # now the second, still incomplete, has its 5 s
    clock.advance(4.9)
    assert not t.disconnecting
    clock.advance(0.2)
    assert t.disconnected and t.value() == b"action=DUNNO\n\n"


def open_more(f, n):
    out = []
    for _ in range(n):
        p = f.buildProtocol(None)
        t = StringTransport()
        p.makeConnection(t)
        out.append((p, t))
    return out


def test_a_full_table_evicts_stalled_and_unanswered_connections_before_answered_ones():
    clock, f, postfix, pt = connect(lambda attrs: "DUNNO", max_connections=4)
    postfix.dataReceived(REQUEST)  # answered: what Postfix's connections look like
    (idle, it), (slow, st), (busy, bt) = open_more(f, 3)
    slow.dataReceived(REQUEST[:5])
    busy.dataReceived(REQUEST)
    clock.advance(1)
    postfix.dataReceived(REQUEST)
    [(new1, n1t)] = open_more(f, 1)
    assert it.disconnected and not (pt.disconnecting or st.disconnecting or bt.disconnecting)  # oldest suspect
    [(new2, n2t)] = open_more(f, 1)
    assert st.disconnected and not n1t.disconnecting  # the stalled one next
    [(new3, n3t)] = open_more(f, 1)
    assert n1t.disconnected  # a newcomer that never sent anything
    new2.dataReceived(REQUEST)
    new3.dataReceived(REQUEST)
    [(new4, n4t)] = open_more(f, 1)  # all answered: the least recently active goes
    assert bt.disconnected and not pt.disconnecting and not n4t.disconnecting
    assert len(f.connections) == 4 and set(f.connections) == {postfix, new2, new3, new4}


def test_a_table_of_connections_awaiting_decisions_refuses_the_newcomer(caplog):
    clock, f, p, t = connect(lambda attrs: Deferred(), max_connections=1)
    p.dataReceived(REQUEST)
    [(new, nt)] = open_more(f, 1)
    assert nt.disconnecting and not t.disconnecting and list(f.connections) == [p]
    assert "all of them awaiting a decision" in caplog.text


def test_idle_sweep_uses_the_clock():
    clock, f, p, t = connect(lambda attrs: "DUNNO")
    clock.advance(599)
    assert f.sweep_idle(600) == 0
    clock.advance(2)
    assert f.sweep_idle(600) == 1 and t.disconnecting


@pytest.mark.parametrize("value", [0, "0s", -1, "soon"])
def test_request_timeout_must_be_a_positive_duration(value):
    from sidecar.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="server.request_timeout"):
        load_config(None, {"server.request_timeout": value})
    assert load_config(None, {"server.request_timeout": "2s"}).server.request_timeout == 2.0
