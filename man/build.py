"""Generate the manual pages: sidecar(8) from the argparse tree, sidecar.toml(5) from
docs/configuration.md. ``make man`` writes them to man/; tests/unit/test_manpages.py
regenerates both and compares, so they cannot drift from their sources.

sidecar(8) is argparse-manpage's rendering of :func:`sidecar.cli.parser.build_parser` plus the
FILES, ENVIRONMENT and EXIT STATUS sections below. sidecar.toml(5) is docs/configuration.md
parsed with markdown-it-py and written as roff (headings, paragraphs, lists, code blocks and
the key tables as tagged paragraphs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from argparse_manpage.manpage import Manpage
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sidecar import __version__  # noqa: E402
from sidecar.cli.parser import build_parser  # noqa: E402

# The page date: the month of the version above (argparse-manpage would use today's date).
DATE = "2026-11"
SOURCE = f"postfix-sidecar {__version__}"

FILES = r"""
.TP
.I /etc/postfix\-sidecar/sidecar.toml
The configuration file read when neither \fB\-\-config\fR nor \fBSIDECAR_CONFIG\fR names one; see
.BR sidecar.toml (5).
.TP
.I /var/lib/postfix\-sidecar/
The state directory of the systemd unit: the SQLite database.
.TP
.I /run/postfix\-sidecar/
Sockets: the ingest hand\-off socket (ingest/ingest.sock), a unix policy socket.
.TP
.I postfix\-sidecar.service
The systemd unit shipped with the package (\fBsidecar \-\-print\-file postfix\-sidecar.service\fR):
Type=notify, READY=1 once the state is loaded and the listeners are up, SIGHUP re\-reads and
validates the configuration (\fBsystemctl reload\fR).
"""

ENVIRONMENT = r"""
.TP
.B SIDECAR_CONFIG
The configuration file, when \fB\-\-config\fR is not given.
.TP
.B SIDECAR_API_URL\fR, \fBSIDECAR_API_TOKEN
The management API and its bearer token, for the commands that take \fB\-\-api\fR.
.TP
.B NOTIFY_SOCKET
Set by systemd: \fBsidecar serve\fR sends READY=1, RELOADING=1 and STOPPING=1 there.
"""

EXIT_STATUS = r"""
.TP
.B 0
Success.
.TP
.B 2
A usage error.
.TP
.B 69
The database is unavailable, or the configured SQLite file does not exist (only \fBserve\fR and
\fBdb upgrade\fR create it).
.TP
.B 75
\fBsidecar ingest\fR: a temporary failure; Postfix keeps the message and retries.
.TP
.B 78
A configuration error, or no configuration file found; the message names the key or the places
looked in.
"""


def sidecar_8() -> str:
    parser = build_parser()
    page = Manpage(
        parser,
        _data={
            "project_name": "postfix-sidecar",
            "version": __version__,
            "manual_section": 8,
            "manual_title": "System Manager's Manual",
            "description": "policy server, bounce ingester and store beside Postfix",
            "date": DATE,
        },
    )
    page.add_section("files", ">", FILES.strip())
    page.add_section("environment", ">", ENVIRONMENT.strip())
    page.add_section("exit status", ">", EXIT_STATUS.strip())
    page.add_section(
        "see also", ">", ".BR sidecar.toml (5),\n.BR postconf (5),\n.BR pipe (8),\n.BR systemd.service (5)"
    )
    return str(page)


# ---------------------------------------------------------------------------------------
# sidecar.toml(5) from docs/configuration.md


def _escape(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return text


def _line_start(text: str) -> str:
    """A roff line must not start with a dot or an apostrophe (a request)."""
    return "\\&" + text if text[:1] in (".", "'") else text


def _inline(token: Token) -> str:
    out: list[str] = []
    for child in token.children or []:
        t = child.type
        if t == "text":
            out.append(_escape(child.content))
        elif t == "code_inline":
            out.append("\\fB" + _escape(child.content) + "\\fR")
        elif t in ("strong_open", "em_open"):
            out.append("\\fB" if t == "strong_open" else "\\fI")
        elif t in ("strong_close", "em_close"):
            out.append("\\fR")
        elif t in ("softbreak", "hardbreak"):
            out.append("\n")
        # link_open/link_close: the link text stays, the target (a repository path) goes
    return "".join(out)


def _rows(tokens: list[Token], i: int) -> tuple[list[list[str]], int]:
    rows: list[list[str]] = []
    row: list[str] = []
    while tokens[i].type != "table_close":
        t = tokens[i]
        if t.type == "tr_open":
            row = []
        elif t.type == "inline":
            row.append(_inline(t))
        elif t.type == "tr_close":
            rows.append(row)
        i += 1
    return rows, i


def sidecar_toml_5(markdown: str) -> str:
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    out = [
        f'.TH SIDECAR.TOML "5" "{DATE}" "{SOURCE}" "File Formats Manual"',
        ".SH NAME",
        "sidecar.toml \\- configuration file of postfix\\-sidecar",
        ".SH SYNOPSIS",
        ".I /etc/postfix\\-sidecar/sidecar.toml",
    ]
    i, list_depth, first_heading = 0, 0, True
    while i < len(tokens):
        t = tokens[i]
        if t.type == "heading_open":
            text = _inline(tokens[i + 1]).replace("\\fB", "").replace("\\fR", "")
            if t.tag == "h1":
                out.append(".SH DESCRIPTION")
            elif t.tag == "h2":
                out.append(f'.SH "{text.upper()}"')
            else:
                out.append(f'.SS "{text}"')
            first_heading = False
            i += 3
            continue
        if t.type == "paragraph_open":
            text = _line_start(_inline(tokens[i + 1]))
            out.append(text if list_depth else ".PP\n" + text)
            i += 3
            continue
        if t.type in ("bullet_list_open", "ordered_list_open"):
            list_depth += 1
        elif t.type in ("bullet_list_close", "ordered_list_close"):
            list_depth -= 1
            out.append(".PP")
        elif t.type == "list_item_open":
            out.append(".IP \\(bu 2")
        elif t.type in ("fence", "code_block"):
            lines = [_line_start(_escape(line)) for line in t.content.rstrip("\n").split("\n")]
            out += [".PP", ".RS 4", ".nf", *lines, ".fi", ".RE"]
        elif t.type == "table_open":
            rows, i = _rows(tokens, i)
            for key, default, *meaning in rows[1:]:
                out += [".TP", f"{key} (default {default})", _line_start(" ".join(meaning))]
            out.append(".PP")
        i += 1
    del first_heading
    out += ['.SH "SEE ALSO"', ".BR sidecar (8),", ".BR postconf (5)"]
    return "\n".join(out) + "\n"


def pages() -> dict[str, str]:
    config_doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    return {"sidecar.8": sidecar_8(), "sidecar.toml.5": sidecar_toml_5(config_doc)}


def main() -> int:
    ap = argparse.ArgumentParser(description="write the manual pages into a directory")
    ap.add_argument("directory", nargs="?", default=str(ROOT / "man"))
    args = ap.parse_args()
    for name, text in pages().items():
        path = Path(args.directory) / name
        path.write_text(text, encoding="utf-8")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
