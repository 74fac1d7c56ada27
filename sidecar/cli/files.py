"""``sidecar --print-file NAME``: the files shipped in the package, for operators and the role.

The package carries the example configuration, the systemd unit and the logrotate snippet
(``sidecar/data/``, read with :mod:`importlib.resources`), so a wheel alone is enough to
install the service: ``sidecar --print-file postfix-sidecar.service > /etc/systemd/system/...``.
"""

from __future__ import annotations

import sys
from importlib.resources import files

from sidecar.cli.output import EX_UNAVAILABLE

#: name -> path inside the package's data directory
SHIPPED = {
    "sidecar.toml": ("sidecar.toml",),
    "postfix-sidecar.service": ("systemd", "postfix-sidecar.service"),
    "logrotate": ("logrotate", "postfix-sidecar"),
    "main.cf.tmpl": ("postfix", "main.cf.tmpl"),
    "master.cf.tmpl": ("postfix", "master.cf.tmpl"),
}


def shipped_text(name: str) -> str:
    return files("sidecar").joinpath("data", *SHIPPED[name]).read_text(encoding="utf-8")


def print_file(name: str) -> int:
    try:
        text = shipped_text(name)
    except OSError as e:
        print(f"sidecar: --print-file {name}: not in this installation: {e.strerror}", file=sys.stderr)
        return EX_UNAVAILABLE
    sys.stdout.write(text)
    return 0
