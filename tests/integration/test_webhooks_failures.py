"""Webhook failures end to end (``sidecar serve`` in a real process, receivers on loopback):
https with an untrusted and a trusted self-signed certificate, https without TLS support
installed, a receiver answering with a huge body, and a URL with secrets in path and query.
Each failure is recorded on its delivery, counted and logged, and never holds up another
subscription.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sidecar.store.db import make_engine, upgrade
from sidecar.webhooks.client import TLS_MISSING
from tests.harness.api import ApiServer, call
from tests.harness.api import add_event as add_bounce

SECRET = "whsec-failures"
TOKEN = "tok-failures"
BIG = 256 * 1024 * 1024  # what the "huge" receiver offers to send


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem, key_pem = tmp / "receiver.pem", tmp / "receiver.key"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_pem, key_pem


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # not 5: twenty concurrent connects must not overflow the listen queue


class Receiver:
    """Acknowledges every delivery (event ids in ``received``); ``huge`` answers with a BIG body."""

    def __init__(self, tls: ssl.SSLContext | None = None, huge: bool = False) -> None:
        self.received: list[str] = []
        self.sent = 0  # body bytes the huge receiver managed to write
        self.cut_off = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append(json.loads(body)["id"])
                self.send_response(200)
                self.send_header("content-length", str(BIG if huge else 0))
                self.end_headers()
                if huge:
                    chunk = b"x" * 65536
                    try:
                        while outer.sent < BIG:
                            self.wfile.write(chunk)
                            outer.sent += len(chunk)
                    except OSError:
                        outer.cut_off.set()
                    self.close_connection = True

            def log_message(self, *a: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


def wait(cond: Any, what: str, timeout: float = 30) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, what
        time.sleep(0.05)


def sub(url: str, name: str = "", extra: str = "") -> str:
    return (
        f'[[webhooks.subscriptions]]\nurl = "{url}"\nsecret = "{SECRET}"\n'
        + (f'name = "{name}"\n' if name else "")
        + extra
    )


def serve(tmp_path: Path, subs: str, timeout: str = "2s") -> ApiServer:
    db = f"sqlite:///{tmp_path}/sidecar.db"
    upgrade(make_engine(db))
    text = (
        f'[[api.tokens]]\ntoken = "{TOKEN}"\nscope = "write"\n\n[webhooks]\npoll_interval = "100ms"\n'
        f'timeout = "{timeout}"\nretry_for = "1h"\nbackoff = "200ms"\nbackoff_max = "400ms"\n\n{subs}'
    )
    s = ApiServer(tmp_path, text, db=db).start()
    wait(
        lambda: len(call(s.url, "GET", "/webhooks", TOKEN)[1]["cursors"]) == subs.count("[[webhooks"),
        "subscriptions never started",
    )
    return s


def deliveries(s: ApiServer, subscription: str) -> list[dict[str, Any]]:
    st, page = call(s.url, "GET", f"/webhooks/deliveries?subscription={subscription}", TOKEN)
    assert st == 200
    return page["items"]


def test_https_untrusted_trusted_huge_body_and_secret_urls(tmp_path):
    cert, key = self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    tls, plain, huge = Receiver(tls=ctx), Receiver(), Receiver(huge=True)
    secret_url = plain.url + "/SECRETPATH?token=SECRETQUERY"
    s = serve(
        tmp_path,
        sub(tls.url, "untrusted")
        + sub(tls.url, "trusted", 'ca_file = "receiver.pem"\n')
        + sub(secret_url)
        + sub(huge.url, "huge"),
    )
    try:
        engine = make_engine(s.db)
        ids = [add_bounce(engine, f"u{i}@fail.test") for i in range(4)]
        plain_name = plain.url.rsplit("/", 1)[0]  # http://127.0.0.1:PORT
        # the trusted https receiver, the plain one and the huge one get everything
        wait(
            lambda: (
                set(ids) <= set(plain.received) and set(ids) <= set(tls.received) and set(ids) <= set(huge.received)
            ),
            "deliveries missing",
        )
        wait(lambda: {d["status"] for d in deliveries(s, "huge")} == {"delivered"}, "huge not delivered")
        assert huge.cut_off.wait(10) and huge.sent < 32 * 1024 * 1024, huge.sent  # the rest was never read
        wait(lambda: {d["status"] for d in deliveries(s, "trusted")} == {"delivered"}, "trusted not recorded")
        assert [d["event_id"] for d in deliveries(s, plain_name)] == ids
        # the untrusted one fails verification, and each failure is recorded
        wait(lambda: all(d["attempts"] >= 2 for d in deliveries(s, "untrusted")), "untrusted never retried")
        for d in deliveries(s, "untrusted"):
            assert d["status"] == "pending" and "certificate verify failed" in d["last_error"], d
        wait(lambda: {d["status"] for d in deliveries(s, plain_name)} == {"delivered"}, "plain not recorded")
        metrics = call(s.url, "GET", "/metrics")[1].decode()
        assert 'sidecar_webhook_deliveries_total{outcome="failed",subscription="untrusted"}' in metrics
        assert f'sidecar_webhook_deliveries_total{{outcome="delivered",subscription="{plain_name}"}} 4.0' in metrics
        log = s.log.read_text()
        assert "webhook delivery" in log and "to untrusted failed" in log and "certificate verify failed" in log
        # secrets in a URL's path and query appear nowhere
        listing = call(s.url, "GET", "/webhooks", TOKEN)[1]
        assert plain_name in [x["url"] for x in listing["subscriptions"]]
        for text in (metrics, log, json.dumps(listing), json.dumps(deliveries(s, plain_name))):
            assert "SECRETPATH" not in text and "SECRETQUERY" not in text
    finally:
        s.stop()
        for r in (tls, plain, huge):
            r.stop()


def test_https_without_tls_support_is_recorded_and_holds_nobody_up(tmp_path, monkeypatch):
    """An install without pyOpenSSL (as before twisted[tls] was a dependency), simulated."""
    blocker = tmp_path / "no-tls" / "OpenSSL"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("OpenSSL hidden by the test")\n')
    monkeypatch.setenv("PYTHONPATH", str(blocker.parent))
    plain = Receiver()
    s = serve(tmp_path, sub("https://127.0.0.1:9/hook", "tls") + sub(plain.url, "plain"))
    try:
        engine = make_engine(s.db)
        ids = [add_bounce(engine, f"t{i}@fail.test") for i in range(6)]
        wait(lambda: set(ids) <= set(plain.received), "plain deliveries held up")
        wait(lambda: all(d["attempts"] >= 2 for d in deliveries(s, "tls")), "https failures not recorded")
        assert {d["last_error"] for d in deliveries(s, "tls")} == {TLS_MISSING}
        wait(lambda: {d["status"] for d in deliveries(s, "plain")} == {"delivered"}, "plain not recorded")
        metrics = call(s.url, "GET", "/metrics")[1].decode()
        assert 'sidecar_webhook_deliveries_total{outcome="failed",subscription="tls"}' in metrics
        assert "to tls failed (attempt 2): " + TLS_MISSING in s.log.read_text()
    finally:
        s.stop()
        plain.stop()


class Silent:
    """Accepts connections and reads requests, but never answers (a hung receiver)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.requests = 0
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self.hold, args=(conn,), daemon=True).start()

    def hold(self, conn: socket.socket) -> None:
        if conn.recv(65536).startswith(b"POST "):
            with self.lock:
                self.requests += 1
        while conn.recv(65536):
            pass
        self.requests = -1000  # the sidecar gave up on it: too late for the test's point

    def stop(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_a_hung_receiver_holds_up_no_other_subscription(tmp_path):
    silent, plain = Silent(), Receiver()
    s = serve(tmp_path, sub(silent.url, "hung") + sub(plain.url, "plain"), timeout="60s")
    try:
        engine = make_engine(s.db)
        many = [add_bounce(engine, f"m{i}@fail.test") for i in range(25)]  # more than 20 (the concurrency) at once
        same = [add_bounce(engine, "same@fail.test") for _ in range(6)]  # one address: strictly one after another
        wait(lambda: set(many + same) <= set(plain.received), "plain deliveries held up")
        assert [i for i in plain.received if i in same] == same
        assert silent.requests == 20, "the hung deliveries should all still be in flight"
        wait(lambda: [d["status"] for d in deliveries(s, "plain")] == ["delivered"] * 31, "plain not recorded")
    finally:
        s.stop()
        silent.stop()
        plain.stop()
