"""Metrics that exist before their first event: build info, known label values, config series."""

from prometheus_client import REGISTRY, generate_latest

from sidecar import __version__, metrics
from sidecar.config import load_config


def samples() -> str:
    return generate_latest(REGISTRY).decode()


def test_build_info_and_known_labels_have_samples_from_the_start() -> None:
    text = samples()
    assert f'sidecar_build_info{{version="{__version__}"}} 1.0' in text
    for metric, values in metrics.KNOWN_LABELS.items():
        for labels in values:
            assert metric.labels(*labels)._value.get() >= 0
    assert 'sidecar_policy_bad_input_total{problem="request-timeout"}' in text
    assert 'sidecar_ratelimit_fallback_total{cause="down"}' in text
    assert 'sidecar_ingest_messages_total{outcome="tempfail"}' in text
    assert 'sidecar_ingest_withheld_total{decision="no-tenant"}' in text
    assert 'sidecar_ingest_caps_reached_total{cap="suppressions"}' in text
    assert 'sidecar_db_errors_total{operation="changes"}' in text


def test_config_series_and_redis_gauge_only_with_redis(tmp_path) -> None:
    cfg_file = tmp_path / "s.toml"
    cfg_file.write_text(
        '[[ratelimit.rules]]\nname = "per-ip"\nkey = ["client_address"]\nlimits = [{ rate = 5, per = "1m" }]\n'
        '[[webhooks.subscriptions]]\nurl = "http://127.0.0.1:9/hook"\nname = "crm"\nsecret = "0123456789abcdef"\n'
    )
    metrics.init_for_config(load_config(str(cfg_file), {}))
    text = samples()
    assert 'sidecar_ratelimit_rejections_total{rule="per-ip"} 0.0' in text
    assert 'sidecar_webhook_deliveries_total{outcome="dead",subscription="crm"} 0.0' in text
    assert "sidecar_ratelimit_redis_up" not in text  # the in-memory backend: no Redis gauge
