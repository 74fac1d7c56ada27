"""DSNs captured from a real Postfix 3.7.11 (tests/data/bounces/postfix)."""

from __future__ import annotations

from pathlib import Path

from sidecar.bounce.parse import parse_message
from sidecar.bounce.parse.results import Category, Kind, ParsedMessage

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "bounces" / "postfix"


def _parse(name: str) -> ParsedMessage:
    return parse_message((FIXTURES / name).read_bytes())


def test_550_5_1_1_is_a_hard_invalid_recipient() -> None:
    parsed = _parse("dsn-failed-550-5.1.1.eml")
    assert parsed.kind is Kind.BOUNCE
    [r] = parsed.recipients
    assert (r.category, r.reason, r.hard, r.status, r.action) == (
        Category.INVALID_RECIPIENT,
        "userunknown",
        True,
        "5.1.1",
        "failed",
    )
    assert r.address.endswith("@example.test")
    assert parsed.reporting_mta == "mail.lab.test"
    assert parsed.original_envelope_from == "bounces@bounce.lab.test"


def test_552_5_2_2_is_a_soft_mailbox_full() -> None:
    [r] = _parse("dsn-failed-552-5.2.2.eml").recipients
    assert (r.category, r.reason, r.hard, r.status) == (Category.MAILBOX_FULL, "mailboxfull", False, "5.2.2")


def test_554_5_7_1_is_a_soft_block() -> None:
    for name in ("dsn-failed-554-5.7.1-rcpt.eml", "dsn-failed-554-5.7.1-after-data.eml"):
        [r] = _parse(name).recipients
        assert r.category is Category.BLOCK, name
        assert r.hard is False, name
        assert r.status == "5.7.1", name


def test_delayed_4_2_2_is_a_delay_event() -> None:
    parsed = _parse("dsn-delayed-452-4.2.2.eml")
    assert parsed.kind is Kind.DELAY
    [r] = parsed.recipients
    assert (r.action, r.status, r.hard) == ("delayed", "4.2.2", False)


def test_failed_4_2_2_after_expiry_is_soft() -> None:
    # Action: failed with a 4.x.x status: the message expired in Postfix's queue. The remote
    # said "Mailbox full", so the reason stays specific; it is never a hard bounce.
    parsed = _parse("dsn-failed-452-4.2.2-expired.eml")
    assert parsed.kind is Kind.BOUNCE
    [r] = parsed.recipients
    assert (r.action, r.status, r.hard) == ("failed", "4.2.2", False)
    assert r.reason in ("mailboxfull", "expired")


def test_plain_async_bounce_without_details_has_no_recipient() -> None:
    # A plain message to the VERP address naming no recipient and no reason: the parser cannot
    # say who failed; the ingester correlates through the VERP token instead.
    parsed = _parse("inbound-async-bounce-xclient.eml")
    assert parsed.kind is Kind.NOT_BOUNCE
    assert parsed.recipients == []


def test_original_message_id_is_found() -> None:
    parsed = _parse("dsn-failed-550-5.1.1.eml")
    assert parsed.original_message_id and parsed.original_message_id.startswith("<")
