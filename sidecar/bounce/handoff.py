"""The service side of ``sidecar ingest``: accept messages on a local unix socket.

Framing (one message per connection)::

    client: {"v":1,"sender":..,"recipient":..,"queue_id":..,"extension":..,"size":N,
             "truncated":false,"length":L}\\n  followed by exactly L bytes
    server: "OK <outcome> id=<n> ..."\\n   only after the transaction has committed
       or:  "TEMPFAIL <reason>"\\n          the client exits 75 and Postfix retries

Recording runs in the service's database thread pool (``deferToThreadPool``); the reactor
never touches the database. Hand-offs that arrive while a transaction is being written are
recorded together in the next one, each answered after its commit (:mod:`sidecar.bounce.group`).
A client that sees the connection close without a reply does the job itself, so the reply is
the only promise made.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet import protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from sidecar import metrics
from sidecar.bounce.envelope import MAX_HEADER, Envelope
from sidecar.bounce.group import GroupCommit
from sidecar.bounce.record import Recorder

log = logging.getLogger("sidecar.bounce.handoff")

IDLE_TIMEOUT = 60.0
SPOOL_MEMORY = 256 * 1024  # a message larger than this is spooled to a temporary file


class HandoffProtocol(protocol.Protocol, TimeoutMixin):
    """One message per connection. The declared length is checked against ``ingest.max_message_size``
    before any of the body is read, and the body goes to a spooled temporary file (on disk past
    :data:`SPOOL_MEMORY`), so a connection holds little memory whatever it sends."""

    def __init__(self, factory: HandoffFactory) -> None:
        self.factory = factory
        self.env: Envelope | None = None
        self.buf = bytearray()  # the header line only (at most MAX_HEADER bytes)
        self.spool: Any = None
        self.length = 0
        self.received = 0
        self.busy = False

    def connectionMade(self) -> None:
        self.factory.active += 1
        self.setTimeout(IDLE_TIMEOUT)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.factory.active -= 1
        self.setTimeout(None)
        if self.spool is not None:  # a body still arriving (a spool handed to a thread is closed there)
            self.spool.close()
        self.spool = None

    def dataReceived(self, data: bytes) -> None:
        if self.busy:
            return
        self.resetTimeout()
        if self.env is not None:
            self._body(data)
            return
        self.buf += data
        nl = self.buf.find(b"\n")
        if nl < 0:
            if len(self.buf) > MAX_HEADER:
                self._refuse("header too long")
            return
        try:
            header = json.loads(bytes(self.buf[:nl]))
            if not isinstance(header, dict):
                raise ValueError("not an object")
            self.length = int(header["length"])
            if self.length < 0:
                raise ValueError("negative length")
            env = Envelope.from_header(header)
        # OverflowError: "length": 1e400; RecursionError: [[[[...]]]]; both once escaped as
        # an unhandled error (traceback, connection dropped unanswered, not counted)
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
            self._refuse("malformed request header")
            return
        if self.length > self.factory.max_size:
            # Decided before reading the body. No answer: a client with a larger limit of its own
            # then records the message in-process; anything else learns nothing.
            log.warning(
                "ingest hand-off: declared length %d exceeds ingest.max_message_size %d; closed",
                self.length,
                self.factory.max_size,
            )
            self._drop()
            return
        self.env = env
        rest = bytes(self.buf[nl + 1 :])
        self.buf = bytearray()
        self.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 - closed after recording
        self._body(rest)

    def _body(self, data: bytes) -> None:
        part = data[: self.length - self.received]  # bytes past the declared length are ignored
        if part:
            self.spool.write(part)
            self.received += len(part)
        if self.received >= self.length:
            self._run()

    def _run(self) -> None:
        self.busy = True
        self.setTimeout(None)
        assert self.env is not None
        spool, self.spool = self.spool, None
        d = self.factory.group.submit(spool, self.env, self.length)
        d.addCallbacks(lambda out: self._reply(f"OK {out.summary()}"), self._failed)

    def _failed(self, f: Failure) -> None:
        log.error("ingest hand-off failed: %s", f.getErrorMessage(), exc_info=(f.type, f.value, f.tb))
        reason = " ".join(f"{f.type.__name__}: {f.getErrorMessage()}".split())[:300]
        self._reply(f"TEMPFAIL {reason}")

    def _refuse(self, reason: str) -> None:
        metrics.INGEST_MESSAGES.labels("tempfail").inc()
        self._reply(f"TEMPFAIL {reason}")

    def _drop(self) -> None:
        self.busy = True
        tr: Any = self.transport
        if tr is not None:
            tr.abortConnection()

    def _reply(self, line: str) -> None:
        self.busy = True
        tr: Any = self.transport
        if tr is not None and self.connected:
            tr.write(line.encode("utf-8", "replace") + b"\n")
            tr.loseConnection()

    def timeoutConnection(self) -> None:
        tr: Any = self.transport
        tr.abortConnection()


class HandoffFactory(protocol.Factory):
    def __init__(
        self,
        recorder: Recorder,
        reactor: Any,
        threadpool: Any,
        max_size: int,
        max_connections: int = 32,
        group: GroupCommit | None = None,
    ) -> None:
        self.recorder = recorder
        self.reactor = reactor
        self.threadpool = threadpool
        self.group = group if group is not None else GroupCommit(recorder, reactor, threadpool)
        self.max_size = max_size
        self.max_connections = max_connections
        self.active = 0
        self.refused = 0

    def buildProtocol(self, addr: Any) -> HandoffProtocol | None:
        if self.active >= self.max_connections:
            # Closed unanswered: `sidecar ingest` then records the message itself.
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning(
                    "ingest hand-off: %d connections open (ingest.max_handoffs); refused %d so far",
                    self.active,
                    self.refused,
                )
            return None
        return HandoffProtocol(self)


SOCKET_MODE = 0o660


def socket_gid(cfg: Any) -> int | None:
    """The group given access to the socket: ``ingest.socket_group``, else the primary group of
    ``postfix.pipe_user`` when that user exists, else None (the service's own group)."""
    name = cfg.ingest.socket_group
    if name:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            raise RuntimeError(f"ingest.socket_group {name!r}: no such group") from None
    try:
        return pwd.getpwnam(cfg.postfix.pipe_user).pw_gid
    except KeyError:
        return None


def set_socket_group(path: Path, gid: int | None, mode: int, key: str = "ingest.socket") -> None:
    try:
        if gid is not None and os.stat(path).st_gid != gid:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
    except PermissionError as e:
        raise RuntimeError(
            f"{key}: cannot give {path} to group {group_name(gid)} (the service's user must belong to it): {e.strerror}"
        ) from None


def group_name(gid: int | None) -> str:
    if gid is None:
        return "(the service's own)"
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def remove_stale_socket(path: str, key: str = "ingest.socket") -> None:
    """Remove ``path`` if it is a socket nobody listens on; refuse if a live service owns it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise RuntimeError(f"{key} {path!r} exists and is not a socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
    except OSError:
        os.unlink(path)  # stale: left by a service that died
        return
    finally:
        s.close()
    raise RuntimeError(f"{key} {path!r} is in use by another running service")


class HandoffService(Service):
    """``HandoffService(cfg, engine, reactor, threadpool)``: listens on ``cfg.ingest.socket``.

    ``cfg`` is the whole :class:`sidecar.config.Config`; ``threadpool`` is the service's
    database pool (started and stopped by whoever owns it). An empty ``ingest.socket``
    disables the listener.
    """

    name = "ingest-handoff"  # type: ignore[assignment]

    def __init__(
        self,
        cfg: Any,
        engine: Any,
        reactor: Any,
        threadpool: Any,
        parse: Any = None,
        recipients: Any = None,
        group: GroupCommit | None = None,
    ) -> None:
        self.cfg = cfg
        self.reactor = reactor
        self.threadpool = threadpool
        self.group = group
        self.recorder = group.recorder if group is not None else Recorder(cfg, engine, parse, recipients=recipients)
        self.path = cfg.ingest.socket
        self.port: Any = None

    def startService(self) -> None:
        super().startService()
        if not self.path:
            log.info("ingest hand-off socket disabled (ingest.socket is empty)")
            return
        factory = HandoffFactory(
            self.recorder,
            self.reactor,
            self.threadpool,
            self.cfg.ingest.max_message_size,
            self.cfg.ingest.max_handoffs,
            group=self.group,
        )
        self.port = listen_unix(self.reactor, self.path, factory, socket_gid(self.cfg), "ingest.socket", backlog=128)
        log.info(
            "ingest hand-off listening on %s (mode %o, group %s)",
            self.path,
            SOCKET_MODE,
            group_name(os.stat(self.path).st_gid),
        )

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        return stop_unix(port, self.path)


def listen_unix(reactor: Any, path: str, factory: Any, gid: int | None, key: str, backlog: int) -> Any:
    """Listen on the unix socket ``path`` (mode 0660, group ``gid``); ``key`` names the setting in errors.

    A missing directory is made (0750, the same group); one that exists is left as it is (it may
    hold other sockets, e.g. a policy socket). A stale socket file is removed, a live one refused.
    Only the service's user and the group reach the socket: anyone else could forge bounces (and
    suppress any address). Twisted binds under the process umask, then chmods."""
    directory = Path(path).parent
    if not directory.exists():
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        set_socket_group(directory, gid, 0o750, key)
    remove_stale_socket(path, key)
    try:
        port = reactor.listenUNIX(path, factory, mode=SOCKET_MODE, backlog=backlog, wantPID=False)
    except Exception as e:
        raise RuntimeError(f"{key} {path!r}: {' '.join(str(e).split())}") from None
    try:
        set_socket_group(Path(path), gid, SOCKET_MODE, key)
    except Exception:
        port.stopListening()
        raise
    return port


def stop_unix(port: Any, path: str) -> Any:
    """Stop listening on ``port`` (None: nothing to do) and remove its socket file."""
    if port is None:
        return None
    d = port.stopListening()

    def _cleanup(result: Any) -> Any:
        try:
            os.unlink(path)
        except OSError:
            pass
        return result

    return d.addBoth(_cleanup) if d is not None else _cleanup(None)
