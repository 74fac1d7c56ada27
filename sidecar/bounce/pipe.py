"""``sidecar ingest``: the pipe(8) command. One message on stdin, exit 0 or 75, never anything else.

This module is the fast path, run once per bounce: it imports only the standard library
(plus the small config loader). It reads the message with the size limit, then hands it to
the running service over the local unix socket (:mod:`sidecar.bounce.handoff`), which
parses and records it in its database thread pool and answers only after commit. When the
socket is missing, refuses, or drops the connection before answering, the whole job is done
in this process instead (:mod:`sidecar.bounce.record`, importing SQLAlchemy only then), so a
stopped service never loses a message.

Exit codes (see docs/ingest.md): 0 = recorded (or deliberately set aside as not-bounce /
unparsed / bad-verp); 75 = anything else, so Postfix keeps the message and retries.
"""

from __future__ import annotations

import os
import socket
import sys

from sidecar.bounce.envelope import Envelope

TYPE_CHECKING = False  # typing and dataclasses cost ~10 ms at start-up, paid once per bounce
if TYPE_CHECKING:
    from typing import IO, Any

EX_OK, EX_TEMPFAIL = 0, 75
REPLY_TIMEOUT = 120.0  # seconds to wait for the service's answer (it may wait on a locked database)


class TempFail(Exception):
    """A failure after which Postfix must keep the message and retry (exit 75)."""


def read_message(stream: IO[bytes], limit: int) -> tuple[bytes, int, bool]:
    """Read at most ``limit`` bytes and drain the rest: (kept bytes, total size, truncated)."""
    chunks: list[bytes] = []
    kept = 0
    total = 0
    while True:
        chunk = stream.read(65536)
        if not chunk:
            break
        total += len(chunk)
        if kept < limit:
            part = chunk[: limit - kept]
            chunks.append(part)
            kept += len(part)
    return b"".join(chunks), total, total > limit


def handoff(path: str, env: Envelope, data: bytes, timeout: float = REPLY_TIMEOUT) -> str | None:
    """Send the message to the service; its reply line, or None when it could not take it.

    None means "nobody took responsibility": the socket is absent, refuses connections, or
    the service closed the connection before answering. The caller then records in-process.
    A timeout raises :class:`TempFail`: the service has the message and may still commit it,
    so the safe answer is to let Postfix retry (a duplicate is recognised by its sha256).
    """
    if not path or not os.path.exists(path):
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(5.0)
        try:
            s.connect(path)
        except OSError:  # refused, stale socket file, permission denied ...
            return None
        s.settimeout(timeout)
        try:
            s.sendall(env.to_header(len(data)))
            s.sendall(data)
            buf = b""
            while b"\n" not in buf and len(buf) < 4096:
                part = s.recv(4096)
                if not part:
                    break
                buf += part
        except TimeoutError:
            raise TempFail("timed out waiting for the ingest service") from None
        except OSError:  # reset or broken pipe before a reply: nothing was promised
            return None
    finally:
        s.close()
    line = buf.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return line or None


# Defaults of IngestConfig.socket / max_message_size, repeated here so the fast path need not
# import sidecar.config (building its dataclasses costs ~30 ms per process); a test keeps them equal.
DEFAULT_SOCKET = "var/ingest.sock"
DEFAULT_MAX_SIZE = 10 * 1024 * 1024


def _config(args: Any) -> Any:
    from sidecar.config import load_config

    return load_config(args.config, {"database.url": args.db})


def _scan_ingest(text: str) -> dict[str, Any] | None:
    """socket / max_message_size of ``[ingest]`` in a plainly written file, without tomllib
    (which drags in typing: ~10 ms). None when unsure: the caller then uses tomllib."""
    import re

    if '"""' in text or "'''" in text:
        return None
    section: str | None = None
    found: dict[str, Any] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            m = re.match(r"^\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$", line)
            if m is None:
                return None
            section = m.group(1)
            continue
        key = line.split("=", 1)[0].strip().strip("\"'")
        if section is None and key.split(".")[0] == "ingest":
            return None  # dotted key or inline table at the top level
        if section != "ingest" or key not in ("socket", "max_message_size"):
            continue
        m = re.match(r"""^\S+\s*=\s*(?:"([^"\\]*)"|'([^']*)'|(\d[\d_]*))\s*(#.*)?$""", line)
        if m is None:
            return None
        found[key] = int(m.group(3).replace("_", "")) if m.group(3) else (m.group(1) or m.group(2) or "")
    return found


def fast_settings(config_path: str | None) -> tuple[str, int] | None:
    """(ingest.socket, ingest.max_message_size) read straight from the TOML file, or None when
    anything is unusual (then the full, validating loader runs and reports the problem)."""
    socket_path: Any = DEFAULT_SOCKET
    limit: Any = DEFAULT_MAX_SIZE
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                text = fh.read().decode("utf-8")
        except (OSError, ValueError):
            return None
        section = _scan_ingest(text)
        if section is None:
            import tomllib

            try:
                section = tomllib.loads(text).get("ingest", {})
            except ValueError:
                return None
        if not isinstance(section, dict):
            return None
        socket_path = section.get("socket", socket_path)
        limit = section.get("max_message_size", limit)
    if not isinstance(socket_path, str) or isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return None
    if socket_path and not os.path.isabs(socket_path):  # as config.resolve_path: the file's directory
        base = os.path.dirname(os.path.abspath(config_path)) if config_path else os.getcwd()
        socket_path = os.path.join(base, socket_path)
    return socket_path, limit


def record_locally(cfg: Any, env: Envelope, data: bytes) -> int:
    """The fallback: parse and record in this process."""
    from sidecar.bounce.record import open_recorder

    recorder = open_recorder(cfg)
    try:
        out = recorder.record(data, env)
    finally:
        recorder.engine.dispose()
    return EX_OK if out.outcome else EX_TEMPFAIL


def run(args: Any, stdin: IO[bytes] | None = None) -> int:
    """The whole ``sidecar ingest`` command; raises on failure (the caller maps that to 75)."""
    fast = None if args.no_handoff else fast_settings(args.config)
    cfg: Any = _config(args) if fast is None else None
    socket_path, limit = fast if fast is not None else (cfg.ingest.socket, cfg.ingest.max_message_size)
    if stdin is None:
        if sys.stdin is None:  # started with standard input closed: nothing to read, nothing to lose
            raise TempFail("standard input is closed (no message to read)")
        stdin = sys.stdin.buffer
    data, total, truncated = read_message(stdin, limit)
    env = Envelope(
        sender=args.sender or "",
        recipient=args.recipient or "",
        queue_id=args.queue_id or "",
        extension=args.extension or "",
        size=total,
        truncated=truncated,
    )
    socket_path = getattr(args, "socket", None) or socket_path
    if not args.no_handoff and socket_path:
        reply = handoff(socket_path, env, data)
        if reply is not None:
            if reply.startswith("OK"):
                return EX_OK
            raise TempFail(f"service: {reply}")
    # In-process: load (and so validate) the whole configuration; database.url is needed now.
    cfg = cfg if cfg is not None else _config(args)
    return record_locally(cfg, env, data)
