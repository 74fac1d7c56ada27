"""Reference policy servers that answer ``action=DUNNO`` to every request.

- ``linereceiver``: a bare Twisted ``LineReceiver``, one callback per ``name=value``
  line, the way a naive implementation is written; it does nothing else.
- ``framed``: a bare Twisted ``Protocol`` that frames whole requests: find the empty
  line (``b"\\n\\n"``), split the block into lines, answer.

They are the floor the sidecar's policy server is compared with (bench/policy_bench.py).

    python bench/bare_servers.py linereceiver --port 10040
    python bench/bare_servers.py framed --port 10041
"""

from __future__ import annotations

import argparse
import signal
import sys

from twisted.internet import protocol
from twisted.protocols.basic import LineReceiver

REPLY = b"action=DUNNO\n\n"
MAX_REQUEST = 64 * 1024


class DunnoLineReceiver(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 16 * 1024

    def lineReceived(self, line: bytes) -> None:
        if not line:
            self.transport.write(REPLY)


class DunnoFramed(protocol.Protocol):
    def __init__(self) -> None:
        self._buf = b""

    def dataReceived(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            # Split the block into its name=value lines (what a real server parses).
            buf[start:end].split(b"\n")
            self.transport.write(REPLY)
            start = end + 2
        self._buf = buf[start:] if start else buf
        if len(self._buf) > MAX_REQUEST:
            self.transport.loseConnection()


FACTORIES = {
    "linereceiver": DunnoLineReceiver,
    "framed": DunnoFramed,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="bare DUNNO policy servers for benchmarks")
    p.add_argument("kind", choices=sorted(FACTORIES))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--interface", default="127.0.0.1")
    args = p.parse_args(argv)

    from twisted.internet import reactor

    factory = protocol.Factory.forProtocol(FACTORIES[args.kind])
    factory.noisy = False
    reactor.listenTCP(args.port, factory, backlog=512, interface=args.interface)
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
