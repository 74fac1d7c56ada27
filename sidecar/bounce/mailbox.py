"""``sidecar import PATH``: bring historical bounces in from an mbox file or a Maildir.

Every message goes through the same :class:`~sidecar.bounce.record.Recorder` as the pipe
command (dedupe by sha256, one transaction per message). The envelope comes from the
message's own headers: ``Delivered-To``/``X-Original-To`` (recipient and VERP extension
after ``+``), ``Return-Path`` (sender) and ``Date`` (the time events are recorded at, so soft
bounce windows and expiries are historical, not "now").
"""

from __future__ import annotations

import email.utils
import mailbox
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from typing import IO, Any

from sidecar.bounce.derive import MessageState
from sidecar.bounce.envelope import Envelope


class MailboxError(ValueError):
    """PATH is neither an mbox file nor a Maildir (nor a directory of message files)."""


@dataclass
class ImportStats:
    messages: int = 0
    recipients: int = 0
    suppressions: int = 0
    duplicates: int = 0
    unparsed: int = 0
    not_bounce: int = 0
    elapsed: float = 0.0

    def summary(self) -> str:
        rate = self.messages / self.elapsed if self.elapsed > 0 else 0.0
        return (
            f"imported {self.messages} messages in {self.elapsed:.1f}s ({rate:.0f}/s): "
            f"{self.recipients} recipients, {self.suppressions} suppressions, {self.duplicates} duplicates, "
            f"{self.unparsed} unparsed, {self.not_bounce} not bounces"
        )


def open_source(path: str) -> tuple[str, int, Iterator[bytes]]:
    """(format, message count, iterator of raw messages) for an mbox, a Maildir or a directory."""
    if os.path.isdir(path):
        if os.path.isdir(os.path.join(path, "cur")) or os.path.isdir(os.path.join(path, "new")):
            md = mailbox.Maildir(path, factory=None, create=False)
            keys = sorted(md.keys())
            return "maildir", len(keys), (md.get_bytes(k) for k in keys)
        files = sorted(
            os.path.join(path, f)
            for f in os.listdir(path)
            if os.path.isfile(os.path.join(path, f)) and not f.startswith(".")
        )
        return "directory", len(files), (_read(f) for f in files)
    if not os.path.isfile(path):
        raise MailboxError(f"{path}: no such file or directory")
    with open(path, "rb") as fh:
        head = fh.read(5)
    if head != b"From " and head:
        raise MailboxError(f"{path}: not an mbox (does not start with a 'From ' line) and not a Maildir")
    mb = mailbox.mbox(path, factory=None, create=False)
    keys = list(mb.keys())
    return "mbox", len(keys), (mb.get_bytes(k) for k in keys)


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def envelope_of(raw: bytes, now: float) -> tuple[Envelope, float]:
    """The envelope pipe(8) would have given, from headers; and the message's time."""
    try:
        h = BytesHeaderParser().parsebytes(raw[:65536])
        rcpt = str(h.get("Delivered-To") or h.get("X-Original-To") or "").strip().strip("<>")
        sender = str(h.get("Return-Path") or "").strip().strip("<>")
        when = now
        if h.get("Date"):
            when = min(now, email.utils.parsedate_to_datetime(str(h["Date"])).timestamp())
    except (ValueError, TypeError, IndexError, OverflowError):
        rcpt, sender, when = "", "", now
    local = rcpt.rpartition("@")[0]
    extension = local.split("+", 1)[1] if "+" in local else ""
    return Envelope(sender=sender or "MAILER-DAEMON", recipient=rcpt, extension=extension, size=len(raw)), when


class Progress:
    """A progress line on stderr: redrawn in place on a terminal, a line every 10 s otherwise."""

    def __init__(self, total: int, stream: IO[str] | None = None, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = self.last = time.monotonic()

    def line(self, done: int, stats: ImportStats) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        pct = 100.0 * done / self.total if self.total else 100.0
        width = 30
        bar = "#" * int(width * pct / 100) + "-" * (width - int(width * pct / 100))
        return (
            f"[{bar}] {done}/{self.total} {pct:3.0f}% {done / elapsed:.0f} msg/s "
            f"sup={stats.suppressions} dup={stats.duplicates} unparsed={stats.unparsed}"
        )

    def update(self, done: int, stats: ImportStats, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty and (final or now - self.last >= 0.1):
            self.stream.write("\r" + self.line(done, stats) + ("\n" if final else ""))
        elif not self.tty and (final or now - self.last >= 10.0):
            self.stream.write(self.line(done, stats) + "\n")
        else:
            return
        self.last = now
        self.stream.flush()


def import_path(recorder: Any, path: str, *, progress: bool = True, stream: IO[str] | None = None) -> ImportStats:
    """Record every message of ``path``; per-message parser crashes are stored as unparsed.

    A database failure aborts the import (already imported messages stay; rerunning skips
    them as duplicates).
    """
    fmt, total, messages = open_source(path)
    stats = ImportStats()
    bar = Progress(total, stream, enabled=progress)
    t0 = time.monotonic()
    for raw in messages:
        now = time.time()
        env, when = envelope_of(raw, now)
        out = recorder.record(raw, env, now=when, keep_parse_errors=True)
        stats.messages += 1
        stats.recipients += out.recipients
        stats.suppressions += out.suppressions
        if out.outcome == MessageState.DUPLICATE:
            stats.duplicates += 1
        elif out.outcome in (MessageState.UNPARSED, MessageState.BAD_VERP):
            stats.unparsed += 1
        elif out.outcome == MessageState.NOT_BOUNCE:
            stats.not_bounce += 1
        bar.update(stats.messages, stats)
    stats.elapsed = time.monotonic() - t0
    bar.update(stats.messages, stats, final=True)
    return stats
