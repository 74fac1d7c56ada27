"""Fixtures for the real-Postfix end-to-end tests.

``make_lab(...)`` builds a private Postfix instance from the rendered ``postfix/`` templates,
a loopback SMTP sink as the remote MX, and either the real ``sidecar serve`` or a stub policy
server; bounces go through pipe(8) into ``sidecar ingest`` (or a capture script) as
``nobody``. Everything is stopped by PID and removed at teardown, also when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import textwrap
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lab_policy import StubPolicyServer, policy_query
from lab_postfix import (
    BOUNCE_DOMAIN,
    PostfixLab,
    check_postfix_installed,
    check_user_reaches,
    wait_until,
)
from lab_sidecar import (
    SIDECAR_BIN,
    VENV_BIN,
    SidecarServer,
    command_missing,
    db_rows,
    prepare_db_dir,
    sidecar_json,
)
from lab_sink import SmtpSink

from sidecar.postfix_config import FAIL_CLOSED, values_from_config

PIPE_USER = "nobody"
VERP_KEY = "lab-verp-key"


def lab_sidecar_config(root: Path, db_url: str, server: SidecarServer, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The lab's sidecar.toml as a dict: loopback listeners, the lab DB, the pipe user."""
    settings: dict[str, Any] = {
        "server": {
            "policy": server.policy_endpoints(),
            "http": f"tcp:{server.http_port}:interface=127.0.0.1",
        },
        "database": {"url": db_url, "sync_interval": "0.2s"},
        "ingest": {"socket": str(root / "run" / "ingest.sock"), "verp_key": VERP_KEY},
        "postfix": {
            "bounce_domain": BOUNCE_DOMAIN,
            "pipe_user": PIPE_USER,
            "sidecar_bin": str(SIDECAR_BIN),
            "default_action": FAIL_CLOSED,  # a broken sidecar must show up as failures
            "policy_timeout": "5s",
        },
    }
    for section, table in extra.items():
        settings.setdefault(section, {}).update(table)
    return settings


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(settings: Mapping[str, Mapping[str, Any]]) -> str:
    """Sections of scalars, lists and inline tables: all the lab config needs."""
    out = []
    for section, table in settings.items():
        out.append(f"[{section}]")
        out += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        out.append("")
    return "\n".join(out)


CAPTURE_INGEST = textwrap.dedent(
    """\
    #!/usr/bin/python3
    # Stand-in for `sidecar ingest`: keeps argv and stdin, exits 0.
    import json, os, sys, time
    out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(sys.argv[0]))), "capture")
    name = os.path.join(out, "%d-%d" % (time.time_ns(), os.getpid()))
    with open(name + ".eml", "wb") as fh:
        fh.write(sys.stdin.buffer.read())
    with open(name + ".json", "w") as fh:
        json.dump({"argv": sys.argv[1:], "uid": os.getuid(), "env": dict(os.environ), "cwd": os.getcwd()}, fh)
    """
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@dataclass
class Lab:
    root: Path
    postfix: PostfixLab
    sink: SmtpSink
    db_url: str
    server: SidecarServer | None = None
    stub: StubPolicyServer | None = None
    config_path: Path | None = None
    capture_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def policy_port(self) -> int:
        if self.server is not None:
            return self.server.policy_port
        assert self.stub is not None
        return self.stub.port

    # -- sidecar queries ------------------------------------------------------------------
    def suppressions(self) -> list[dict[str, Any]]:
        return sidecar_json("suppressions", "list", "--db", self.db_url)

    def events(self) -> list[dict[str, Any]]:
        """Bounce/complaint events: `sidecar events list`, or the events table until that lands."""
        if "events_cli" not in self.extra:
            self.extra["events_cli"] = not command_missing("events", "list")
        if self.extra["events_cli"]:
            return sidecar_json("events", "list", "--db", self.db_url)
        return db_rows(self.db_url, "events")

    def suppression_for(self, address: str) -> dict[str, Any] | None:
        for row in self.suppressions():
            if str(row.get("address", row.get("recipient", ""))).lower() == address.lower():
                return row
        return None

    def wait_suppressed(self, address: str, timeout: float = 20.0) -> dict[str, Any]:
        return wait_until(lambda: self.suppression_for(address), timeout, 0.25, f"suppression of {address}")  # type: ignore[no-any-return]

    def policy_action(self, recipient: str, sender: str = "app@lab.test", **attrs: str) -> str:
        return policy_query(self.policy_port, {"recipient": recipient, "sender": sender, **attrs})

    def wait_policy_rejects(self, recipient: str, sender: str, timeout: float = 20.0) -> str:
        """Poll the policy server until it stops answering DUNNO/OK for ``recipient``."""

        def rejected() -> str | None:
            action = self.policy_action(recipient, sender)
            return None if action.split(" ")[0].upper() in ("DUNNO", "OK", "PERMIT") else action

        return wait_until(rejected, timeout, 0.25, f"policy server to refuse {recipient}")  # type: ignore[no-any-return]

    def captured(self) -> list[tuple[dict[str, Any], bytes]]:
        assert self.capture_dir is not None
        out = []
        for meta in sorted(self.capture_dir.glob("*.json")):
            out.append((json.loads(meta.read_text()), meta.with_suffix(".eml").read_bytes()))
        return out

    def diagnostics(self) -> str:
        parts = [f"--- postfix log ({self.postfix.log_file}) ---", self.postfix.log_tail(80)]
        if self.server is not None:
            parts += [f"--- sidecar serve log ({self.server.log_file}) ---", self.server.log_tail(80)]
        with self.sink.log.lock:
            parts += [
                "--- sink ---",
                f"rcpt attempts: {self.sink.log.rcpt_attempts}",
                f"messages: {len(self.sink.log.messages)}",
            ]
        return "\n".join(parts)


@pytest.fixture(scope="session")
def postfix_installed() -> None:
    """Fail (not skip) when Postfix is missing: CI installs it."""
    try:
        check_postfix_installed()
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def sidecar_reachable() -> None:
    """The pipe user must be able to run the venv's sidecar (pipe(8) runs it as that user)."""
    try:
        check_user_reaches(PIPE_USER, SIDECAR_BIN, [str(VENV_BIN / "python"), "-c", "import sidecar"])
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)


MakeLab = Callable[..., Lab]


@pytest.fixture
def make_lab(request: pytest.FixtureRequest, postfix_installed: None) -> Generator[MakeLab, None, None]:
    labs: list[Lab] = []
    cleanups: list[Callable[[], None]] = []

    def build(
        *,
        policy: str = "sidecar",
        ingest: str = "sidecar",
        config: Mapping[str, Any] | None = None,
        values: Mapping[str, str] | None = None,
        extra_main: Mapping[str, str] | None = None,
        rcpt_replies: Mapping[str, str] | None = None,
        data_replies: Mapping[str, str] | None = None,
        policy_unix: bool = False,
    ) -> Lab:
        """A started lab. ``config`` is merged into the lab's sidecar.toml (per section)."""
        root = Path(tempfile.mkdtemp(prefix="sidecar-pfx-", dir="/tmp"))
        os.chmod(root, 0o755)
        cleanups.append(lambda: shutil.rmtree(root, ignore_errors=True))
        sink = SmtpSink()
        sink.rcpt_replies.update({k.lower(): v for k, v in (rcpt_replies or {}).items()})
        sink.data_replies.update({k.lower(): v for k, v in (data_replies or {}).items()})
        sink.start()
        cleanups.append(sink.stop)

        db_dir = root / "db"
        db_url = f"sqlite:///{prepare_db_dir(db_dir, PIPE_USER)}"
        run_dir = root / "run"
        run_dir.mkdir(mode=0o755)

        server = stub = None
        capture_dir = config_path = None
        pf_values: dict[str, str] = {"PIPE_USER": PIPE_USER}
        if policy == "sidecar" or ingest == "sidecar":
            request.getfixturevalue("sidecar_reachable")
            server = SidecarServer(root, db_url=db_url)
            if policy_unix:  # Postfix then talks to the unix socket, the tests to TCP
                server.policy_unix = run_dir / "policy.sock"
            settings = lab_sidecar_config(root, db_url, server, config or {})
            config_path = root / "sidecar.toml"
            config_path.write_text(to_toml(settings))
            config_path.chmod(0o644)
            server.config = config_path
            from sidecar.config import load_config  # not at import: the stub tests run without it

            # the same path `sidecar postfix-config --config FILE` takes
            pf_values.update(values_from_config(load_config(config_path)))
        if policy == "sidecar":
            assert server is not None
            cleanups.append(server.stop)
            server.start()
        elif policy == "stub":
            stub = StubPolicyServer().start()
            cleanups.append(stub.stop)
            pf_values["POLICY_SERVICE"] = f"inet:127.0.0.1:{stub.port}"
        else:
            raise ValueError(policy)
        if ingest == "capture":
            (root / "bin").mkdir()
            script = root / "bin" / "capture-ingest"
            script.write_text(CAPTURE_INGEST)
            script.chmod(0o755)
            capture_dir = root / "capture"
            capture_dir.mkdir(mode=0o777)
            capture_dir.chmod(0o777)
            pf_values.update(SIDECAR_BIN=str(script), INGEST_OPTIONS="")
        elif ingest != "sidecar":
            raise ValueError(ingest)
        pf_values.update(values or {})

        postfix = PostfixLab(root, sink_port=sink.port, values=pf_values, extra_main=extra_main)
        cleanups.append(postfix.stop)
        lab = Lab(root, postfix, sink, db_url, server, stub, config_path, capture_dir)
        labs.append(lab)
        postfix.start()
        return lab

    try:
        yield build
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            for lab in labs:
                print(lab.diagnostics())
        errors: list[BaseException] = []
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except BaseException as exc:  # noqa: BLE001 - keep cleaning up; re-raised below
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def lab(make_lab: MakeLab) -> Lab:
    """The default lab: real sidecar serve + ingest, no extra configuration."""
    return make_lab()
