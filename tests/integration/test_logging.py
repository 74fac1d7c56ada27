"""Log formats of `sidecar serve`: text by default, JSON lines with --log-format json or
logging.format = "json"; access lines for /metrics and /healthz only at DEBUG."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.harness.api import call
from tests.harness.sidecar import BIN, SidecarProcess


class Serve(SidecarProcess):
    def __init__(self, tmp, config_text: str, *flags: str) -> None:
        super().__init__(tmp, f"sqlite:///{tmp}/sidecar.db", config_text)
        self.flags = list(flags)

    def argv(self) -> list[str]:
        argv = super().argv()
        return argv[:1] + self.flags + argv[1:]


def run(tmp, config_text: str, *flags: str) -> list[str]:
    s = Serve(tmp, config_text + '\n[[api.tokens]]\ntoken = "t-123"\nscope = "read"\n', *flags).start()
    try:
        for path in ("/metrics", "/healthz", "/suppressions"):
            call(s.url, "GET", path)
    finally:
        s.stop()
    return s.log.read_text().splitlines()


@pytest.mark.parametrize(
    "config_text,flags",
    [('[logging]\nformat = "json"\n', ()), ("", ("--log-format", "json"))],
    ids=["config-key", "flag"],
)
def test_json_lines(tmp_path, config_text, flags):
    lines = run(tmp_path, config_text, *flags)
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"] == "sidecar" and r["message"].startswith("serving policy on") for r in records)
    access = [r["message"] for r in records if r["logger"] == "sidecar.http.access"]
    assert any('"GET /suppressions HTTP/1.1" 401' in m for m in access), access
    assert not any("/metrics" in m or "/healthz" in m for m in access), access


def test_text_is_the_default_and_debug_shows_probes(tmp_path):
    lines = run(tmp_path / "text", "")
    assert any(" INFO sidecar: serving policy on" in line for line in lines)
    assert not any(line.lstrip().startswith("{") for line in lines)
    assert any("sidecar.http.access" in line and "/suppressions" in line for line in lines)
    assert not any("sidecar.http.access" in line and "/metrics" in line for line in lines)
    lines = run(tmp_path / "debug", "", "--log-level", "DEBUG")
    assert any(" DEBUG sidecar.http.access: " in line and '"GET /metrics HTTP/1.1" 200' in line for line in lines)


def test_bad_format_is_one_line_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[logging]\nformat = "xml"\n')
    out = subprocess.run([str(BIN), "check-config", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "logging.format" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_log_level_of_other_commands_in_text(tmp_path):
    """--log-level INFO is quiet for commands that print their results; --log-level DEBUG/INFO
    asked for explicitly shows the import's phases in the text format too."""
    db = f"sqlite:///{tmp_path}/sidecar.db"
    csv = tmp_path / "list.csv"
    csv.write_text("address\na@example.com\n")
    subprocess.run([str(BIN), "db", "upgrade", "--db", db], check=True, capture_output=True, timeout=60)

    def imported(*flags: str) -> str:
        out = subprocess.run(
            [str(BIN), *flags, "suppressions", "import", str(csv), "--db", db, "--no-progress"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stderr

    assert " INFO " not in imported()
    assert " INFO sidecar" in imported("--log-level", "DEBUG")
