"""The service side of ``sidecar ingest``: accept messages on a local unix socket.

Framing (one message per connection)::

    client: {"v":1,"sender":..,"recipient":..,"queue_id":..,"extension":..,"size":N,
             "truncated":false,"length":L}\\n  followed by exactly L bytes
    server: "OK <outcome> id=<n> ..."\\n   only after the transaction has committed
       or:  "TEMPFAIL <reason>"\\n          the client exits 75 and Postfix retries

Recording runs in the service's database thread pool (``deferToThreadPool``); the reactor
never touches the database. A client that sees the connection close without a reply does
the job itself, so the reply is the only promise made.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet import protocol
from twisted.internet.threads import deferToThreadPool
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from sidecar import metrics
from sidecar.bounce.ingest import MAX_HEADER, Envelope
from sidecar.bounce.record import Recorder

log = logging.getLogger("sidecar.bounce.handoff")

IDLE_TIMEOUT = 60.0


class HandoffProtocol(protocol.Protocol, TimeoutMixin):
    def __init__(self, factory: HandoffFactory) -> None:
        self.factory = factory
        self.header: dict[str, Any] | None = None
        self.env: Envelope | None = None
        self.buf = bytearray()
        self.length = 0
        self.received = 0
        self.busy = False

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        self.setTimeout(IDLE_TIMEOUT)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.busy:
            return
        self.resetTimeout()
        if self.header is not None:
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
            self.env = Envelope.from_header(header)
        # OverflowError: "length": 1e400; RecursionError: [[[[...]]]]; both once escaped as
        # an unhandled error (traceback, connection dropped unanswered, not counted)
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
            self._refuse("malformed request header")
            return
        self.header = header
        rest = bytes(self.buf[nl + 1:])
        self.buf = bytearray()
        self._body(rest)

    def _body(self, data: bytes) -> None:
        # Keep at most ingest.max_message_size bytes (a client with a larger limit is truncated here).
        room = self.factory.max_size - len(self.buf)
        if room > 0:
            self.buf += data[:room]
        self.received += len(data)
        if self.received >= self.length:
            self._run(bytes(self.buf), truncated=self.received > self.factory.max_size)

    def _run(self, data: bytes, truncated: bool) -> None:
        self.busy = True
        self.setTimeout(None)
        self.buf = bytearray()
        assert self.env is not None
        env = self.env
        if truncated:
            env = Envelope(env.sender, env.recipient, env.queue_id, env.extension, max(env.size, self.received), True)
        d = deferToThreadPool(self.factory.reactor, self.factory.threadpool, self.factory.recorder.record, data, env)
        d.addCallbacks(lambda out: self._reply(f"OK {out.summary()}"), self._failed)

    def _failed(self, f: Failure) -> None:
        log.error("ingest hand-off failed: %s", f.getErrorMessage(), exc_info=(f.type, f.value, f.tb))
        reason = " ".join(f"{f.type.__name__}: {f.getErrorMessage()}".split())[:300]
        self._reply(f"TEMPFAIL {reason}")

    def _refuse(self, reason: str) -> None:
        metrics.INGEST_MESSAGES.labels("tempfail").inc()
        self._reply(f"TEMPFAIL {reason}")

    def _reply(self, line: str) -> None:
        self.busy = True
        tr: Any = self.transport
        if tr is not None and self.connected:
            tr.write(line.encode("utf-8", "replace") + b"\n")
            tr.loseConnection()

    def timeoutConnection(self) -> None:  # noqa: N802
        tr: Any = self.transport
        tr.abortConnection()


class HandoffFactory(protocol.Factory):
    def __init__(self, recorder: Recorder, reactor: Any, threadpool: Any, max_size: int) -> None:
        self.recorder = recorder
        self.reactor = reactor
        self.threadpool = threadpool
        self.max_size = max_size

    def buildProtocol(self, addr: Any) -> HandoffProtocol:  # noqa: N802
        return HandoffProtocol(self)


def remove_stale_socket(path: str) -> None:
    """Remove ``path`` if it is a socket nobody listens on; refuse if a live service owns it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise RuntimeError(f"ingest.socket {path!r} exists and is not a socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
    except OSError:
        os.unlink(path)  # stale: left by a service that died
        return
    finally:
        s.close()
    raise RuntimeError(f"ingest.socket {path!r} is in use by another running service")


class HandoffService(Service):
    """``HandoffService(cfg, engine, reactor, threadpool)``: listens on ``cfg.ingest.socket``.

    ``cfg`` is the whole :class:`sidecar.config.Config`; ``threadpool`` is the service's
    database pool (started and stopped by whoever owns it). An empty ``ingest.socket``
    disables the listener.
    """

    name = "ingest-handoff"  # type: ignore[assignment]

    def __init__(self, cfg: Any, engine: Any, reactor: Any, threadpool: Any, parse: Any = None) -> None:
        self.cfg = cfg
        self.reactor = reactor
        self.threadpool = threadpool
        self.recorder = Recorder(cfg, engine, parse)
        self.path = cfg.ingest.socket
        self.port: Any = None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        if not self.path:
            log.info("ingest hand-off socket disabled (ingest.socket is empty)")
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        remove_stale_socket(self.path)
        factory = HandoffFactory(self.recorder, self.reactor, self.threadpool, self.cfg.ingest.max_message_size)
        # 0666: pipe(8) runs `sidecar ingest` as an unprivileged user (not the service's).
        self.port = self.reactor.listenUNIX(self.path, factory, mode=0o666, backlog=128, wantPID=False)
        os.chmod(self.path, 0o666)
        log.info("ingest hand-off listening on %s", self.path)

    def stopService(self) -> Any:  # noqa: N802
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        d = port.stopListening()

        def _cleanup(result: Any) -> Any:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            return result

        return d.addBoth(_cleanup) if d is not None else _cleanup(None)
