"""Policy delegation helpers: a stub server that records requests, and a one-shot client.

The stub answers every request with a fixed action (DUNNO by default). It lets the Postfix
wiring be tested without the real sidecar, and shows which protocol states Postfix asks at.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time


class _Handler(socketserver.StreamRequestHandler):
    server: StubPolicyServer

    def handle(self) -> None:
        attrs: dict[str, str] = {}
        for raw in self.rfile:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line:
                name, _, value = line.partition("=")
                attrs[name] = value
                continue
            with self.server.lock:
                self.server.requests.append(attrs)
            self.wfile.write(f"action={self.server.action}\n\n".encode())
            self.wfile.flush()
            attrs = {}


class StubPolicyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, action: str = "DUNNO") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.action = action
        self.requests: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> StubPolicyServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)

    def states(self) -> list[str]:
        with self.lock:
            return [r.get("protocol_state", "") for r in self.requests]


def policy_query(port: int, attrs: dict[str, str], timeout: float = 5.0) -> str:
    """Send one policy request to 127.0.0.1:port; return the action text."""
    request = {
        "request": "smtpd_access_policy",
        "protocol_state": "RCPT",
        "protocol_name": "ESMTP",
        "client_address": "127.0.0.1",
        "client_name": "localhost",
        "helo_name": "app.lab.test",
        "queue_id": "",
        "instance": f"probe.{time.monotonic_ns()}",
        **attrs,
    }
    payload = "".join(f"{k}={v}\n" for k, v in request.items()) + "\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload.encode())
        data = b""
        while not data.endswith(b"\n\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith("action="):
            return line[len("action=") :]
    raise AssertionError(f"policy server on port {port} gave no action: {data!r}")
