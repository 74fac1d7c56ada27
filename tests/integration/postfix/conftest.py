"""Fixtures for the real-Postfix end-to-end tests.

``make_lab(...)`` builds a private Postfix instance from the rendered ``postfix/`` templates,
a loopback SMTP sink as the remote MX, and either the real ``sidecar serve`` or a stub policy
server; bounces go through pipe(8) into ``sidecar ingest`` (or a capture script) as
``nobody``. Everything is stopped by PID and removed at teardown, also when a test fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any

import pytest
from lab_checks import check_postfix_installed, check_user_reaches
from lab_env import CAPTURE_INGEST, PIPE_USER, Lab, MakeLab, lab_sidecar_config, to_toml
from lab_policy import StubPolicyServer
from lab_postfix import PostfixLab
from lab_sidecar import SidecarServer, prepare_db_dir
from lab_sink import SmtpSink

from sidecar.postfix_config import values_from_config
from tests.harness.sidecar import BIN


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


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
        check_user_reaches(PIPE_USER, BIN, [str(BIN.with_name("python")), "-c", "import sidecar"])
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)


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
        db_url: str | None = None,
    ) -> Lab:
        """A started lab. ``config`` is merged into the lab's sidecar.toml (per section);
        ``db_url`` replaces the lab's own SQLite file (e.g. a test's private PostgreSQL)."""
        root = Path(tempfile.mkdtemp(prefix="sidecar-pfx-", dir="/tmp"))
        os.chmod(root, 0o755)
        cleanups.append(lambda: shutil.rmtree(root, ignore_errors=True))
        sink = SmtpSink()
        sink.rcpt_replies.update({k.lower(): v for k, v in (rcpt_replies or {}).items()})
        sink.data_replies.update({k.lower(): v for k, v in (data_replies or {}).items()})
        sink.start()
        cleanups.append(sink.stop)

        if db_url is None:
            db_url = f"sqlite:///{prepare_db_dir(root / 'db', PIPE_USER)}"
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
            pf_values.pop("PIPE_COMMAND", None)  # argv = the capture script (SIDECAR_BIN ingest)
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
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def lab(make_lab: MakeLab) -> Lab:
    """The default lab: real sidecar serve + ingest, no extra configuration."""
    return make_lab()
