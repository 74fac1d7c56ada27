"""Who may cause a suppression, through the real pipe command (``sidecar ingest``, in-process recording).

Anyone can mail the bounce domain: forged bounces and complaints are recorded as events and never
suppress unless our own data (a VERP token, the record of recipients) confirms the address.
"""

from __future__ import annotations

import re
from pathlib import Path

from sidecar.bounce.verp import make_verp_token
from tests.harness.ingest import ARF, HARD, KEY, ingest, q, recorded, variant

VICTIM = "victim@example.net"


def arf(*rcpts: str, return_path: str = "news@tenant.example", n: int = 0) -> bytes:
    """A feedback report (RFC 5965) naming ``rcpts``; its enclosed Return-Path names a would-be tenant."""
    fields = "".join(f"Original-Rcpt-To: {r}\n" for r in rcpts)
    return (
        f"From: fbl@isp.example\nTo: abuse@bounce.example\nSubject: complaint {n}\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nThis is an abuse report.\n\n"
        "--b\nContent-Type: message/feedback-report\n\n"
        f"Feedback-Type: abuse\nUser-Agent: isp-fbl/1.0\nVersion: 1\n{fields}\n"
        "--b\nContent-Type: message/rfc822\n\n"
        f"Return-Path: <{return_path}>\nFrom: <{return_path}>\nTo: <{rcpts[0]}>\nSubject: offer\n\nbuy\n--b--\n"
    ).encode()


def apple_unsubscribe(address: str) -> bytes:
    return (
        f"From: <{address}>\nTo: <bounces@bounce.example>\nSubject: unsubscribe\nX-Apple-Unsubscribe: true\n\nplease\n"
    ).encode()


def test_forged_dsn_is_recorded_but_suppresses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    r = ingest(db, HARD.read_bytes())  # no VERP token, never sent to hard1@example.test
    assert r.returncode == 0, r.stderr
    assert q(db, "select state from raw_messages") == [("parsed",)]
    assert q(db, "select address, kind, decision from events") == [("hard1@example.test", "bounce", "uncorroborated")]
    assert q(db, "select count(*) from suppressions") == [(0,)]


def test_forged_arf_and_apple_unsubscribe_suppress_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    for raw in (arf(VICTIM), apple_unsubscribe(VICTIM), ARF.read_bytes()):
        assert ingest(db, raw).returncode == 0
    assert q(db, "select count(*) from suppressions") == [(0,)]
    assert q(db, "select address, kind, decision from events order by id") == [
        (VICTIM, "complaint", "uncorroborated"),
        (VICTIM, "complaint", "uncorroborated"),
        ("redacted@example.net", "complaint", "uncorroborated"),
    ]


def test_apple_unsubscribe_suppresses_only_for_the_tenants_that_sent_to_the_address(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    assert ingest(db, apple_unsubscribe(VICTIM), python_prelude=recorded(("acme", VICTIM))).returncode == 0
    assert q(db, "select address, tenant, reason from suppressions") == [(VICTIM, "acme", "complaint")]


def test_tenant_never_comes_from_the_message(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    sent = recorded(("acme", VICTIM))
    assert ingest(db, arf(VICTIM, return_path="news@globex.example"), python_prelude=sent).returncode == 0
    assert q(db, "select tenant from suppressions") == [("acme",)]  # the record's, not globex.example
    assert q(db, "select tenant from events") == [("",)]


def test_complaint_without_a_known_tenant_is_not_global(tmp_path: Path) -> None:
    """The record is the only way to corroborate here, and it names tenants; with corroboration off
    a complaint still needs a tenant from our data."""
    db = tmp_path / "s.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ingest]\nsocket = ""\nrequire_corroboration = false\ncomplaint_scope = "global"\n')
    assert ingest(db, arf(VICTIM), config=cfg).returncode == 0
    assert q(db, "select decision from events") == [("no-tenant",)]
    assert q(db, "select count(*) from suppressions") == [(0,)]


def test_ten_thousand_rcpt_to_lines_are_capped(tmp_path: Path) -> None:
    many = [f"v{i}@example.net" for i in range(10_000)]
    db = tmp_path / "s.db"
    assert ingest(db, arf(*many)).returncode == 0  # forged: nothing confirmed
    assert q(db, "select count(*) from suppressions") == [(0,)]
    assert q(db, "select decision, count(*) from events group by decision order by decision") == [
        ("cap-reached", 1),
        ("uncorroborated", 100),
    ]
    ((diag,),) = q(db, "select diagnostic from events where kind = 'cap-reached'")
    m = re.match(r"(\d+) recipients named, 100 recorded, (\d+) only counted", diag)
    assert m is not None and int(m[1]) > 5000 and int(m[2]) == int(m[1]) - 100, diag  # parser's bound + omitted
    # even when the record holds every one of them, one message makes at most 10 suppressions
    prelude = (
        "import time\nimport sidecar.recipients as _r\n_rec = _r.InMemoryRecipients()\n"
        "for i in range(10000):\n    _rec.add('acme', f'v{i}@example.net', time.time())\n"
        "_r.open_lookup = lambda cfg, engine: _rec\n"
    )
    db2 = tmp_path / "s2.db"
    assert ingest(db2, arf(*many), python_prelude=prelude).returncode == 0
    assert q(db2, "select count(*), min(tenant), max(tenant) from suppressions") == [(10, "acme", "acme")]
    ((diag,),) = q(db2, "select diagnostic from events where kind = 'cap-reached'")
    assert "90 suppressions withheld" in diag and " only counted" in diag
    assert q(db2, "select count(*) from events where decision = 'suppress-complaint (cap-reached)'") == [(90,)]


def test_require_verp(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[ingest]\nsocket = ""\nverp_key = "{KEY}"\nrequire_verp = true\n')
    sent = recorded(("acme", "hard1@example.test"))  # the record alone is not enough now
    assert ingest(db, variant(HARD, 0), config=cfg, python_prelude=sent).returncode == 0
    assert q(db, "select decision from events") == [("unverified",)]
    assert q(db, "select count(*) from suppressions") == [(0,)]
    token = make_verp_token(KEY.encode(), "hard1@example.test", tenant="acme")
    assert ingest(db, variant(HARD, 1), "--extension", token, config=cfg).returncode == 0
    assert q(db, "select address, tenant, reason from suppressions") == [("hard1@example.test", "", "hard bounce")]


def test_verp_confirmed_bounce_suppresses_without_a_record(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[ingest]\nsocket = ""\nverp_key = "{KEY}"\n')
    token = make_verp_token(KEY.encode(), VICTIM, tenant="acme")
    assert ingest(db, HARD.read_bytes(), "--extension", token, config=cfg).returncode == 0
    assert q(db, "select address, tenant, reason from suppressions") == [(VICTIM, "", "hard bounce")]
    assert (
        ingest(
            db, arf(VICTIM), "--extension", token, config=cfg, python_prelude=recorded(("globex", VICTIM))
        ).returncode
        == 0
    )
    assert (VICTIM, "acme", "complaint") in q(db, "select address, tenant, reason from suppressions")


def test_signed_token_in_the_enclosed_return_path_corroborates_a_report(tmp_path: Path) -> None:
    """Feedback loops report to a fixed address: the original's VERP sender still carries our token."""
    from sidecar.bounce.verp import make_verp_sender

    db = tmp_path / "s.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[ingest]\nsocket = ""\nverp_key = "{KEY}"\nrequire_verp = true\n')
    ours = make_verp_sender(KEY.encode(), VICTIM, "bounces@bounce.example", tenant="acme")
    assert ingest(db, arf(VICTIM, return_path=ours), config=cfg).returncode == 0
    assert q(db, "select address, tenant, reason from suppressions") == [(VICTIM, "acme", "complaint")]
    forged = make_verp_sender(b"guessed key", "other@example.net", "bounces@bounce.example", tenant="acme")
    assert ingest(db, arf("other@example.net", return_path=forged), config=cfg).returncode == 0
    assert q(db, "select decision from events where address = 'other@example.net'") == [("unverified",)]
    assert q(db, "select count(*) from suppressions") == [(1,)]


def test_feedback_loop_source_may_suppress_globally(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[ingest]\nsocket = ""\ncomplaint_scope = "global"\n'
        '[[ingest.feedback_loops]]\nrecipient = "fbl-isp@bounce.example"\nsender_domain = "isp.example"\n'
    )
    sent = recorded(("acme", VICTIM))
    fbl = ("--recipient", "fbl-isp@bounce.example", "--sender", "reports@fbl.isp.example")

    def run(name: str, *extra: str, prelude: str | None = sent) -> list[tuple]:
        db = tmp_path / f"{name}.db"
        assert ingest(db, arf(VICTIM), *extra, config=cfg, python_prelude=prelude).returncode == 0
        return q(db, "select tenant from suppressions") + q(db, "select decision from events")

    assert run("fbl", *fbl) == [("",), ("suppress-complaint",)]
    # the same report to the ordinary bounce address: per tenant only
    assert run("plain") == [("acme",), ("suppress-complaint",)]
    # to the FBL address but from another sender domain: not the provider
    assert run("other", "--recipient", "fbl-isp@bounce.example", "--sender", "x@isp.example.evil") == [
        ("acme",),
        ("suppress-complaint",),
    ]
    # a feedback loop does not replace corroboration: an address we never sent to is not suppressed
    assert run("never", *fbl, prelude=None) == [("uncorroborated",)]


# -- in process: the Recorder with an injected record of recipients ---------------------------------
def _recorder(
    tmp_path: Path,
    recipients: object = None,
    corroborate: bool | None = None,
    parse: object = None,
    **ingest_cfg: object,
):
    from sidecar.bounce.record import Recorder
    from sidecar.config import load_config
    from sidecar.store.db import make_engine, upgrade

    cfg = load_config(None, {"database.url": f"sqlite:///{tmp_path / 'r.db'}"})
    if ingest_cfg:
        import dataclasses

        cfg = dataclasses.replace(cfg, ingest=dataclasses.replace(cfg.ingest, **ingest_cfg))
    engine = make_engine(cfg.database.url)
    upgrade(engine)
    return Recorder(cfg, engine, parse, recipients=recipients, corroborate=corroborate)  # type: ignore[arg-type]


def _many(n: int):
    from sidecar.bounce.parse.results import Category, FailedRecipient, Kind, ParsedMessage

    def parse(raw: bytes) -> ParsedMessage:
        return ParsedMessage(
            Kind.BOUNCE,
            [
                FailedRecipient(
                    f"m{i}@example.net", Category.INVALID_RECIPIENT, "userunknown", True, "5.1.1", "failed", None, None
                )
                for i in range(n)
            ],
        )

    return parse


def test_a_message_naming_100000_addresses_records_at_most_the_caps(tmp_path: Path) -> None:
    """The recording transaction is bounded by the caps (bench/bench_ingest_caps.py measures it)."""
    from prometheus_client import REGISTRY

    from sidecar.bounce.envelope import Envelope
    from sidecar.recipients import InMemoryRecipients

    def caps(cap: str) -> float:
        return REGISTRY.get_sample_value("sidecar_ingest_caps_reached_total", {"cap": cap}) or 0.0

    before = caps("recipients"), caps("suppressions")
    record = InMemoryRecipients()
    for i in range(100_000):
        record.add("acme", f"m{i}@example.net", 1e9)
    rec = _recorder(tmp_path, record, parse=_many(100_000))
    out = rec.record(b"Subject: x\n\nmany", Envelope(), now=1e9 + 60)
    assert (out.recipients, out.suppressions) == (100, 10)
    assert (caps("recipients"), caps("suppressions")) == (before[0] + 1, before[1] + 1)
    db = tmp_path / "r.db"
    assert q(db, "select count(*) from events where kind = 'bounce'") == [(100,)]
    assert q(db, "select count(*) from suppressions") == [(10,)]
    ((diag,),) = q(db, "select diagnostic from events where kind = 'cap-reached'")
    assert diag.startswith("100000 recipients named, 100 recorded, 99900 only counted") and "90 suppressions" in diag


def test_record_corroborates_per_address_and_gives_complaint_tenants(tmp_path: Path) -> None:
    from sidecar.bounce.envelope import Envelope
    from sidecar.recipients import InMemoryRecipients

    record = InMemoryRecipients(retention=86400)
    record.add("acme", "m1@example.net", 1e9)
    record.add("acme", "m2@example.net", 1e9 - 2 * 86400)  # outside the record's retention: never sent
    from prometheus_client import REGISTRY

    def withheld() -> float:
        return REGISTRY.get_sample_value("sidecar_ingest_withheld_total", {"decision": "uncorroborated"}) or 0.0

    before = withheld()
    rec = _recorder(tmp_path, record, parse=_many(3))
    out = rec.record(b"Subject: x\n\nthree", Envelope(), now=1e9 + 60)
    assert withheld() == before + 2
    assert out.decisions == [
        ("m0@example.net", "uncorroborated"),
        ("m1@example.net", "suppress-hard"),
        ("m2@example.net", "uncorroborated"),
    ]
    assert q(tmp_path / "r.db", "select address, tenant from suppressions") == [("m1@example.net", "")]


def test_import_structure_is_enough_but_tenant_still_from_our_data(tmp_path: Path) -> None:
    from sidecar.bounce.envelope import Envelope
    from sidecar.recipients import InMemoryRecipients

    rec = _recorder(tmp_path, InMemoryRecipients(), corroborate=False)
    assert rec.record(HARD.read_bytes(), Envelope()).decisions == [("hard1@example.test", "suppress-hard")]
    # a complaint needs a tenant from our data even here: the enclosed Return-Path names none
    assert rec.record(arf(VICTIM), Envelope()).decisions == [(VICTIM, "no-tenant")]
    assert q(tmp_path / "r.db", "select address, tenant from suppressions") == [("hard1@example.test", "")]


def test_uncorroborated_soft_bounces_do_not_count(tmp_path: Path) -> None:
    from sidecar.bounce.envelope import Envelope
    from sidecar.bounce.parse.results import Category, FailedRecipient, Kind, ParsedMessage
    from sidecar.recipients import InMemoryRecipients

    def soft(raw: bytes) -> ParsedMessage:
        return ParsedMessage(
            Kind.BOUNCE,
            [FailedRecipient(VICTIM, Category.MAILBOX_FULL, "mailboxfull", False, "5.2.2", "failed", None, None)],
        )

    record = InMemoryRecipients()
    rec = _recorder(tmp_path, record, parse=soft)
    for n in range(2):  # forged: not counted
        assert rec.record(f"Subject: {n}\n\nx".encode(), Envelope(), now=1e9 + n).decisions == [
            (VICTIM, "uncorroborated")
        ]
    record.add("acme", VICTIM, 1e9)
    assert rec.record(b"Subject: 2\n\nx", Envelope(), now=1e9 + 2).decisions == [(VICTIM, "soft")]


def test_a_value_the_store_refuses_is_recorded_not_retried_forever(tmp_path: Path) -> None:
    """A tenant the store refuses (a control character) must not turn into exit 75 for days."""
    from sidecar.bounce.envelope import Envelope
    from sidecar.bounce.parse.results import Category, FailedRecipient, Kind, ParsedMessage
    from sidecar.recipients import InMemoryRecipients

    record = InMemoryRecipients()
    record.add("bad\x01tenant", "m0@example.net", 1e9)

    def parse(raw: bytes) -> ParsedMessage:
        return ParsedMessage(
            Kind.COMPLAINT,
            [FailedRecipient("m0@example.net", Category.COMPLAINT, "feedback", None, None, None, None, None)],
        )

    out = _recorder(tmp_path, record, parse=parse).record(b"Subject: x\n\nabuse", Envelope(), now=1e9 + 60)
    assert out.decisions == [("m0@example.net", "suppress-complaint (refused)")]
    assert q(tmp_path / "r.db", "select count(*) from suppressions") == [(0,)]
