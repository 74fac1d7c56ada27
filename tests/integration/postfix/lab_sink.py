"""A loopback SMTP server that plays the remote MX: per-recipient answers, records what it got.

Runs an asyncio server in its own thread. ``rcpt_replies`` maps an address to the reply for
RCPT TO (e.g. ``"550 5.1.1 <a@x>: user unknown"``); ``data_replies`` maps an address to the
reply after DATA for a message that includes it. Everything else is accepted.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field

SINK_HOSTNAME = "sink.lab.test"  # must differ from Postfix's myhostname (loop detection)
_ADDR = re.compile(r"<([^>]*)>")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class SinkLog:
    """What the sink saw; read it under ``lock``."""

    messages: list[Received] = field(default_factory=list)
    rcpt_attempts: list[tuple[str, str]] = field(default_factory=list)  # (address, reply)
    lock: threading.Lock = field(default_factory=threading.Lock)


class SmtpSink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.rcpt_replies: dict[str, str] = {}
        self.data_replies: dict[str, str] = {}
        self.log = SinkLog()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> SmtpSink:
        self._thread = threading.Thread(target=self._run, name="smtp-sink", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("SMTP sink did not start within 10 s")
        if self._error is not None:
            raise RuntimeError(f"SMTP sink failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # -- queries -------------------------------------------------------------------------
    def messages_to(self, address: str) -> list[Received]:
        with self.log.lock:
            return [m for m in self.log.messages if address.lower() in (r.lower() for r in m.rcpt_tos)]

    def rcpt_attempts_for(self, address: str) -> list[str]:
        with self.log.lock:
            return [reply for addr, reply in self.log.rcpt_attempts if addr.lower() == address.lower()]

    def wait_for_message(self, address: str, timeout: float = 20.0, count: int = 1) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages_to(address)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"remote MX (sink) did not receive {count} message(s) for {address} within {timeout}s")

    def wait_for_rcpt_attempt(self, address: str, timeout: float = 20.0, count: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.rcpt_attempts_for(address)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"remote MX (sink) saw no RCPT TO:<{address}> ({count}x) within {timeout}s")

    # -- protocol ------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        mail_from: str | None = None
        rcpts: list[str] = []
        try:
            await reply(f"220 {SINK_HOSTNAME} ESMTP lab sink")
            while True:
                raw = await asyncio.wait_for(reader.readline(), 60)
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                verb = line.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    writer.write(
                        f"250-{SINK_HOSTNAME}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n".encode()
                    )
                    await writer.drain()
                elif verb == "HELO":
                    await reply(f"250 {SINK_HOSTNAME}")
                elif verb == "MAIL":
                    m = _ADDR.search(line)
                    mail_from, rcpts = (m.group(1) if m else ""), []
                    await reply("250 2.1.0 Ok")
                elif verb == "RCPT":
                    m = _ADDR.search(line)
                    addr = m.group(1) if m else ""
                    answer = self.rcpt_replies.get(addr.lower(), "250 2.1.5 Ok")
                    with self.log.lock:
                        self.log.rcpt_attempts.append((addr, answer))
                    if answer.startswith("2"):
                        rcpts.append(addr)
                    await reply(answer)
                elif verb == "DATA":
                    if mail_from is None or not rcpts:
                        await reply("554 5.5.1 Error: no valid recipients")
                        continue
                    await reply("354 End data with <CR><LF>.<CR><LF>")
                    chunks: list[bytes] = []
                    while True:
                        chunk = await asyncio.wait_for(reader.readline(), 60)
                        if not chunk or chunk in (b".\r\n", b".\n"):
                            break
                        chunks.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    answer = next(
                        (self.data_replies[r.lower()] for r in rcpts if r.lower() in self.data_replies),
                        "250 2.0.0 Ok: queued",
                    )
                    if answer.startswith("2"):
                        with self.log.lock:
                            self.log.messages.append(Received(mail_from, list(rcpts), b"".join(chunks)))
                    await reply(answer)
                    mail_from, rcpts = None, []
                elif verb == "RSET":
                    mail_from, rcpts = None, []
                    await reply("250 2.0.0 Ok")
                elif verb == "NOOP":
                    await reply("250 2.0.0 Ok")
                elif verb == "QUIT":
                    await reply("221 2.0.0 Bye")
                    break
                else:
                    await reply("502 5.5.2 Error: command not recognized")
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
