"""SIGHUP's reload (sidecar.cli.serve.Reloader) without a process: what applies, what waits."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from sidecar.cli.serve import Reloader
from sidecar.config import load_config


def _reloader(tmp_path: Path, text: str) -> tuple[Reloader, Path, SimpleNamespace]:
    config = tmp_path / "sidecar.toml"
    config.write_text(text)
    args = argparse.Namespace(config=str(config), db=None, policy=None, http=None, command="serve")
    decider = SimpleNamespace(safe_action="DUNNO")
    top = SimpleNamespace(policy_factory=SimpleNamespace(decide=decider))
    return Reloader(args, load_config(config), reactor=None, top=top), config, decider


def test_safe_action_applies_at_once_other_changes_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    reloader, config, decider = _reloader(tmp_path, '[server]\nsafe_action = "DUNNO"\n')
    config.write_text('[server]\nsafe_action = "451 4.3.5 later"\n[database]\nsync_interval = "2s"\n')
    with caplog.at_level(logging.INFO, logger="sidecar"):
        reloader.reload()
    assert decider.safe_action == "451 4.3.5 later"
    assert "applied [server.safe_action]; changed [database] takes effect at the next restart" in caplog.text


def test_a_bad_file_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    reloader, config, decider = _reloader(tmp_path, '[server]\nsafe_action = "DUNNO"\n')
    config.write_text('[server]\nsafe_action = "451 4.3.5 later"\nbogus = 1\n')
    with caplog.at_level(logging.INFO, logger="sidecar"):
        reloader.reload()
    assert decider.safe_action == "DUNNO"
    [record] = [r for r in caplog.records if "reload:" in r.getMessage()]
    assert record.levelno == logging.ERROR and "server.bogus: unknown key" in record.getMessage()
