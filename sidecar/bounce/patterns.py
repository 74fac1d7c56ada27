"""Diagnostic text patterns, one compiled regex per sisimai reason name.

Matched against lower-cased, whitespace-collapsed diagnostic text. Wording is collected from
the replies of common MTAs and mailbox providers (Postfix, Exim, Sendmail, qmail, Exchange,
Gmail, Yahoo, Outlook, ...). Order matters: :data:`ORDER` lists the reasons from the most to
the least specific; the first match wins.
"""

from __future__ import annotations

import re

_RAW: dict[str, tuple[str, ...]] = {
    "mesgtoobig": (
        r"message (?:is )?too (?:big|large)", r"message size exceeds", r"size exceeds",
        r"exceeds? (?:the )?(?:maximum|max|allowed)? ?(?:message )?size", r"mail size limit",
        r"message (?:length|size) (?:exceeds|is over)", r"too big for (?:the )?system",
        r"size limit", r"message too long",
    ),
    "mailboxfull": (
        r"mail ?box (?:is )?full", r"mailbox (?:size|quota) ", r"over ?quota", r"quota (?:exceeded|full)",
        r"exceeded (?:the )?(?:storage|quota|disk)", r"(?:disk|storage|mailbox) quota",
        r"insufficient (?:disk |storage )?space", r"out of (?:storage )?space", r"inbox is (?:full|out of)",
        r"not enough (?:storage|space)", r"account is full", r"mailbox (?:has )?exceeded",
        r"user has exceeded", r"full mailbox", r"mailfolder is full", r"is over (?:the )?(?:storage|quota)",
        r"quotaexceeded", r"(?:recipient|user)'?s? (?:mailbox|inbox) is full", r"maildir over",
    ),
    "suspend": (
        r"(?:account|mailbox|address|user) (?:has been |is |was )?(?:disabled|suspended|deactivated|frozen|locked|on hold)",
        r"(?:disabled|suspended|deactivated|inactive) (?:account|mailbox|user)", r"discontinued",
        r"account (?:is )?(?:temporarily )?(?:unavailable|inactive|blocked|expired)",
        r"recipient account is blocked", r"compte du destinataire est bloque",
    ),
    "hasmoved": (r"has moved", r"no longer (?:on|at|with) ", r"address (?:has )?changed",),
    "norelaying": (
        r"relay(?:ing)? (?:access )?(?:is )?(?:denied|not (?:permitted|allowed))", r"not (?:permitted|allowed) to relay",
        r"unable to relay", r"(?:we|i) do not relay", r"no relaying", r"not configured to relay",
        r"relaying (?:mail )?(?:to .* )?(?:is )?(?:prohibited|denied)", r"relay not permitted",
        r"email address is not verified", r"identities failed the check",
    ),
    "authfailure": (
        r"\bdmarc\b", r"\bspf\b", r"\bdkim\b", r"sender policy framework", r"domainkeys",
        r"unauthenticated email", r"(?:does not|doesn't) have authentication information",
        r"fails? to pass (?:spf|dkim|dmarc|authentication)", r"5\.7\.(?:26|509|23|27)\b",
    ),
    "requireptr": (
        r"\bptr\b", r"reverse (?:dns|lookup|hostname|address)", r"\brdns\b", r"rev(?:erse)?[- ]dns",
        r"cannot find your hostname", r"cannot resolve your (?:address|hostname)",
        r"(?:no|without) (?:a )?valid (?:sender|reverse|hostname|host name)", r"mismatches client ip",
        r"client host rejected: cannot find", r"hostname (?:does not|doesn't) resolve",
        r"not resolve to your ip", r"ip name lookup failed",
    ),
    "badreputation": (r"reputation", r"sender ?score", r"sending ip .* (?:low|poor)",),
    "virusdetected": (r"\bvirus", r"malware", r"\binfected\b", r"mcspamsignature"),
    "spamdetected": (
        r"\bspam\b", r"junk mail", r"\bube\b", r"\buce\b", r"bulk mail", r"message content rejected",
        r"content (?:was )?rejected", r"spam(?:my|filter|assassin|cop)", r"classified as (?:spam|junk)",
        r"looks like spam", r"suspicious", r"considered unsolicited",
    ),
    "notcompliantrfc": (r"rfc ?5322", r"rfc ?2822", r"not (?:rfc|standards?)[- ]compliant", r"multiple (?:subject|from|to|date) headers",),
    "policyviolation": (
        r"polic(?:y|ies) (?:violation|reasons|rejection)", r"for policy reasons", r"denied by policy",
        r"violat(?:es|ion of|ed) .{0,40}polic", r"message not allowed", r"content presents a potential",
        r"security polic", r"not accepted for policy",
    ),
    "userunknown": (
        r"user ?unknown", r"unknown (?:user|recipient|mailbox|local ?part|address|e-?mail address)",
        r"no such (?:user|mailbox|recipient|person|address|account)", r"user (?:\S+ )?(?:not found|does not exist|doesn't exist|not exist|not known|not active)",
        r"(?:recipient|mailbox|address|account|e-?mail address) (?:\S+ )?(?:does not exist|doesn't exist|not exist|not found|unknown|is unknown|invalid|not valid)",
        r"(?:invalid|bad|illegal|unknown|non-?existent) (?:recipient|mailbox|address|user|destination)",
        r"is not a valid (?:mailbox|recipient|user)", r"not a valid (?:recipient|user|mailbox)",
        r"recipnotfound", r"recipientnotfound", r"recipient not found", r"mailbox unavailable",
        r"mailbox (?:is )?(?:not available|unavailable|inactive|not present)", r"inactive (?:email )?address",
        r"address rejected", r"recipient rejected", r"no mailbox (?:here|by that name|found)",
        r"doesn't have a .{1,40} account", r"does not have an? .{1,40} account", r"no account by that name",
        r"not (?:a )?(?:known|local|valid) (?:user|recipient|address)", r"user doesn't exist",
        r"illegal user", r"unknown or illegal", r"destinataire invalide", r"utilisateur inconnu",
        r"badrcptto", r"validrcptto", r"no valid recipients", r"not our customer",
        r"address (?:does not|doesn't) exist", r"addressee unknown", r"name is not recognized",
        r"account (?:does not|doesn't) exist", r"no such local user", r"address not found",
        r"(?:invalid|unknown) (?:\S+ ){0,2}user ?id", r"not listed in .{0,40}(?:directory|address book)",
    ),
    "hostunknown": (
        r"host (?:or domain name )?not found", r"host ?unknown", r"unknown (?:host|domain)",
        r"domain (?:name )?(?:not found|does not exist|doesn't exist|is not reachable|not reachable)",
        r"no such domain", r"invalid domain", r"unrout(?:e)?able (?:mail )?domain", r"domain .{0,60}not exist",
        r"name or service not known", r"no (?:mx|a) record", r"host .{0,60} not found",
        r"bad destination system address", r"domain is not valid", r"unrouteable address",
    ),
    "notaccept": (
        r"(?:does not|doesn't|do not) (?:accept|receive) (?:any )?(?:e-?)?mail", r"null mx",
        r"not accepting (?:any )?(?:mail|messages)", r"no smtp service", r"smtp service not available",
    ),
    "rejected": (
        r"sender (?:address |domain )?(?:is )?(?:rejected|denied|refused|invalid|blocked|not allowed|unknown)",
        r"domain of sender address", r"sender (?:verify|verification) failed", r"mailfrom domain",
        r"(?:envelope|mail from|return[- ]path) .{0,40}(?:rejected|invalid|not allowed)",
        r"bad sender", r"invalid sender", r"sender .{0,40} (?:does not|doesn't) exist",
        r"your (?:e-?mail )?address (?:has been|is) (?:rejected|blocked|blacklisted)",
    ),
    "speeding": (
        r"too many (?:messages|recipients|emails|mails)", r"sending (?:too fast|rate)", r"rate limit(?:ed)?",
        r"throttl", r"exceeded .{0,40}(?:rate|limit)", r"too fast", r"sent to too many",
    ),
    "toomanyconn": (
        r"too many (?:connections|concurrent|sessions|smtp sessions|simultaneous)", r"connection (?:rate|frequency|limit)",
        r"connection limit", r"frequency limited",
    ),
    "blocked": (
        r"block(?:ed|list|ed by)", r"black ?list", r"deny ?list", r"spamhaus", r"\brbl\b", r"dnsbl",
        r"banned", r"client host rejected", r"access denied", r"listed (?:in|on|at|by) ",
        r"service (?:refused|refuse|unavailable)", r"not allowed to (?:send|connect)", r"ip .{0,40}(?:listed|refused)",
        r"rejected for (?:abuse|bad)", r"connection refused by", r"your (?:ip|host|server)",
        r"refused to talk", r"rejected\b",
    ),
    "filtered": (
        r"filter", r"refused due to recipient", r"recipient preferences", r"rejected by (?:the )?(?:recipient|user)",
        r"does not (?:want|accept) (?:mail|messages) from",
    ),
    "contenterror": (
        r"8-?bit data", r"header (?:error|syntax|format)", r"(?:invalid|malformed|improper|bad) (?:message )?(?:header|mime|content)",
        r"content (?:error|rejected)", r"media not supported",
    ),
    "securityerror": (
        r"security", r"authentication required", r"not authorized", r"unauthori[sz]ed", r"must (?:authenticate|be authenticated)",
        r"access (?:denied|forbidden)",
    ),
    "failedstarttls": (r"starttls", r"tls (?:is )?required", r"must issue a starttls", r"encryption required", r"\btls\b"),
    "syntaxerror": (
        r"syntax error", r"(?:command|parameter)s? (?:not )?(?:implemented|recognized|unrecognized)",
        r"unrecognized command", r"(?:bad|improper) sequence of commands", r"line too long",
    ),
    "systemfull": (r"(?:system|disk) (?:is )?full", r"insufficient system storage", r"mail system full"),
    "mailererror": (
        r"procmail", r"x-unix", r"mailer error", r"\bpipe\b", r"command died", r"exit (?:status|code)",
        r"program (?:exited|error|failed)", r"local delivery failed", r"couldn't create",
    ),
    "networkerror": (
        r"connection (?:refused|reset|closed|failed|dropped)", r"network (?:is )?unreachable", r"no route to host",
        r"lost connection", r"dns (?:error|failure|query failed|lookup)", r"servfail", r"name service error",
        r"too many hops", r"mail(?:ing)? loop", r"loops back", r"routing loop", r"unable to connect",
        r"could not connect", r"host (?:is )?unreachable", r"temporary lookup failure",
    ),
    "expired": (
        r"expired", r"too long in (?:the )?queue", r"been in the queue too long", r"retry time", r"giving up",
        r"could not be delivered within", r"delivery time", r"timed? ?out", r"did not accept our requests to connect",
        r"delivery (?:is )?delayed", r"will (?:keep trying|retry)", r"unable to deliver in", r"will be retried",
    ),
    "systemerror": (
        r"system (?:error|failure|config)", r"server (?:error|failure)", r"internal (?:server )?error",
        r"local (?:error|problem)", r"temporary (?:local )?(?:problem|failure|error)", r"configuration error",
        r"misconfigur", r"try (?:again )?later", r"server busy", r"resources? (?:temporarily )?unavailable",
        r"lock failure",
    ),
}

ORDER: tuple[str, ...] = (
    "mesgtoobig", "mailboxfull", "suspend", "hasmoved", "norelaying", "failedstarttls", "authfailure",
    "requireptr", "badreputation", "virusdetected", "notcompliantrfc", "policyviolation", "spamdetected",
    "toomanyconn", "speeding", "rejected", "userunknown", "notaccept", "networkerror", "hostunknown",
    "blocked", "filtered", "contenterror", "syntaxerror", "systemfull", "mailererror", "expired",
    "securityerror", "systemerror",
)

PATTERNS: dict[str, re.Pattern[str]] = {
    reason: re.compile("|".join(f"(?:{p})" for p in _RAW[reason])) for reason in ORDER
}


def match_reason(text: str, order: tuple[str, ...] = ORDER) -> str | None:
    """The first reason in ``order`` whose pattern matches lower-cased ``text``."""
    for reason in order:
        if PATTERNS[reason].search(text):
            return reason
    return None
