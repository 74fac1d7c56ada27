"""Cheap header tests: is this message a bounce, an auto-reply, a read receipt, a challenge, or
a delay warning? (docs/bounces.md, "Non-bounces")"""

from __future__ import annotations

import re
from email.message import Message

from sidecar.bounce.parse.dsn import address_value
from sidecar.bounce.parse.mime import has_header, header

_BOUNCE_SENDER = re.compile(
    r"mailer-?daemon|post_?master|mail(?:er)?[- ]?(?:delivery|system|daemon)|bounce", re.IGNORECASE
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|returned mail|return(?:ed)? to sender|delivery (?:status notification"
    r"|failure|failed|has failed|notification|problem|report)"
    r"|failure notice|mail delivery (?:failed|failure|system)|non-?delivery|could not be delivered"
    r"|not delivered|delivery error"
    r"|mail system error|mail failure|message (?:not|could not be) delivered|rejected|bounced?\b"
    r"|unzustellbar|nicht zustellbar"
    r"|non remis|error sending|warning: could not send|delivery delayed|delayed mail",
    re.IGNORECASE,
)
# RFC 3834 section 3.1.5 suggests "Auto:"; Outlook/Exchange's own prefixes in its languages
# ("Automatic reply:", "Automatische Antwort:", "Réponse automatique :" ...), older "Out of Office:".
_AUTO_SUBJECT = re.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|antwort|respuesta|r[ée]ponse)|auto:"
    r"|out of (?:the )?office|vacation|autoreply|auto-reply"
    r"|abwesenheit|absence|r[ée]ponse automatique|fuera de la oficina|i am (?:away|out)|away from"
    r"|automatische antwort|respuesta autom[áa]tica|risposta automatica|resposta autom[áa]tica"
    r"|automatisch antwoord|automatiskt svar|automatisk svar|automaattinen vastaus|automatyczna odpowied"
    r"|自動応答|自动回复|自動回覆)",
    re.IGNORECASE,
)
# a reply's subject prefix: English, German, Scandinavian, Finnish, Dutch
_REPLY_SUBJECT = re.compile(r"^(?:re|aw|sv|vs|antw)\s*(?:\[\d+\])?\s*:", re.IGNORECASE)
# an absence note's own words (Mail::DeliveryStatus::BounceParser's vacation test, widened)
_AUTO_BODY = re.compile(
    r"auto(?:matic|mated)?[- ]?(?:reply|response|antwort)|\bvacation\b|(?:out|away) of (?:the |my )?office"
    r"|on holiday|on leave|on annual leave|away from (?:the |my )?(?:office|desk|email)"
    r"|i am (?:currently )?(?:away|out)"
    r"|abwesen|en vacances|de vacaciones",
    re.IGNORECASE,
)
# vendor auto-responder headers (any value): vacation(1) and procmail/Exim/cPanel/Zimbra responders
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Autoresponse", "X-Auto-Reply", "X-Vacation")
# challenge-response systems: a request to the sender to confirm that it is a person
_CHALLENGE_PRODUCTS = re.compile(r"spam ?arrest|boxbe|boxtrapper|mailblocks|choicemail|\btmda\b|sendio|qurb", re.I)
_CHALLENGE = re.compile(
    r"(?:please|kindly|you must|you need to) (?:click[^.\n]{0,40}to )?(?:confirm|verify|validate|authenticate)"
    r" (?:that )?(?:you|your (?:message|e-?mail|address|identity|sender)|the sender|this message)"
    r"|confirm (?:that )?you are (?:a )?(?:human|real person|person|not a (?:robot|spammer|machine))"
    r"|(?:message|e-?mail) (?:is|has been|was|will be) (?:being )?(?:held|quarantined|kept)"
    r" (?:pending|until you|for verification)"
    r"|(?:awaiting|pending) (?:your |sender )?(?:confirmation|verification|authori[sz]ation)"
    r"|(?:sender|address|e-?mail) (?:verification|confirmation) (?:request|required|needed)"
    r"|(?:requires|needs) (?:your )?(?:verification|confirmation) before",
    re.IGNORECASE,
)
# delay warnings (and the warning wordings flufl.bounce's simplewarning detector lists):
# Postfix ("THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE."),
# Sendmail and Courier ("THIS IS A WARNING MESSAGE ONLY"), Exim ("has not yet been delivered ...
# Delivery attempts will continue"), Exchange ("Delivery to the following recipients has been
# delayed"; Microsoft 365 "Delivery is delayed to these recipients"), Gmail ("Gmail will retry for")
_DELAY_SUBJECT = re.compile(
    r"delayed mail|delivery status notification \(delay\)|\bdelivery (?:is )?delayed|delayed \d+ (?:hour|minute|day)"
    r"|could not send message for past|^warning: message \S+ delayed|still being retried",
    re.IGNORECASE,
)
_DELAY_BODY = (  # literal phrases (lower case), looked for with str.find: no regex over the text
    "this is a warning only",
    "this is a warning message only",
    "you do not need to resend your message",
    "you do not need to resend the message",
    "has not yet been delivered",
    "delivery attempts will continue",
    "will retry for",
    "will retry until",
    "will retry delivery",
    "will continue to retry",
    "still being retried",
    "message still undelivered after",
    "will keep trying",
    "delivery is delayed to these recipients",
    "recipients has been delayed",
    "recipient has been delayed",
    "delivery has been delayed",
    "delivery was delayed",
    "no action is required on your part",
    "this is just a warning",
    "you do not need to take any action",
    "message will be retried",
    "this is an advisory-only email",
    "has been postponed",
)


_BOUNCE_BODY = re.compile(
    r"could not be delivered|couldn't be delivered|undeliverable|delivery (?:has )?failed|permanent (?:error|failure)"
    r"|(?:was|were) not delivered|unable to deliver|failed to deliver|could not deliver|delivery to the following",
    re.IGNORECASE,
)


def looks_like_bounce(msg: Message, text: str = "") -> bool:
    """From a mailer daemon, a bounce subject, or (last) typical wording at the top of the body.

    A reply (``Re:``, ``AW:``, ``SV:`` ...) from anyone but a mailer daemon is a person's
    message, whatever its subject or first lines say (a forward may carry a real bounce).
    """
    if from_daemon(msg):
        return True
    subject = header(msg, "Subject")
    if _REPLY_SUBJECT.match(subject):
        return False
    if _BOUNCE_SUBJECT.search(subject):
        return True
    return bool(text) and not is_auto_reply(msg, text) and bool(_BOUNCE_BODY.search(text[:1500]))


def is_auto_reply(msg: Message, text: str = "") -> bool:
    """RFC 3834 auto-replies and the common vacation-responder markers; last, a short first
    text part that says it is an automatic reply or an absence (not in a MIME report)."""
    auto = header(msg, "Auto-Submitted").lower()
    if auto.startswith("auto-replied"):
        return True
    if any(has_header(msg, name) for name in _AUTO_HEADERS):
        return True
    if header(msg, "Precedence").lower() == "auto_reply":
        return True
    if _AUTO_SUBJECT.search(header(msg, "Subject")):
        return True
    if not text or len(text) >= 3000 or from_daemon(msg):
        return False
    if header(msg, "Content-Type").lower().startswith("multipart/report"):
        return False
    return _AUTO_BODY.search(text) is not None


def from_daemon(msg: Message) -> bool:
    """From a mailer daemon or postmaster (bounces, including Exim's and Postfix's, carry
    ``Auto-Submitted: auto-replied`` too: only a daemon's report is a bounce)."""
    return bool(_BOUNCE_SENDER.search(header(msg, "From")))


def is_vendor_auto_reply(msg: Message) -> bool:
    """An auto-reply by its own marking, whatever its body says: a vendor auto-responder header,
    ``Precedence: auto_reply`` or an auto-reply subject, from anyone but a mailer daemon.

    ``X-Auto-Response-Suppress`` (Microsoft) only asks others not to answer: a hint, not a mark.
    """
    if from_daemon(msg):
        return False
    if any(has_header(msg, name) for name in _AUTO_HEADERS):
        return True
    if header(msg, "Precedence").lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.search(header(msg, "Subject")))


def is_read_receipt(msg: Message, has_disposition_part: bool) -> bool:
    """An RFC 8098 message disposition notification (a read receipt), never a bounce."""
    if has_disposition_part:
        return True
    ctype = header(msg, "Content-Type").lower()
    if not ctype.startswith("multipart/report") or "disposition-notification" not in ctype:
        return False
    report_type = msg.get_param("report-type")
    if isinstance(report_type, tuple):  # RFC 2231 value
        report_type = report_type[2]
    return str(report_type or "").strip().lower() == "disposition-notification"


def is_challenge(msg: Message, text: str) -> bool:
    """A challenge-response system asking the sender to confirm itself (not from a daemon)."""
    if from_daemon(msg):
        return False
    names = " ".join(msg.keys()).lower()
    if "tmda" in names or "boxtrapper" in names or "challenge" in names or "spamarrest" in names:
        return True
    if header(msg, "X-Delivery-Agent").upper().startswith("TMDA"):
        return True
    subject = header(msg, "Subject")
    head = text[:3000]
    if _CHALLENGE_PRODUCTS.search(subject) or _CHALLENGE.search(subject):
        return True
    return bool(_CHALLENGE.search(head)) and bool(_CHALLENGE_PRODUCTS.search(head) or "confirm" in subject.lower())


_FORWARDED = re.compile(
    r"automatically.{0,40}forwarded"
    r"|(?:address.{0,60}changed|domain.{0,40}retired).{0,200}(?:has\s*been|was|have|will\s*be)\s*(?:forwarded|delivered)",
    re.IGNORECASE | re.DOTALL,
)


def is_forwarding_notice(text: str) -> bool:
    """A short notice that the address changed and the message was forwarded (delivered)."""
    return len(text) < 3000 and _FORWARDED.search(text) is not None


def is_delay_warning(msg: Message, text: str) -> bool:
    """A warning that delivery is still being retried (a subject or wording of the MTAs' own
    warning templates): its recipients are delayed, never failed."""
    if _DELAY_SUBJECT.search(header(msg, "Subject")):
        return True
    head = text[:3000].lower().replace("\n", " ")
    return any(phrase in head for phrase in _DELAY_BODY)


def auto_reply_address(msg: Message) -> str | None:
    for name in ("From", "Reply-To", "Sender"):
        value = header(msg, name)
        if "@" in value:
            return address_value(value)
    return None
