"""Who may hand bounces to a running `sidecar serve`, how many at once, how large, and what it costs.

The socket was 0666: any local user could forge bounces (and so suppress any address), and
30 connections of 11 MB took the service from 70 to 378 MB, never given back. Now: 0660 for
the pipe user's group, ingest.max_handoffs connections, the declared length checked before
the body is read, and the body spooled to a temporary file.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.ingest import HARD, q, variant
from tests.harness.sidecar import BIN, SidecarProcess

CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(type(e).__name__)
else:
    print("connected")
"""


@pytest.fixture(scope="module")
def users() -> Iterator[tuple[str, str]]:
    """(pipe user, another local user): throwaway system users, removed afterwards."""
    tag = f"{os.getpid() % 100000}"
    pipe, other = f"sct{tag}pipe", f"sct{tag}other"
    for name in (pipe, other):
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
    try:
        yield pipe, other
    finally:
        for name in (pipe, other):
            subprocess.run(["userdel", name], capture_output=True, check=False)
            subprocess.run(["groupdel", name], capture_output=True, check=False)


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory other users can traverse (pytest's own tmp directories are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="sidecar-sock-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_user(user: str, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["runuser", "-u", user, "--", *argv], input=stdin, capture_output=True, timeout=120)


def serve(root: Path, sock: Path, extra: str = "") -> SidecarProcess:
    config = f'[ingest]\nsocket = "{sock}"\n{extra}'
    sidecar = SidecarProcess(root / "service", f"sqlite:///{root}/service/s.db", config)
    sidecar.start()
    return sidecar


def handoff(sock: Path, data: bytes, declared: int | None = None) -> bytes:
    """One hand-off as `sidecar ingest` does it; the reply line (b"" when closed unanswered)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(str(sock))
    header = {
        "v": 1,
        "sender": "",
        "recipient": "bounces@x",
        "queue_id": "",
        "extension": "",
        "size": len(data),
        "truncated": False,
        "length": len(data) if declared is None else declared,
    }
    try:
        s.sendall(json.dumps(header).encode() + b"\n" + data)
        buf = b""
        while b"\n" not in buf:
            part = s.recv(4096)
            if not part:
                break
            buf += part
        return buf
    except (BrokenPipeError, ConnectionResetError):
        return b""
    finally:
        s.close()


def test_only_the_pipe_users_group_reaches_the_socket(base: Path, users: tuple[str, str]) -> None:
    pipe, other = users
    (base / "open").mkdir(mode=0o755)  # a directory anyone may traverse: the socket's mode decides
    sock = base / "open" / "ingest.sock"
    sidecar = serve(base, sock, f'[postfix]\npipe_user = "{pipe}"\n')
    try:
        st = os.stat(sock)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == pwd.getpwnam(pipe).pw_gid
        python = "/usr/bin/python3"
        assert as_user(other, python, "-c", CONNECT, str(sock)).stdout.strip() == b"PermissionError"
        assert as_user(pipe, python, "-c", CONNECT, str(sock)).stdout.strip() == b"connected"
        # the real command: the pipe user's message is recorded by the service (the user cannot
        # write the database itself); another user's is not, and `sidecar ingest` keeps it (75)
        config = base / "ingest.toml"
        config.write_text(f'[database]\nurl = "sqlite:///{base}/service/s.db"\n[ingest]\nsocket = "{sock}"\n')
        os.chmod(config, 0o644)
        r = as_user(pipe, str(BIN), "ingest", "--config", str(config), stdin=HARD.read_bytes())
        assert r.returncode == 0, r.stderr
        r = as_user(other, str(BIN), "ingest", "--config", str(config), stdin=variant(HARD, 1))
        assert r.returncode == 75, r.stderr
        assert q(base / "service" / "s.db", "select count(*) from raw_messages") == [(1,)]
    finally:
        sidecar.stop()


def test_the_directory_it_creates_is_the_groups(base: Path, users: tuple[str, str]) -> None:
    pipe, _ = users
    sock = base / "run" / "ingest.sock"
    sidecar = serve(base, sock, f'[postfix]\npipe_user = "{pipe}"\n')
    try:
        st = os.stat(sock.parent)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o750, pwd.getpwnam(pipe).pw_gid)
    finally:
        sidecar.stop()
    assert not sock.exists()


def test_socket_group_setting(base: Path, users: tuple[str, str]) -> None:
    _, other = users
    sock = base / "g" / "ingest.sock"
    sidecar = serve(base, sock, f'socket_group = "{other}"\n')
    try:
        assert os.stat(sock).st_gid == grp.getgrnam(other).gr_gid
    finally:
        sidecar.stop()


def test_connection_cap_and_declared_length(tmp_path: Path) -> None:
    sock = tmp_path / "ingest.sock"
    sidecar = serve(tmp_path, sock, 'max_handoffs = 2\nmax_message_size = "1MB"\n')
    try:
        held = [socket.socket(socket.AF_UNIX) for _ in range(2)]
        for s in held:
            s.connect(str(sock))
            s.sendall(b'{"v":1,')  # a header still arriving
        time.sleep(0.2)  # let the service accept both before the third connects
        third = socket.socket(socket.AF_UNIX)
        third.settimeout(10)
        third.connect(str(sock))
        assert third.recv(100) == b""  # closed at once, unanswered
        third.close()
        for s in held:
            s.close()
        # larger than ingest.max_message_size: closed before the body is read, nothing stored
        assert handoff(sock, b"x" * (2 << 20)) == b""
        assert handoff(sock, b"x" * 10, declared=(1 << 20) + 1) == b""
        # the slots are free again, and a message of the right size goes through
        deadline = time.monotonic() + 10
        while (reply := handoff(sock, HARD.read_bytes())) == b"" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reply.startswith(b"OK parsed"), reply
        assert q(tmp_path / "service" / "s.db", "select count(*) from raw_messages") == [(1,)]
    finally:
        sidecar.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_memory_stays_bounded_under_large_hand_offs(tmp_path: Path) -> None:
    sock = tmp_path / "ingest.sock"
    sidecar = serve(tmp_path, sock)
    try:
        assert sidecar.proc is not None
        pid = sidecar.proc.pid
        assert handoff(sock, HARD.read_bytes()).startswith(b"OK")  # warm: parser and recorder loaded
        before = rss_mb(pid)
        big = b"X-Filler: " + b"0123456789abcdef" * (11 << 16) + b"\n"  # 11 MB
        fits = variant(HARD, 7) + b"\n" + b"y" * (10 * 1024 * 1024 - len(variant(HARD, 7)) - 1)  # exactly 10 MB
        replies: list[bytes] = []

        def attempt(n: int) -> None:
            replies.append(handoff(sock, fits if n % 10 == 0 else big))

        threads = [threading.Thread(target=attempt, args=(n,)) for n in range(30)]
        for t in threads:
            t.start()
        peak = 0.0
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_mb(pid))
            time.sleep(0.05)
        for t in threads:
            t.join()
        after = rss_mb(pid)
        print(
            f"hand-off flood: RSS {before:.0f} MB before, {peak:.0f} MB peak, {after:.0f} MB after "
            f"(30 attempts: 27 x 11 MB, 3 x 10 MB)"
        )
        assert sorted(replies)[:27] == [b""] * 27  # 11 MB: over the limit, closed unanswered
        assert sum(r.startswith(b"OK") for r in replies) == 3
        assert after - before < 25, (before, peak, after)
        assert peak - before < 120, (before, peak, after)
    finally:
        sidecar.stop()
