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

from twisted.application.service import MultiService
from twisted.internet import endpoints

from sidecar.bounce.handoff import SOCKET_MODE, group_name, listen_unix, stop_unix
from sidecar.bounce.lmtp import LmtpFactory
from sidecar.listeners import Listener, with_backlog

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


class LmtpService(MultiService):
    """``LmtpService(cfg, reactor, group)``: listens on ``cfg.ingest.lmtp``; ``group`` is the
    :class:`~sidecar.bounce.group.GroupCommit` the hand-off socket uses too. Loopback TCP through
    a :class:`~sidecar.listeners.Listener` (as the policy and HTTP listeners); a unix socket as
    the hand-off socket is made (mode, group, a stale file replaced, one in use refused)."""

    name = "ingest-lmtp"  # type: ignore[assignment]

    def __init__(self, cfg: Any, reactor: Any, group: Any) -> None:
        super().__init__()
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
        if is_tcp(self.listen):
            endpoint = endpoints.serverFromString(reactor, with_backlog(self.listen))
            Listener(f"{KEY} {self.listen!r}", endpoint, self.factory).setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        if is_tcp(self.listen):
            log.info("LMTP listening on %s", self.listen)
            return
        self.port = listen_unix(self.reactor, self.listen, self.factory, lmtp_gid(self.cfg), KEY, backlog=1024)
        log.info(
            "LMTP listening on %s (mode %o, group %s)",
            self.listen,
            SOCKET_MODE,
            group_name(os.stat(self.listen).st_gid),
        )

    def stopService(self) -> Any:
        d = super().stopService()
        if is_tcp(self.listen):
            return d
        port, self.port = self.port, None
        return stop_unix(port, self.listen)
