"""Handlers for the administrative subcommands (serve, check-config, db, limits).

The ``suppressions`` actions live in :mod:`sidecar.http.operations` (database or ``--api``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from sidecar.config import Config

Handler = Callable[[argparse.Namespace, Config], int]
log = logging.getLogger("sidecar")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _engine(cfg: Config, upgrade: bool = True) -> Any:
    from sidecar.store.db import make_engine
    from sidecar.store.db import upgrade as do_upgrade

    engine = make_engine(cfg.database.url)
    if upgrade:
        do_upgrade(engine)
    return engine


def cmd_serve(args: argparse.Namespace, cfg: Config) -> int:
    setup_logging(args.log_level)
    from twisted.internet import reactor
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    from sidecar.errors import one_line
    from sidecar.service import makeService, stop_started

    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
    t0 = time.monotonic()
    try:
        top = makeService(cfg, reactor)   # schema upgrade and initial load: nothing listens yet
    except Exception as e:  # noqa: BLE001 - an unreachable database, a schema from a newer version ...
        log.error("cannot start: database %s: %s", _safe_url(cfg.database.url), one_line(e))
        return 1
    try:
        top.startService()
    except Exception as e:  # noqa: BLE001 - a port in use, an ingest socket owned by another service ...
        # Close what did start (listeners, thread pool) and leave: a half-started server would
        # accept policy connections and never answer them.
        log.error("cannot start: %s", one_line(e))
        reactor.callWhenRunning(lambda: stop_started(top).addBoth(lambda _: reactor.stop()))
        reactor.run()  # type: ignore[attr-defined]
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    log.info("serving policy on %s, HTTP on %s, database %s (ready in %.2fs)",
             ", ".join(cfg.server.policy), cfg.server.http, _safe_url(cfg.database.url), time.monotonic() - t0)
    reactor.run()  # type: ignore[attr-defined]
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_check_config(args: argparse.Namespace, cfg: Config) -> int:
    rules = ", ".join(r.name for r in cfg.ratelimit.rules) or "none"
    print(f"{args.config or '(defaults)'}: configuration OK (policy {', '.join(cfg.server.policy)}; "
          f"http {cfg.server.http}; rate-limit rules: {rules})")
    return 0


def cmd_postfix_config(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.postfix_config import TemplateError, main_cf_parameters, render, values_from_config

    try:
        out = render(values_from_config(cfg))
        parameters = main_cf_parameters(out["main.cf"])
    except TemplateError as e:
        print(f"sidecar: postfix-config: {e}", file=sys.stderr)
        return 78
    if getattr(args, "format", "text") == "json":
        # for deployment tools: postconf -e the parameters, put master.cf in a managed block
        print(json.dumps({"main.cf": out["main.cf"], "main.cf parameters": parameters,
                          "master.cf": out["master.cf"]}, indent=2))
        return 0
    for name, text in out.items():
        print(f"# ---- {name} ----")
        print(text.rstrip("\n"))
    return 0


def cmd_db_upgrade(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.store.db import current_revision

    engine = _engine(cfg)
    print(f"database {_safe_url(cfg.database.url)} at schema revision {current_revision(engine)}")
    return 0


def _limit_rule(cfg: Config, key: str) -> Any:
    from sidecar.policy.limits import compile_rule

    name = key.partition(":")[0]
    for r in cfg.ratelimit.rules:
        if r.name == name:
            return compile_rule(r)
    known = ", ".join(r.name for r in cfg.ratelimit.rules) or "none configured"
    raise KeyError(f"{key!r}: no rate-limit rule named {name!r} (rules: {known}); KEY is RULE:VALUE")


def cmd_limits_show(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar import ratelimit
    from sidecar.policy.limits import human_duration
    from sidecar.store.counters import counters_for

    try:
        rule = _limit_rule(cfg, args.key)
    except KeyError as e:
        print(f"sidecar: {e.args[0]}", file=sys.stderr)
        return 2
    now = time.time()
    if cfg.ratelimit.backend == "redis":
        tats, now = _redis_tats(cfg, args.key, len(rule.windows))
    else:
        tats = dict(counters_for(_engine(cfg), args.key))
    out = []
    for i, w in enumerate(rule.windows):
        used, remaining = ratelimit.usage(w, tats.get(f"{args.key}#{i}"), now)
        out.append({"key": args.key, "window": f"{w.rate}/{human_duration(w.per)}", "burst": w.burst,
                    "used": used, "remaining": remaining, "capacity": w.capacity})
    if args.json:
        print(json.dumps(out))
    else:
        for o in out:
            print(f"{o['key']}  {o['window']} (+{o['burst']} burst): used {o['used']}, remaining {o['remaining']}")
    return 0


def _redis_tats(cfg: Config, key: str, n: int) -> tuple[dict[str, float], float]:
    import redis

    from sidecar.policy.redis_limits import redis_key

    r = redis.Redis.from_url(cfg.ratelimit.redis_url, socket_timeout=5)
    secs, micros = r.time()
    values = r.mget([redis_key(key, i) for i in range(n)])
    return {f"{key}#{i}": float(v) for i, v in enumerate(values) if v is not None}, secs + micros / 1e6


def _redis_reset(cfg: Config, key: str, n: int) -> int:
    import redis

    from sidecar.policy.redis_limits import redis_key

    r = redis.Redis.from_url(cfg.ratelimit.redis_url, socket_timeout=5)
    return int(r.delete(*[redis_key(key, i) for i in range(n)]))


def cmd_limits_reset(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.store.counters import reset_key

    try:
        _limit_rule(cfg, args.key)
    except KeyError as e:
        print(f"sidecar: {e.args[0]}", file=sys.stderr)
        return 2
    if cfg.ratelimit.backend == "redis":
        n = _redis_reset(cfg, args.key, len(_limit_rule(cfg, args.key).windows))
        print(f"reset {args.key} in Redis ({n} keys cleared)")
        return 0
    n = reset_key(_engine(cfg), args.key, time.time())
    print(f"reset {args.key} ({n} counter rows cleared; running servers apply it within a second)")
    return 0


def dispatch(args: argparse.Namespace, ap: argparse.ArgumentParser) -> Handler:
    c = args.command
    sub = {"db": "db_command", "suppressions": "sup_command", "limits": "limits_command"}.get(c)
    name = c.replace("-", "_")
    if sub:
        action = getattr(args, sub)
        if not action:
            ap.parse_args([c, "--help"])
        name = {"db": "db", "suppressions": "sup", "limits": "limits"}[c] + "_" + action
    return globals()[f"cmd_{name}"]  # type: ignore[no-any-return]
