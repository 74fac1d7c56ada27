"""Remote-host ("rhost") rules: providers whose replies carry their own error vocabulary.

Some mailbox providers answer with a generic SMTP code and put the real cause in a
provider-specific token (Orange's ``OFR_416``/``LPN007_416``) or a fixed sentence (Yahoo's
"This user doesn't have a yahoo.com account", Microsoft's ``RESOLVER.ADR.RecipientNotFound``).
When such a provider is recognised the reason it names is passed to the classifier as an
*explicit* reason, the same way sisimai's Rhost modules do (see docs/bounces.md).

Input is the lower-cased, whitespace-collapsed diagnostic; each rule is keyed on the
provider first, so a message from any other host costs one substring test per provider.
"""

from __future__ import annotations

import re

# Orange / La Poste (France PTT): the number after the OFR/LPN/OUK label is the cause.
# Published in Orange's postmaster pages (code list reproduced by postmastery.com).
_ORANGE_LABEL = re.compile(r"\b(?:ofr|lpn|lpnaaa|ouk)\d*[_-](\d{3})\b")
_ORANGE_CODES: dict[str, str] = {
    "101": "blocked",
    "102": "blocked",
    "103": "blocked",
    "104": "toomanyconn",
    "305": "securityerror",
    "401": "authfailure",
    "402": "securityerror",
    "403": "rejected",
    "405": "rejected",
    "415": "rejected",
    "416": "userunknown",
    "417": "mailboxfull",
    "420": "suspend",
    "421": "rejected",
    "426": "suspend",
    "505": "systemerror",
    "506": "spamdetected",
    "510": "blocked",
    "514": "mesgtoobig",
    "517": "authfailure",
    "630": "policyviolation",
    "999": "blocked",
}
_MICROSOFT_USER = re.compile(r"resolver\.adr\.recip(?:ient)?notfound|recipient not found by smtp address lookup")
_YAHOO_USER = re.compile(r"this user doesn't have a \S+ account")


_AOL = (
    ("hostunknown", "host or domain name not found"),
    ("notaccept", "type=mx: malformed or unexpected name server reply"),
)


def remote_reason(text: str, remote_mta: str | None = None, reporting_mta: str | None = None) -> str | None:
    """The reason a recognised provider's own code or wording names, else None."""
    if not text:
        return None
    hosts = f"{remote_mta or ''} {reporting_mta or ''}".lower()
    if "aol.com" in hosts:
        for reason, needle in _AOL:
            if needle in text:
                return reason
    if "ofr" in text or "lpn" in text or "ouk" in text:
        m = _ORANGE_LABEL.search(text)
        if m and m.group(1) in _ORANGE_CODES:
            return _ORANGE_CODES[m.group(1)]
    if ("resolver.adr" in text or "smtp address lookup" in text) and _MICROSOFT_USER.search(text):
        return "userunknown"
    yahoo = "yahoo" in text or (remote_mta is not None and "yahoo" in remote_mta.lower())
    if yahoo and _YAHOO_USER.search(text):
        return "userunknown"
    return None
