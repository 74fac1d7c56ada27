"""A small LMTP client (RFC 2033) for tests and benchmarks: one connection, kept open like
Postfix's cached lmtp(8) connections, a transaction pipelined in one write, one reply per
recipient read back."""

from __future__ import annotations

import socket


class LmtpClient:
    """``LmtpClient("/path/lmtp.sock")`` or ``LmtpClient(("127.0.0.1", port))``; LHLO on connect."""

    def __init__(self, where: str | tuple[str, int], timeout: float = 60.0) -> None:
        family = socket.AF_UNIX if isinstance(where, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(where)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()
        self.sock.sendall(b"LHLO client.test\r\n")
        self.extensions = self.reply()

    def line(self) -> str:
        raw = self.file.readline(65536)
        if not raw:
            raise ConnectionError("the LMTP server closed the connection")
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    def reply(self) -> list[str]:
        """One (possibly multi-line) reply."""
        lines = [self.line()]
        while lines[-1][3:4] == "-":
            lines.append(self.line())
        return lines

    def command(self, text: str) -> str:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()[-1]

    def deliver(self, sender: str, recipients: list[str], message: bytes, ident: str = "") -> list[str]:
        """MAIL, RCPT..., DATA and the message, in one write (PIPELINING); the reply to each command
        and then one reply per accepted recipient. Returns the final replies, one per recipient
        (the RCPT reply itself where a recipient was refused)."""
        body = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        body = body.replace(b"\r\n.", b"\r\n..")
        if body.startswith(b"."):
            body = b"." + body
        out = f"XFORWARD IDENT={ident}\r\n" if ident else ""
        out += f"MAIL FROM:<{sender}>\r\n" + "".join(f"RCPT TO:<{r}>\r\n" for r in recipients) + "DATA\r\n"
        self.sock.sendall(out.encode())
        if ident:
            self.reply()
        mail = self.reply()[-1]
        rcpt = [self.reply()[-1] for _ in recipients]
        data = self.reply()[-1]
        if not (mail.startswith("250") and data.startswith("354")):
            return [data] * len(recipients)
        self.sock.sendall(body + b".\r\n")
        return [self.reply()[-1] if r.startswith("250") else r for r in rcpt]

    def close(self) -> None:
        try:
            self.command("QUIT")
        except OSError:
            pass
        self.file.close()
        self.sock.close()
