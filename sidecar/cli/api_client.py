"""A small client of the management API, for the CLI's ``--api URL`` mode (standard library only)."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import IO, Any


class ApiClientError(RuntimeError):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}" + (f" (field {field})" if field else ""))
        self.status, self.field = status, field


class ApiClient:
    def __init__(self, base: str, token: str | None, timeout: float = 60.0) -> None:
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _open(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        data: bytes | None = None,
        ctype: str = "application/json",
    ) -> Any:
        q = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base + path + ("?" + urllib.parse.urlencode(q) if q else "")
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if data is not None:
            headers["Content-Type"] = ctype
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read())["error"]
                raise ApiClientError(e.code, err["message"], err.get("field")) from None
            except (ValueError, KeyError, TypeError):
                raise ApiClientError(e.code, e.reason) from None
        except urllib.error.URLError as e:
            raise ApiClientError(0, f"cannot reach {self.base}: {e.reason}") from None

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
        data: bytes | None = None,
        ctype: str = "application/json",
    ) -> Any:
        if body is not None:
            data = json.dumps(body).encode()
        with self._open(method, path, params, data, ctype) as r:
            raw = r.read()
            return json.loads(raw) if r.headers.get("content-type", "").startswith("application/json") else raw

    def pages(self, path: str, params: dict[str, Any], limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paginated list (at most ``limit``)."""
        cursor, n = params.get("cursor"), 0
        while True:
            want = 1000 if limit is None else min(1000, limit - n)
            if want <= 0:
                return
            page = self.request("GET", path, {**params, "cursor": cursor, "limit": want})
            for item in page["items"]:
                yield item
                n += 1
            cursor = page["next_cursor"]
            if not cursor:
                return

    def download(self, path: str, params: dict[str, Any], out: IO[bytes], progress: Any = None) -> int:
        """Stream a response body to ``out``; returns the number of lines."""
        lines = 0
        with self._open("GET", path, params) as r:
            while True:
                chunk = r.read(1 << 16)
                if not chunk:
                    return lines
                out.write(chunk)
                lines += chunk.count(b"\n")
                if progress:
                    progress(lines)

    def upload_csv(
        self, path: str, params: dict[str, Any], fh: IO[str], limit: int, progress: Callable[[int], None] | None = None
    ) -> int:
        """POST a CSV file in bodies of about ``limit`` bytes (each with the header line); returns the
        rows imported. A refused body raises ApiClientError saying how many rows earlier bodies imported."""
        n = 0
        for body in csv_chunks(fh, limit):
            try:
                n += self.request("POST", path, params, data=body, ctype="text/csv")["imported"]
            except ApiClientError as e:
                if n:
                    e.args = (f"{e} (in the body starting at row {n + 1}; {n:,} rows before it were imported)",)
                raise
            if progress:
                progress(n)
        return n


def csv_chunks(fh: IO[str], limit: int) -> Iterator[bytes]:
    """CSV bodies, each with the header line, of at most about ``limit`` bytes."""
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        return
    buf, w = io.StringIO(), None
    for row in reader:
        if w is None:
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(header)
        w.writerow(row)
        if buf.tell() >= limit:
            yield buf.getvalue().encode()
            w = None
    if w is not None:
        yield buf.getvalue().encode()
