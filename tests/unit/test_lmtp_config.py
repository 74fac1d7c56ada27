"""ingest.lmtp and its keys: validation with the key path, paths made absolute, and the Postfix
lines `sidecar postfix-config` prints for the LMTP transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import ConfigError, load_config
from sidecar.postfix_config import main_cf_parameters, render, values_from_config


def load(tmp_path: Path, ingest: str) -> object:
    p = tmp_path / "c.toml"
    p.write_text(f'[postfix]\nbounce_domain = "bounce.example.com"\n[ingest]\n{ingest}\n')
    return load_config(p)


def test_off_by_default_and_the_pipe_transport(tmp_path: Path) -> None:
    cfg = load(tmp_path, "")
    assert cfg.ingest.lmtp == ""  # type: ignore[attr-defined]
    params = main_cf_parameters(render(values_from_config(cfg))["main.cf"])
    assert params["transport_maps"] == "inline:{ bounce.example.com=sidecar-bounce: }"


def test_unix_socket_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'lmtp = "run/lmtp.sock"')
    assert cfg.ingest.lmtp == f"{tmp_path}/run/lmtp.sock"  # type: ignore[attr-defined]
    out = render(values_from_config(cfg))
    params = main_cf_parameters(out["main.cf"])
    assert params["transport_maps"] == f"inline:{{ bounce.example.com=sidecar-lmtp:unix:{tmp_path}/run/lmtp.sock }}"
    assert "sidecar-lmtp unix -       -       n       -       16       lmtp\n" in out["master.cf"]
    assert "  -o lmtp_send_xforward_command=yes\n" in out["master.cf"]


@pytest.mark.parametrize(
    ("listen", "nexthop"),
    [
        ("'tcp:10024:interface=127.0.0.1'", "inet:127.0.0.1:10024"),
        ("'tcp6:10024:interface=\\:\\:1'", "inet:[::1]:10024"),
    ],
)
def test_loopback_tcp(tmp_path: Path, listen: str, nexthop: str) -> None:
    cfg = load(tmp_path, f"lmtp = {listen}")
    params = main_cf_parameters(render(values_from_config(cfg))["main.cf"])
    assert params["transport_maps"] == f"inline:{{ bounce.example.com=sidecar-lmtp:{nexthop} }}"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('lmtp = "tcp:10024:interface=0.0.0.0"', "ingest.lmtp: interface 0.0.0.0 is not a loopback address"),
        ('lmtp = "tcp:10024"', "ingest.lmtp: the TCP listener needs interface= set to a loopback address"),
        ('lmtp = "tcp:99999:interface=127.0.0.1"', "ingest.lmtp: expected"),
        ('lmtp = "unix:/run/x.sock"', 'ingest.lmtp: expected a plain unix socket path (no "unix:")'),
        ("lmtp_max_connections = 0", "ingest.lmtp_max_connections: expected a positive integer"),
        ('recipient_delimiter = "a"', "ingest.recipient_delimiter: expected up to 8 delimiter characters"),
        ('lmtp_idle_timeout = "soon"', "ingest.lmtp_idle_timeout"),
        ('socket = "run/s"\nlmtp = "run/s"', "ingest.lmtp: "),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, line)
    assert str(e.value).startswith(message), str(e.value)
