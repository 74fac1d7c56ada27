"""Result types of bounce parsing: what a message is, and who failed and why.

Everything here is plain data (frozen dataclasses and str enums) so results can be logged,
stored as JSON and compared in tests without any parser machinery.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Category(str, enum.Enum):  # noqa: UP042 - contract: plain str mix-in
    """Coarse, fixed set of failure categories that drive suppression decisions."""

    INVALID_RECIPIENT = "invalid-recipient"
    MAILBOX_FULL = "mailbox-full"
    BLOCK = "block"  # block / policy / spam / authentication
    DNS = "dns"  # dns / host unknown
    NETWORK = "network"  # network / expired / remote system errors
    MESSAGE_TOO_BIG = "message-too-big"
    AUTO_REPLY = "auto-reply"
    COMPLAINT = "complaint"
    UNKNOWN = "unknown"


class Kind(str, enum.Enum):  # noqa: UP042 - contract: plain str mix-in
    """What a whole message is."""

    BOUNCE = "bounce"
    DELAY = "delay"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto-reply"
    DELIVERED = "delivered"
    NOT_BOUNCE = "not-bounce"


class Limit(str, enum.Enum):  # noqa: UP042 - contract: plain str mix-in
    """A parsing budget a message hit: the result is what was read before it (see :mod:`.budget`)."""

    MESSAGE_BYTES = "message-bytes"  # only a prefix of the message was parsed
    HEADER_BYTES = "header-bytes"  # a header block was cut
    PARTS = "parts"  # more MIME parts than are visited
    DEPTH = "depth"  # multipart nesting deeper than is followed
    PART_BYTES = "part-bytes"  # a part was decoded only in part
    SCAN_BYTES = "scan-bytes"  # the report text was scanned only in part
    FIELDS = "fields"  # a DSN/ARF field value was cut (MAX_FIELD)
    RECIPIENTS = "recipients"  # more recipients than are extracted: see recipients_omitted
    LINE_LENGTH = "line-length"  # long lines were cut before the pattern scan
    FALLBACK = "fallback"  # flufl.bounce read only a prefix of the message
    DEADLINE = "deadline"  # the time budget ran out: later stages were skipped


@dataclass(frozen=True, slots=True)
class Evidence:
    """Which signal decided a recipient's reason and hard/soft (``sidecar parse --explain``)."""

    status: str | None  # the one status code used (see parse/status.py)
    status_source: str  # "dsn-field", "text" (quoted in the diagnostic), "reply-code" (a bare 4xx/5xx), "none"
    decided_by: str  # "family", "provider", "status", "wording", "status-class", "command", "action", "none"
    phrase_class: str | None  # the phrase class (parse/phrases.py) whose words were matched
    words: str | None  # the exact words matched, as lower-cased
    command: str | None  # the SMTP command the failure came after, when known
    temporary: bool  # a 4.x.x status or a delayed action: never hard

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "status_source": self.status_source,
            "decided_by": self.decided_by,
            "phrase_class": self.phrase_class,
            "words": self.words,
            "command": self.command,
            "temporary": self.temporary,
        }


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One recipient a report is about."""

    address: str  # lower-cased, no <>
    category: Category
    reason: str  # sisimai reason name: userunknown, mailboxfull, filtered, ...
    hard: bool | None  # True: address permanently bad; False: soft; None: n/a
    status: str | None  # DSN status such as "5.1.1"
    action: str | None  # RFC 3464 Action (failed, delayed, ...)
    remote_mta: str | None
    diagnostic: str | None  # unfolded diagnostic text
    original_recipient: str | None = None
    feedback_type: str | None = None  # ARF feedback type: abuse, opt-out, ...
    evidence: Evidence | None = field(default=None, compare=False)  # why: see Evidence
    # which structure gave the address: "dsn:final-recipient", "dsn:original-recipient",
    # "returned-message:to", "text:<pattern name>" ... (docs/bounces.md, "Which address")
    address_source: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "category": self.category.value,
            "reason": self.reason,
            "hard": self.hard,
            "status": self.status,
            "action": self.action,
            "remote_mta": self.remote_mta,
            "diagnostic": self.diagnostic,
            "original_recipient": self.original_recipient,
            "feedback_type": self.feedback_type,
        }


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """The parse result of one message."""

    kind: Kind
    recipients: list[FailedRecipient] = field(default_factory=list)
    reporting_mta: str | None = None
    original_message_id: str | None = None
    original_envelope_from: str | None = None
    limits: frozenset[Limit] = frozenset()  # the parsing budgets this message hit
    # recipients named but not returned: beyond the per-message cap, or not examined before
    # the deadline (a lower bound: stages cut by a size limit count only what they read)
    recipients_omitted: int = 0

    @property
    def truncated(self) -> bool:
        """More recipients were named than ``recipients`` holds (count: ``recipients_omitted``)."""
        return Limit.RECIPIENTS in self.limits
