"""sidecar.postfix_config: rendering postfix/*.tmpl and deriving values from a config."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from sidecar.postfix_config import (
    DEFAULTS,
    DERIVED,
    FAIL_CLOSED,
    FAIL_OPEN,
    TemplateError,
    absolute_sqlite_url,
    placeholders,
    postfix_default_action,
    postfix_endpoint,
    postfix_seconds,
    render,
    template_dir,
    values_from_config,
)

VALUES = {
    "BOUNCE_DOMAIN": "bounce.example.com",
    "POLICY_SERVICE": "inet:127.0.0.1:10031",
    "PIPE_USER": "sidecar",
    "SIDECAR_BIN": "/opt/sidecar/bin/sidecar",
    "INGEST_OPTIONS": "--config=/etc/sidecar/sidecar.toml",
}


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_render_main_cf_has_the_wiring() -> None:
    main = render(VALUES)["main.cf"]
    assert "@@" not in main
    got = lines(main)
    i = got.index("smtpd_recipient_restrictions =")
    assert got[i + 1 : i + 5] == [
        "    check_policy_service inet:127.0.0.1:10031,",
        "    permit_mynetworks,",
        "    permit_sasl_authenticated,",
        "    reject_unauth_destination",
    ]
    for line in (
        "smtpd_data_restrictions = check_policy_service inet:127.0.0.1:10031",
        "smtpd_end_of_data_restrictions = check_policy_service inet:127.0.0.1:10031",
        f"smtpd_policy_service_default_action = {FAIL_OPEN}",
        "smtpd_policy_service_timeout = 10s",
        "relay_domains = bounce.example.com",
        "transport_maps = inline:{ bounce.example.com=sidecar-bounce: }",
        "sidecar-bounce_destination_recipient_limit = 1",
        "recipient_delimiter = +",
    ):
        assert line in got


def test_policy_check_comes_before_permit_mynetworks() -> None:
    main = render(VALUES)["main.cf"]
    block = main.split("smtpd_recipient_restrictions =", 1)[1]
    assert block.index("check_policy_service") < block.index("permit_mynetworks")


def test_render_master_cf_keeps_postfix_macros() -> None:
    master = render(VALUES)["master.cf"]
    assert "@@" not in master
    service = [line for line in master.splitlines() if not line.startswith("#")]
    assert service[0].split() == ["sidecar-bounce", "unix", "-", "n", "n", "-", "8", "pipe"]
    assert service[1].split() == ["flags=DORq", "user=sidecar", "size=10240000"]
    assert service[2].split() == [
        "argv=/opt/sidecar/bin/sidecar",
        "ingest",
        "--config=/etc/sidecar/sidecar.toml",
        "--sender=${sender}",
        "--recipient=${recipient}",
        "--queue-id=${queue_id}",
        "--extension=${extension}",
    ]


def test_every_template_placeholder_has_a_default_or_is_required() -> None:
    directory = template_dir()
    used = set().union(*(placeholders(p.read_text()) for p in directory.iterdir() if p.name.endswith(".tmpl")))
    assert used == set(DEFAULTS) | {"BOUNCE_DOMAIN"} | set(DERIVED)


def test_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(TemplateError, match="@@BOUNCE_DOMIAN@@"):
        render({**VALUES, "BOUNCE_DOMIAN": "x.example"})


def test_missing_value_is_an_error() -> None:
    with pytest.raises(TemplateError, match="@@BOUNCE_DOMAIN@@"):
        render({k: v for k, v in VALUES.items() if k != "BOUNCE_DOMAIN"})


def test_placeholder_in_template_without_value_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "main.cf.tmpl").write_text("x = @@NOT_KNOWN@@\n")
    (tmp_path / "master.cf.tmpl").write_text("# nothing\n")
    with pytest.raises(TemplateError, match="@@NOT_KNOWN@@"):
        render({}, tmp_path)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BOUNCE_DOMAIN", "a.example\nmynetworks = 0.0.0.0/0"),
        ("PIPE_USER", "no body"),
        ("SIDECAR_BIN", ""),
        ("PIPE_USER", "@@X@@"),
    ],
)
def test_bad_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(TemplateError, match=name):
        render({**VALUES, name: value})


@pytest.mark.parametrize(
    ("endpoint", "postfix"),
    [
        ("tcp:10031:interface=127.0.0.1", "inet:127.0.0.1:10031"),
        ("tcp:port=10031:interface=127.0.0.1", "inet:127.0.0.1:10031"),
        ("tcp:10031", "inet:127.0.0.1:10031"),
        ("tcp6:10031:interface=\\:\\:1", "inet:[::1]:10031"),
        ("unix:/run/sidecar/policy.sock", "unix:/run/sidecar/policy.sock"),
        ("unix:address=/run/sidecar/policy.sock:mode=666", "unix:/run/sidecar/policy.sock"),
    ],
)
def test_postfix_endpoint(endpoint: str, postfix: str) -> None:
    assert postfix_endpoint(endpoint) == postfix


@pytest.mark.parametrize("endpoint", ["unix:policy.sock", "ssl:443", "tcp:notaport", "tcp:0"])
def test_postfix_endpoint_refuses(endpoint: str) -> None:
    with pytest.raises(TemplateError):
        postfix_endpoint(endpoint)


def test_default_action_and_seconds() -> None:
    assert postfix_default_action("fail-open") == FAIL_OPEN
    assert postfix_default_action("fail-closed") == FAIL_CLOSED
    assert postfix_default_action("451 4.3.5  try later") == "451 4.3.5 try later"
    with pytest.raises(TemplateError):
        postfix_default_action("maybe")
    assert postfix_seconds(0.25) == "1s"
    assert postfix_seconds(2.5) == "3s"
    with pytest.raises(TemplateError):
        postfix_seconds(0)


def test_values_from_config() -> None:
    cfg = SimpleNamespace(
        server=SimpleNamespace(policy=("unix:/run/sidecar/policy.sock", "tcp:10031")),
        postfix=SimpleNamespace(
            bounce_domain="bounce.example.com",
            pipe_user="sidecar",
            sidecar_bin="/opt/sidecar/bin/sidecar",
            default_action="fail-open",
            policy_timeout=2.5,
        ),
        config_path="/etc/sidecar/sidecar.toml",
    )
    values = values_from_config(cfg)
    assert values == {
        "POLICY_SERVICE": "unix:/run/sidecar/policy.sock",
        "BOUNCE_DOMAIN": "bounce.example.com",
        "PIPE_USER": "sidecar",
        "SIDECAR_BIN": "/opt/sidecar/bin/sidecar",
        "DEFAULT_ACTION": "DUNNO",
        "POLICY_TIMEOUT": "3s",
        "INGEST_OPTIONS": "--config=/etc/sidecar/sidecar.toml",
    }
    rendered = render(values)
    assert "smtpd_policy_service_default_action = DUNNO" in rendered["main.cf"]


def test_values_from_sparse_config_uses_defaults() -> None:
    values = values_from_config(SimpleNamespace(postfix=SimpleNamespace(bounce_domain="b.example")))
    assert values["BOUNCE_DOMAIN"] == "b.example"
    assert values["SIDECAR_BIN"].endswith("/bin/sidecar")
    assert "INGEST_OPTIONS" not in values
    command = values.get("PIPE_COMMAND", f"{values['SIDECAR_BIN']} ingest")  # the thin entry, if found
    assert f"argv={command} --sender=${{sender}} " in render(values)["master.cf"]


def test_values_without_config_file_pass_an_absolute_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = SimpleNamespace(
        postfix=SimpleNamespace(bounce_domain="b.example"), database=SimpleNamespace(url="sqlite:///var/s.db")
    )
    assert values_from_config(cfg)["INGEST_OPTIONS"] == f"--db=sqlite:///{tmp_path / 'var' / 's.db'}"
    cfg.ingest = SimpleNamespace(socket="var/ingest.sock")  # pipe(8) runs in the queue directory
    assert values_from_config(cfg)["INGEST_OPTIONS"] == (
        f"--db=sqlite:///{tmp_path / 'var' / 's.db'} --socket={tmp_path / 'var' / 'ingest.sock'}"
    )
    assert absolute_sqlite_url("sqlite:////srv/s.db") == "sqlite:////srv/s.db"
    assert absolute_sqlite_url("postgresql+psycopg://db/sidecar") == "postgresql+psycopg://db/sidecar"


def test_values_from_real_config(tmp_path: Path) -> None:
    from sidecar.config import load_config

    path = tmp_path / "sidecar.toml"
    path.write_text(
        '[server]\npolicy = ["tcp:10040:interface=127.0.0.1"]\n'
        '[postfix]\nbounce_domain = "bounce.example.com"\npipe_user = "sidecar"\n'
        'default_action = "451 4.3.5 try later"\npolicy_timeout = "3s"\n'
    )
    rendered = render(values_from_config(load_config(path)))
    assert "check_policy_service inet:127.0.0.1:10040," in rendered["main.cf"]
    assert "smtpd_policy_service_default_action = 451 4.3.5 try later" in rendered["main.cf"]
    assert "smtpd_policy_service_timeout = 3s" in rendered["main.cf"]
    assert f"ingest --config={path.resolve()} --sender=${{sender}}" in rendered["master.cf"]


DOC_VALUES = {
    "BOUNCE_DOMAIN": "bounce.example.com",
    "POLICY_SERVICE": "inet:127.0.0.1:10031",
    "PIPE_USER": "sidecar",
    "SIDECAR_BIN": "/opt/postfix-sidecar/bin/sidecar",
    "PIPE_COMMAND": "/opt/postfix-sidecar/bin/python3 -I -S "
    "/opt/postfix-sidecar/lib/python3.11/site-packages/sidecar/bounce/pipe_entry.py",
    "INGEST_OPTIONS": "--config=/etc/postfix-sidecar/sidecar.toml",
}


def test_docs_show_the_rendered_templates() -> None:
    """docs/postfix.md pastes the templates rendered with DOC_VALUES; keep it in sync."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "postfix.md").read_text()
    rendered = render(DOC_VALUES)
    for name in ("main.cf", "master.cf"):
        marker = f"<!-- generated: {name}"
        assert marker in doc, marker
        block = doc.split(marker, 1)[1].split("```\n", 1)[1].split("\n```", 1)[0]
        assert block == rendered[name].rstrip("\n"), f"docs/postfix.md: the {name} block is stale"


def test_pipe_command_is_the_thin_entry_only_for_this_installation(tmp_path: Path) -> None:
    import sys

    from sidecar.postfix_config import PIPE_ENTRY, pipe_command

    ours = tmp_path / "sidecar"
    ours.write_text(f"#!{Path(sys.executable).parent / 'python3'}\nimport sys\n")
    assert pipe_command(str(ours)) == f"{Path(sys.executable).parent / 'python3'} -I -S {PIPE_ENTRY}"
    assert PIPE_ENTRY.is_file()
    other = tmp_path / "other"
    other.write_text("#!/elsewhere/bin/python3\n")
    shell = tmp_path / "shell"
    shell.write_text(f"#!{Path(sys.executable).parent / 'sh'}\n")
    for path in (other, shell, tmp_path / "missing"):
        assert pipe_command(str(path)) is None
    values = {"BOUNCE_DOMAIN": "b.example", "SIDECAR_BIN": str(other)}  # no PIPE_COMMAND: `sidecar ingest`
    assert f"argv={other} ingest --sender=${{sender}}" in render(values)["master.cf"]
