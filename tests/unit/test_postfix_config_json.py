"""`sidecar postfix-config --format json` and main_cf_parameters(): the machine-readable form
that deployment tools (the Ansible role in ansible/) apply with postconf -e and a managed
master.cf block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar.cli import main
from sidecar.postfix_config import TemplateError, main_cf_parameters, render

VALUES = {
    "BOUNCE_DOMAIN": "bounce.example.com",
    "SIDECAR_BIN": "/opt/sidecar/bin/sidecar",
    "INGEST_OPTIONS": "--config=/etc/sidecar/sidecar.toml",
}


def test_parameters_of_the_rendered_main_cf() -> None:
    params = main_cf_parameters(render(VALUES)["main.cf"])
    assert params["smtpd_recipient_restrictions"] == (
        "check_policy_service inet:127.0.0.1:10031, permit_mynetworks, "
        "permit_sasl_authenticated, reject_unauth_destination"
    )
    assert params["transport_maps"] == "inline:{ bounce.example.com=sidecar-bounce: }"
    assert params["sidecar-bounce_destination_recipient_limit"] == "1"
    assert params["smtpd_policy_service_default_action"] == "DUNNO"
    assert list(params)[0] == "smtpd_relay_restrictions"  # template order
    assert not any(k.startswith("#") or "@@" in v for k, v in params.items())


def test_every_main_cf_parameter_line_is_found() -> None:
    text = render(VALUES)["main.cf"]
    names = [line.split("=", 1)[0].strip() for line in text.splitlines() if line[:1].isalnum()]
    assert list(main_cf_parameters(text)) == names


def test_parameter_parsing_rules() -> None:
    text = "# c\n\na = 1\nb =\n  x,\n\ty\n# between\nc = $a ${b} = z\n"
    assert main_cf_parameters(text) == {"a": "1", "b": "x, y", "c": "$a ${b} = z"}
    with pytest.raises(TemplateError, match="continuation"):
        main_cf_parameters("  orphan\n")
    with pytest.raises(TemplateError, match="name = value"):
        main_cf_parameters("no equals sign\n")


def test_cli_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sidecar.toml"
    config.write_text('[postfix]\nbounce_domain = "bounce.example.com"\nsidecar_bin = "/opt/s/bin/sidecar"\n')
    assert main(["postfix-config", "--config", str(config), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"main.cf", "main.cf parameters", "master.cf"}
    assert out["main.cf parameters"] == main_cf_parameters(out["main.cf"])
    assert out["main.cf parameters"]["relay_domains"] == "bounce.example.com"
    assert f"argv=/opt/s/bin/sidecar ingest --config={config.resolve()} --sender=${{sender}}" in out["master.cf"]


def test_cli_text_format_is_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "sidecar.toml"
    config.write_text('[postfix]\nbounce_domain = "bounce.example.com"\n')
    assert main(["postfix-config", "--config", str(config)]) == 0
    default = capsys.readouterr().out
    assert main(["postfix-config", "--config", str(config), "--format", "text"]) == 0
    assert capsys.readouterr().out == default
    assert default.startswith("# ---- main.cf ----\n")
    assert "\n# ---- master.cf ----\n" in default
