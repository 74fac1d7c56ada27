"""Reporting-MTA ("lhost") families: who wrote the bounce, and the fixed sentences it uses.

Many MTAs and gateways write their own verdicts in fixed sentences that carry no SMTP reply
and no status ("Unknown user: ...", "not listed in Domino Directory", "(000C05A6) Unknown
Recipient"). sisimai reads those per MTA (its Lhost modules, BSD-2, see docs/bounces.md);
this module does the same: :func:`detect` recognises the family from the bounce's own
headers (cheap ``str`` tests, no regex unless a header is present), :func:`family_reason`
looks the diagnostic up in that family's table only.

Without a family sentence, a "user unknown" that came with no SMTP command and no reply
code is *not* believed as a refusal at ``RCPT`` (sisimai: ``filtered``): an unknown gateway
may have accepted the address and rejected the message later.
"""

from __future__ import annotations

import re
from email.message import Message

from sidecar.bounce.parse.mime import has_header, header

# family -> ((reason, (lower-cased substrings ...)), ...), first match wins.
_TABLES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "domino": (
        (
            "userunknown",
            (
                "not listed in domino directory",
                "not listed in public name & address book",
                "non répertorié dans l'annuaire domino",
                "domino ディレクトリには見つかりません",
            ),
        ),
        ("filtered", ("cannot route mail to user",)),
        ("systemerror", ("several matches found in domino directory",)),
    ),
    "notes": (
        # (sisimai also lists the Japanese sentence, but its own test expects "onhold" for it)
        ("userunknown", ("user not listed in public name & address book",)),
        ("networkerror", ("message has exceeded maximum hop count",)),
    ),
    "imailserver": (
        ("hostunknown", ("unknown host",)),
        ("userunknown", ("unknown user", "invalid final delivery userid")),
        ("mailboxfull", ("user mailbox exceeds allowed size",)),
        ("virusdetected", ("requested action not taken: virus detected",)),
    ),
    # Exchange 5.5/2000/2003 (Internet Mail Service/Connector): the hex code in parentheses
    "exchange2003": (
        ("userunknown", ("000c05a6",)),
        ("systemerror", ("00010256", "000d06b5")),
        ("networkerror", ("00120270",)),
        ("contenterror", ("00050311", "000502cc")),
        ("securityerror", ("000b0981",)),
        ("filtered", ("000c0595",)),
    ),
    "interscanmss": (("userunknown", ("unable to deliver",)),),
    "verizon": (("userunknown", ("no valid recipients for this mm", "requested action not taken: no such user here")),),
    "google": (
        ("userunknown", ("because the address couldn't be found",)),
        ("notaccept", ("null mx",)),
        ("networkerror", (" had no relevant answers", " responded with code nxdomain")),
        (
            "expired",
            (
                "dns error: could not contact dns servers",
                "delivery to the following recipient has been delayed",
                "the recipient server did not accept our requests to connect",
            ),
        ),
        ("hostunknown", ("dns error: domain name not found", "dns error: dns server returned answer with no data")),
    ),
    "zoho": (("expired", ("host not reachable",)),),
    "ezweb": (
        ("mailboxfull", ("the user(s) account is temporarily over quota",)),
        ("suspend", ("the user(s) account is disabled", "the user(s) account is temporarily limited")),
        ("expired", ("your message was not delivered within ",)),
    ),
    "messagelabs": (
        ("userunknown", ("no such user",)),
        ("securityerror", ("please turn on smtp authentication in your mail client",)),
    ),
}
# sentences that need a pattern: family -> ((reason, regex), ...), tried after the table
_PATTERNS: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    "imailserver": (("expired", re.compile(r"delivery failed \d+ attempts")),),
    "messagelabs": (("userunknown", re.compile(r"\b542 .{1,500} rejected")),),
}

# fml (mailing-list manager): refusals sent by the list's -admin address, one line per address
_FML_ID = re.compile(r"<\d+\.FML[^@]*@.+>$")  # the first "@": linear, not quadratic
_FML_ADDRESS = re.compile(r"<([^\s<>@]+@[^\s<>]+)>\.\s*$", re.MULTILINE)
_FML_REASONS = (
    (
        "rejected",
        re.compile(
            r"not member article from|reject mail from .{1,300}@|reject since .{1,300} header may cause mail loop"
            r"|reject spammers:|you are not a member of this mailing list"
        ),
    ),
    ("systemerror", re.compile(r"duplicated message-id|fml .{1,300} has detected a loop condition|loop back warning:")),
    ("securityerror", re.compile(r"security alert:")),
)


def list_refusals(text: str) -> list[tuple[str, str, str | None]]:
    """An fml refusal: (list address, its line, reason) for each ``<address>.`` line."""
    report = text.split("Original mail as follows:", 1)[0]
    out: list[tuple[str, str, str | None]] = []
    reason: str | None = None
    for m in _FML_ADDRESS.finditer(report):
        if not out:  # the reason is the whole report's: read once
            lower = " ".join(report.lower().split())
            reason = next((r for r, p in _FML_REASONS if p.search(lower)), None)
        line_start = report.rfind("\n", 0, m.start()) + 1
        diagnostic = " ".join(report[line_start : m.end()].split())
        out.append((m.group(1).lower(), diagnostic, reason))
    return out


# Gateways that quote no SMTP session: a reply that echoes the recipient there does not
# show that it was refused at RCPT (sisimai sets no command for them).
NO_SESSION = frozenset({"activehunter", "x1"})


def detect(msg: Message) -> str | None:
    """The reporting MTA family named by the bounce's own headers, or None."""
    sender = header(msg, "From")
    if has_header(msg, "X-MLServer") and "-admin@" in sender and _FML_ID.match(header(msg, "Message-ID")):
        return "fml"
    subject = header(msg, "Subject")
    lsender = sender.lower()
    if "mailer-daemon@googlemail.com" in lsender:
        return "google"
    if subject.startswith(("DELIVERY FAILURE:", "DELIVERY_FAILURE:")):
        return "domino"
    if subject.startswith("Undeliverable message"):
        return "notes"
    mailer = header(msg, "X-Mailer")
    if subject.rstrip() == "Undeliverable Mail" or mailer.startswith("<SMTP32 v"):
        return "imailserver"
    if (
        has_header(msg, "X-MS-Embedded-Report")
        or mailer.startswith(("Internet Mail Service (", "Microsoft Exchange Server Internet Mail Connector"))
        or header(msg, "X-MimeOLE").startswith("Produced By Microsoft Exchange")
    ):
        return "exchange2003"
    if (
        sender.startswith(('"InterScan MSS"', '"InterScan Notification"'))
        or '("InterScan Notification")' in sender
        or subject in ("Mail could not be delivered", "メッセージを配信できません。", "メール配信に失敗しました")
    ):
        return "interscanmss"
    if lsender == "post_master@vtext.com" or "vzwpix.com" in lsender:
        return "verizon"
    if has_header(msg, "X-ZohoMail"):
        return "zoho"
    if has_header(msg, "X-AHMAILID"):
        return "activehunter"
    if has_header(msg, "X-Msg-Ref") and "mailer-daemon@messagelabs.com" in lsender:
        return "messagelabs"
    if (
        sum(
            (
                "postmaster@ezweb.ne.jp" in lsender or "postmaster@au.com" in lsender,
                subject == "Mail System Error - Returned Mail",
                header(msg, "Message-ID").endswith((".ezweb.ne.jp>", ".au.com>")),
                has_header(msg, "X-SPASIGN"),
            )
        )
        >= 2
    ):
        return "ezweb"
    if subject.startswith("Returned Mail: ") and sender.startswith('"Mail Deliver System" '):
        return "x1"
    return None


def family_reason(family: str | None, text: str, msg: Message | None = None) -> str | None:
    """The reason ``family``'s own sentence in lower-cased ``text`` names, else None."""
    if family is None:
        return None
    if family == "ezweb" and msg is not None and header(msg, "X-SPASIGN") == "NG":
        return "filtered"  # au's content filter marks what it refused
    if not text:
        return None
    for reason, needles in _TABLES.get(family, ()):
        for needle in needles:
            if needle in text:
                return reason
    for reason, pattern in _PATTERNS.get(family, ()):
        if pattern.search(text):
            return reason
    return None
