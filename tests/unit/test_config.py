import pytest

from sidecar.config import ConfigError, iter_documented_keys, load_config
from sidecar.units import parse_duration, parse_size


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults_without_file():
    cfg = load_config(None)
    assert cfg.server.policy == ("tcp:10031:interface=127.0.0.1",)
    assert cfg.server.http == "tcp:9731:interface=127.0.0.1"
    assert cfg.database.url.startswith("sqlite:///")
    assert cfg.server.safe_action == "DUNNO"


def test_full_rule(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            """
[[ratelimit.rules]]
name = "per-user"
key = ["sasl_username"]
limits = [{rate = 100, per = "1m", burst = 10}, {rate = 2000, per = "1d"}]
exempt = ["alice"]
""",
        )
    )
    rule = cfg.ratelimit.rules[0]
    assert rule.limits[0].per == 60 and rule.limits[0].burst == 10
    assert rule.limits[1].per == 86400 and rule.count == "messages"
    assert rule.exempt == ("alice",)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[server]\nbogus = 1\n", "server.bogus: unknown key"),
        ("[nosuch]\n", "nosuch: unknown key"),
        ('[server]\npolicy = ["10031"]\n', "server.policy[0]: expected a Twisted endpoint"),
        ('[server]\nsafe_action = "MAYBE"\n', "server.safe_action: expected a Postfix access(5) action"),
        ("[server]\nmax_attributes = -1\n", "server.max_attributes: expected a positive integer"),
        ('[suppression]\ntenant_from = "x"\n', "suppression.tenant_from: expected one of"),
        ('[suppression]\nallowlist = ["nobody"]\n', "suppression.allowlist[0]: expected an address"),
        ('[suppression]\nreply = "550 {nope}"\n', "suppression.reply: bad placeholder"),
        (
            '[[ratelimit.rules]]\nname = "a"\nkey = ["sender"]\nlimits = [{rate = 1, per = "1m"}]\n'
            '[[ratelimit.rules]]\nname = "b"\nkey = ["sender"]\nlimits = [{rate = 1, per = "1x"}]\n',
            'ratelimit.rules[1].limits[0].per: expected a duration like "1h"',
        ),
        (
            '[[ratelimit.rules]]\nname = "a"\nkey = ["helo"]\nlimits = [{rate = 1, per = "1m"}]\n',
            "ratelimit.rules[0].key[0]: expected one of",
        ),
        ('[[ratelimit.rules]]\nname = "a"\nkey = ["sender"]\n', "ratelimit.rules[0].limits: required key is missing"),
        (
            '[[ratelimit.rules]]\nname = "a"\nkey = ["sender"]\nlimits = []\n',
            "ratelimit.rules[0].limits: expected at least",
        ),
        (
            '[[ratelimit.rules]]\nname = "a"\nkey = ["client_address"]\nlimits = [{rate = 1, per = "1m"}]\n'
            'exempt = ["10.0.0.0/33"]\n',
            "ratelimit.rules[0].exempt[0]: '10.0.0.0/33' is not a valid CIDR",
        ),
        ('[ingest]\nmax_message_size = "lots"\n', "ingest.max_message_size: expected a size"),
        ("server = [", "not valid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_durations_and_sizes():
    assert parse_duration("90s") == 90 and parse_duration("2h") == 7200 and parse_duration(5) == 5
    assert parse_size("10MB") == 10 * 1024 * 1024 and parse_size(512) == 512
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_every_key_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for key, _default, _text in iter_documented_keys():
        assert f"`{key}`" in doc, f"{key} missing from docs/configuration.md"


def test_relative_paths_are_made_absolute(tmp_path, monkeypatch):
    p = write(tmp_path, '[database]\nurl = "sqlite:///data/s.db"\n[ingest]\nsocket = "run/ingest.sock"\n')
    cfg = load_config(p)
    assert cfg.database.url == f"sqlite:///{tmp_path}/data/s.db"
    assert cfg.ingest.socket == f"{tmp_path}/run/ingest.sock"
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, {"database.url": "sqlite:////abs/x.db"})
    assert cfg.database.url == "sqlite:////abs/x.db"
    assert cfg.ingest.socket == f"{tmp_path}/var/ingest.sock"
    assert load_config(None, {"database.url": "postgresql://u@h/db"}).database.url == "postgresql://u@h/db"


def test_postfix_default_action_accepts_the_documented_aliases(tmp_path) -> None:
    def action(value: str) -> str:
        return load_config(write(tmp_path, f'[postfix]\ndefault_action = "{value}"\n')).postfix.default_action

    assert action("fail-closed") == "fail-closed"
    assert action("Fail-Open") == "fail-open"
    assert action("451 4.3.5 later") == "451 4.3.5 later"
    with pytest.raises(ConfigError, match="postfix.default_action"):
        action("maybe")


def test_webhook_urls_with_credentials_and_duplicate_names_are_refused(tmp_path):
    sub = '[[webhooks.subscriptions]]\nurl = "{}"\nsecret = "s"\n'
    with pytest.raises(ConfigError, match=r"^webhooks\.subscriptions\[0\]\.url: expected a URL without user:pass"):
        load_config(write(tmp_path, sub.format("https://bob:hunter2@hooks.example.com/x")))
    with pytest.raises(ConfigError, match=r"^webhooks\.subscriptions\[1\]\.name: 'https://h\.example' is already"):
        load_config(write(tmp_path, sub.format("https://h.example/a") + sub.format("https://H.example/b?k=1")))
    cfg = load_config(write(tmp_path, sub.format("https://h.example/a?user=x@y") + sub.format("http://h.example/b")))
    assert [s.url for s in cfg.webhooks.subscriptions] == ["https://h.example/a?user=x@y", "http://h.example/b"]
    with pytest.raises(ConfigError, match=r"^webhooks\.subscriptions\[0\]\.ca_file: cannot read .*/ca\.pem: No such"):
        load_config(write(tmp_path, sub.format("https://h.example/") + 'ca_file = "ca.pem"\n'))
    (tmp_path / "ca.pem").write_text("")
    with pytest.raises(ConfigError, match=r"^webhooks\.subscriptions\[0\]\.ca_file: no PEM certificate in "):
        load_config(write(tmp_path, sub.format("https://h.example/") + 'ca_file = "ca.pem"\n'))
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = load_config(write(tmp_path, sub.format("https://h.example/") + 'ca_file = "ca.pem"\n'))
    assert cfg.webhooks.subscriptions[0].ca_file == str(tmp_path / "ca.pem")


@pytest.mark.parametrize(
    "value, ok",
    [
        ("DUNNO", True),
        ("dunno", True),
        ("OK", True),
        ("DEFER_IF_PERMIT 4.7.1 later", True),
        ("defer later", True),
        ("451 4.3.5 later", True),
        ("550 5.1.1 gone", True),
        ("REJECT", True),
        ("PERMIT", True),
        ("MAYBE", False),
        ("4511 x", False),
        ("DUNNOX", False),
        ("", False),
    ],
)
def test_one_action_grammar_for_replies_and_the_default_action(tmp_path, value, ok) -> None:
    """server.safe_action, the replies and postfix.default_action accept the same actions."""
    for text in (
        f'[server]\nsafe_action = "{value}"\n',
        f'[postfix]\ndefault_action = "{value}"\n',
        f'[suppression]\nreply = "{value}"\n',
    ):
        if ok:
            load_config(write(tmp_path, text))
        else:
            with pytest.raises(ConfigError, match="action"):
                load_config(write(tmp_path, text))
