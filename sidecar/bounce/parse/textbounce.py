"""Bounces without RFC 3464 fields: qmail, Exim, old Sendmail, Exchange, provider texts.

The human-readable report is cut where the returned original message starts; each address
left in it is a candidate recipient, with the text block around it as its diagnostic. Known
non-recipients (the bounce's own From/To, the original sender, addresses after ``MAIL FROM``,
help-desk mailboxes) are dropped.

Bounded (see :mod:`sidecar.bounce.parse.budget`): the caller cuts long lines first; at most
``MAX_RECIPIENTS`` addresses are extracted (the rest only counted); no pattern has an
unbounded wildcard followed by more pattern, nor a ``^\\s*`` that runs across blank lines
(tests/unit/test_bounce_budget.py checks their shape, bench/bench_hostile.py feeds them
their worst inputs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from functools import lru_cache

from sidecar.bounce.parse import arf
from sidecar.bounce.parse.budget import MAX_RECIPIENTS, Budget

_ADDRESS = re.compile(
    r"(?<![\w.+=/-])((?:\"[^\"\n<>@]{1,64}\"|[\w.+=/!%&'*-]{1,64})@[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)*)",
    re.IGNORECASE,
)
_ORIGINAL_MARKER = re.compile(
    r"^[ \t>|]*(?:[-=_*]{2,}[ \t]*)?(?:"
    r"(?:this is a |here is a |below (?:this line )?is a |a )?copy of (?:the "
    r"|your )?(?:original )?(?:message|mail|headers)"
    r"|below this line|original message|unsent message|returned message|message headers follow|undelivered message"
    # (not Apache James's "Original email subject: ..." line, which precedes its report)
    r"|(?:original|returned) (?:mail|e-?mail|message)(?![ \t]+subject)(?: headers)?(?: follows)?|--- ?original"
    r"|headers of (?:the )?original"
    r"|your message (?:reads|was(?: as follows|:)|follows)|the message you sent|message text follows"
    r"|copy of the message"
    r"|(?:original )?message header(?:s)? (?:follows?|below)|included is a copy"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
_HEADER_START = re.compile(
    r"\n\n(?:Return-Path|Received|DKIM-Signature|X-Received|ARC-Seal|Message-ID|From): ?"
    r"|\n(?:Return-Path|Received|DKIM-Signature|X-Received|ARC-Seal|Message-ID|MIME-Version"
    r"|Content-Type|In-Reply-To|References): ?",
    re.IGNORECASE,
)
_NOT_RECIPIENT_BEFORE = re.compile(
    r"(?:mail from:?\s*<?|from[=:]\s*<?|envelope-from\s*<?|sender[=:]?\s*<?|contact\s*<?"
    r"|please (?:contact|write to|email)\s*<?|reply-to:?\s*<?|from\s+<"
    # a Message-ID or queue id, not an address: "Message-ID: <...>", "Original message ID: <...>"
    r"|message[- ]?id:?\s*<?|msg-?id[=:]?\s*<?|in-reply-to:?\s*<?|references:?\s*<?|queued as\s*<?"
    # the address an alias or forward was made from (Exim "generated from", Postfix "expanded from")
    r"|(?:generated|expanded|forwarded|redirected|aliased) from:?\s*<?)$",
    re.IGNORECASE,
)
_SERVICE_LOCALPARTS = frozenset(
    {
        "mailer-daemon",
        "postmaster",
        "abuse",
        "support",
        "help",
        "helpdesk",
        "hostmaster",
        "webmaster",
        "noreply",
        "no-reply",
        "mail-daemon",
        "mailerdaemon",
    }
)
# a header line of a quoted original message ("To: ...", "> Cc: ...", "   Subject: ...")
# prose that names the failed recipient itself ("wasn't delivered to", "your message to"), not
# a mailbox to ask for help ("please contact", "send an e-mail to")
_DELIVERY_TO = re.compile(
    r"(?:\bdeliver(?:ed|y|able)|(?:your|the|this) (?:message|e-?mail|mail)|\bsent)\s+to:?$", re.IGNORECASE
)
_QUOTED_HEADER = re.compile(
    r"^[ \t>|]*(?:to|cc|bcc|from|sender|reply-to|return-path|delivered-to|x-original-to|envelope-to"
    r"|resent-[a-z]+|message-id|in-reply-to|references|subject|date|x-[a-z0-9-]+)[ \t]*:",
    re.IGNORECASE,
)
_RCPT_TO_LINE = re.compile(r"^[ \t]*rcpt to:", re.IGNORECASE)  # Apache James's "Message details"
_QUOTED_TO_LINE = re.compile(r"^[ \t>|]*to[ \t]*:", re.IGNORECASE)
# "smtp=user@x" matched whole by _ADDRESS (its class holds "=" for SRS and VERP local parts)
_ADDRESS_PREFIX = re.compile(r"^(?:smtp|sip|mailto|rfc822|x400)=", re.IGNORECASE)
# an SMTP reply or status code before an address on its line: the remote's words, not a recipient
_IN_REPLY = re.compile(r"\b[245]\d\d\b|\b[245]\.\d{1,3}\.\d{1,3}\b|said:|reason:", re.IGNORECASE)
_HEAD_AFTER = re.compile(r"[>\s]*(?::|\.\.\.|$|\((?:generated|expanded)|on \d|\()")
# "in reply to RCPT TO command", "after MAIL FROM", "did not like our RCPT TO" ...: each lead
# phrase is found with str.find (fast), then the command after it is matched in place.
_COMMAND_LEADS = ("in reply to", "after", "did not like our", "while talking", "while sending", "during")
_COMMAND_AFTER_LEAD = re.compile(r"\s+(?:the\s+)?(?:end of\s+)?(rcpt to|rcpt|mail from|data|ehlo|helo|message body)")
# Wording that names the failing command without a transcript (qmail, Yahoo ...), one search,
# only run when one of its literal pieces is present.
_COMMAND_WORDING = re.compile(
    r"(?P<RCPT>\[rcpt_to\]|does not like recipient|^smtp:rcpt\b)"
    r"|(?P<MAIL>did(?:n't| not) like the sender|sender was rejected|\[mail_from\]|^smtp:mail\b)"
    r"|(?P<DATA>failed on data command|failed after i sent the message|\[data\]|^smtp:data\b)",
    re.MULTILINE,
)
_WORDING_PIECES = (
    "[rcpt_to]",
    "like recipient",
    "smtp:",
    "like the sender",
    "sender was rejected",
    "[mail_from]",
    "failed on data",
    "failed after i sent",
    "[data]",
)
# (blank runs are [ \t]* on the line, never \s*: \s* after ^ spans lines and backtracks
# quadratically over a long run of blank lines)
_COMMAND_LINE = re.compile(
    r"^[ \t]*-*[ \t]*smtp command[ \t]*-*[ \t]*(?:\n[ \t]*-+[ \t]*)?\n\s*(rcpt|data|mail|ehlo|helo)", re.MULTILINE
)


@dataclass(slots=True)
class TextRecipient:
    address: str
    diagnostic: str
    command: str | None


@lru_cache(maxsize=16)
def report_section(text: str) -> str:
    """The part of a bounce text before the returned original message."""
    cut = len(text)
    m = _ORIGINAL_MARKER.search(text)
    if m:
        cut = m.start()
    h = _HEADER_START.search(text, 0, cut)
    if h:
        cut = h.start()
    return text[:cut]


_TRANSCRIPT = re.compile(r"^[ \t]*(>>>|<<<)\s*(\S+)", re.MULTILINE)


def _transcript_command(text: str) -> str | None:
    """In an SMTP transcript, the command (``>>> X``) answered by the first 4xx/5xx reply."""
    last = None
    for direction, word in _TRANSCRIPT.findall(text):
        if direction == ">>>":
            last = word
        elif word[:1] in ("4", "5") and last:
            return last
    return None


def _command_phrase(lower: str) -> str | None:
    """The command named after the leftmost lead phrase ("in reply to RCPT TO" -> "rcpt to")."""
    best_pos, best = len(lower), None
    for lead in _COMMAND_LEADS:
        pos = lower.find(lead)
        while 0 <= pos < best_pos:
            m = _COMMAND_AFTER_LEAD.match(lower, pos + len(lead))
            if m:
                best_pos, best = pos, m.group(1)
                break
            pos = lower.find(lead, pos + 1)
    return best


@lru_cache(maxsize=64)
def smtp_command(text: str) -> str | None:
    """The SMTP command a report says failed: RCPT, MAIL, DATA, EHLO ... or None."""
    lower = text.lower()
    word = _command_phrase(lower)
    if word is None and "smtp command" in lower:
        m = _COMMAND_LINE.search(lower)
        word = m.group(1) if m else None
    if word is None and ">>>" in text:
        word = (_transcript_command(text) or "").lower() or None
    if word is None:
        if len(text) < 20000 and any(p in lower for p in _WORDING_PIECES):
            w = _COMMAND_WORDING.search(lower)
            return w.lastgroup if w else None
        return None
    if word.startswith("rcpt"):
        return "RCPT"
    if word in ("data", "message body"):
        return "DATA"
    if word.startswith("mail"):
        return "MAIL"
    return word.upper()


_BLOCK_CHARS = 2_000  # of a recipient's diagnostic block (as much as the DSN context)


def _block_around(lines: list[str], idx: int) -> str:
    """The address line and the non-blank lines that follow it (its error block)."""
    out = [lines[idx].strip()]
    for line in lines[idx + 1 : idx + 12]:
        if not line.strip():
            if len(out) > 1:
                break
            continue
        if _ADDRESS.search(line) and re.match(r"^\s*<?[^\s@]+@\S+>?:?\s*$", line):
            break  # the next recipient's block
        out.append(line.strip())
    return " ".join(out)[:_BLOCK_CHARS]


_PARAGRAPH_LINES = 40  # each way: an address in a huge paragraph gets its neighbourhood


def _paragraph(lines: list[str], idx: int) -> str:
    start = idx
    while start > 0 and idx - start < _PARAGRAPH_LINES and lines[start - 1].strip():
        start -= 1
    end = idx
    while end + 1 < len(lines) and end - idx < _PARAGRAPH_LINES and lines[end + 1].strip():
        end += 1
    return " ".join(x.strip() for x in lines[start : end + 1])[: _BLOCK_CHARS * 2]


_DISPLAY_BEFORE = re.compile(r"[ \t]+<[^<>\s@]+@[^<>\s]+>")
_QUOTED_TO = re.compile(r"^[ \t>]*To:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE)


def quoted_original_recipient(text: str) -> str | None:
    """The single ``To:`` of an original message quoted inline after the report."""
    cut = len(report_section(text))
    m = _QUOTED_TO.search(text, cut)
    if not m or "," in m.group(1):
        return None
    found = _ADDRESS.search(m.group(1))
    return found.group(1).lower() if found else None


_ALONE = re.compile(r"^\s*<?[^\s<>@]+@[^\s<>]+>?:?\s*$")


def _head(line: str, start: int, end: int) -> bool:
    """Is the address at ``line[start:end]`` the head of a recipient block (first on its line,
    followed by nothing, a colon, "...", a comment)?"""
    before = line[:start].strip().lstrip("-*").strip()
    return before in ("", "<", "RCPT TO:<", "rcpt to:<") and _HEAD_AFTER.match(line, end) is not None


@lru_cache(maxsize=4)
def _lower_report(text: str) -> str:
    """``report_section(text).lower()``, once per text (asked once per recipient)."""
    return report_section(text).lower()


def address_source(text: str, address: str, original: Message | None = None) -> str:
    """Which structure of a text bounce gave ``address`` (``FailedRecipient.address_source``)."""
    report = report_section(text)
    pos = _lower_report(text).find(address)
    if pos < 0:
        if original is not None and arf.original_recipient(original) == address:
            return arf.original_recipient_source(original) or "returned-message:to"
        return "returned-message:to" if quoted_original_recipient(text) == address else "text:other"
    start = report.rfind("\n", 0, pos) + 1
    end = report.find("\n", pos)
    line = report[start : end if end >= 0 else len(report)]
    if _ALONE.match(line):
        return "text:recipient-line"
    if _QUOTED_TO_LINE.match(line):
        return "text:quoted-to"
    if _RCPT_TO_LINE.match(line):
        return "text:rcpt-to"
    if _head(line, pos - start, pos - start + len(address) + (1 if line[pos - start - 1 : pos - start] == "<" else 0)):
        return "text:block-head"
    return "text:prose"


def find_recipients(
    text: str, exclude: set[str], own_domain: str = "", budget: Budget | None = None
) -> list[TextRecipient]:
    """The recipients a bounce text names (at most ``MAX_RECIPIENTS``; more are counted on ``budget``).

    Skipped: known non-recipients (``exclude``), Message-IDs, the addresses of quoted original
    headers, service mailboxes (postmaster, support ...) named in the prose, the address an
    alias was expanded from, and addresses quoted inside another recipient's SMTP reply.
    """
    report = report_section(text)
    lines = report.splitlines()
    command = smtp_command(report)
    found: dict[str, TextRecipient] = {}
    display: set[str] = set()
    omitted: set[str] = set()
    quoted_to: list[str] = []
    head_indent = -1  # indentation of the current block's recipient line (-1: no recipient yet)
    for idx, line in enumerate(lines):
        if not line.strip():
            head_indent = -1
            continue
        if "@" not in line:
            continue
        header_line = _QUOTED_HEADER.match(line) is not None
        for m in _ADDRESS.finditer(line):
            addr = _ADDRESS_PREFIX.sub("", m.group(1).strip(".'")).lower()
            if len(found) >= MAX_RECIPIENTS:
                if addr not in found:
                    omitted.add(addr)  # only counted: not examined (nor excluded)
                continue
            local, _, domain = addr.partition("@")
            if header_line:
                if _QUOTED_TO_LINE.match(line) and addr not in exclude:
                    quoted_to.append(addr)
                continue
            if (
                addr in exclude
                and not _ALONE.match(line)
                or addr in found
                or addr in display
                or local.startswith(("/", "|"))
                or line[m.end() : m.end() + 1] == ":"
                and "@" in line[: m.start()]
            ):
                continue
            head = _head(line, m.start(), m.end())
            if local in _SERVICE_LOCALPARTS and (
                (own_domain and (domain == own_domain or domain.endswith("." + own_domain)))
                or not head
                and not _DELIVERY_TO.search(line[max(0, m.start() - 60) : m.start()].rstrip("<( "))
            ):
                continue  # postmaster, support ... in the prose, or the reporting host's own
            if _NOT_RECIPIENT_BEFORE.search(line[max(0, m.start() - 100) : m.start()].rstrip("<( ")):
                continue
            if _DISPLAY_BEFORE.match(line, m.end()) and line[m.start() - 1 : m.start()] != "<":
                display.add(addr)  # "user@a <user@b>": the first is only a display text
                continue
            if (
                "://" in line[max(0, m.start() - 60) : m.start()]
                and "mailto:" not in line[max(0, m.start() - 8) : m.start()]
            ):
                continue
            indent = len(line) - len(line.lstrip())
            if head_indent >= 0 and (indent > head_indent or not head and _IN_REPLY.search(line, 0, m.start())):
                continue  # quoted in the SMTP reply about the block's recipient (a rewritten form)
            if head and head_indent < 0:
                head_indent = indent
            block = _block_around(lines, idx)
            if len(block) < len(addr) + 12:
                block = _paragraph(lines, idx)
            found[addr] = TextRecipient(addr, block, smtp_command(block) or command)
    if not found and len(set(quoted_to)) == 1:
        addr = quoted_to[0]
        found[addr] = TextRecipient(addr, " ".join(report.split())[:_BLOCK_CHARS], command)
    if budget is not None:
        budget.omit(len(omitted))
    return list(found.values())


# The remote server a text bounce names: Exim and Postfix "host mx.example.com [192.0.2.1]",
# Sendmail "while talking to mx.example.com.", qmail "192.0.2.1 does not like recipient" /
# "Connected to 192.0.2.1 but ...".
_HOST_NAME = r"(?:[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?\.)+[a-z]{2,63}"
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_REMOTE_HOST = re.compile(
    rf"\bhost\s+(?P<exim>{_HOST_NAME}|{_IPV4})\.?\s*\[(?:{_IPV4}|[0-9a-f:.]+)\]"
    rf"|\bwhile talking to\s+(?P<sendmail>{_HOST_NAME})\.?:"
    rf"|(?:\bconnected to\s+|^[ \t]*|>:\s+)(?P<qmail>{_IPV4})\s+(?:but\b|does not like\b|failed after\b)",
    re.IGNORECASE | re.MULTILINE,
)


def remote_host(text: str) -> str | None:
    """The remote MTA named in a text bounce's diagnostic, lower-cased; None when none is."""
    m = _REMOTE_HOST.search(text)
    if m is None:
        return None
    return next(v for v in m.groups() if v).lower()
