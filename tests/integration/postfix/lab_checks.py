"""Preconditions of the Postfix lab: a real Postfix, root, and a pipe user that reaches the venv.

Each check fails with a LabError that says what to fix (the conftest turns them into failures,
not skips: CI installs Postfix).
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Sequence
from pathlib import Path

POSTFIX_TOOLS = ("postfix", "postconf", "postqueue", "postsuper")
SBIN = Path("/usr/sbin")


class LabError(AssertionError):
    """The lab cannot run here; the message says what to fix."""


def check_postfix_installed() -> None:
    problems = [f"{SBIN / tool} is missing" for tool in POSTFIX_TOOLS if not (SBIN / tool).exists()]
    for kind, name, lookup in (("user", "postfix", pwd.getpwnam), ("group", "postdrop", grp.getgrnam)):
        try:
            lookup(name)
        except KeyError:
            problems.append(f"{kind} {name!r} does not exist")
    if problems:
        raise LabError(
            "Postfix integration tests need a real Postfix: "
            + "; ".join(problems)
            + '. Install it with: echo "postfix postfix/main_mailer_type select No configuration"'
            " | debconf-set-selections; DEBIAN_FRONTEND=noninteractive apt-get install -y -q"
            " --no-install-recommends postfix swaks"
        )
    if os.geteuid() != 0:
        raise LabError("Postfix integration tests must run as root (the Postfix master runs as root)")


def _user_can(user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", *argv], check=False, capture_output=True, text=True, timeout=60)


def check_user_reaches(user: str, executable: Path, python_check: Sequence[str] = ()) -> None:
    """Fail clearly unless ``user`` can traverse to and run ``executable`` (pipe(8) runs as it)."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise LabError(f"pipe user {user!r} does not exist") from None
    for path in [*reversed(executable.parents), executable]:
        if _user_can(user, "test", "-x", str(path)).returncode != 0:
            raise LabError(
                f"pipe(8) runs the ingester as {user!r}, who cannot reach {path} "
                f"(mode {oct(path.stat().st_mode & 0o7777) if path.exists() else 'missing'}); "
                f"{executable} is unusable. Put the venv outside root's home (e.g. made with "
                "/usr/bin/python3) or chmod o+x the directory."
            )
    if python_check:
        result = _user_can(user, *python_check)
        if result.returncode != 0:
            raise LabError(
                f"as {user!r}, `{' '.join(python_check)}` failed (exit {result.returncode}): "
                f"{result.stderr.strip()[-800:]}"
            )
