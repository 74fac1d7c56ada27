"""A wheelhouse without a package index: the project's wheel (built from a copy of the checkout)
and its dependency closure, repacked from this environment's installed distributions. The
Ansible role installs from it with pip --no-index (tests/integration/postfix/test_ansible_role.py,
tests/integration/test_fleet.py)."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import parse_tag, sys_tags

REPO = Path(__file__).resolve().parents[2]


def _repack(dist: metadata.Distribution, out: Path) -> None:
    """Write an installed distribution back as a wheel (its files under site-packages)."""
    site = Path(str(dist.locate_file("")))
    wheel_file = (dist.read_text("WHEEL") or "").splitlines()
    tags = [line.split(":", 1)[1].strip() for line in wheel_file if line.startswith("Tag:")]
    ours = {str(t) for t in sys_tags()}
    # e.g. hyperlink lists py2-none-any first; a compressed set (rbloom's "cp37-abi3-manylinux_2_17_x86_64.
    # manylinux2014_x86_64") names the wheel as it is
    tag = next(t for t in tags if any(str(x) in ours for x in parse_tag(t)))
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    records, info_dir = [], ""
    with zipfile.ZipFile(out / f"{name}-{dist.version}-{tag}.whl", "w") as whl:
        for f in dist.files or ():
            parts = f.parts
            if parts[0] == ".." or "__pycache__" in parts:
                continue  # scripts (pip makes them again from entry_points.txt), bytecode
            if parts[0].endswith(".dist-info"):
                info_dir = parts[0]
                if parts[-1] in skip:
                    continue
            data = (site / f).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            whl.writestr(str(f), data)
            records.append(f"{f},sha256={digest},{len(data)}")
        whl.writestr(f"{info_dir}/RECORD", "\n".join([*records, f"{info_dir}/RECORD,,"]) + "\n")


def build_wheelhouse(out: Path, extras: tuple[str, ...] = ()) -> Path:
    """The project's wheel (built from a copy of the source) and its dependency closure, with
    the dependencies of ``extras`` (e.g. postgresql, redis). ``out`` is made; returns the wheel."""
    out.mkdir(parents=True, exist_ok=True)
    src = out.parent / "src"
    src.mkdir()
    for item in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "NOTICE", "MANIFEST.in"):
        shutil.copy2(REPO / item, src / item)
    for item in ("postfix", "sidecar", "contrib", "man"):  # sidecar/data links into the others
        shutil.copytree(REPO / item, src / item, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "-w", str(out), str(src)], check=True, capture_output=True, timeout=120)
    todo: list[tuple[str, set[str]]] = [(r, {"", *extras}) for r in metadata.requires("postfix-sidecar") or ()]
    seen: set[str] = set()
    while todo:
        text, wanted = todo.pop()
        req = Requirement(text)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in wanted):
            continue
        dist = metadata.distribution(req.name)
        key = dist.metadata["Name"].lower()
        if key not in seen:
            _repack(dist, out)
        seen.add(key)
        todo += [(r, set(req.extras) | {""}) for r in dist.requires or ()]
    return next(out.glob("postfix_sidecar-*.whl"))
