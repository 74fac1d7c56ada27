"""parse_message never raises on bad input and stays within sane limits."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sidecar.bounce.parse import PARSER_VERSION, parse_bytes, parse_message
from sidecar.bounce.parse.results import Kind

DATA = Path(__file__).resolve().parent.parent / "data" / "bounces"
DSN = (DATA / "postfix" / "dsn-failed-550-5.1.1.eml").read_bytes()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\n\n\n",
        b"\x00\xff\xfe" * 1000,
        bytes(range(256)) * 64,
        b'Content-Type: multipart/report; boundary="x"\n\n--x\nContent-Type: message/delivery-status\n\nFinal-Rec',
        b"Content-Type: text/plain; charset=no-such-charset\n\nUser unknown: a@b.example\n",
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n!!!not base64!!!\n",
        b"Content-Type: message/delivery-status\nContent-Transfer-Encoding: quoted-printable\n\n=ZZ=\n",
        b"From: MAILER-DAEMON@x.example\nSubject: Undelivered\nContent-Type: multipart/mixed\n\nno boundary\n",
        b"Subject: =?utf-8?b?////?=\nFrom: =?x-unknown?q?=FF?= <a@b>\n\nbody\n",
        DSN[: len(DSN) // 2],
        DSN[: len(DSN) // 3] + b"\xff\xfe\x00garbage",
    ],
)
def test_bad_input_never_raises(raw: bytes) -> None:
    parsed = parse_message(raw)
    assert isinstance(parsed.kind, Kind)
    assert isinstance(parse_bytes(raw), list)


def test_empty_input_is_not_a_bounce() -> None:
    assert parse_message(b"").kind is Kind.NOT_BOUNCE


def test_random_corruptions_of_a_dsn_never_raise() -> None:
    rng = random.Random(20250101)
    for _ in range(200):
        raw = bytearray(DSN)
        for _ in range(rng.randint(1, 40)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        parse_message(bytes(raw))


def test_deeply_nested_multipart_never_raises() -> None:
    head = b""
    for i in range(60):
        head += b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i)
    parse_message(head + b"Content-Type: text/plain\n\nUser unknown\n")


def test_five_megabyte_body() -> None:
    body = b"x" * 76 + b"\n"
    raw = DSN.replace(b"This is a test mailing", body * (5 * 1024 * 1024 // len(body)))
    assert len(raw) > 5 * 1024 * 1024
    parsed = parse_message(raw)
    assert parsed.kind is Kind.BOUNCE
    assert len(parsed.recipients) == 1


def test_truncated_dsn_still_reads_what_is_there() -> None:
    cut = DSN.index(b"Diagnostic-Code")
    parsed = parse_message(DSN[:cut])
    assert [r.status for r in parsed.recipients] == ["5.1.1"]


def test_a_parsed_message_records_the_parser_version_that_read_it() -> None:
    """What replay compares against: the version is carried through derivation, and only when
    the parser actually ran (a truncated message is kept unparsed without one)."""
    from sidecar.bounce.derive import derive_raw
    from sidecar.bounce.envelope import Envelope

    d = derive_raw(DSN, Envelope(size=len(DSN)), "", str.lower)
    assert (d.state, d.parser_version) == ("parsed", PARSER_VERSION)
    cut = derive_raw(DSN[:100], Envelope(size=len(DSN), truncated=True), "", str.lower)
    assert (cut.state, cut.parser_version) == ("unparsed", None)


def test_fast_header_split_matches_the_stdlib_parser() -> None:
    """mime._parse_head builds the same compat32 headers as email.parser (every corpus part)."""
    from sidecar.bounce.parse import mime

    heads: list[str] = []
    original = mime._parse_head

    def record(head: str):
        heads.append(head)
        return original(head)

    corpus = DATA / "corpus"
    mime._parse_head = record
    try:
        for path in sorted(corpus.glob("*.eml")):
            mime.collect_parts(mime.parse_bytes(path.read_bytes()))
    finally:
        mime._parse_head = original
    extra = ["From x\nSubject: a\n b\n:bad\nTo: c\n", " lead\nA: 1\nnot a header\nB: 2\n", "A:1\nFrom y\n"]
    assert len(heads) > 1000
    for head in heads + extra:
        fast = original(head)
        slow = mime._STR_PARSER.parsestr(head, headersonly=True)
        assert (fast.items(), fast.get_unixfrom()) == (slow.items(), slow.get_unixfrom()), head[:200]
