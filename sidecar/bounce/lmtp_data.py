"""The message part of an LMTP transaction: framing, dot-unstuffing and spooling in bulk, and the
per-recipient copies handed to group commit (:mod:`sidecar.bounce.lmtp`)."""

from __future__ import annotations

import tempfile
from typing import Any

SPOOL_MEMORY = 256 * 1024  # a message larger than this is spooled to a temporary file
END = b"\r\n.\r\n"


class DataSink:
    """Takes the bytes after ``354`` until ``CRLF.CRLF``: keeps at most ``limit`` bytes of the
    message (dot-unstuffed, LF line ends, as pipe(8) gives it), counts the rest, and holds little
    memory whatever arrives (a spooled temporary file, on disk past :data:`SPOOL_MEMORY`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spool: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 - closed after recording
        # a CRLF before the first line: a "." or ".." first line then looks like any other line
        self.pending = bytearray(b"\r\n")
        self.lead = 2
        self.kept = 0
        self.total = 0

    @property
    def truncated(self) -> bool:
        return self.total > self.kept

    def feed(self, data: bytes) -> bytes | None:
        """None while the message goes on; at its end, the bytes that followed it (the next commands)."""
        start = max(0, len(self.pending) - 4)
        self.pending += data
        end = self.pending.find(END, start)
        if end >= 0:
            rest = bytes(self.pending[end + len(END) :])
            self._emit(bytes(self.pending[: end + 2]))  # the last line keeps its line end
            self.pending = bytearray()
            self.spool.flush()
            return rest
        # Keep the last 4 bytes (a terminator cannot start before them) and never split a CRLF or a
        # CRLF followed by a dot from its neighbours: each emitted piece is unstuffed on its own.
        cut = len(self.pending) - 4
        if cut > 0 and self.pending[cut - 1] == 13:
            cut -= 1
        for p in range(max(0, cut - 3), cut):
            if self.pending[p : p + 2] == b"\r\n":
                cut = p
                break
        if cut > 0:
            self._emit(bytes(self.pending[:cut]))
            del self.pending[:cut]
        return None

    def _emit(self, chunk: bytes) -> None:
        chunk = chunk.replace(b"\r\n..", b"\r\n.")
        if self.lead:
            chunk, self.lead = chunk[self.lead :], 0
        chunk = chunk.replace(b"\r\n", b"\n")
        self.total += len(chunk)
        room = self.limit - self.kept
        if room > 0:
            part = chunk[:room]
            self.spool.write(part)
            self.kept += len(part)

    def close(self) -> None:
        self.spool.close()


class SharedBody:
    """One message's spool, read once for all its recipients' copies and closed after the last."""

    def __init__(self, spool: Any, copies: int) -> None:
        self.spool = spool
        self.copies = copies
        self.data: bytes | None = None

    def read(self) -> bytes:
        if self.data is None:
            self.spool.seek(0)
            self.data = bytes(self.spool.read())
        return self.data

    def release(self) -> None:
        self.copies -= 1
        if self.copies <= 0:
            self.data = None
            self.spool.close()


class RecipientCopy:
    """What :class:`sidecar.bounce.group.GroupCommit` reads as a spool: the lines pipe(8) would
    add for this recipient, then the shared message."""

    def __init__(self, prefix: bytes, body: SharedBody) -> None:
        self.prefix = prefix
        self.body = body
        self.closed = False

    def seek(self, offset: int) -> None:
        pass

    def read(self) -> bytes:
        return self.prefix + self.body.read()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.body.release()
