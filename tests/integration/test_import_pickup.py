"""A bulk import while `sidecar serve` runs on the same SQLite file: the server refuses every
imported address (the change feed carries each row), whatever the chunking of the import."""

from __future__ import annotations

import re
import time

from tests.harness.policy import rcpt
from tests.harness.sidecar import SidecarProcess, run_cli

ROWS = 60_001  # two chunks of 50,000 and one more row


def test_a_running_server_picks_up_every_imported_row(tmp_path) -> None:
    sc = SidecarProcess(tmp_path, f"sqlite:///{tmp_path}/sidecar.db", "")
    sc.start()
    try:
        c = sc.connect()
        assert c.ask(rcpt(recipient=f"u{ROWS - 1}@d7.import.test")) == "DUNNO"
        src = tmp_path / "in.csv"
        src.write_text("address,reason\n" + "".join(f"U{i}@D{i % 10}.import.test,imported\n" for i in range(ROWS)))
        run_cli("suppressions", "import", str(src), "--no-progress", db=sc.db)
        t0 = time.monotonic()
        while not re.search(rf"^sidecar_suppressions {ROWS}(\.0)?$", sc.metrics(), re.M):
            assert time.monotonic() - t0 < 30, "the server did not load every imported row"
            time.sleep(0.2)
        for i in (0, 49_999, 50_000, ROWS - 1):
            assert c.ask(rcpt(recipient=f"u{i}@d{i % 10}.import.test")).startswith("550 5.1.1"), i
        c.close()
    finally:
        sc.stop()
