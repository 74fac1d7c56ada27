"""systemd's service notification (sd_notify(3)): one datagram to ``$NOTIFY_SOCKET``.

No library: the protocol is a ``KEY=VALUE`` text datagram on a unix socket (an ``@`` first
means the abstract namespace). Without ``$NOTIFY_SOCKET`` (not under systemd, or not
``Type=notify``) every call does nothing. A failure to send is logged once per message and
never stops the service.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("sidecar.notify")


def notify(*fields: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``fields`` (e.g. ``"READY=1"``, ``"STATUS=serving"``) as one message; True if sent."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    message = "\n".join(fields).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as e:
        log.warning("cannot notify the service manager (%s): %s", fields[0] if fields else "", e.strerror or e)
        return False
    return True
