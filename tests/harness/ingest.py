"""`sidecar ingest` as pipe(8) runs it, the bounce samples to feed it, and a look at the SQLite file."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.harness.sidecar import BIN

ROOT = Path(__file__).resolve().parents[2]
POSTFIX = ROOT / "tests" / "data" / "bounces" / "postfix"
CORPUS = ROOT / "tests" / "data" / "bounces" / "corpus"
HARD = POSTFIX / "dsn-failed-550-5.1.1.eml"
SOFT = POSTFIX / "dsn-failed-552-5.2.2.eml"
DELAY = POSTFIX / "dsn-delayed-452-4.2.2.eml"
BLOCK = POSTFIX / "dsn-failed-554-5.7.1-rcpt.eml"
ARF = CORPUS / "arf-01.eml"
AUTO = CORPUS / "rfc3834-03.eml"
KEY = "test-verp-key"
#: The thin pipe entry as the pipe(8) line runs it (``sidecar postfix-config``).
THIN = [sys.executable, "-I", "-S", str(ROOT / "sidecar" / "bounce" / "pipe_entry.py")]


def variant(path: Path, n: int) -> bytes:
    """The same bounce with a different header line, so it is a new message (new sha256)."""
    return f"X-Test-Variant: {n}\n".encode() + path.read_bytes()


def ingest(
    db: Path,
    data: bytes,
    *extra: str,
    config: Path | None = None,
    timeout: float = 60,
    python_prelude: str | None = None,
    entry: str = "cli",
) -> subprocess.CompletedProcess[bytes]:
    """``sidecar ingest`` (``entry="cli"``) or the thin entry (``entry="thin"``) with ``data`` on stdin."""
    args = [
        "ingest",
        "--db",
        f"sqlite:///{db}",
        "--sender",
        "MAILER-DAEMON",
        "--recipient",
        "bounces@bounce.example",
        "--queue-id",
        "ABC123",
        *extra,
    ]
    if config is not None:
        args = ["ingest", "--config", str(config), *args[1:]]
    if python_prelude is not None:
        code = f"import sys\n{python_prelude}\nfrom sidecar.cli import main\nsys.exit(main({args!r}))\n"
        cmd = [sys.executable, "-c", code]
    elif entry == "thin":
        cmd = [*THIN, *args[1:]]
    else:
        cmd = [str(BIN), *args]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C"}  # what pipe(8) gives
    cwd = db.parent if db.parent.exists() else db.parent.parent
    return subprocess.run(cmd, input=data, capture_output=True, timeout=timeout, env=env, cwd=cwd)


def recorded(*sent: tuple[str, str]) -> str:
    """A ``python_prelude`` giving ``sidecar ingest`` a record of recipients holding ``(tenant, address)``
    pairs: what the policy server records at RCPT (corroboration of a bounce without VERP)."""
    adds = "".join(f"_rec.add({t!r}, {a!r}, time.time())\n" for t, a in sent)
    return (
        "import time\nimport sidecar.recipients as _r\n_rec = _r.InMemoryRecipients()\n"
        + adds
        + "_r.open_lookup = lambda cfg, engine: _rec\n"
    )


def q(db: Path, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(sql, params).fetchall()
