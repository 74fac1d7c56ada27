"""Load the TOML configuration, validate it and return frozen dataclasses.

Validation happens before anything listens.  Every error names the key path,
e.g. ``ratelimit.rules[2].limits[0].per: expected a duration like "1h"``.
Unknown keys are errors. Relative paths are made absolute here.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from sidecar.config.fields import RATE_KEYS, ConfigError, non_negative_int, redact_url
from sidecar.config.schema import Config
from sidecar.units import parse_duration


def _build(cls: type, raw: object, path: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in fields:
            where = f"{path}.{key}" if path else key
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        where = f"{path}.{name}" if path else name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: required key is missing")
            continue
        kwargs[name] = _value(hints[name], f, raw[name], where)
    try:
        obj = cls(**kwargs)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return obj


def _value(hint: Any, f: dataclasses.Field, raw: object, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(raw, list):
            if not (isinstance(raw, str) and item is str):
                raise ConfigError(f"{where}: expected a list")
            raw = [raw]
        return tuple(_scalar(item, f, v, f"{where}[{i}]") for i, v in enumerate(raw))
    return _scalar(hint, f, raw, where)


def _scalar(hint: Any, f: dataclasses.Field, raw: object, where: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, raw, where)
    parse = f.metadata.get("parse")
    choices = f.metadata.get("choices")
    try:
        if parse is not None:
            return parse(raw)
        if hint is bool:
            if not isinstance(raw, bool):
                raise ValueError("expected true or false")
            return raw
        if hint is str or (isinstance(hint, types.UnionType) and str in typing.get_args(hint)):
            if not isinstance(raw, str):
                raise ValueError("expected a string")
            if choices and raw not in choices:
                raise ValueError(f"expected one of {', '.join(choices)}")
            return raw
        if hint is int:
            return non_negative_int(raw)
        if hint is float:
            return parse_duration(raw)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    raise ConfigError(f"{where}: unsupported value")  # pragma: no cover


def _check(cfg: Config) -> None:
    names = set()
    for i, rule in enumerate(cfg.ratelimit.rules):
        where = f"ratelimit.rules[{i}]"
        if not rule.name or not re.match(r"^[A-Za-z0-9_.-]+$", rule.name):
            raise ConfigError(f"{where}.name: expected letters, digits, '_', '.' or '-'")
        if rule.name in names:
            raise ConfigError(f"{where}.name: duplicate rule name {rule.name!r}")
        names.add(rule.name)
        if not rule.key:
            raise ConfigError(f"{where}.key: expected at least one of {', '.join(RATE_KEYS)}")
        if not rule.limits:
            raise ConfigError(f"{where}.limits: expected at least one window")
        if rule.ipv4_prefix > 32:
            raise ConfigError(f"{where}.ipv4_prefix: expected 0-32")
        if rule.ipv6_prefix > 128:
            raise ConfigError(f"{where}.ipv6_prefix: expected 0-128")
        for j, lim in enumerate(rule.limits):
            if lim.per <= 0:
                raise ConfigError(f"{where}.limits[{j}].per: expected a positive duration")
    for i, tok in enumerate(cfg.api.tokens):
        if bool(tok.token) == bool(tok.token_sha256):
            raise ConfigError(f"api.tokens[{i}]: give exactly one of token or token_sha256")
    sub_names: dict[str, int] = {}
    for i, sub in enumerate(cfg.webhooks.subscriptions):
        if not sub.secret:
            raise ConfigError(f"webhooks.subscriptions[{i}].secret: expected a non-empty secret")
        name = sub.name or redact_url(sub.url)
        if name in sub_names:
            raise ConfigError(
                f"webhooks.subscriptions[{i}].name: {name!r} is already "
                f"webhooks.subscriptions[{sub_names[name]}]'s name (give each subscription a name)"
            )
        sub_names[name] = i
    domains: dict[str, int] = {}
    for i, dom in enumerate(cfg.domains):
        if dom.name in domains:
            raise ConfigError(f"domains[{i}].name: {dom.name!r} is already domains[{domains[dom.name]}]")
        domains[dom.name] = i
    if cfg.recipients.flush_interval <= 0:
        raise ConfigError("recipients.flush_interval: expected a positive duration")
    if cfg.recipients.retention < 86400:
        raise ConfigError('recipients.retention: expected at least "1d"')
    rep = cfg.reputation
    if rep.window > rep.retention:
        raise ConfigError("reputation.window: expected at most reputation.retention")
    if not 1 <= rep.release_to <= 3:
        raise ConfigError("reputation.release_to: expected 1, 2 or 3 (4 and 5 are not a release)")
    try:
        cfg.suppression.reply.format(address="a@b", reason="r", date="d", tenant="t")
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"suppression.reply: bad placeholder {e}") from None
    for i, rule in enumerate(cfg.ratelimit.rules):
        try:
            rule.reply.format(rule="r", rate=1, per="1m", key="k")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(f"ratelimit.rules[{i}].reply: bad placeholder {e}") from None


DEFAULT_CONFIG = "/etc/postfix-sidecar/sidecar.toml"
CONFIG_ENV = "SIDECAR_CONFIG"


def find_config(explicit: str | None, *, defaults_ok: bool = False, default: str = DEFAULT_CONFIG) -> str | None:
    """The configuration file a command reads: ``--config FILE``, else ``$SIDECAR_CONFIG``,
    else ``default`` when it exists.

    Without any, None (the built-in defaults) only when ``defaults_ok`` (the command named its
    database or API itself); otherwise a :class:`ConfigError` that says where it looked, so no
    command silently creates ``./var/sidecar.db`` in whatever directory it runs in.
    """
    if explicit:
        return explicit
    env = os.environ.get(CONFIG_ENV, "")
    if env:
        if not Path(env).is_file():
            raise ConfigError(f"{CONFIG_ENV}={env}: no such file")
        return env
    if Path(default).is_file():
        return default
    if defaults_ok:
        return None
    raise ConfigError(
        f"no configuration file: looked for --config, ${CONFIG_ENV} (not set) and {default} (none there); "
        "give --config FILE (or --db URL to run on the built-in defaults)"
    )


def load_config(path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate ``path`` (or defaults when None); ``overrides`` are dotted keys."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{p}: no such file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, key = dotted.split(".", 1)
        if dotted == "database.url" and isinstance(value, str):
            value = absolute_sqlite_url(value, Path.cwd())  # a command-line path is relative to here
        raw.setdefault(section, {})[key] = value
    cfg = _build(Config, raw, "")
    _check(cfg)
    base = Path(path).resolve().parent if path else Path.cwd()
    cfg = dataclasses.replace(
        cfg,
        config_path=str(Path(path).resolve()) if path else None,
        database=dataclasses.replace(cfg.database, url=absolute_sqlite_url(cfg.database.url, base)),
        ingest=dataclasses.replace(
            cfg.ingest,
            socket=resolve_path(cfg.ingest.socket, base),
            lmtp=cfg.ingest.lmtp if cfg.ingest.lmtp.startswith("tcp") else resolve_path(cfg.ingest.lmtp, base),
        ),
        webhooks=dataclasses.replace(
            cfg.webhooks,
            subscriptions=tuple(
                dataclasses.replace(s, ca_file=resolve_path(s.ca_file, base)) for s in cfg.webhooks.subscriptions
            ),
        ),
    )
    if cfg.ingest.lmtp and cfg.ingest.lmtp == cfg.ingest.socket:
        raise ConfigError(f"ingest.lmtp: {cfg.ingest.lmtp} is ingest.socket already (give each its own path)")
    for i, sub in enumerate(cfg.webhooks.subscriptions):
        if not sub.ca_file:
            continue
        try:
            pem = Path(sub.ca_file).read_bytes()
        except OSError as e:
            raise ConfigError(f"webhooks.subscriptions[{i}].ca_file: cannot read {sub.ca_file}: {e.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise ConfigError(f"webhooks.subscriptions[{i}].ca_file: no PEM certificate in {sub.ca_file}")
    return cfg


def resolve_path(value: str, base: Path) -> str:
    """Relative paths are relative to the config file's directory (or the working directory
    without a file), made absolute at load time: pipe(8) runs the ingester in Postfix's queue
    directory, where a relative path would point somewhere else."""
    if not value or os.path.isabs(value):
        return value
    return str(base / value)


def absolute_sqlite_url(url: str, base: Path) -> str:
    prefix = next((p for p in ("sqlite:///", "sqlite+pysqlite:///") if url.startswith(p)), None)
    if prefix is None:
        return url
    rest = url[len(prefix) :]
    if not rest or rest.startswith("/") or rest.startswith(":memory:"):
        return url
    return prefix + resolve_path(rest, base)
