"""Two relays on one PostgreSQL share one tenant's reputation count, and both act on its level."""

import time

from sqlalchemy import select

from sidecar.reputation import store
from sidecar.store.db import make_engine
from sidecar.store.models import Event, ReputationCount
from tests.harness.policy import rcpt
from tests.harness.sidecar import SidecarProcess, run_cli

CONFIG = """
[reputation]
sync_interval = "200ms"
evaluate_interval = "300ms"
"""


def test_two_relays_add_up_to_one_count_and_both_pause_the_tenant(tmp_path, pg_url):
    run_cli("db", "upgrade", db=pg_url)
    nodes = []
    try:
        for i, host in enumerate(("127.0.0.2", "127.0.0.3")):
            nodes.append(SidecarProcess(tmp_path / f"node{i}", pg_url, CONFIG, host=host).start())
        clients = [n.connect() for n in nodes]
        # 150 recipients through each relay: under the 200 sends the bounce rate needs, on each alone
        for i, c in enumerate(clients):
            for j in range(3):
                eom = rcpt(
                    protocol_state="END-OF-MESSAGE",
                    sender="app@shared.test",
                    sasl_username="",
                    recipient_count="50",
                    instance=f"n{i}m{j}",
                    queue_id=f"Q{i}X{j}",
                )
                assert c.ask(eom) == "DUNNO"
        engine = make_engine(pg_url)
        c = ReputationCount.__table__.c

        def sends() -> int:
            with engine.connect() as conn:
                return int(sum(conn.execute(select(c.sends).where(c.tenant == "shared.test")).scalars()))

        t0 = time.monotonic()
        while sends() < 300:
            assert time.monotonic() - t0 < 10, f"only {sends()} sends stored"
            time.sleep(0.1)
        assert sends() == 300
        # what the ingester counts: a third of them bounced hard
        with engine.begin() as conn:
            store.add_counts(conn, {("shared.test", store.hour_of(time.time())): (0, 100, 0)})
        probe = rcpt(sender="app@shared.test", sasl_username="", recipient="x@example.test")
        for client in clients:
            while client.ask(probe) != "DEFER_IF_PERMIT 4.7.1 sending paused":
                assert time.monotonic() - t0 < 15, "the tenant was not paused on both relays"
                time.sleep(0.1)
        assert clients[0].ask(rcpt(sender="app@other.test", sasl_username="")) == "DUNNO"
        with engine.connect() as conn:
            audits = conn.execute(
                select(Event.decision).where(Event.kind == "reputation", Event.tenant == "shared.test")
            ).all()
        assert audits == [("level 1 -> 5",)]  # both relays evaluated; one change was written
    finally:
        for n in nodes:
            n.stop()
