"""A private Postfix instance for tests: own config dir, queue, log and loopback ports.

The sidecar wiring comes from the rendered ``postfix/`` templates (the one source); this
module only adds what a lab needs: paths, loopback ports, relayhost = the sink, no DNS,
no local delivery, short queue times and XCLIENT for loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab_checks import SBIN, LabError

from sidecar.postfix_config import render
from tests.harness.system import free_port, pid_alive, port_in_use

MYHOSTNAME = "mail.lab.test"
BOUNCE_DOMAIN = "bounce.lab.test"

MASTER_CF_BASE = """\
# lab instance: Postfix's own services (chroot = n everywhere)
{smtpd_listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------
# SMTP client side


@dataclass
class SendResult:
    """Outcome of one SMTP transaction against the instance."""

    accepted: bool
    stage: str  # "xclient", "mail", "rcpt", "data", "eom" or "done"
    code: int
    message: str
    rcpt: dict[str, tuple[int, str]] = field(default_factory=dict)

    def rcpt_code(self, address: str) -> int:
        return self.rcpt[address][0]


# ---------------------------------------------------------------------------------------
# The instance


class PostfixLab:
    def __init__(
        self,
        root: Path,
        *,
        sink_port: int,
        values: Mapping[str, str],
        extra_main: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.config_dir = root / "etc"
        self.queue_dir = root / "queue"
        self.data_dir = root / "data"
        self.log_file = root / "log" / "postfix.log"
        self.smtpd_port = free_port()
        self.sink_port = sink_port
        self.values = dict(values)
        self.extra_main = dict(extra_main or {})
        self.master_pid: int | None = None
        self._log_mark = 0

    # -- configuration --------------------------------------------------------------------
    def lab_settings(self) -> dict[str, str]:
        r = str(self.root)
        return {
            "compatibility_level": "3.6",
            "syslog_name": "postfix-sidecar-lab",
            "queue_directory": f"{r}/queue",
            "data_directory": f"{r}/data",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": r,
            "myhostname": MYHOSTNAME,
            "mydomain": "lab.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{self.sink_port}",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "local_transport": "error:5.1.1 local delivery disabled in lab",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "queue_run_delay": "5s",
            "minimal_backoff_time": "5s",
            "maximal_backoff_time": "10s",
            "maximal_queue_lifetime": "60s",
            "bounce_queue_lifetime": "60s",
            "delay_warning_time": "1s",
            **self.extra_main,
        }

    def write_config(self) -> dict[str, str]:
        rendered = render({"BOUNCE_DOMAIN": BOUNCE_DOMAIN, **self.values})
        lab = self.lab_settings()
        template_params = set(re.findall(r"^([a-z][a-z0-9_-]*)\s*=", rendered["main.cf"], re.MULTILINE))
        clash = sorted(template_params & set(lab))
        if clash:
            raise LabError(f"lab settings must not override the template's: {clash}")
        main = "# lab instance settings\n" + "".join(f"{k} = {v}\n" for k, v in lab.items())
        main += "\n" + rendered["main.cf"]
        master = MASTER_CF_BASE.format(smtpd_listen=f"127.0.0.1:{self.smtpd_port}") + "\n" + rendered["master.cf"]
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "main.cf").write_text(main)
        (self.config_dir / "master.cf").write_text(master)
        return {"main.cf": main, "master.cf": master}

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> PostfixLab:
        os.chmod(self.root, 0o755)  # postfix and the pipe user must traverse it
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.data_dir, postfix_user.pw_uid, postfix_user.pw_gid)  # master.lock lives here
        self.write_config()
        for port in (self.smtpd_port,):
            if port_in_use(port):
                raise LabError(f"port {port} on 127.0.0.1 is already in use; refusing to start")
        check = self.run("postfix", "check", check=False)
        if check.returncode != 0:
            raise LabError(f"postfix check failed: {check.stdout}{check.stderr}")
        started = self.run("postfix", "start", check=False)
        if started.returncode != 0:
            raise LabError(
                f"postfix start failed (exit {started.returncode}): {started.stdout}{started.stderr}\n{self.log_tail()}"
            )
        pid_file = self.queue_dir / "pid" / "master.pid"
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 15, what=f"{pid_file}")
        self.master_pid = int(pid_file.read_text().split()[0])
        wait_until(lambda: port_in_use(self.smtpd_port), 15, what=f"smtpd on 127.0.0.1:{self.smtpd_port}")
        return self

    def stop(self) -> None:
        """Stop the master (postfix stop, then signals by PID); raise if it survives."""
        if self.master_pid is None:
            pid_file = self.queue_dir / "pid" / "master.pid"
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.master_pid = int(pid_file.read_text().split()[0])
        if self.master_pid is None or not pid_alive(self.master_pid):
            return
        pid = self.master_pid
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.run("postfix", "stop", check=False, timeout=30)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not pid_alive(pid), 15, what="master to exit")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not pid_alive(pid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            with contextlib.suppress(AssertionError):
                wait_until(lambda: not pid_alive(pid), 5, what="master to exit")
        if pid_alive(pid):
            raise AssertionError(f"Postfix master PID {pid} is still running after stop, TERM and KILL")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- tools ----------------------------------------------------------------------------
    def run(self, tool: str, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(SBIN / tool), "-c", str(self.config_dir), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}"
            )
        return result

    def queue(self) -> list[dict[str, object]]:
        out = self.run("postqueue", "-j").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def flush(self) -> None:
        self.run("postqueue", "-f")

    def expire_all(self) -> None:
        """Mark every queued message expired (postsuper -e ALL) and flush: final DSNs now."""
        self.run("postsuper", "-e", "ALL")
        self.flush()

    def wait_queue_empty(self, timeout: float = 30.0, flush: bool = True) -> None:
        deadline = time.monotonic() + timeout
        last_flush = 0.0
        while True:
            q = self.queue()
            if not q:
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"queue not empty after {timeout}s: {q}\n{self.log_tail()}")
            if flush and time.monotonic() - last_flush > 1.0:
                self.flush()
                last_flush = time.monotonic()
            time.sleep(0.1)

    # -- log ------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def mark_log(self) -> int:
        """Remember the log's current end; later waits look only after it."""
        self._log_mark = len(self.log_text())
        return self._log_mark

    def wait_for_log(
        self, pattern: str, timeout: float = 20.0, since: int | None = None, count: int = 1
    ) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        start = self._log_mark if since is None else since

        def found() -> list[re.Match[str]]:
            matches = list(regex.finditer(self.log_text()[start:]))
            return matches if len(matches) >= count else []

        try:
            return wait_until(found, timeout, interval=0.1, what=f"log line /{pattern}/")  # type: ignore[no-any-return]
        except AssertionError:
            raise AssertionError(
                f"no log line /{pattern}/ ({count}x) within {timeout}s; log tail:\n{self.log_tail()}"
            ) from None

    # -- SMTP -----------------------------------------------------------------------------
    def send(
        self,
        sender: str,
        recipients: Sequence[str],
        *,
        subject: str = "lab message",
        body: str = "hello from the lab\n",
        raw: bytes | None = None,
        xclient: Mapping[str, str] | None = None,
        helo: str = "app.lab.test",
    ) -> SendResult:
        """One SMTP transaction; never raises for SMTP replies, returns where it stopped."""
        if raw is None:
            raw = (
                f"From: <{sender}>\r\nTo: {', '.join(f'<{r}>' for r in recipients)}\r\n"
                f"Subject: {subject}\r\nMessage-ID: <{time.time_ns()}@app.lab.test>\r\n\r\n"
                + body.replace("\n", "\r\n")
            ).encode()
        smtp = smtplib.SMTP("127.0.0.1", self.smtpd_port, local_hostname=helo, timeout=60)
        try:
            smtp.ehlo(helo)
            if xclient:
                code, msg = smtp.docmd("XCLIENT", " ".join(f"{k}={v}" for k, v in xclient.items()))
                if code != 220:
                    return SendResult(False, "xclient", code, msg.decode())
                smtp.ehlo(xclient.get("HELO", helo))
            code, msg = smtp.mail(sender)
            if code != 250:
                return SendResult(False, "mail", code, msg.decode())
            rcpt: dict[str, tuple[int, str]] = {}
            for r in recipients:
                code, msg = smtp.rcpt(r)
                rcpt[r] = (code, msg.decode())
            ok = [r for r, (c, _) in rcpt.items() if c in (250, 251)]
            if not ok:
                first = next(iter(rcpt.values()))
                return SendResult(False, "rcpt", first[0], first[1], rcpt)
            try:
                code, msg = smtp.data(raw)
            except smtplib.SMTPDataError as exc:  # refused at DATA (before the content)
                error = exc.smtp_error
                text = error.decode() if isinstance(error, bytes) else str(error)
                return SendResult(False, "data", exc.smtp_code, text, rcpt)
            if code != 250:  # refused at END-OF-MESSAGE
                return SendResult(False, "eom", code, msg.decode(), rcpt)
            return SendResult(True, "done", code, msg.decode(), rcpt)
        finally:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()

    def inject(
        self, sender: str, recipient: str, messages: Sequence[bytes], *, connections: int = 4, helo: str = "lab.test"
    ) -> list[tuple[int, str]]:
        """Many messages to one recipient over ``connections`` parallel SMTP sessions, many
        transactions per session; returns the refusals as (code, text) (empty: all accepted)."""
        refused: list[tuple[int, str]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def session(batch: Sequence[bytes]) -> None:
            try:
                smtp = smtplib.SMTP("127.0.0.1", self.smtpd_port, local_hostname=helo, timeout=120)
            except OSError as exc:
                errors.append(exc)
                return
            try:
                for raw in batch:
                    try:
                        smtp.sendmail(sender, [recipient], raw)
                    except smtplib.SMTPResponseException as exc:
                        with lock:
                            refused.append((exc.smtp_code, str(exc.smtp_error)))
                        smtp.rset()
                    except smtplib.SMTPRecipientsRefused as exc:
                        with lock:
                            refused.extend((c, m.decode()) for c, m in exc.recipients.values())
                        smtp.rset()
            except BaseException as exc:
                errors.append(exc)
            finally:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    smtp.quit()

        threads = [
            threading.Thread(target=session, args=(messages[i::connections],), name=f"inject-{i}")
            for i in range(min(connections, len(messages)))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise AssertionError(f"SMTP injection failed: {errors[0]!r}") from errors[0]
        return refused

    def queue_id_of(self, result: SendResult) -> str:
        m = re.search(r"queued as ([0-9A-Za-z]+)", result.message)
        if not m:
            raise AssertionError(f"no queue id in {result}")
        return m.group(1)
