"""``sidecar serve | check-config | postfix-config | db upgrade``: each ``cmd_<name>(args, cfg) -> exit code``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from typing import Any

from sidecar.cli.output import EX_CONFIG
from sidecar.config import Config
from sidecar.notify import notify

log = logging.getLogger("sidecar")


def upgraded_engine(cfg: Config) -> Any:
    """The configured database, its schema created or upgraded first."""
    from sidecar.store.db import make_engine, upgrade

    engine = make_engine(cfg.database.url)
    upgrade(engine)
    return engine


def cmd_serve(args: argparse.Namespace, cfg: Config) -> int:
    from twisted.internet import reactor
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    from sidecar.errors import one_line
    from sidecar.service import makeService, stop_started

    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
    t0 = time.monotonic()
    try:
        top = makeService(cfg, reactor)  # schema upgrade and initial load: nothing listens yet
    except Exception as e:
        log.error("cannot start: database %s: %s", _safe_url(cfg.database.url), one_line(e))
        return 1
    try:
        top.startService()
    except Exception as e:
        # Close what did start (listeners, thread pool) and leave: a half-started server would
        # accept policy connections and never answer them.
        log.error("cannot start: %s", one_line(e))
        reactor.callWhenRunning(lambda: stop_started(top).addBoth(lambda _: reactor.stop()))
        reactor.run()  # type: ignore[attr-defined]
        return 1
    reactor.addSystemEventTrigger("before", "shutdown", lambda: notify("STOPPING=1", "STATUS=stopping"))
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    from sidecar.runtime import settle_after_start

    settle_after_start()  # start-up's objects out of the GC's way
    log.info(
        "serving policy on %s, HTTP on %s, database %s (ready in %.2fs)",
        ", ".join(cfg.server.policy),
        cfg.server.http,
        _safe_url(cfg.database.url),
        time.monotonic() - t0,
    )
    # state loaded (makeService) and every listener bound (startService raises otherwise)
    reactor.callWhenRunning(notify, "READY=1", f"STATUS=serving policy on {', '.join(cfg.server.policy)}")
    Reloader(args, cfg, reactor, top).install()
    reactor.run()  # type: ignore[attr-defined]
    return 0


class Reloader:
    """SIGHUP: read the configuration file again and validate it, the service keeps running.

    A bad file is logged in one line and the running configuration stays. From a good one,
    ``server.safe_action`` applies at once; every other change is logged by section and takes
    effect at the next restart (``systemctl restart postfix-sidecar``): the listeners,
    database, rules and index are wired from the configuration the service started with. The
    service manager sees RELOADING=1, then READY=1.
    """

    def __init__(self, args: argparse.Namespace, cfg: Config, reactor: Any, top: Any = None) -> None:
        self.args, self.cfg, self.reactor = args, cfg, reactor
        factory = getattr(top, "policy_factory", None)
        self.decider = getattr(factory, "decide", None)  # GuardedDecider: its safe_action is live

    def install(self) -> None:
        import signal

        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))

    def reload(self) -> None:
        from sidecar.cli import load_for_args
        from sidecar.config import ConfigError

        notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", "STATUS=reloading")
        where = self.args.config or "(built-in defaults)"
        try:
            new = load_for_args(self.args)
        except ConfigError as e:
            log.error("reload: %s: configuration error, still running on the previous configuration: %s", where, e)
        else:
            applied = []
            if new.server.safe_action != self.cfg.server.safe_action and hasattr(self.decider, "safe_action"):
                self.decider.safe_action = new.server.safe_action  # type: ignore[union-attr]
                applied.append("server.safe_action")
                self.cfg = dataclasses.replace(
                    self.cfg, server=dataclasses.replace(self.cfg.server, safe_action=new.server.safe_action)
                )
            changed = [f.name for f in dataclasses.fields(new) if getattr(new, f.name) != getattr(self.cfg, f.name)]
            if changed:
                log.warning(
                    "reload: %s: configuration OK; applied [%s]; changed [%s] takes effect at the next restart",
                    where,
                    ", ".join(applied),
                    ", ".join(changed),
                )
            else:
                log.info(
                    "reload: %s: configuration OK%s",
                    where,
                    f"; applied [{', '.join(applied)}]" if applied else ", unchanged",
                )
        notify("READY=1", "STATUS=serving")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_check_config(args: argparse.Namespace, cfg: Config) -> int:
    rules = ", ".join(r.name for r in cfg.ratelimit.rules) or "none"
    lmtp = f"lmtp {cfg.ingest.lmtp}; " if cfg.ingest.lmtp else ""
    print(
        f"{args.config or '(defaults)'}: configuration OK (policy {', '.join(cfg.server.policy)}; "
        f"http {cfg.server.http}; {lmtp}rate-limit rules: {rules})"
    )
    return 0


def cmd_postfix_config(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.postfix_config import TemplateError, main_cf_parameters, render, values_from_config

    try:
        out = render(values_from_config(cfg))
        parameters = main_cf_parameters(out["main.cf"])
    except TemplateError as e:
        print(f"sidecar: postfix-config: {e}", file=sys.stderr)
        return EX_CONFIG
    if getattr(args, "format", "text") == "json":
        # for deployment tools: postconf -e the parameters, put master.cf in a managed block
        print(
            json.dumps(
                {"main.cf": out["main.cf"], "main.cf parameters": parameters, "master.cf": out["master.cf"]}, indent=2
            )
        )
        return 0
    for name, text in out.items():
        print(f"# ---- {name} ----")
        print(text.rstrip("\n"))
    return 0


def cmd_db_upgrade(args: argparse.Namespace, cfg: Config) -> int:
    from sidecar.store.db import current_revision

    engine = upgraded_engine(cfg)
    print(f"database {_safe_url(cfg.database.url)} at schema revision {current_revision(engine)}")
    return 0
