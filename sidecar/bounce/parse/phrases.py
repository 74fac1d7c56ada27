"""Phrase classes: how MTAs and receivers word each kind of delivery failure.

One :class:`PhraseClass` per sisimai reason name, named for what it says (``mailbox-unknown``,
``domain-not-found`` ...), with its sources: the enhanced status codes of RFC 3463 and the
IANA registry of RFC 5248, the MTAs' own message catalogues (Postfix, Exim, Sendmail, qmail,
Exchange/Microsoft 365, Domino), the large receivers' published SMTP error references (Gmail,
Microsoft 365/Outlook.com, Yahoo) and other parsers' rule lists (sisimai's
``lib/Sisimai/Reason/*.pm``, BSD-2). docs/bounces.md lists the classes and their sources.

A rule describes how a *kind* of server words a failure, never one message. Patterns match
lower-cased, whitespace-collapsed text; no unbounded ``.*``/``.+`` before more pattern (gaps
are ``.{0,N}``: a text with the literal repeated would make the search quadratic).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from sidecar.bounce.parse.prefilter import Prefiltered

RFC3463 = "RFC 3463"
IANA = "IANA SMTP Enhanced Status Codes registry (RFC 5248)"
SISIMAI = "sisimai lib/Sisimai/Reason"
GMAIL = "Gmail SMTP error reference (support.google.com/a/answer/3726730)"
M365 = "Microsoft 365 NDR reference (learn.microsoft.com: non-delivery reports in Exchange Online)"
YAHOO = "Yahoo Sender Hub SMTP error codes (senders.yahooinc.com/smtp-error-codes)"
POSTFIX = "Postfix smtp(8)/smtpd(8)/local(8)/bounce(5) messages (postfix.org)"
EXIM = "Exim specification: routers, appendfile quotas, retry rules (exim.org)"
SENDMAIL = "Sendmail error messages (sendmail.org op guide)"
QMAIL = "qmail qmail-local/qmail-remote messages (cr.yp.to)"
DOMINO = "HCL/Lotus Domino router messages"


@dataclass(frozen=True)
class PhraseClass:
    name: str  # what the wording says, e.g. "mailbox-unknown"
    reason: str  # the sisimai reason name it gives
    meaning: str
    sources: tuple[str, ...]
    phrases: tuple[str, ...]

    # compiled at first use: the reasons' combined patterns (parse/patterns.py) serve most searches
    @cached_property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{p})" for p in self.phrases))

    @cached_property
    def prefiltered(self) -> Prefiltered:
        return Prefiltered(self.pattern)


CLASSES: tuple[PhraseClass, ...] = (
    PhraseClass(
        "too-large", "mesgtoobig", "the message is larger than the receiving system accepts",
        (f"{RFC3463} X.3.4 (message too big for system)", "RFC 1870 SIZE / RFC 5321 552",
         f"{POSTFIX}: 'message size exceeds fixed limit'", f"{EXIM}: 'message too big'",
         f"{M365} 5.3.4", f"{GMAIL} 552 5.3.4", f"{SISIMAI}/MesgTooBig.pm"),
        (r"message (?:is )?too (?:big|large)", r"message size exceeds", r"size exceeds",
         r"exceeds? (?:the )?(?:maximum|max|allowed)? ?(?:message )?size", r"mail size limit",
         r"message (?:length|size) (?:exceeds|is over)", r"too big for (?:the )?system", r"size limit",
         r"message too long", r"(?:recip|send)sizelimit"),
    ),
    PhraseClass(
        "mailbox-full", "mailboxfull", "the recipient's mailbox is over its storage quota",
        (f"{RFC3463} X.2.2 (mailbox full)", f"{POSTFIX} local(8)/virtual(8): 'Disk quota exceeded'",
         f"{EXIM}: 'mailbox is full (MTA-imposed quota exceeded ...)'", f"{QMAIL}: 'mailbox is full'",
         f"{GMAIL} 452/552 4.2.2/5.2.2 'The email account that you tried to reach is over quota'",
         f"{YAHOO} 'mailbox is full'", f"{M365} 5.2.2", f"{SISIMAI}/MailboxFull.pm"),
        (r"mail ?box (?:is )?full", r"mailbox (?:size|quota) ", r"over ?quota", r"quota (?:exceeded|full)",
         r"exceeded (?:the )?(?:storage|quota|disk)", r"(?:disk|storage|mailbox) quota",
         r"insufficient (?:disk |storage )?space", r"out of (?:storage )?space", r"inbox is (?:full|out of)",
         r"not enough (?:storage|space)", r"account is full", r"mailbox (?:has )?exceeded", r"user has exceeded",
         r"full mailbox", r"mailfolder is full", r"is over (?:the )?(?:storage|quota)", r"quotaexceeded",
         r"(?:recipient|user)'?s? (?:mailbox|inbox) is full", r"maildir over", r"does not have enough space",
         r"disc quota", r"space has been used up", r"would exceed .{0,40}(?:quota|storage)"),
    ),
    PhraseClass(
        "mailbox-disabled", "suspend", "the mailbox exists but is disabled, suspended or inactive",
        (f"{RFC3463} X.2.1 (mailbox disabled, not accepting messages)", f"{IANA} X.7.13 (user account disabled)",
         f"{GMAIL} 550 5.2.1 'The email account that you tried to reach is disabled'",
         f"{YAHOO} 'user account is inactive'", f"{SISIMAI}/Suspend.pm"),
        (r"(?:account|mailbox|address|user) (?:has been |is |was )?(?:disabled|suspended|deactivated"
         r"|frozen|locked|on hold)",
         r"(?:disabled|suspended|deactivated|inactive) (?:account|mailbox|user)", r"discontinued",
         r"(?:account|mailbox) .{0,40}(?:is|has been) (?:disabled|suspended)",
         r"account (?:is )?(?:temporarily )?(?:unavailable|inactive|blocked|expired)",
         r"recipient account is blocked", r"compte du destinataire est bloque", r"currently suspended",
         r"invalid/inactive user", r"recipient suspend(?:ed)? the service", r"administratively disabled",
         r"account not activated"),
    ),
    PhraseClass(
        "mailbox-moved", "hasmoved", "the recipient has moved to another address",
        (f"{RFC3463} X.1.6 (destination mailbox has moved, no forwarding address)",
         "RFC 5321 551 'User not local; please try <forward-path>'", f"{SISIMAI}/HasMoved.pm"),
        (r"has moved", r"no longer (?:on|at|with) ", r"address (?:has )?changed"),
    ),
    PhraseClass(
        "relay-denied", "norelaying", "the receiving server does not relay for this destination or sender",
        (f"{POSTFIX} smtpd(8): 'Relay access denied'", f"{EXIM}: 'relay not permitted'",
         f"{SENDMAIL}: 'Relaying denied'", f"{M365} 5.7.54 / 5.7.64 'Unable to relay'",
         f"{SISIMAI}/NoRelaying.pm"),
        (r"relay(?:ing)? (?:access )?(?:is )?(?:denied|not (?:permitted|allowed))",
         r"not (?:permitted|allowed) to relay",
         r"unable to relay", r"(?:we|i) do not relay", r"no relaying", r"not configured to relay",
         r"relaying (?:mail )?(?:to .{0,200} )?(?:is )?(?:prohibited|denied)", r"relay not permitted",
         r"email address is not verified", r"identities failed the check"),
    ),
    PhraseClass(
        "authentication", "authfailure", "the message failed SPF, DKIM or DMARC checks",
        (f"{IANA} X.7.20-X.7.26 (DKIM/SPF/multiple authentication checks failed, RFC 7372)",
         f"{GMAIL} 550 5.7.26 'Unauthenticated email ... is not accepted due to domain's DMARC policy'",
         f"{M365} 5.7.509 / 5.7.515", f"{YAHOO} 554 5.7.9 'Message not accepted for policy reasons'",
         f"{SISIMAI}/AuthFailure.pm"),
        (r"\bdmarc\b", r"\bspf\b", r"\bdkim\b", r"sender policy framework", r"domainkeys",
         r"unauthenticated email", r"(?:does not|doesn't) have authentication information",
         r"fails? to pass (?:spf|dkim|dmarc|authentication)", r"5\.7\.(?:26|509|515|23|27)\b"),
    ),
    PhraseClass(
        "reverse-dns", "requireptr", "the sending host has no (matching) reverse DNS name",
        (f"{IANA} X.7.25 (reverse DNS validation failed, RFC 7372)",
         f"{POSTFIX} smtpd(8) reject_unknown_client_hostname: 'cannot find your hostname'",
         f"{GMAIL} 550 5.7.25 'The IP address sending this message does not have a PTR record'",
         f"{SISIMAI}/RequirePTR.pm"),
        (r"\bptr\b", r"reverse (?:dns|lookup|hostname|address)", r"\brdns\b", r"rev(?:erse)?[- ]dns",
         r"cannot find your hostname", r"cannot resolve your (?:address|hostname)",
         r"(?:no|without) (?:a )?valid (?:sender|reverse|hostname|host name)", r"mismatches client ip",
         r"client host rejected: cannot find", r"hostname (?:does not|doesn't) resolve",
         r"not resolve to your ip", r"ip name lookup failed"),
    ),
    PhraseClass(
        "reputation", "badreputation", "the sender's IP or domain reputation is too low",
        (f"{GMAIL} 421/550 4.7.0/5.7.1 'unusual rate of unsolicited mail ... low reputation'",
         f"{M365} 5.7.750 / 'banned sender'", f"{YAHOO} 421 4.7.0 [TSS04] 'unexpected volume or user complaints'",
         f"{SISIMAI}/BadReputation.pm"),
        (r"unexpected volume or user complaints", r"reputation", r"sender ?score", r"sending ip .{0,200} (?:low|poor)"),
    ),
    PhraseClass(
        "virus", "virusdetected", "the message was refused because it carries malware",
        (f"{RFC3463} X.7.0", f"{GMAIL} 552 5.7.0 'This message was blocked because its content presents a "
         "potential security issue'", f"{SISIMAI}/VirusDetected.pm"),
        (r"\bvirus", r"malware", r"\binfected\b", r"mcspamsignature"),
    ),
    PhraseClass(
        "spam-content", "spamdetected", "the message's content was judged to be spam",
        (f"{IANA} X.7.28 (mail flood detected)", f"{GMAIL} 550 5.7.1 'likely unsolicited mail'",
         f"{M365} 5.7.511 / 'Message rejected as spam by Content Filtering'", f"{YAHOO} 554 'Message not "
         "accepted ... spam'", f"{SISIMAI}/SpamDetected.pm"),
        (r"\bspam\b", r"junk mail", r"\bube\b", r"\buce\b", r"bulk mail", r"message content rejected",
         r"content (?:was )?rejected", r"spam(?:my|filter|assassin|cop)", r"classified as (?:spam|junk)",
         r"looks like spam", r"suspicious", r"considered unsolicited", r"unsolicited (?:mail|e-?mail|bulk)",
         r"appears to be unsolicited", r"\buribl\b"),
    ),
    PhraseClass(
        "not-rfc-compliant", "notcompliantrfc", "the message does not follow RFC 5322's format",
        (f"{GMAIL} 550 5.7.1 'Messages missing a valid address in From: header, or having no From: header, "
         "are not accepted' / 'not RFC 5322 compliant'", f"{SISIMAI}/NotCompliantRFC.pm"),
        (r"rfc ?5322", r"rfc ?2822", r"not (?:rfc|standards?)[- ]compliant",
         r"multiple (?:subject|from|to|date) headers"),
    ),
    PhraseClass(
        "policy-block", "policyviolation", "a local policy refused the message (not the address)",
        (f"{RFC3463} X.7.1 (delivery not authorized, message refused)",
         f"{EXIM}: an ACL's default 'deny' message 'Administrative prohibition'",
         f"{YAHOO} 554 5.7.9 'Message not accepted for policy reasons'", f"{M365} 5.7.1 transport rules",
         f"{SISIMAI}/PolicyViolation.pm"),
        (r"polic(?:y|ies) (?:violation|reasons|rejection)", r"for policy reasons", r"denied by policy",
         r"violat(?:es|ion of|ed) .{0,40}polic", r"message not allowed", r"content presents a potential",
         r"security polic", r"not accepted for policy", r"closed mailing list", r"protocol violation",
         r"administrative prohibition", r"messages with multiple addresses", r"rejected for policy reasons"),
    ),
    PhraseClass(
        "too-many-connections", "toomanyconn", "the receiver limits concurrent connections",
        ("RFC 5321 421", f"{POSTFIX} smtpd(8) anvil: 'Too many connections from'", f"{SISIMAI}/TooManyConn.pm"),
        (r"too many (?:connections|concurrent|sessions|smtp sessions|simultaneous)",
         r"connection (?:rate|frequency|limit)", r"connection limit", r"frequency limited"),
    ),
    PhraseClass(
        "rate-limited", "speeding", "the sender is sending too much too fast",
        (f"{GMAIL} 421/450/550 4.2.1/5.4.5 'user is receiving mail at a rate that prevents additional messages' / "
         "'Daily user sending limit exceeded'", f"{YAHOO} 421 4.7.0 [TS01] 'temporarily deferred'",
         f"{M365} 4.7.500-699 / 5.2.121 'sending limit exceeded'", f"{SISIMAI}/Speeding.pm"),
        (r"too many (?:messages|recipients|emails|mails)", r"sending (?:too fast|rate)", r"rate limit(?:ed)?",
         r"throttl", r"exceeded .{0,40}(?:rate|limit)", r"too fast", r"sent to too many",
         r"receiving mail (?:at a rate|too quickly)", r"sending limit exceeded"),
    ),
    PhraseClass(
        "sender-refused", "rejected", "the envelope sender (MAIL FROM) was refused",
        (f"{RFC3463} X.1.7/X.1.8 (bad sender's mailbox address syntax / system address)",
         f"{POSTFIX} smtpd(8): 'Sender address rejected: Domain not found'", f"{EXIM}: 'sender verify failed'",
         f"{SENDMAIL}: 'Domain of sender address ... does not exist'", f"{SISIMAI}/Rejected.pm"),
        (r"sender (?:address |domain )?(?:is )?(?:rejected|denied|refused|invalid|blocked|not allowed|unknown)",
         r"domain of sender address", r"sender (?:verify|verification) failed", r"mailfrom domain",
         r"(?:envelope|mail from|return[- ]path) .{0,40}(?:rejected|invalid|not allowed)", r"bad sender",
         r"invalid sender", r"sender .{0,40} (?:does not|doesn't) exist",
         r"your (?:e-?mail )?address (?:has been|is) (?:rejected|blocked|blacklisted)",
         r"(?:empty|null) (?:envelope )?senders? (?:is |are )?not allowed", r"unroutable sender address",
         r"sender domain (?:is empty|listed at)", r"mail from not owned by user",
         r"not allowed to post to this (?:mailing )?list", r"non-member to a members-only list"),
    ),
    PhraseClass(
        "mailbox-not-found", "userunknown",
        "the receiver looked the mailbox up in its directory and it does not exist (a statement of fact, "
        "given after DATA too by receivers that check recipients late)",
        (f"{RFC3463} X.1.1 (bad destination mailbox address)", "RFC 5321 550 'mailbox unavailable'",
         f"{QMAIL}: 'Sorry, no mailbox here by that name. (#5.1.1)'",
         f"{GMAIL} 550 5.1.1 'The email account that you tried to reach does not exist'",
         f"{M365} 5.1.1/5.1.10 'RESOLVER.ADR.RecipientNotFound' / '... wasn't found at ...', "
         "5.4.1 'Recipient address rejected: Access denied' (directory-based edge blocking)",
         f"{YAHOO} 552/554 'Requested mail action aborted, mailbox not found'",
         f"{DOMINO}: 'User ... not listed in Domino Directory'", f"{SISIMAI}/UserUnknown.pm",
         "Mail::DeliveryStatus::BounceParser _std_reason (user_unknown)"),
        (r"(?:recipient|mailbox|address|account|e-?mail address|user|customer) (?:\S+ )?(?:does not exist"
         r"|doesn't exist|doesnt exist|not exist|not found)",
         r"<{1,2}>{1,2}\.{0,3} (?:does not|doesn't|doesnt) exist",
         r"no such (?:mailbox|recipient|address|account)",
         r"(?:account|address|mailbox) (?:that )?you tried to reach (?:does not|doesn't) exist",
         r"non-?existent (?:recipient|mailbox|address|user|destination mailbox)",
         r"recipnotfound", r"recipientnotfound", r"recipient not found", r"(?:was not|wasn't) found at ",
         r"mailbox (?:is )?(?:<{1,2}>{1,2} )?(?:not available|unavailable|not present)",
         r"recipient address rejected: (?:access denied|user \S+ does not exist)",
         r"no mailbox (?:here|by that name|found)", r"doesn't have a .{1,40} account",
         r"does not have an? .{1,40} account", r"no account by that name",
         r"(?:address|account|user) (?:does not|doesn't) exist", r"address not found",
         r"not listed in .{0,40}(?:directory|address book)",
         r"no one at this address", r"email address could not be found", r"no longer accepts mail",
         r"(?:recipient|user) .{1,80} was not found", r"destination addresses were unknown",
         r"missing home directory", r"invalid or unknown virtual user", r"email name is not found",
         r"not an active address", r"archived recipient", r"no mail ?box available for this user",
         r"no existe (?:dicha persona|ese usuario)", r"(?:doesn't|does not) handle mail for that user",
         r"no longer on (?:this |the )?server", r"mail-box not found"),
    ),
    PhraseClass(
        "mailbox-unknown", "userunknown",
        "the address is unknown or invalid at the destination (the words content filters and some mobile "
        "carriers also use after DATA for a refusal: there they are read as recipient-filter)",
        (f"{RFC3463} X.1.1 (bad destination mailbox address)",
         f"{POSTFIX} smtpd(8): 'Recipient address rejected: User unknown in local recipient table'",
         f"{EXIM}: 'Unknown user' / 'no such user'", f"{SENDMAIL}: '... User unknown'",
         f"{SISIMAI}/UserUnknown.pm and Filtered.pm (user-unknown wording after DATA from filters)",
         "Mail::DeliveryStatus::BounceParser _std_reason (user_unknown: '<address> is unknown / not recognized')"),
        (r"user ?unknown", r"unknown (?:user|recipient|mailbox|local ?part|address|e-?mail address)",
         r"no such (?:user|person)", r"user (?:\S+ )?(?:not known|not active)",
         r"(?:recipient|mailbox|address|account|e-?mail address|user|customer) (?:\S+ )?(?:is )?(?:unknown"
         r"|not known|not recognized|invalid|not valid)",
         r"<{1,2}>{1,2} (?:is )?(?:unknown|not known|not recognized)",
         r"(?:invalid|bad|illegal|unknown) (?:recipient|mailbox|address|user|destination mailbox)",
         r"check if (?:the )?(?:e-?mail )?address is correct", r"is not a valid (?:mailbox|recipient|user)",
         r"not a valid (?:recipient|user|mailbox)", r"mailbox (?:is )?inactive", r"inactive (?:email )?address",
         r"recipient address rejected: (?:user unknown|unknown user|invalid user|invalid-recipient|userunknown)",
         r"#5\.1\.1 bad address", r"recipient address rejected\.?$", r"5\.1\.0 address rejected",
         r"not (?:a )?(?:known|local|valid) (?:user|recipient|address)", r"illegal user", r"unknown or illegal",
         r"destinataire invalide", r"utilisateur inconnu", r"badrcptto", r"validrcptto", r"no valid recipients",
         r"not our customer", r"addressee unknown", r"name is not recognized", r"no such local user",
         r"(?:invalid|unknown) (?:\S+ ){0,2}user ?id", r"can't accept user", r"bad[-_ ]recipient",
         r"invalid mailbox", r"recipient is not local", r"not known here", r"<{1,2}>{1,2} is invalid"),
    ),
    PhraseClass(
        "domain-accepts-no-mail", "notaccept", "the destination domain publishes that it accepts no mail",
        (f"{IANA} X.1.10 (recipient address has null MX, RFC 7505)",
         f"{GMAIL} 'DNS Error: ... doesn't receive email according to its MX'", f"{SISIMAI}/NotAccept.pm"),
        (r"(?:does not|doesn't|do not) (?:accept|receive) (?:any )?(?:e-?)?mail", r"null mx",
         r"(?:does not|doesn't) receive (?:any )?(?:e-?)?mail", r"not accepting (?:any )?(?:mail|messages)",
         r"no smtp service", r"smtp service not available"),
    ),
    PhraseClass(
        "network", "networkerror", "the receiving host could not be reached, or the connection failed",
        (f"{RFC3463} X.4.1 (no answer from host), X.4.2 (bad connection), X.4.6 (routing loop)",
         f"{POSTFIX} smtp(8): 'connect to HOST: Connection refused' / 'lost connection with HOST' / "
         "'Network is unreachable'", f"{SENDMAIL}: 'Deferred: Connection refused by'",
         f"{EXIM}: 'all hosts ... failed' / 'Connection timed out'", f"{SISIMAI}/NetworkError.pm"),
        (r"connection (?:refused|reset|closed|failed|dropped)", r"network (?:is )?unreachable", r"no route to host",
         r"lost connection", r"too many hops", r"mail(?:ing)? loop", r"loops back", r"routing loop",
         r"unable to connect", r"could not connect", r"host (?:is )?unreachable", r"hop count exceeded",
         r"message looping", r"unable to resolve route"),
    ),
    PhraseClass(
        "dns-temporary", "networkerror", "a DNS lookup failed for now (the answer may still come)",
        (f"{RFC3463} X.4.3 (directory server failure), X.4.4 (unable to route)",
         f"{POSTFIX} smtp(8)/dns: 'Name service error ... Host not found, try again' / "
         "'Temporary lookup failure'", "RFC 1035 SERVFAIL / RFC 2308", f"{SISIMAI}/NetworkError.pm"),
        (r"dns (?:error|failure|query failed)", r"not found, try again", r"servfail", r"name service error",
         r"temporary lookup failure", r"host name lookup failure", r"malformed (?:or unexpected )?name server reply",
         r"dns records for the destination computer could not be found"),
    ),
    PhraseClass(
        "domain-not-found", "hostunknown", "the recipient's domain or mail host does not exist in the DNS",
        (f"{RFC3463} X.1.2 (bad destination system address), X.4.4 (unable to route)",
         f"{POSTFIX} smtp(8): 'Host or domain name not found. Name service error for name=... type=MX'",
         f"{EXIM}: 'Unrouteable address' / 'all relevant MX records point to non-existent hosts'",
         f"{SENDMAIL}: 'Host unknown (Name server: ...: host not found)'",
         f"{QMAIL}: 'Sorry, I couldn't find any host named ... (#5.1.2)'",
         f"{GMAIL} 'DNS Error: Domain name not found'", f"{SISIMAI}/HostUnknown.pm"),
        (r"host (?:or domain name )?not found", r"host ?unknown", r"unknown (?:host|domain)",
         r"domain (?:name )?(?:not found|does not exist|doesn't exist|is not reachable|not reachable)",
         r"no such domain", r"invalid domain", r"unrout(?:e)?able (?:mail )?domain", r"domain .{0,60}not exist",
         r"name or service not known", r"no (?:mx|a) record", r"host .{0,60} not found",
         r"bad destination system address", r"domain is not valid", r"unrouteable address",
         r"couldn't find any host", r"mx records point to non-existent hosts", r"domain must exist",
         r"mail domain mentioned in email address is unknown", r"\b553 .{1,80}does not exist"),
    ),
    PhraseClass(
        "blocklist", "blocked", "the sending IP or host is blocked or listed on a DNS blocklist",
        (f"{RFC3463} X.7.1", f"{POSTFIX} smtpd(8): 'Client host rejected' / 'blocked using zen.spamhaus.org'",
         f"{M365} 5.7.606-649 'banned sending IP' / 'Access denied, banned sender'",
         f"{GMAIL} 421 4.7.0 'IP not in whitelist' / 'blocked'", f"{YAHOO} 553 5.7.1 [BL21] 'blocked using Spamhaus'",
         f"{SISIMAI}/Blocked.pm"),
        (r"block(?:ed|list|ed by| list)", r"black ?list", r"deny ?list", r"spamhaus", r"\brbl\b", r"dnsbl", r"banned",
         r"client host rejected", r"listed (?:in|on|at|by) ", r"service not available, closing transmission channel",
         r"not allowed to (?:send|connect)", r"ip .{0,40}(?:listed|refused)", r"rejected for (?:abuse|bad)",
         r"connection refused by", r"your (?:ip|host|server) (?:address )?(?:is |has been )?(?:listed|blocked"
         r"|blacklisted|rejected)", r"refused to talk to me: .{0,60}block", r"helo command rejected",
         r"sender ip address rejected", r"dynamic ips?\b", r"open proxy", r"listed as abusive",
         r"not currently accepting mail from your ip"),
    ),
    PhraseClass(
        "recipient-filter", "filtered", "the recipient (or a filter acting for them) refused this message",
        (f"{RFC3463} X.2.1/X.2.4", f"{SISIMAI}/Filtered.pm"),
        (r"filter", r"refused due to recipient", r"recipient preferences",
         r"rejected by (?:the )?(?:recipient|user)(?! domain)",
         r"does not (?:want|accept) (?:mail|messages) from"),
    ),
    PhraseClass(
        "content-error", "contenterror", "the message's format or encoding was refused",
        (f"{RFC3463} X.6.x (message content or media status)", f"{SISIMAI}/ContentError.pm"),
        (r"8-?bit data", r"header (?:error|syntax|format)",
         r"(?:invalid|malformed|improper|bad) (?:message )?(?:header|mime|content)", r"content (?:error|rejected)",
         r"media not supported"),
    ),
    PhraseClass(
        "syntax-error", "syntaxerror", "the SMTP dialogue itself was wrong",
        ("RFC 5321 500/501/503", f"{RFC3463} X.5.2", f"{SISIMAI}/SyntaxError.pm"),
        (r"syntax error", r"(?:command|parameter)s? (?:not )?(?:implemented|recognized|unrecognized)",
         r"unrecognized command", r"(?:bad|improper) sequence of commands", r"line too long"),
    ),
    PhraseClass(
        "system-full", "systemfull", "the receiving system is out of storage",
        (f"{RFC3463} X.3.1 (mail system full)", "RFC 5321 452 'insufficient system storage'",
         f"{SISIMAI}/SystemFull.pm"),
        (r"(?:system|disk) (?:is )?full", r"insufficient system storage", r"mail system full"),
    ),
    PhraseClass(
        "mailer-error", "mailererror", "a local delivery program failed",
        (f"{POSTFIX} local(8)/pipe(8): 'Command died with status'", f"{EXIM}: 'Child process of ... transport "
         "returned'", f"{SENDMAIL}: 'X-Unix' diagnostic", f"{SISIMAI}/MailerError.pm"),
        (r"procmail", r"x-unix", r"mailer error", r"\bpipe\b", r"command died", r"exit (?:status|code)",
         r"program (?:exited|error|failed)", r"local delivery failed", r"couldn't create"),
    ),
    PhraseClass(
        "expired", "expired", "the message waited in the queue until its lifetime ran out",
        (f"{RFC3463} X.4.7 (delivery time expired)", f"{POSTFIX} bounce(8): 'message ... was not delivered "
         "... too long in the queue' (maximal_queue_lifetime)", f"{EXIM}: 'retry timeout exceeded'",
         f"{SENDMAIL}: 'Cannot send message for 5 days'", f"{QMAIL}: 'this message has been in the queue too long'",
         f"{SISIMAI}/Expired.pm"),
        (r"expired", r"too long in (?:the )?queue", r"been in the queue too long", r"retry time", r"giving up",
         r"could not be delivered within", r"delivery time", r"timed? ?out", r"did not accept our requests to connect",
         r"delivery (?:is )?delayed", r"will (?:keep trying|retry)", r"unable to deliver in", r"will be retried",
         r"(?:could not be delivered|cannot send message) for (?:more than )?\d", r"allowed queue period",
         r"unable to deliver (?:message )?after (?:multiple|\d+) (?:retries|attempts)", r"server did not respond",
         r"after \d+ tries", r"not been collected after", r"could not find a gateway for"),
    ),
    PhraseClass(
        "security-error", "securityerror", "authentication or authorisation to send was refused",
        (f"{RFC3463} X.7.0/X.7.8 (authentication credentials invalid, RFC 4954)", "RFC 4954 530/535",
         f"{SISIMAI}/SecurityError.pm"),
        (r"security (?:check|violation|error|reasons)", r"smtp authentication", r"authentication required",
         r"not authorized", r"unauthori[sz]ed",
         r"authentication (?:credentials invalid|failed|failure|unsuccessful)",
         r"unauthenticated senders not allowed", r"must (?:authenticate|be authenticated)",
         r"access (?:denied|forbidden)"),
    ),
    PhraseClass(
        "tls-required", "failedstarttls", "the receiver requires (or failed) TLS",
        (f"{IANA} X.7.10 (encryption needed), X.7.30 (REQUIRETLS)", f"{POSTFIX} smtp(8): 'TLS is required, but "
         "was not offered', 'Server certificate not verified'", f"{SISIMAI}/FailedSTARTTLS.pm"),
        (r"starttls", r"tls (?:is )?required", r"must issue a starttls", r"encryption (?:is )?(?:required|needed)",
         r"certificate not (?:verified|trusted)",
         r"\btls\b"),
    ),
    PhraseClass(
        "system-error", "systemerror", "the receiving system failed for a reason of its own",
        (f"{RFC3463} X.3.0/X.3.5 (system incorrectly configured)", "RFC 5321 451 'local error in processing'",
         f"{POSTFIX}: 'temporary failure' / 'unknown mail transport error'", f"{SISIMAI}/SystemError.pm"),
        (r"system (?:error|failure|config)", r"server (?:error|failure)", r"internal (?:server )?error",
         r"local (?:error|problem)", r"temporary local (?:problem|failure|error)", r"configuration error",
         r"misconfigur", r"try (?:again )?later", r"server busy", r"resources? (?:temporarily )?unavailable",
         r"lock failure", r"queue file write error", r"interrupted system call",
         r"service currently unavailable", r"timeout waiting for input", r"forwarding loop"),
    ),
)  # fmt: skip

BY_NAME: dict[str, PhraseClass] = {c.name: c for c in CLASSES}
