"""Streaming suppression export (CSV or JSON lines) with flat memory.

A push producer registered on the request: it reads one keyset page at a time in the
thread pool, formats it there too, writes it, and reads the next page only while the
transport is not paused (backpressure). Memory holds about one page, whatever the size.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.web.server import Request
from zope.interface import implementer

from sidecar.http.queries import SuppressionFilter, export_chunk
from sidecar.suppression.rows import CSV_FIELDS, csv_escape
from sidecar.units import iso

log = logging.getLogger("sidecar.http")


def format_chunk(rows: list[Any], fmt: str, header: bool) -> bytes:
    buf = io.StringIO()
    if fmt == "csv":
        w = csv.writer(buf, lineterminator="\r\n")
        if header:
            w.writerow(CSV_FIELDS)
        esc = csv_escape  # a cell a spreadsheet would run as a formula gets a leading ' (import takes it off)
        w.writerows(
            (esc(r[1]), esc(r[2]), esc(r[3]), esc(r[4] or ""), iso(r[5]), iso(r[6]), esc(r[7]), esc(r[8] or ""))
            for r in rows
        )
    else:
        dumps = json.dumps
        for r in rows:
            buf.write(
                dumps(
                    {
                        "address": r[1],
                        "tenant": r[2],
                        "reason": r[3],
                        "category": r[4],
                        "created_at": iso(r[5]),
                        "expires_at": iso(r[6]) or None,
                        "source": r[7],
                        "note": r[8],
                        "active": bool(r[9]),
                    },
                    separators=(",", ":"),
                )
            )
            buf.write("\n")
    return buf.getvalue().encode("utf-8")


@implementer(IPushProducer)
class ExportProducer:
    def __init__(self, api: Any, request: Request, flt: SuppressionFilter, fmt: str, chunk: int = 5000) -> None:
        self.api, self.request, self.filter, self.fmt, self.chunk = api, request, flt, fmt, chunk
        self.after = 0
        self.paused = False
        self.stopped = False
        self.reading = False
        self.header = True
        self.rows = 0
        self.done: Deferred[None] = Deferred()

    def start(self) -> Deferred:
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._next()
        return self.done

    def _next(self) -> None:
        if self.stopped or self.paused or self.reading:
            return
        self.reading = True
        d = self.api.run(self._read, self.after, self.header)
        d.addCallbacks(self._got, self._failed)

    def _read(self, after: int, header: bool) -> tuple[bytes, int | None, int]:
        rows = export_chunk(self.api.engine, self.filter, after, self.chunk)
        last = rows[-1][0] if len(rows) == self.chunk else None
        return format_chunk(rows, self.fmt, header), last, len(rows)

    def _got(self, result: tuple[bytes, int | None, int]) -> None:
        self.reading = False
        if self.stopped:
            return
        data, last, n = result
        self.header = False
        self.rows += n
        if data:
            self.request.write(data)
        if last is None:
            self._finish()
        else:
            self.after = last
            self._next()

    def _failed(self, err: Any) -> None:
        self.reading = False
        log.error("export failed after %d rows: %s", self.rows, err.getErrorMessage())
        self.stopped = True
        self.request.unregisterProducer()
        # Headers are gone already: cut the connection so the client sees a truncated body.
        if self.request.channel is not None and self.request.channel.transport is not None:
            self.request.channel.transport.abortConnection()  # type: ignore[attr-defined]
        self.done.callback(None)

    def _finish(self) -> None:
        self.stopped = True
        self.request.unregisterProducer()
        self.request.finish()
        self.done.callback(None)

    # IPushProducer
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._next()

    def stopProducing(self) -> None:
        if not self.stopped:
            self.stopped = True
            if not self.done.called:
                self.done.callback(None)
