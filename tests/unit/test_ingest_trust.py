"""The trust gate (sidecar.bounce.trust): pure, with the in-memory record of recipients."""

from __future__ import annotations

import pytest

from sidecar.bounce.derive import Finding
from sidecar.bounce.trust import Gate, Standing, assess, is_feedback_loop
from sidecar.config import ConfigError, FeedbackLoop, load_config
from sidecar.recipients import InMemoryRecipients

LOOPS = (FeedbackLoop("fbl-isp@bounce.example", "isp.example"), FeedbackLoop("fbl-any@bounce.example", ""))


def finding(address: str, kind: str = "complaint", tenant: str = "", category: str | None = "complaint") -> Finding:
    return Finding(address, tenant, kind, category, None, None)


@pytest.mark.parametrize(
    ("recipient", "extension", "sender", "expected"),
    [
        ("fbl-isp@bounce.example", "", "reports@isp.example", True),
        ("<FBL-ISP@Bounce.Example>", "", "reports@mail.isp.example", True),  # case, <>, a subdomain
        ("fbl-isp+x1@bounce.example", "x1", "reports@isp.example", True),  # an extension
        ("fbl-isp@bounce.example", "", "reports@isp.example.evil", False),  # not the provider's domain
        ("fbl-isp@bounce.example", "", "MAILER-DAEMON", False),
        ("bounces@bounce.example", "", "reports@isp.example", False),  # the ordinary bounce address
        ("fbl-any@bounce.example", "", "anyone@anywhere.example", True),  # no sender_domain given
    ],
)
def test_is_feedback_loop(recipient: str, extension: str, sender: str, expected: bool) -> None:
    assert is_feedback_loop(recipient, extension, sender, LOOPS) is expected


def gate(
    verified: bool = False,
    fbl: bool = False,
    scope: str = "tenant",
    require_verp: bool = False,
    corroborate: bool = True,
    **standings: Standing,
) -> Gate:
    return Gate(require_verp, corroborate, scope, verified, fbl, {k.replace("_", "@"): v for k, v in standings.items()})


def test_gate() -> None:
    acme = Standing(True, frozenset({"acme", "globex"}))
    assert gate().scopes("a@x", complaint=False) == ("uncorroborated", [])
    assert gate(a_x=acme).scopes("a@x", complaint=False) == (None, [""])  # hard bounce: global
    assert gate(a_x=acme).scopes("a@x", complaint=True) == (None, ["acme", "globex"])
    assert gate(a_x=acme, scope="global").scopes("a@x", True) == (None, ["acme", "globex"])  # not an FBL
    assert gate(a_x=acme, scope="global", fbl=True).scopes("a@x", True) == (None, [""])
    assert gate(fbl=True).scopes("a@x", True) == ("uncorroborated", [])  # FBL is no corroboration
    assert gate(corroborate=False).scopes("a@x", True) == ("no-tenant", [])
    assert gate(corroborate=False, fbl=True).scopes("a@x", True) == (None, [""])
    assert gate(a_x=acme, require_verp=True).scopes("a@x", False) == ("unverified", [])
    assert gate(a_x=acme, require_verp=True, verified=True).scopes("a@x", False) == (None, [""])


def test_assess_uses_the_verp_tenant_else_the_record() -> None:
    record = InMemoryRecipients()
    record.add("acme", "a@x.example", 100.0)
    record.add("globex", "b@x.example", 100.0)
    got = assess(
        [finding("a@x.example"), finding("c@x.example"), finding("d@x.example", "delay", category=None)],
        False,
        record,
        200.0,
        False,
    )
    assert got == {"a@x.example": Standing(True, frozenset({"acme"})), "c@x.example": Standing(False, frozenset())}
    # a valid VERP token: confirmed; its tenant beats the record's
    got = assess([finding("b@x.example", tenant="acme")], True, record, 200.0, False)
    assert got == {"b@x.example": Standing(True, frozenset({"acme"}))}
    assert assess([finding("b@x.example")], True, record, 200.0, False)["b@x.example"].tenants == {"globex"}


def test_record_is_asked_in_match_key_form() -> None:
    record = InMemoryRecipients()
    record.add("acme", "mixed@x.example", 100.0)
    assert assess([finding("Mixed@x.example")], False, record, 200.0, False)["Mixed@x.example"].confirmed
    assert not assess([finding("Mixed@x.example")], False, record, 200.0, True)["Mixed@x.example"].confirmed


def test_config_keys(tmp_path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(
        "[ingest]\nrequire_verp = true\nmax_failed_recipients = 5\nmax_suppressions_per_message = 0\n"
        '[[ingest.feedback_loops]]\nrecipient = "FBL@Bounce.Example"\n'
    )
    c = load_config(p).ingest
    assert (c.require_verp, c.require_corroboration, c.max_failed_recipients, c.max_suppressions_per_message) == (
        True,
        True,
        5,
        0,
    )
    assert c.feedback_loops == (FeedbackLoop("fbl@bounce.example", ""),)
    p.write_text('[ingest]\nfeedback_loops = [{ recipient = "no-at-sign" }]\n')
    with pytest.raises(ConfigError, match=r"ingest\.feedback_loops\[0\]\.recipient: expected an address"):
        load_config(p)
    p.write_text("[ingest]\nmax_failed_recipients = 0\n")
    with pytest.raises(ConfigError, match="ingest.max_failed_recipients"):
        load_config(p)
