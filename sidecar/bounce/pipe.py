"""``sidecar ingest``: the pipe(8) command. One message on stdin, exit 0 or 75, never anything else.

This module is the fast path, run once per bounce: it imports only the standard library, and
of that only what loads in a few milliseconds (``_socket``, not ``socket``; no ``os``, ``re``,
``json`` or ``argparse`` on the hand-off path). :mod:`sidecar.bounce.pipe_entry` runs it under
``python3 -I -S``; the in-process fallback first adds the installation's site-packages
(:func:`full_python`). It reads the message with the size limit, then hands it to
the running service over the local unix socket (:mod:`sidecar.bounce.handoff`), which
parses and records it in its database thread pool and answers only after commit. When the
socket is missing, refuses, or drops the connection before answering, the whole job is done
in this process instead (:mod:`sidecar.bounce.record`, importing SQLAlchemy only then), so a
stopped service never loses a message.

Exit codes (see docs/ingest.md): 0 = recorded (or deliberately set aside as not-bounce /
unparsed / bad-verp); 75 = anything else, so Postfix keeps the message and retries.
"""

from __future__ import annotations

import _socket
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
    if not path:
        return None
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(5.0)
        try:
            s.connect(path)
        except OSError:  # no such file, refused, stale socket file, permission denied ...
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


def full_python() -> None:
    """Add the installation's site-packages when started without them (``python3 -I -S``, as
    :mod:`sidecar.bounce.pipe_entry` is): only the fallback and the full config loader need them."""
    if sys.flags.no_site:
        import site

        site.main()


class PipeArgs:
    """The options of ``sidecar ingest`` (as :func:`sidecar.cli.bounces.ingest_parser` defines them)."""

    __slots__ = ("config", "db", "sender", "recipient", "queue_id", "extension", "socket", "no_handoff")

    def __init__(self) -> None:
        self.config: str | None = None
        self.db: str | None = None
        self.sender = self.recipient = self.queue_id = self.extension = ""
        self.socket: str | None = None
        self.no_handoff = False


_OPTIONS = {"--config": "config", "--db": "db", "--sender": "sender", "--recipient": "recipient"}
_OPTIONS.update({"--queue-id": "queue_id", "--extension": "extension", "--socket": "socket"})


def quick_args(argv: list[str]) -> PipeArgs | None:
    """The pipe(8) line's arguments (``--name=value`` or ``--name value``) without argparse (~15 ms
    to import); None for anything else (``-c``, ``--no-handoff``, an abbreviation, an unknown
    option), which the caller leaves to argparse."""
    args = PipeArgs()
    items = iter(argv)
    for item in items:
        name, eq, value = item.partition("=")
        if name not in _OPTIONS:
            return None
        if not eq:
            value = next(items, "-")
            if value.startswith("-"):  # argparse would take it for an option
                return None
        setattr(args, _OPTIONS[name], value)
    return args


def _config(args: Any) -> Any:
    full_python()
    from sidecar.config import load_config

    return load_config(args.config, {"database.url": args.db})


_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_UNSURE = object()


def _table_name(line: str) -> str | None:
    """``[name]`` or ``[[name]]`` (optionally followed by a comment): the name, else None."""
    double = line.startswith("[[")
    inner = line[2:] if double else line[1:]
    name, close, rest = inner.partition("]")
    if not close or (double and not rest.startswith("]")):
        return None
    rest = rest[1:].strip() if double else rest.strip()
    name = name.strip()
    if rest[:1] not in ("", "#") or not name or not _NAME_CHARS.issuperset(name):
        return None
    return name


def _plain_value(line: str) -> Any:
    """The value of ``key = "text"``, ``key = 'text'`` or ``key = 123_456`` (a comment may follow);
    _UNSURE for anything else (escapes, other types), which the caller leaves to tomllib."""
    value = line.partition("=")[2].strip()
    quote = value[:1]
    if quote in ('"', "'"):
        end = value.find(quote, 1)
        if end < 0 or (quote == '"' and "\\" in value[1:end]):
            return _UNSURE
        result: Any = value[1:end]
        tail = value[end + 1 :]
    else:
        n = 0
        while n < len(value) and (value[n].isdigit() or (n and value[n] == "_")):
            n += 1
        if not n or not value[:n].isascii():
            return _UNSURE
        result, tail = int(value[:n].replace("_", "")), value[n:]
    tail = tail.strip()
    return result if tail[:1] in ("", "#") else _UNSURE


def _scan_ingest(text: str) -> dict[str, Any] | None:
    """socket / max_message_size of ``[ingest]`` in a plainly written file, without tomllib or re
    (which cost ~10 ms each at start-up). None when unsure: the caller then uses tomllib."""
    if '"""' in text or "'''" in text:
        return None
    section: str | None = None
    found: dict[str, Any] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = _table_name(line)
            if section is None:
                return None
            continue
        key = line.split("=", 1)[0].strip().strip("\"'")
        if section is None and key.split(".")[0] == "ingest":
            return None  # dotted key or inline table at the top level
        if section != "ingest" or key not in ("socket", "max_message_size"):
            continue
        value = _plain_value(line)
        if value is _UNSURE:
            return None
        found[key] = value
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
    if socket_path and not socket_path.startswith("/"):  # as config.resolve_path: the file's directory
        socket_path = _beside(config_path, socket_path)
    return socket_path, limit


def _beside(config_path: str | None, relative: str) -> str:
    """``relative`` resolved against the configuration file's directory (else the working directory)."""
    if config_path and config_path.startswith("/") and "/." not in config_path and "//" not in config_path:
        return f"{config_path.rpartition('/')[0] or '/'}/{relative}"  # the pipe(8) line's plain absolute path
    import os  # ~2 ms: only for a path that needs normalising

    base = os.path.dirname(os.path.abspath(config_path)) if config_path else os.getcwd()
    return os.path.join(base, relative)


def record_locally(cfg: Any, env: Envelope, data: bytes) -> int:
    """The fallback: parse and record in this process."""
    full_python()
    from sidecar.bounce.record import open_recorder

    recorder = open_recorder(cfg)
    try:
        out = recorder.record(data, env)
    finally:
        recorder.engine.dispose()
    return EX_OK if out.outcome else EX_TEMPFAIL


def guarded(args: Any, stdin: IO[bytes] | None = None) -> int:
    """:func:`run` with the pipe's contract: 0 once recorded, 75 on ANY failure (never 1, which
    makes pipe(8) bounce the DSN, and a bounced DSN is lost), the reason as one line on stderr."""
    try:
        code = run(args, stdin)
        return code if code in (EX_OK, EX_TEMPFAIL) else EX_TEMPFAIL
    except BaseException as e:
        if isinstance(e, SystemExit) and e.code in (0, None):
            return EX_OK
        try:
            from sidecar.errors import one_line

            # Must not start with a 4.x.x/5.x.x status: pipe(8) would take it as the result.
            reason = one_line(e, with_type=True)
            sys.stderr.write(f"sidecar ingest: temporary failure, message kept for retry: {reason}\n")
            sys.stderr.flush()
        except BaseException:
            pass
        return EX_TEMPFAIL


def pipe_main(argv: list[str]) -> int:
    """``sidecar ingest ARGS`` for the thin entry (:mod:`sidecar.bounce.pipe_entry`): the pipe(8)
    line's options are read without argparse; anything else goes through the full ingest parser."""
    args = quick_args(argv)
    if args is None:
        from sidecar.cli.bounces import ingest_main

        return ingest_main(argv)
    return guarded(args)


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
