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


# GoDaddy (secureserver.net): "... IB607" codes, then fixed sentences.
_GODADDY_CODE = re.compile(r"\bib(\d{3})\b")
_GODADDY_CODES: dict[str, str] = {
    "401": "securityerror", "501": "notcompliantrfc", "502": "notcompliantrfc", "506": "rejected",
    "508": "authfailure", "108": "requireptr", "212": "spamdetected", "705": "virusdetected",
    "605": "toomanyconn", "007": "toomanyconn", "101": "speeding", "110": "blocked", "111": "blocked",
    "112": "blocked", "113": "blocked", "504": "speeding", "510": "speeding", "607": "speeding",
    "103": "badreputation", "104": "blocked", "105": "blocked", "106": "blocked",
}  # fmt: skip
_GODADDY_WORDS = (
    ("blocked", "rbl reject"), ("blocked", "www.spamhaus.org/query/bl?ip="),
    ("expired", "has been in the queue too long"), ("expired", "delivery timeout"),
    ("mailboxfull", "account storage limit"), ("spamdetected", "message rejected for spam or virus content"),
    ("suspend", "account disabled"), ("systemerror", "message is looping"),
    ("userunknown", "recipient not found"), ("userunknown", "account does not exist"),
)  # fmt: skip
# Spectrum / Charter: "AUP#In-1310", "AUP#O-1000"; the number range names the cause.
_SPECTRUM_CODE = re.compile(r"aup#[a-z-]*(\d{4})")
_SPECTRUM_RANGES = (
    (1000, 1000, "blocked"), (1010, 1010, "rejected"), (1020, 1080, "rejected"), (1090, 1090, "systemerror"),
    (1100, 1150, "requireptr"), (1160, 1190, "policyviolation"), (1200, 1250, "blocked"),
    (1260, 1260, "networkerror"), (1300, 1340, "toomanyconn"), (1350, 1490, "speeding"), (1500, 1520, "rejected"),
    (1530, 1530, "mesgtoobig"), (1540, 1550, "speeding"), (1560, 1560, "policyviolation"),
    (1580, 1580, "speeding"),
)  # fmt: skip
# Facebook's postmaster response codes ("RCP-P2").
_FACEBOOK_CODE = re.compile(r"\b((?:pol|msg|rcp|dns|con|int)-[pt]\d)\b")
_FACEBOOK_CODES: dict[str, str] = {
    "pol-p7": "authfailure", "pol-p1": "blocked", "pol-p2": "blocked", "pol-p3": "blocked", "pol-p4": "blocked",
    "pol-t1": "blocked", "pol-t2": "blocked", "pol-t3": "blocked", "msg-p2": "contenterror", "rcp-p2": "filtered",
    "rcp-p3": "filtered", "msg-p1": "mesgtoobig", "int-p2": "mesgtoobig", "msg-p3": "notcompliantrfc",
    "dns-p1": "rejected", "dns-p2": "rejected", "dns-t1": "rejected", "dns-p3": "requireptr", "dns-t2": "requireptr",
    "pol-p6": "spamdetected", "rcp-t4": "suspend", "rcp-t1": "systemerror", "con-t1": "toomanyconn",
    "con-t2": "toomanyconn", "con-t3": "toomanyconn", "con-t4": "toomanyconn", "msg-t1": "toomanyconn",
    "rcp-p1": "userunknown", "int-p1": "userunknown", "int-p3": "userunknown", "int-p4": "userunknown",
    "pol-p5": "virusdetected",
}  # fmt: skip
# Symantec Email Security.cloud (MessageLabs), when the remote host is theirs.
_MESSAGELABS = (
    ("authfailure", "domain authentication fail"), ("badreputation", "connection rejected by policy"),
    ("blocked", "mail rejected because your ip is in the pbl"), ("blocked", "your ip address has been "),
    ("contenterror", "stray linefeeds in message"), ("failedstarttls", "tls/sslv3 connection required"),
    ("norelaying", " as a relay, "), ("notcompliantrfc", "has detected that this message is not rfc 5322"),
    ("rejected", "sender envelope domain not allowed for sender ip address"),
    ("rejected", "your domain has been blocked"), ("rejected", "your email address has been blocked"),
    ("rejected", "your envelope sender is in my badmailfrom list"), ("rejected", "has been blacklisted"),
    ("securityerror", "please turn on smtp authentication in your mail client"),
    ("spamdetected", "message filtered"), ("spamdetected", "filtered by outbound scanning"),
    ("toomanyconn", "too many recipients received this hour"), ("toomanyconn", "too many messages"),
    ("userunknown", "no such user"), ("userunknown", "invalid recipient"), ("userunknown", "mailbox is not allowed"),
)  # fmt: skip


def _first(table: tuple[tuple[str, str], ...], text: str) -> str | None:
    for reason, needle in table:
        if needle in text:
            return reason
    return None


def _provider_codes(text: str, hosts: str) -> str | None:
    """GoDaddy, Spectrum, Facebook and MessageLabs code tables (one substring test each)."""
    if "secureserver.net" in hosts or "secureserver.net" in text:
        m = _GODADDY_CODE.search(text)
        if m and m.group(1) in _GODADDY_CODES:
            return _GODADDY_CODES[m.group(1)]
        found = _first(_GODADDY_WORDS, text)
        if found:
            return found
    if "aup#" in text:
        m = _SPECTRUM_CODE.search(text)
        if m:
            number = int(m.group(1))
            for low, high, reason in _SPECTRUM_RANGES:
                if low <= number <= high:
                    return reason
    if ("facebook" in hosts or "facebook" in text) and "-" in text:
        m = _FACEBOOK_CODE.search(text)
        if m and m.group(1) in _FACEBOOK_CODES:
            return _FACEBOOK_CODES[m.group(1)]
    if "messagelabs" in hosts:
        return _first(_MESSAGELABS, text)
    return None


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
        found = _first(_AOL, text)
        if found:
            return found
    found = _provider_codes(text, hosts)
    if found:
        return found
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
