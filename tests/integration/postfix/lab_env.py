"""The lab as tests see it: the Lab object, the sidecar.toml the lab writes, shared constants."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab_policy import StubPolicyServer, policy_query
from lab_postfix import BOUNCE_DOMAIN, PostfixLab, wait_until
from lab_sidecar import SidecarServer, command_missing, db_rows, sidecar_json
from lab_sink import SmtpSink

from sidecar.postfix_config import FAIL_CLOSED
from tests.harness.sidecar import BIN

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
            "sidecar_bin": str(BIN),
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
            parts += [f"--- sidecar serve log ({self.server.log}) ---", self.server.log_tail(80)]
        with self.sink.log.lock:
            parts += [
                "--- sink ---",
                f"rcpt attempts: {self.sink.log.rcpt_attempts}",
                f"messages: {len(self.sink.log.messages)}",
            ]
        return "\n".join(parts)


MakeLab = Callable[..., Lab]
