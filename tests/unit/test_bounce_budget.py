"""The parser's size and time budgets, tested by their effect (no timing here: see bench/bench_hostile.py)."""

from __future__ import annotations

import base64
import importlib
import pkgutil
import re
from collections.abc import Iterator

import pytest

import sidecar.bounce.parse as parse_pkg
from sidecar.bounce.parse import budget, dsn, mime, notifications, textbounce
from sidecar.bounce.parse import message as parse
from sidecar.bounce.parse.budget import MAX_RECIPIENTS, Budget, split_long_lines
from sidecar.bounce.parse.results import Kind, Limit

HEAD = b"From: MAILER-DAEMON@mx.example.net\nTo: sender@example.org\nSubject: Undelivered Mail Returned to Sender\n"


def never() -> float:
    """A clock that never reaches the deadline."""
    return 0.0


def _dsn(recipients: int, diagnostic: bytes = b"smtp; 550 5.1.1 user unknown") -> bytes:
    blocks = b"".join(
        b"Final-Recipient: rfc822; u%d@example.com\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: %s\n\n"
        % (i, diagnostic)
        for i in range(recipients)
    )
    return (
        HEAD + b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nfailed\n\n--b\nContent-Type: message/delivery-status\n\n"
        b"Reporting-MTA: dns; mx.example.net\n\n" + blocks + b"--b--\n"
    )


def _text(body: bytes) -> bytes:
    return HEAD + b"Content-Type: text/plain\n\n" + body


# --- recipients per message ---------------------------------------------------------------


def test_dsn_recipients_are_capped_and_the_rest_counted() -> None:
    parsed = parse.parse_message(_dsn(MAX_RECIPIENTS + 250), clock=never)
    assert parsed.kind is Kind.BOUNCE
    assert len(parsed.recipients) == MAX_RECIPIENTS
    assert parsed.truncated and Limit.RECIPIENTS in parsed.limits
    assert parsed.recipients_omitted == 250
    assert parsed.recipients[0].address == "u0@example.com"


def test_text_recipients_are_capped_and_the_rest_counted() -> None:
    lines = b"".join(b"<user%d@example.com>: 550 5.1.1 unknown user\n\n" % i for i in range(MAX_RECIPIENTS + 40))
    parsed = parse.parse_message(_text(b"Your message could not be delivered.\n\n" + lines), clock=never)
    assert len(parsed.recipients) == MAX_RECIPIENTS
    assert parsed.recipients_omitted == 40
    assert parsed.truncated


def test_arf_original_rcpt_to_is_capped() -> None:
    fields = b"Feedback-Type: abuse\nVersion: 1\n" + b"".join(
        b"Original-Rcpt-To: c%d@example.com\n" % i for i in range(MAX_RECIPIENTS + 7)
    )
    raw = (
        b'From: fbl@isp.example\nContent-Type: multipart/report; report-type=feedback-report; boundary="f"\n\n'
        b"--f\nContent-Type: text/plain\n\nabuse report\n--f\nContent-Type: message/feedback-report\n\n"
        + fields
        + b"\n--f--\n"
    )
    parsed = parse.parse_message(raw, clock=never)
    assert parsed.kind is Kind.COMPLAINT
    assert len(parsed.recipients) == MAX_RECIPIENTS
    assert parsed.recipients_omitted == 7


def test_json_notification_recipients_are_capped() -> None:
    one = '{{"emailAddress":"u{}@example.com","status":"5.1.1"}}'
    rcpts = ",".join(one.format(i) for i in range(MAX_RECIPIENTS + 3))
    body = '{"notificationType":"Bounce","bounce":{"bouncedRecipients":[' + rcpts + "]}}"
    parsed = parse.parse_message(_text(body.encode()), clock=never)
    assert parsed.kind is Kind.BOUNCE
    assert len(parsed.recipients) == MAX_RECIPIENTS and parsed.recipients_omitted == 3


def test_a_long_one_line_json_notification_is_read_whole() -> None:
    """Long lines are cut for the pattern scans only: a cut inside a JSON value would change it."""
    one = '{{"emailAddress":"{}@example.com","status":"5.1.1"}}'
    names = ["u" * 50 + str(i) for i in range(200)]  # one line of ~15,000 characters
    body = '{"notificationType":"Bounce","bounce":{"bouncedRecipients":[' + ",".join(map(one.format, names)) + "]}}"
    parsed = parse.parse_message(_text(body.encode()), clock=never)
    assert [r.address for r in parsed.recipients] == [n + "@example.com" for n in names]


def test_mailbox_paths_map_to_x_failed_recipients_one_to_one() -> None:
    raw = (
        _dsn(0)
        .replace(b"--b--", b"Final-Recipient: rfc822; /var/mail/u\nAction: failed\n\n" * 3 + b"--b--")
        .replace(b"Subject:", b"X-Failed-Recipients: a@x.example, b@x.example, c@x.example\nSubject:")
    )
    parsed = parse.parse_message(raw, clock=never)
    assert [r.address for r in parsed.recipients] == ["a@x.example", "b@x.example", "c@x.example"]


def test_no_message_of_the_test_data_hits_a_limit() -> None:
    from pathlib import Path

    data = Path(__file__).resolve().parent.parent / "data" / "bounces"
    hit = {p.name: parse.parse_message(p.read_bytes()).limits for p in sorted(data.rglob("*.eml"))}
    assert len(hit) > 300
    assert {name: limits for name, limits in hit.items() if limits} == {}


def test_a_real_sized_report_hits_no_limit() -> None:
    parsed = parse.parse_message(_dsn(3), clock=never)
    assert len(parsed.recipients) == 3
    assert parsed.limits == frozenset() and not parsed.truncated and parsed.recipients_omitted == 0


# --- the deadline, on a clock passed in ---------------------------------------------------


class SteppingClock:
    """Each read advances ``step`` seconds (a parse that reads the clock N times took N steps)."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += self.step
        return self.now


def test_deadline_stops_between_stages_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fallback(*_a: object) -> list:
        raise AssertionError("flufl.bounce must not run after the deadline")

    monkeypatch.setattr(parse, "from_flufl", no_fallback)
    raw = _text(b"Delivery failed. " * 50 + b"\nsomething went wrong, no address here\n")
    parsed = parse.parse_message(raw, clock=SteppingClock(budget.DEADLINE * 2))
    assert parsed.kind is Kind.NOT_BOUNCE
    assert Limit.DEADLINE in parsed.limits


def test_deadline_inside_a_long_report_returns_what_was_read() -> None:
    # the clock only moves on the checks inside the per-recipient loop: the first stages pass
    clock = SteppingClock(0.0)
    raw = _dsn(200)

    def ticking() -> float:
        t = clock()
        return t if clock.reads < 5 else t + budget.DEADLINE * 10

    parsed = parse.parse_message(raw, clock=ticking)
    assert Limit.DEADLINE in parsed.limits
    assert 0 < len(parsed.recipients) < 200
    assert len(parsed.recipients) + parsed.recipients_omitted == 200


def test_no_deadline_on_a_clock_that_stands_still() -> None:
    parsed = parse.parse_message(_dsn(200), clock=never)
    assert len(parsed.recipients) == 200 and Limit.DEADLINE not in parsed.limits


# --- MIME ---------------------------------------------------------------------------------


def test_parts_visited_are_bounded() -> None:
    parts = b"".join(b"--p\nContent-Type: text/plain\n\npart %d\n" % i for i in range(budget.MAX_PARTS * 3))
    b = Budget(never)
    found = mime.collect_parts(mime.parse_bytes(HEAD + b'Content-Type: multipart/mixed; boundary="p"\n\n' + parts), b)
    assert Limit.PARTS in b.limits
    assert len(found.texts) <= budget.MAX_PARTS


def test_nesting_depth_is_bounded_and_skips_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    import flufl.bounce

    def no_flufl(*_a: object) -> tuple:
        raise AssertionError("a hostile MIME tree is not handed to the stdlib parser")

    monkeypatch.setattr(flufl.bounce, "all_failures", no_flufl)
    head = b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\n\n--n%d\n' % (i, i) for i in range(500))
    parsed = parse.parse_message(HEAD + head + b"Content-Type: text/plain\n\nnothing here\n", clock=never)
    assert Limit.DEPTH in parsed.limits and Limit.FALLBACK in parsed.limits


def test_huge_header_block_is_cut_and_the_body_still_read() -> None:
    junk = b"X-Junk: " + b"j" * 60 + b"\n"
    raw = HEAD + junk * (budget.MAX_HEADER_BYTES // len(junk) + 100)
    raw += b"Content-Type: text/plain\n\n<gone@example.com>: 550 5.1.1 user unknown\n"
    parsed = parse.parse_message(raw, clock=never)
    assert Limit.HEADER_BYTES in parsed.limits
    assert [r.address for r in parsed.recipients] == ["gone@example.com"]


def test_header_fields_per_block_are_bounded() -> None:
    msg = mime.parse_bytes(b"".join(b"X-%d: v\n" % i for i in range(budget.MAX_HEADERS * 2)) + b"\nbody\n")
    assert len(msg.items()) == budget.MAX_HEADERS


def test_content_type_parameters_are_bounded() -> None:
    b = Budget(never)
    msg = mime.parse_bytes(b"Content-Type: text/plain; " + b"a=b; " * 10_000 + b"charset=utf-8\n\nbody\n", b)
    assert len(msg["Content-Type"]) == budget.MAX_PARAM_HEADER
    assert Limit.HEADER_BYTES in b.limits
    assert msg.get_content_type() == "text/plain"


def test_message_prefix_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mime, "MAX_MESSAGE_BYTES", 10_000)
    b = Budget(never)
    msg = mime.parse_bytes(_text(b"x" * 50_000), b)
    assert Limit.MESSAGE_BYTES in b.limits
    assert len(msg.get_payload()) < 10_000


def test_base64_part_is_decoded_only_in_part() -> None:
    body = base64.encodebytes(b"Delivery failed. " * 300_000)  # ~5 MB decoded
    part = mime.parse_bytes(b"Content-Transfer-Encoding: base64\n\n" + body)
    assert len(mime.payload_bytes(part, 1_000)) < 4_000
    assert mime.payload_bytes(part, 1_000)[:16] == b"Delivery failed."
    b = Budget(never)
    assert len(mime.part_text(part, 500, b)) == 500 and Limit.PART_BYTES in b.limits


# --- field parsers ------------------------------------------------------------------------


def test_dsn_field_values_are_bounded() -> None:
    b = Budget(never)
    folded = "Diagnostic-Code: smtp; 550\n" + " more words\n" * 10_000
    report = dsn.parse_fields("Final-Recipient: rfc822; a@b.example\n" + folded, b)
    assert report is not None
    assert len(report.recipients[0].diagnostic or "") <= budget.MAX_FIELD + 40
    assert Limit.FIELDS in b.limits


# --- text scan ----------------------------------------------------------------------------


def test_report_text_scanned_is_bounded() -> None:
    parts = b"".join(
        b"--p\nContent-Type: text/plain\n\n" + b"no address on this line\n" * 8_000 + b"\n" for _ in range(3)
    )
    raw = HEAD + b'Content-Type: multipart/mixed; boundary="p"\n\n' + parts + b"--p--\n"
    b = Budget(never)
    text = parse._text(mime.collect_parts(mime.parse_bytes(raw, b), b), b)
    assert len(text) == budget.MAX_SCAN and Limit.SCAN_BYTES in b.limits


def test_long_lines_are_cut_before_the_scan() -> None:
    line = b"filler " * 200_000 + b"<gone@example.com>: 550 5.1.1 user unknown " + b"filler " * 1_000
    parsed = parse.parse_message(_text(line + b"\n"), clock=never)
    assert Limit.LINE_LENGTH in parsed.limits
    assert Limit.PART_BYTES in parsed.limits  # and only MAX_TEXT characters of it decoded


def test_split_long_lines_cuts_at_blanks() -> None:
    text, cut = split_long_lines("a " * 5_000 + "\nshort", width=100)
    assert cut
    assert max(len(x) for x in text.split("\n")) <= 100
    assert text.replace("\n", "") == ("a " * 5_000 + "short")
    assert split_long_lines("short\nlines", width=100) == ("short\nlines", False)


def test_paragraph_of_a_recipient_is_bounded() -> None:
    lines = [f"line {i} about u{i}@example.com" for i in range(5_000)]
    assert len(textbounce._paragraph(lines, 2_500)) <= 2 * textbounce._BLOCK_CHARS


def test_json_notification_search_gives_up_after_a_few_braces() -> None:
    valid = '{"notificationType": "Bounce"}'
    assert notifications._find_json("{ " * 5 + valid) == {"notificationType": "Bounce"}
    assert notifications._find_json("{ " * 10_000 + valid) is None


# --- flufl.bounce fallback ----------------------------------------------------------------


def test_flufl_reads_only_a_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    import flufl.bounce

    sizes: list[int] = []

    def recording(msg: object) -> tuple:
        sizes.append(len(msg.as_bytes()))  # type: ignore[attr-defined]
        return set(), set()

    monkeypatch.setattr(flufl.bounce, "all_failures", recording)
    parsed = parse.parse_message(_text(b"nothing to see here\n" * 100_000), clock=never)
    assert sizes and sizes[0] <= budget.FLUFL_BYTES + 1_000
    assert Limit.FALLBACK in parsed.limits


def test_flufl_skipped_when_its_prefix_is_a_tree_of_many_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    import flufl.bounce

    def no_flufl(*_a: object) -> tuple:
        raise AssertionError("the stdlib parser is quadratic in nesting depth")

    monkeypatch.setattr(flufl.bounce, "all_failures", no_flufl)
    nest = b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\n\n--n%d\n' % (i, i) for i in range(100))
    raw = (
        HEAD + b'Content-Type: multipart/mixed; boundary="o"\n\n--o\nContent-Type: text/plain\n\nnothing\n'
        b"--o\nContent-Type: message/rfc822\n\nSubject: original\n" + nest + b"\nhi\n--o--\n"
    )
    parsed = parse.parse_message(raw, clock=never)
    assert parsed.kind is Kind.NOT_BOUNCE and Limit.FALLBACK in parsed.limits


# --- the patterns: no catastrophic backtracking ---------------------------------------------


def _patterns(value: object) -> Iterator[re.Pattern[str]]:
    if isinstance(value, re.Pattern):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _patterns(v)
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _patterns(v)


# every module of the parser (a new one is checked without being listed here)
_MODULES = tuple(
    importlib.import_module(f"{parse_pkg.__name__}.{m.name}") for m in pkgutil.iter_modules(parse_pkg.__path__)
)
_CLASS = re.compile(r"\[(?:\\.|[^\]\\])*\]")
_UNBOUNDED_DOT = re.compile(r"(?<!\\)\.[*+]")


def test_no_pattern_has_an_unbounded_wildcard_before_more_pattern() -> None:
    """``.*``/``.+`` followed by more pattern is O(n) per start, O(n^2) per search: use ``.{0,N}``."""
    bad = []
    for module in _MODULES:
        for name, value in vars(module).items():
            for p in _patterns(value):
                src = _CLASS.sub("C", p.pattern)
                for m in _UNBOUNDED_DOT.finditer(src):
                    if src[m.end() :] not in ("", "$", ")$", ">$"):
                        bad.append(f"{module.__name__}.{name}: {src[max(0, m.start() - 30) : m.end() + 20]!r}")
    assert not bad, bad


def test_no_multiline_pattern_lets_blank_lines_run_on_from_a_line_start() -> None:
    """``^\\s*`` in MULTILINE spans lines: from every line start of a blank run, quadratic."""
    bad = [
        f"{module.__name__}.{name}"
        for module in _MODULES
        for name, value in vars(module).items()
        for p in _patterns(value)
        if p.flags & re.MULTILINE and "^\\s*" in p.pattern
    ]
    assert not bad, bad


def test_smtp_command_line_still_found_after_the_fix() -> None:
    assert textbounce.smtp_command("--- smtp command ---\n  rcpt to:<a@b.example>\n") == "RCPT"
    assert textbounce.smtp_command("smtp command\n-----\nrcpt to:<a@b.example>\n") == "RCPT"
    assert textbounce._transcript_command(">>> RCPT TO:<a@b>\n<<< 550 no\n") == "RCPT"
