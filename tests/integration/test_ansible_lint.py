"""ansible-lint passes on the production profile for ansible/ (the role, site.yml).

Run offline: ansible-lint needs nothing but the role itself (ansible.builtin modules only). As
root the run gets its own network namespace (unshare -n), so it cannot reach anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_role_is_ansible_lint_clean_on_the_production_profile(tmp_path: Path) -> None:
    lint = Path(sys.executable).with_name("ansible-lint")
    assert lint.exists(), "ansible-lint is in the [test] extra"
    argv = [str(lint), "--profile", "production", "--offline", "--nocolor", "."]
    if os.geteuid() == 0 and shutil.which("unshare"):
        argv = ["unshare", "-n", *argv]
    env = {**os.environ, "HOME": str(tmp_path), "ANSIBLE_HOME": str(tmp_path / "ansible"), "NO_COLOR": "1"}
    env["PATH"] = f"{lint.parent}:{env.get('PATH', '/usr/bin:/bin')}"
    r = subprocess.run(argv, cwd=ROOT / "ansible", capture_output=True, text=True, env=env, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out, out
