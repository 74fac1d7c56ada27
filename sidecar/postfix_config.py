"""Render the Postfix snippets in ``postfix/`` (main.cf and master.cf) for a configuration.

The templates are the single source for the documentation, the integration tests and the
deployment tooling. They are package data (``sidecar/data/postfix/`` links to ``postfix/``,
so a wheel carries the files themselves), read with :mod:`importlib.resources`.
Placeholders are ``@@NAME@@`` so that Postfix's own ``$name`` and
``${name}`` macros (``${sender}``, ``${recipient}`` ...) pass through untouched.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

TEMPLATE_FILES = {"main.cf": "main.cf.tmpl", "master.cf": "master.cf.tmpl"}
PLACEHOLDER = re.compile(r"@@([A-Z][A-Z0-9_]*)@@")
_ARGV_GAP = re.compile(r"(?<=\S)  +(?=--)")

FAIL_OPEN = "DUNNO"
FAIL_CLOSED = "451 4.3.5 Policy service unavailable, try again later"

#: Values used when neither the caller nor the configuration gives one.
DEFAULTS: dict[str, str] = {
    "POLICY_SERVICE": "inet:127.0.0.1:10031",
    "POLICY_TIMEOUT": "10s",
    "POLICY_MAX_IDLE": "300s",
    "POLICY_MAX_TTL": "1000s",
    "DEFAULT_ACTION": FAIL_OPEN,  # as postfix.default_action in sidecar.config
    "PIPE_USER": "sidecar",
    "PIPE_MAXPROC": "8",
    "PIPE_SIZE_LIMIT": "10240000",
    "SIDECAR_BIN": "/usr/local/bin/sidecar",
    "INGEST_OPTIONS": "",
    "BOUNCE_TRANSPORT": "sidecar-bounce:",  # sidecar-lmtp:NEXTHOP when ingest.lmtp is set
    "LMTP_MAXPROC": "16",  # 1,000 DSNs through a real Postfix: 16 at a time 1.9x as fast as 8 (benchmarks.md)
}
#: Placeholders with no default: render() fails without them.
REQUIRED = ("BOUNCE_DOMAIN",)
#: Placeholders whose default is made from other values: PIPE_COMMAND = "SIDECAR_BIN ingest".
DERIVED = ("PIPE_COMMAND",)
#: Values that may contain spaces (everything else ends up as one word or one argv item).
MULTI_WORD = frozenset({"DEFAULT_ACTION", "INGEST_OPTIONS", "PIPE_COMMAND"})
#: The thin pipe entry of this installation (``python3 -I -S`` runs it: see pipe_command).
PIPE_ENTRY = Path(__file__).resolve().parent / "bounce" / "pipe_entry.py"

_ACTION_ALIASES = {
    "dunno": FAIL_OPEN,
    "fail-open": FAIL_OPEN,
    "open": FAIL_OPEN,
    "defer": FAIL_CLOSED,
    "tempfail": FAIL_CLOSED,
    "fail-closed": FAIL_CLOSED,
    "closed": FAIL_CLOSED,
}
ACTION = re.compile(
    r"^(?:DUNNO|OK|PERMIT|DEFER|DEFER_IF_PERMIT|DEFER_IF_REJECT|REJECT|[45]\d\d)(?:\s.*)?$",
    re.IGNORECASE,
)


class TemplateError(ValueError):
    """A template or a value for it is wrong (unknown/missing placeholder, bad value)."""


def template_dir() -> Traversable:
    """The templates shipped in the package (``sidecar/data/postfix``)."""
    directory = files("sidecar").joinpath("data", "postfix")
    missing = [name for name in TEMPLATE_FILES.values() if not directory.joinpath(name).is_file()]
    if missing:
        raise TemplateError(f"Postfix templates not found in {directory}: {', '.join(missing)}")
    return directory


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def _check_value(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise TemplateError(f"@@{name}@@: value must be a single line: {value!r}")
    if "@@" in value:
        raise TemplateError(f"@@{name}@@: value must not contain '@@': {value!r}")
    if name not in MULTI_WORD and (not value or any(c.isspace() for c in value)):
        raise TemplateError(f"@@{name}@@: value must be one non-empty word: {value!r}")


def render(values: Mapping[str, str], directory: Traversable | None = None) -> dict[str, str]:
    """Fill the templates; return ``{"main.cf": text, "master.cf": text}``.

    ``values`` maps placeholder names (without the ``@@``) to text; names missing from it
    take :data:`DEFAULTS`. A name no template uses, a placeholder without a value and a
    value that would break the file (a newline, a space in a one-word setting) raise
    :class:`TemplateError`.
    """
    directory = directory or template_dir()
    texts = {out: directory.joinpath(name).read_text(encoding="utf-8") for out, name in TEMPLATE_FILES.items()}
    used = set().union(*(placeholders(text) for text in texts.values()))
    unknown = sorted(set(values) - used)
    if unknown:
        raise TemplateError("unknown placeholder(s): " + ", ".join(f"@@{n}@@" for n in unknown))
    merged = {**DEFAULTS, **{k: str(v) for k, v in values.items()}}
    # the pipe(8) command: the thin entry when values_from_config found it, else `sidecar ingest`
    merged.setdefault("PIPE_COMMAND", f"{merged['SIDECAR_BIN']} ingest")
    missing = sorted(used - set(merged))
    if missing:
        raise TemplateError("no value for placeholder(s): " + ", ".join(f"@@{n}@@" for n in missing))
    for name in used:
        _check_value(name, merged[name])
    out = {name: PLACEHOLDER.sub(lambda m: merged[m.group(1)], text) for name, text in texts.items()}
    # an empty one-line value (INGEST_OPTIONS) leaves a double space inside argv: tidy it
    return {name: _ARGV_GAP.sub(" ", text) for name, text in out.items()}


# ---------------------------------------------------------------------------------------
# From a sidecar configuration


def _split_endpoint(description: str) -> list[str]:
    """Split a Twisted endpoint description on unescaped colons (``\\:`` is a colon)."""
    parts, current, chars = [], [], iter(description)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def postfix_endpoint(description: str) -> str:
    """Twisted server endpoint -> Postfix client address for ``check_policy_service``.

    ``tcp:10031:interface=127.0.0.1`` -> ``inet:127.0.0.1:10031``;
    ``tcp6:10031:interface=\\:\\:1`` -> ``inet:[::1]:10031``;
    ``unix:/run/sidecar/policy.sock`` or ``unix:address=/p:mode=666`` -> ``unix:/p``.
    A TCP listener on all interfaces is reached through the loopback address.
    """
    kind, *rest = _split_endpoint(description.strip())
    kind = kind.lower()
    positional = [p for p in rest if "=" not in p]
    named = dict(p.split("=", 1) for p in rest if "=" in p)
    if kind in ("tcp", "tcp6"):
        port = named.get("port") or (positional[0] if positional else "")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise TemplateError(f"policy endpoint {description!r}: no valid port")
        host = named.get("interface", "")
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"inet:{host}:{port}"
    if kind == "unix":
        path = named.get("address") or (positional[0] if positional else "")
        if not path.startswith("/"):
            raise TemplateError(
                f"policy endpoint {description!r}: Postfix needs an absolute socket path "
                "(a relative one is resolved from queue_directory)"
            )
        return f"unix:{path}"
    raise TemplateError(f"policy endpoint {description!r}: Postfix can reach only tcp, tcp6 or unix")


def postfix_default_action(value: str) -> str:
    """``fail-open``/``dunno`` -> DUNNO, ``fail-closed``/``defer`` -> 451 4.3.5, else as given."""
    text = " ".join(str(value).split())
    alias = _ACTION_ALIASES.get(text.lower())
    if alias:
        return alias
    if not ACTION.match(text):
        raise TemplateError(
            f"postfix.default_action {value!r}: use fail-open, fail-closed or a Postfix action "
            "such as DUNNO or '451 4.3.5 text'"
        )
    return text


def postfix_seconds(seconds: float) -> str:
    """Seconds (float) -> Postfix time value, rounded up to whole seconds (at least 1s)."""
    if not seconds > 0:
        raise TemplateError(f"postfix.policy_timeout must be positive, got {seconds!r}")
    return f"{max(1, math.ceil(seconds))}s"


def _section(cfg: Any, name: str) -> Any:
    return getattr(cfg, name, None)


def pipe_command(sidecar_bin: str) -> str | None:
    """``<python> -I -S <this installation>/sidecar/bounce/pipe_entry.py`` when ``sidecar_bin`` is this
    installation's console script (its ``#!`` names a Python beside ours), else None: the pipe(8)
    line then runs ``sidecar_bin ingest``, the same command, slower to start."""
    try:
        with open(sidecar_bin, "rb") as fh:
            first = fh.readline(512).decode("utf-8").strip()
    except (OSError, ValueError):
        return None
    interpreter = first[2:].strip() if first.startswith("#!") else ""
    here = Path(sys.executable).parent
    if not interpreter.startswith("/") or Path(interpreter).parent != here or "python" not in Path(interpreter).name:
        return None
    command = f"{interpreter} -I -S {PIPE_ENTRY}"
    return command if len(command.split()) == 4 and PIPE_ENTRY.is_file() else None  # pipe(8) splits on spaces


def values_from_config(cfg: Any) -> dict[str, str]:
    """Placeholder values for :func:`render` from a loaded :class:`sidecar.config.Config`.

    Reads ``cfg.server.policy`` (first endpoint), ``cfg.postfix.bounce_domain``,
    ``.pipe_user``, ``.sidecar_bin``, ``.default_action``, ``.policy_timeout`` and
    ``cfg.config_path`` (passed to ``sidecar ingest --config``; without a file,
    ``cfg.database.url`` is passed as ``--db``). Missing attributes keep the template
    defaults. ``PIPE_COMMAND`` is the thin pipe entry when ``sidecar_bin`` belongs to this
    installation (:func:`pipe_command`).
    """
    values: dict[str, str] = {}
    server, postfix = _section(cfg, "server"), _section(cfg, "postfix")
    policy = getattr(server, "policy", None)
    if isinstance(policy, str):
        policy = (policy,)
    if policy:
        values["POLICY_SERVICE"] = postfix_endpoint(policy[0])
    if postfix is not None:
        for attr, key in (
            ("bounce_domain", "BOUNCE_DOMAIN"),
            ("pipe_user", "PIPE_USER"),
            ("sidecar_bin", "SIDECAR_BIN"),
        ):
            value = getattr(postfix, attr, None)
            if value:
                values[key] = str(value)
        action = getattr(postfix, "default_action", None)
        if action:
            values["DEFAULT_ACTION"] = postfix_default_action(action)
        timeout = getattr(postfix, "policy_timeout", None)
        if timeout is not None:
            values["POLICY_TIMEOUT"] = postfix_seconds(float(timeout))
    if "SIDECAR_BIN" not in values:
        values["SIDECAR_BIN"] = running_executable()
    command = pipe_command(values["SIDECAR_BIN"])
    if command is not None:
        values["PIPE_COMMAND"] = command
    lmtp = getattr(getattr(cfg, "ingest", None), "lmtp", "")
    if lmtp:
        values["BOUNCE_TRANSPORT"] = f"sidecar-lmtp:{lmtp_nexthop(lmtp)}"
    config_path = getattr(cfg, "config_path", None)
    db_url = getattr(getattr(cfg, "database", None), "url", None)
    if config_path:
        values["INGEST_OPTIONS"] = f"--config={Path(config_path).resolve()}"
    elif db_url:
        # No file to point at: pass the database itself. pipe(8) runs the ingester in
        # queue_directory, so a relative SQLite path must be made absolute here.
        values["INGEST_OPTIONS"] = f"--db={absolute_sqlite_url(str(db_url))}"
        sock = getattr(getattr(cfg, "ingest", None), "socket", "")
        if sock:  # the running service's hand-off socket, absolute for the same reason
            values["INGEST_OPTIONS"] += f" --socket={Path(sock).resolve()}"
    return values


def lmtp_nexthop(listen: str) -> str:
    """``ingest.lmtp`` -> lmtp(8)'s next hop: a socket path -> ``unix:/path``;
    ``tcp:10024:interface=127.0.0.1`` -> ``inet:127.0.0.1:10024`` (``inet:[::1]:PORT`` for IPv6)."""
    if listen.startswith(("tcp:", "tcp6:")):
        return postfix_endpoint(listen)
    path = str(Path(listen).resolve())
    if any(c.isspace() or c in ",{}" for c in path):
        raise TemplateError(
            f"ingest.lmtp {listen!r}: Postfix's inline: map cannot hold this path (spaces, commas, braces)"
        )
    return f"unix:{path}"


def running_executable() -> str:
    """The ``sidecar`` command being run (a venv's, ``pip install --user``'s ``~/.local/bin``,
    ``/usr/local/bin``), else ``<sys.prefix>/bin/sidecar``."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "sidecar" and argv0.is_file():
        return str(argv0.absolute())
    return str(Path(sys.prefix) / "bin" / "sidecar")


def main_cf_parameters(text: str) -> dict[str, str]:
    """``name = value`` settings of a rendered main.cf, in order, as ``postconf -n`` shows them.

    Comments and blank lines are dropped; a continuation line (one that starts with
    white space) is joined to its parameter with a single space.
    """
    params: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            if name is None:
                raise TemplateError(f"main.cf continuation line without a parameter: {line!r}")
            params[name] = f"{params[name]} {line.strip()}".strip()
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise TemplateError(f"main.cf line is not name = value: {line!r}")
        name = key.strip()
        params[name] = value.strip()
    return params


def absolute_sqlite_url(url: str) -> str:
    """``sqlite:///var/x.db`` -> ``sqlite:////<cwd>/var/x.db``; other URLs unchanged."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/") or url == prefix + ":memory:":
        return url
    path, sep, query = url[len(prefix) :].partition("?")
    return f"{prefix}{Path(path).resolve()}{sep}{query}"
