"""The LMTP listener as a service: ``ingest.lmtp`` (a unix socket, mode 0660, or loopback TCP).

Start-up fails at once, with a one-line error naming ``ingest.lmtp``, when the socket is in use by
another running service, the port is taken, or the socket cannot be given to its group.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from typing import Any

from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.python.failure import Failure

from sidecar.bounce.handoff import SOCKET_MODE, group_name, listen_unix, stop_unix
from sidecar.bounce.lmtp import LmtpFactory
from sidecar.errors import one_line

log = logging.getLogger("sidecar.bounce.lmtp")

KEY = "ingest.lmtp"
MAIL_OWNER = "postfix"  # lmtp(8) runs as Postfix's mail_owner


def lmtp_gid(cfg: Any) -> int | None:
    """``ingest.lmtp_group``, else the primary group of the user postfix when it exists, else None."""
    name = cfg.ingest.lmtp_group
    if name:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            raise RuntimeError(f"ingest.lmtp_group {name!r}: no such group") from None
    try:
        return pwd.getpwnam(MAIL_OWNER).pw_gid
    except KeyError:
        return None


def is_tcp(listen: str) -> bool:
    return listen.startswith(("tcp:", "tcp6:"))


class LmtpService(Service):
    """``LmtpService(cfg, reactor, group)``: listens on ``cfg.ingest.lmtp``; ``group`` is the
    :class:`~sidecar.bounce.group.GroupCommit` the hand-off socket uses too."""

    name = "ingest-lmtp"  # type: ignore[assignment]

    def __init__(self, cfg: Any, reactor: Any, group: Any) -> None:
        self.cfg = cfg
        self.reactor = reactor
        self.listen = cfg.ingest.lmtp
        ic = cfg.ingest
        self.factory = LmtpFactory(
            group,
            max_size=ic.max_message_size,
            max_connections=ic.lmtp_max_connections,
            max_recipients=ic.lmtp_max_recipients,
            idle_timeout=ic.lmtp_idle_timeout,
            delimiter=ic.recipient_delimiter,
            clock=reactor,
        )
        self.port: Any = None

    def startService(self) -> None:
        super().startService()
        if is_tcp(self.listen):
            self._listen_tcp()
        else:
            self._listen_unix()

    def _listen_tcp(self) -> None:
        description = self.listen if "backlog=" in self.listen else self.listen + ":backlog=1024"
        endpoint = endpoints.serverFromString(self.reactor, description)
        outcome: list[Any] = []
        endpoint.listen(self.factory).addBoth(outcome.append)  # the reactor listens at once
        if not outcome or isinstance(outcome[0], Failure):
            reason = one_line(outcome[0].value) if outcome else "no answer from listen()"
            raise RuntimeError(f"{KEY} {self.listen!r}: {reason}")
        self.port = outcome[0]
        log.info("LMTP listening on %s", self.listen)

    def _listen_unix(self) -> None:
        self.port = listen_unix(self.reactor, self.listen, self.factory, lmtp_gid(self.cfg), KEY, backlog=1024)
        log.info(
            "LMTP listening on %s (mode %o, group %s)",
            self.listen,
            SOCKET_MODE,
            group_name(os.stat(self.listen).st_gid),
        )

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        if port is not None and is_tcp(self.listen):
            return port.stopListening()
        return stop_unix(port, self.listen)
