"""The package as an operator gets it: an sdist, a wheel built from it, ``pip install --user``.

The wheel is installed for a throwaway user (HOME and PYTHONUSERBASE in a temporary
directory) with Debian's /usr/bin/python3, no virtualenv, and run from an empty directory,
so nothing can come from this checkout: the Postfix templates, the example configuration and
the systemd unit must come from the installed package data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import sidecar

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # the sdist first (MANIFEST.in), then the wheel from the sdist alone
    r = _run(
        [sys.executable, "-c", f"from setuptools import build_meta as b; print(b.build_sdist({str(out)!r}))"],
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    sdist = out / r.stdout.strip().splitlines()[-1]
    r = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(sdist)]
    )
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("postfix_sidecar-*.whl")
    return whl


@pytest.fixture(scope="module")
def user_install(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "SIDECAR_CONFIG", "PYTHONPATH")}
    env.update(HOME=str(home), PYTHONUSERBASE=str(home / ".local"), PIP_BREAK_SYSTEM_PACKAGES="1")
    # this environment's pip, run for Debian's interpreter (pip --python): no python3-pip needed
    pip = [sys.executable, "-m", "pip", "--python", PYTHON, "install", "-q", "--user", "--no-deps", "--no-index"]
    r = _run([*pip, "--no-warn-script-location", str(wheel)], env=env)
    assert r.returncode == 0, r.stderr
    # the dependencies from the test's environment (PYTHONPATH: no .pth files, so not our
    # editable checkout); the package itself only from the user site
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    env["PATH"] = f"{home / '.local' / 'bin'}:{env['PATH']}"
    return env


def _sidecar(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(Path(env["PYTHONUSERBASE"]) / "bin" / "sidecar"), *args], env=env, cwd=cwd)


def test_wheel_carries_licence_notice_data_and_version(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        assert f"Version: {sidecar.__version__}" in meta
        assert ("License: MIT" in meta or "License-Expression: MIT" in meta) and "Keywords:" in meta
        assert any(n.endswith("LICENSE") for n in names) and any(n.endswith("NOTICE") for n in names)
        for shipped, source in (
            ("sidecar/data/postfix/main.cf.tmpl", "postfix/main.cf.tmpl"),
            ("sidecar/data/postfix/master.cf.tmpl", "postfix/master.cf.tmpl"),
            ("sidecar/data/systemd/postfix-sidecar.service", "contrib/systemd/postfix-sidecar.service"),
            ("sidecar/data/sidecar.toml", "contrib/sidecar.toml"),
            ("sidecar/data/logrotate/postfix-sidecar", "contrib/logrotate/postfix-sidecar"),
            ("sidecar/data/man/sidecar.8", "man/sidecar.8"),
            ("sidecar/data/man/sidecar.toml.5", "man/sidecar.toml.5"),
        ):
            assert z.read(shipped) == (ROOT / source).read_bytes(), shipped  # the file, not a link
        assert any(n.startswith("sidecar/store/migrations/versions/") for n in names)


def test_user_install_finds_its_templates_and_files(user_install: dict[str, str], tmp_path: Path) -> None:
    env = user_install
    r = _sidecar(env, "--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"sidecar (postfix-sidecar) {sidecar.__version__}", r
    where = _run([PYTHON, "-c", "import sidecar; print(sidecar.__file__)"], env=env, cwd=tmp_path)
    assert where.stdout.startswith(env["PYTHONUSERBASE"]), where  # not this checkout

    example = tmp_path / "sidecar.toml"
    example.write_text(_sidecar(env, "--print-file", "sidecar.toml", cwd=tmp_path).stdout)
    assert example.read_text() == (ROOT / "contrib" / "sidecar.toml").read_text()
    r = _sidecar(env, "postfix-config", "--config", str(example), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "check_policy_service inet:127.0.0.1:10031" in r.stdout
    assert "bounce.example.com" in r.stdout
    r = _sidecar(env, "--print-file", "postfix-sidecar.service", cwd=tmp_path)
    assert "Type=notify" in r.stdout.splitlines()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sidecar.toml"]


def test_a_command_without_a_configuration_creates_nothing_and_says_where_it_looked(
    user_install: dict[str, str], tmp_path: Path
) -> None:
    if Path("/etc/postfix-sidecar/sidecar.toml").exists():
        pytest.fail("/etc/postfix-sidecar/sidecar.toml exists on this machine: the test needs it absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["suppressions", "list"], ["stats"], ["check-config"], ["serve"], ["import", "x.mbox"]):
        r = _sidecar(user_install, *args, cwd=empty)
        assert r.returncode == 78, (args, r)
        assert r.stderr.count("\n") == 1 and "/etc/postfix-sidecar/sidecar.toml" in r.stderr, (args, r.stderr)
        assert "SIDECAR_CONFIG" in r.stderr
    # a configuration whose SQLite file is not there: named, not created
    config = tmp_path / "c.toml"
    config.write_text('[database]\nurl = "sqlite:///var/s.db"\n')
    r = _sidecar({**user_install, "SIDECAR_CONFIG": str(config)}, "suppressions", "list", cwd=empty)
    assert r.returncode == 69 and r.stderr.count("\n") == 1 and f"{tmp_path}/var/s.db" in r.stderr, r
    assert list(empty.iterdir()) == [] and not (tmp_path / "var").exists()
    r = _sidecar(user_install, "stats", "--config", str(tmp_path / "nope.toml"), cwd=empty)
    assert r.returncode == 78 and "nope.toml: no such file" in r.stderr, r
