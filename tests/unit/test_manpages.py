"""The manual pages in man/ are what man/build.py makes from their sources now.

sidecar(8) comes from the argparse tree, sidecar.toml(5) from docs/configuration.md: after
changing either, `make man` regenerates them (this test names the stale page).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _build():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("man_build", ROOT / "man" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_man_pages_are_current() -> None:
    for name, text in _build().pages().items():
        assert (ROOT / "man" / name).read_text(encoding="utf-8") == text, f"man/{name} is stale: run `make man`"


def test_pages_carry_every_command_and_every_key() -> None:
    from sidecar.config import iter_documented_keys

    pages = _build().pages()
    for command in ("serve", "check-config", "postfix-config", "suppressions", "ingest"):
        assert f"sidecar {command}" in pages["sidecar.8"].replace("\\-", "-"), command
    toml5 = pages["sidecar.toml.5"].replace("\\-", "-")
    for key, *_ in iter_documented_keys():
        assert key in toml5, key
    assert toml5.startswith('.TH SIDECAR.TOML "5"') and ".SH DESCRIPTION" in toml5
