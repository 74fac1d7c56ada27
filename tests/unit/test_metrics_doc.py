"""docs/metrics.md names every metric the service registers."""

from pathlib import Path

from prometheus_client import REGISTRY

import sidecar.metrics  # noqa: F401  (registers the metrics)

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_every_metric_is_documented() -> None:
    text = DOC.read_text()
    names = {m.name for m in REGISTRY.collect() if m.name.startswith("sidecar_")}
    assert len(names) >= 15
    missing = sorted(n for n in names if f"`{n}" not in text)
    assert not missing, f"add to docs/metrics.md: {missing}"
