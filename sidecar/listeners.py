"""Stream listeners that fail start-up at once with one line naming themselves (policy, HTTP, LMTP)."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService

from sidecar.errors import one_line


class StartupError(RuntimeError):
    """A part of the service could not start (the message names it)."""


class Listener(StreamServerEndpointService):
    """A listener that fails start-up at once (not later, in a Deferred) and names itself in the error."""

    def __init__(self, what: str, endpoint: Any, factory: Any) -> None:
        super().__init__(endpoint, factory)
        self.what = what
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except Exception as e:
            raise StartupError(f"{self.what}: {one_line(e)}") from None


def with_backlog(endpoint: str) -> str:
    """A deep listen backlog: a burst of new connections (smtpd, lmtp) must not stall."""
    if endpoint.startswith(("tcp:", "tcp6:", "unix:")) and "backlog=" not in endpoint:
        return endpoint + ":backlog=1024"
    return endpoint
