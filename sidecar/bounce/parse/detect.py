"""Cheap header tests: is this message a bounce, an auto-reply, or neither?"""

from __future__ import annotations

import re
from email.message import Message

from sidecar.bounce.parse.dsn import address_value
from sidecar.bounce.parse.mime import header

_BOUNCE_SENDER = re.compile(
    r"mailer-?daemon|postmaster|mail(?:er)?[- ]?(?:delivery|system|daemon)|bounce", re.IGNORECASE
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
_AUTO_SUBJECT = re.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|antwort|respuesta|r[ée]ponse)|auto:"
    r"|out of (?:the )?office|vacation|autoreply"
    r"|abwesenheit|absence|r[ée]ponse automatique|fuera de la oficina|i am (?:away|out)|away from)",
    re.IGNORECASE,
)


_BOUNCE_BODY = re.compile(
    r"could not be delivered|couldn't be delivered|undeliverable|delivery (?:has )?failed|permanent (?:error|failure)"
    r"|(?:was|were) not delivered|unable to deliver|failed to deliver|could not deliver|delivery to the following",
    re.IGNORECASE,
)


def looks_like_bounce(msg: Message, text: str = "") -> bool:
    """From a mailer daemon, a bounce subject, or (last) typical wording at the top of the body."""
    sender = header(msg, "From")
    if _BOUNCE_SENDER.search(sender):
        return True
    if _BOUNCE_SUBJECT.search(header(msg, "Subject")):
        return True
    return bool(text) and not is_auto_reply(msg) and bool(_BOUNCE_BODY.search(text[:1500]))


def is_auto_reply(msg: Message) -> bool:
    """RFC 3834 auto-replies and the common vacation-responder markers."""
    auto = header(msg, "Auto-Submitted").lower()
    if auto.startswith("auto-replied"):
        return True
    if header(msg, "X-Autoreply") or header(msg, "X-Autorespond") or header(msg, "X-Autoresponder"):
        return True
    if header(msg, "Precedence").lower() == "auto_reply":
        return True
    if header(msg, "X-Auto-Response-Suppress") and _AUTO_SUBJECT.search(header(msg, "Subject")):
        return True
    return bool(_AUTO_SUBJECT.search(header(msg, "Subject")))


def auto_reply_address(msg: Message) -> str | None:
    for name in ("From", "Reply-To", "Sender"):
        value = header(msg, name)
        if "@" in value:
            return address_value(value)
    return None
