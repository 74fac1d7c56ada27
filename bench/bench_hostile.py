"""Benchmark: hostile messages through ``parse_message`` (prints figures, not a test).

    .venv/bin/python bench/bench_hostile.py [--case NAME ...] [--timeout S] [--root CHECKOUT]

Builds each hostile message itself (no sample files), then parses it in a fresh child
process and prints, per case, the message size, the parse time, the peak RSS of the child
(and how much the parse raised it above the RSS before parsing), the number of recipients
and the limits the parser reported; then the worst time and the worst peak. ``--root`` runs
another checkout's parser (e.g. ``git archive <commit> sidecar | tar -x -C /tmp/old``).
A case over ``--timeout`` seconds is killed and shown as ``>T``.
"""

from __future__ import annotations

import argparse
import base64
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
SIZE = 10 * MB - 64 * 1024  # "any message under 10 MB"

HEAD = (
    b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\n"
    b"To: sender@example.org\n"
    b"Subject: Undelivered Mail Returned to Sender\n"
    b"Message-ID: <hostile@mx.example.net>\n"
)


def _fill(unit: bytes, size: int = SIZE) -> bytes:
    return unit * (size // len(unit))


def _text_bounce(body: bytes, extra: bytes = b"") -> bytes:
    return HEAD + extra + b"Content-Type: text/plain\n\n" + body


def _report(status_part: bytes, ctype: bytes = b"message/delivery-status", text: bytes = b"failed\n") -> bytes:
    return (
        HEAD + b'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\n"
        + text
        + b"\n--b\nContent-Type: "
        + ctype
        + b"\n\n"
        + status_part
        + b"\n--b--\n"
    )


def text_10mb() -> bytes:
    return _text_bounce(_fill(b"The quick brown fox jumps over the lazy dog and nothing was delivered.\n"))


def one_line_10mb() -> bytes:
    return _text_bounce(_fill(b"xyzzy plugh ") + b"\n")


def dsn_100k_recipients() -> bytes:
    blocks = b"".join(
        b"Final-Recipient: rfc822; user%d@example.com\nAction: failed\nStatus: 5.1.1\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\n\n" % i
        for i in range(100_000)
    )
    return _report(b"Reporting-MTA: dns; mx.example.net\n\n" + blocks)


def dsn_100k_in_text() -> bytes:
    blocks = b"".join(b"Final-Recipient: rfc822; u%d@example.com\nAction: failed\n\n" % i for i in range(100_000))
    return _text_bounce(blocks)


def prose_100k_addresses() -> bytes:
    lines = b"".join(
        b"<user%d@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1 unknown user\n" % i
        for i in range(100_000)
    )
    return _text_bounce(b"I'm sorry to have to inform you that your message could not be delivered.\n\n" + lines)


def prose_100k_one_line() -> bytes:
    return _text_bounce(b"Delivery failed to: " + b", ".join(b"user%d@example.com" % i for i in range(100_000)) + b"\n")


def prose_100k_one_paragraph() -> bytes:
    return _text_bounce(b"Undeliverable:\n" + b"".join(b"u%d@example.com\n" % i for i in range(100_000)))


def arf_100k_rcpt_to() -> bytes:
    fields = b"Feedback-Type: abuse\nUser-Agent: x/1\nVersion: 1\n" + b"".join(
        b"Original-Rcpt-To: user%d@example.com\n" % i for i in range(100_000)
    )
    raw = _report(fields, b"message/feedback-report")
    return raw.replace(b"report-type=delivery-status", b"report-type=feedback-report")


def x_failed_recipients_100k() -> bytes:
    value = b", ".join(b"user%d@example.com" % i for i in range(100_000))
    return HEAD + b"X-Failed-Recipients: " + value + b"\nContent-Type: text/plain\n\nfailed\n"


def dsn_paths_failed_header() -> bytes:
    """Exim-style: 2,500 mailbox-path recipients, their addresses in X-Failed-Recipients."""
    n = 2_500
    value = b", ".join(b"user%d@example.com" % i for i in range(n))
    blocks = b"".join(b"Final-Recipient: rfc822; /var/mail/u\nAction: failed\nStatus: 5.2.2\n\n" for _ in range(n))
    return _report(b"Reporting-MTA: dns; mx.example.net\n\n" + blocks).replace(
        b"Message-ID", b"X-Failed-Recipients: " + value + b"\nMessage-ID"
    )


def ses_json_100k() -> bytes:
    """An SES bounce notification naming 100,000 bounced recipients."""
    one = '{{"emailAddress":"user{}@example.com","status":"5.1.1","action":"failed"}}'
    rcpts = ",".join(one.format(i) for i in range(100_000))
    body = '{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":[' + rcpts + "]}}"
    return _text_bounce(body.encode())


def deep_nesting() -> bytes:
    depth = 20_000
    head = b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\n\n--n%d\n' % (i, i) for i in range(depth))
    return HEAD + head + b"Content-Type: text/plain\n\nUser unknown: a@b.example\n"


def many_parts() -> bytes:
    parts = b"".join(b"--p\nContent-Type: text/plain\n\npart %d user%d@example.com\n" % (i, i) for i in range(100_000))
    return HEAD + b'Content-Type: multipart/mixed; boundary="p"\n\n' + parts + b"--p--\n"


def nested_whole_copies() -> bytes:
    """Each level holds 5 copies of the level below (a 75 KB part at the bottom): bytes multiply."""
    inner = b"Content-Type: text/plain\n\n" + _fill(b"unknown user\n", 75_000)
    for level in range(3):
        boundary = b"L%d" % level
        inner = (
            b'Content-Type: multipart/mixed; boundary="'
            + boundary
            + b'"\n\n'
            + b"".join(b"--" + boundary + b"\n" + inner + b"\n" for _ in range(5))
            + b"--"
            + boundary
            + b"--\n"
        )
    return HEAD + inner


def content_type_params() -> bytes:
    """A Content-Type with 50,000 parameters (the stdlib's parameter split is quadratic)."""
    params = b"a=b; " * 50_000
    return (
        HEAD + b"Content-Type: multipart/mixed; " + params + b'boundary="x"\n\n--x\nContent-Type: text/plain\n\n'
        b"nothing\n--x--\n"
    )


def nested_in_original() -> bytes:
    """A report whose returned original nests multiparts 1,500 deep (our walk never enters it)."""
    depth = 1_500
    nest = b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\n\n--n%d\n' % (i, i) for i in range(depth))
    return (
        HEAD + b'Content-Type: multipart/mixed; boundary="o"\n\n--o\nContent-Type: text/plain\n\n'
        b"nothing found here\n--o\nContent-Type: message/rfc822\n\nSubject: original\n"
        + nest
        + b"Content-Type: text/plain\n\nhi\n--o--\n"
    )


def huge_header_block() -> bytes:
    received = b"Received: from relay.example.net (relay.example.net [192.0.2.1]) by mx.example.net; id x\n"
    return HEAD + _fill(received) + b"\nuser unknown: a@b.example\n"


def huge_folded_header() -> bytes:
    return HEAD + b"X-Junk: start\n" + _fill(b" folded continuation line of junk\n") + b"\nuser unknown: a@b.example\n"


def base64_text_10mb() -> bytes:
    body = base64.encodebytes(_fill(b"Delivery failed for a recipient. ", 7 * MB))
    return HEAD + b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n" + body


def base64_dsn_10mb() -> bytes:
    blocks = _fill(b"Final-Recipient: rfc822; u@example.com\nAction: failed\nStatus: 5.1.1\n\n", 7 * MB)
    part = base64.encodebytes(blocks)
    return _report(part, b"message/delivery-status\nContent-Transfer-Encoding: base64")


def regex_smtp_command_blanks() -> bytes:
    """`smtp command` followed by a long run of blank lines (nested \\s* quantifiers)."""
    return _text_bounce(b"user unknown: a@b.example\n\nsmtp command" + b" \n" * 200_000 + b"x\n")


def regex_relaying_repeats() -> bytes:
    """An unbounded `.*` between repeated literals, in a Diagnostic-Code."""
    diag = b"relaying to " * 40_000
    return _report(b"Final-Recipient: rfc822; a@b.example\nAction: failed\nDiagnostic-Code: smtp; " + diag + b"\n")


def regex_lhost_repeats() -> bytes:
    """MessageLabs' family pattern (``542 ... rejected``) over a diagnostic of repeats."""
    diag = b"542 " * 100_000 + b"sending ip " * 50_000
    raw = _report(b"Final-Recipient: rfc822; a@b.example\nAction: failed\nDiagnostic-Code: smtp; " + diag + b"\n")
    return raw.replace(b"MAILER-DAEMON@mx.example.net", b"mailer-daemon@messagelabs.com").replace(
        b"Message-ID", b"X-Msg-Ref: server-1.messagelabs.com\nMessage-ID"
    )


def fml_refusals() -> bytes:
    """An fml list refusal naming 100,000 addresses (its reason was read once per address)."""
    head = (
        b"From: list-admin@ml.example.jp\nX-MLServer: fml [fml 4.0]\nSubject: error\n"
        b"Message-ID: <20010101.FML12345.list@ml.example.jp>\nContent-Type: text/plain\n\n"
    )
    return (
        head
        + b"You are not a member of this mailing list.\n"
        + b"".join(b"<user%d@example.com>.\n" % i for i in range(100_000))
    )


def regex_address_chars() -> bytes:
    """Long runs of address-local-part characters with and without an ``@``."""
    return _text_bounce(_fill(b"!" * 1000 + b"@" + b"-" * 1000 + b" ", SIZE // 2) + b"\n" + _fill(b"=-", SIZE // 4))


def regex_marker_dashes() -> bytes:
    return _text_bounce(b"undeliverable a@b.example\n" + _fill(b"-", SIZE // 2) + b"\n" + _fill(b">\n", SIZE // 4))


def json_braces() -> bytes:
    return _text_bounce(b'notificationType {"' + _fill(b"{", SIZE // 2))


def not_a_bounce_10mb() -> bytes:
    return b"From: someone@example.org\nSubject: hello\nContent-Type: text/plain\n\n" + _fill(b"hello there\n")


CASES: dict[str, Callable[[], bytes]] = {
    f.__name__: f
    for f in (
        text_10mb,
        one_line_10mb,
        dsn_100k_recipients,
        dsn_100k_in_text,
        prose_100k_addresses,
        prose_100k_one_line,
        prose_100k_one_paragraph,
        arf_100k_rcpt_to,
        x_failed_recipients_100k,
        dsn_paths_failed_header,
        ses_json_100k,
        deep_nesting,
        many_parts,
        nested_whole_copies,
        content_type_params,
        nested_in_original,
        huge_header_block,
        huge_folded_header,
        base64_text_10mb,
        base64_dsn_10mb,
        regex_smtp_command_blanks,
        regex_relaying_repeats,
        regex_lhost_repeats,
        fml_refusals,
        regex_address_chars,
        regex_marker_dashes,
        json_braces,
        not_a_bounce_10mb,
    )
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(name: str, root: str) -> None:
    sys.path.insert(0, root)
    from sidecar.bounce.parse import PARSER_VERSION, parse_message

    parse_message(HEAD + b"\nuser unknown: warm@up.example\n")  # imports, regex compilation
    try:
        import flufl.bounce

        flufl.bounce.all_failures(__import__("email").message_from_bytes(HEAD + b"\nx\n"))
    except ImportError:
        pass
    raw = CASES[name]()
    before = _rss_mb()
    t0 = time.perf_counter()
    parsed = parse_message(raw)
    seconds = time.perf_counter() - t0
    peak = _rss_mb()
    limits = [getattr(x, "value", str(x)) for x in getattr(parsed, "limits", ())]
    print(
        json.dumps(
            {
                "version": PARSER_VERSION,
                "bytes": len(raw),
                "seconds": seconds,
                "peak_mb": peak,
                "delta_mb": peak - before,
                "kind": parsed.kind.value,
                "recipients": len(parsed.recipients),
                "omitted": getattr(parsed, "recipients_omitted", 0),
                "limits": limits,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="only these cases (repeatable)")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--root", default=str(ROOT), help="checkout whose parser to run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, str(Path(args.root).resolve()))
        return
    names = args.case or list(CASES)
    print(f"{'case':28} {'MB':>5} {'seconds':>8} {'peak MB':>8} {'+MB':>7} {'kind':>10} {'rcpts':>6}  limits")
    worst_time: tuple[float, str] = (0.0, "")
    worst_mem: tuple[float, str] = (0.0, "")
    version = "?"
    for name in names:
        cmd = [sys.executable, __file__, "--child", name, "--root", args.root]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=True).stdout
        except subprocess.TimeoutExpired:
            print(f"{name:28} {'':>5} {'>' + format(args.timeout, '.0f'):>8}")
            worst_time = max(worst_time, (args.timeout, name + " (timeout)"))
            continue
        except subprocess.CalledProcessError as exc:
            print(f"{name:28} failed: {exc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out)
        version = r["version"]
        print(
            f"{name:28} {r['bytes'] / MB:5.1f} {r['seconds']:8.3f} {r['peak_mb']:8.0f} {r['delta_mb']:7.0f}"
            f" {r['kind']:>10} {r['recipients']:6d}  {','.join(r['limits'])}"
            + (f" (+{r['omitted']} omitted)" if r["omitted"] else "")
        )
        worst_time = max(worst_time, (r["seconds"], name))
        worst_mem = max(worst_mem, (r["peak_mb"], name))
    print(
        f"parser {version}: worst time {worst_time[0]:.3f} s ({worst_time[1]}), "
        f"worst peak RSS {worst_mem[0]:.0f} MB ({worst_mem[1]})"
    )


if __name__ == "__main__":
    main()
