"""Expected failures of the `sidecar` command end in one line on stderr, never a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.harness.sidecar import BIN
from tests.harness.system import free_port


def sidecar(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60, **kw)  # type: ignore


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["suppressions", "list"],
        ["suppressions", "add", "a@example.com"],
        ["limits", "reset", "x:y"],
        ["db", "upgrade"],
        ["events", "list"],
        ["stats"],
    ],
)
def test_database_unreachable(argv: list[str], tmp_path: Path) -> None:
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/sidecar"  # nothing listens there
    config = tmp_path / "sidecar.toml"
    config.write_text('[[ratelimit.rules]]\nname = "x"\nkey = ["sasl_username"]\nlimits = [{ rate = 5, per = "1m" }]\n')
    r = sidecar(*argv, "--db", down, "--config", str(config))
    line = one_line(r.stderr)
    assert r.returncode == 69, r
    assert line.startswith(f"sidecar {argv[0]}: database unavailable: ") and "refused" in line, line


@pytest.mark.parametrize("command", ["db", "suppressions", "limits"])
def test_no_subcommand_prints_its_usage(command: str) -> None:
    r = sidecar(command)
    assert r.returncode == 2, r
    assert r.stderr.startswith(f"usage: sidecar {command} ") and "Traceback" not in r.stderr, r.stderr
    assert "required: ACTION" in r.stderr


def test_json_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/s.db"
    csv = tmp_path / "many.csv"
    csv.write_text("address\n" + "".join(f"user{n}@example.com\n" for n in range(3000)))
    assert sidecar("suppressions", "import", str(csv), "--db", db, "--no-progress").returncode == 0
    # `sidecar suppressions list --json | head -1`: far more than a pipe buffer, the reader leaves
    proc = subprocess.Popen(
        [str(BIN), "suppressions", "list", "--json", "--limit", "3000", "--db", db],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"{")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(30) == 141, err
    assert err == b""


def test_ingest_with_standard_input_closed_defers(tmp_path: Path) -> None:
    r = sidecar(
        "ingest",
        "--no-handoff",
        "--db",
        f"sqlite:///{tmp_path}/s.db",
        "--recipient",
        "b@x",
        preexec_fn=lambda: os.close(0),
    )
    line = one_line(r.stderr)
    assert r.returncode == 75, r
    assert line == (
        "sidecar ingest: temporary failure, message kept for retry: "
        "TempFail: standard input is closed (no message to read)"
    ), line
