"""Pure parts of the ingester: size limit, hand-off framing, fast config read, derivation, CLI parity."""

from __future__ import annotations

import io
import json
import tomllib

import pytest

from sidecar.bounce import pipe
from sidecar.bounce.derive import derive, looks_like_report
from sidecar.bounce.envelope import Envelope
from sidecar.bounce.parse.results import Category, FailedRecipient, Kind, ParsedMessage
from sidecar.bounce.pipe import fast_settings, read_message
from sidecar.bounce.verp import make_verp_token


def fr(
    address: str,
    category: Category = Category.INVALID_RECIPIENT,
    hard: bool | None = True,
    action: str | None = "failed",
    status: str | None = "5.1.1",
) -> FailedRecipient:
    return FailedRecipient(address, category, "userunknown", hard, status, action, None, None)


def test_read_message_keeps_the_first_part_and_counts_everything() -> None:
    data = b"x" * 200_000
    kept, total, truncated = read_message(io.BytesIO(data), 100_000)
    assert (len(kept), total, truncated) == (100_000, 200_000, True)
    assert read_message(io.BytesIO(b"abc"), 3) == (b"abc", 3, False)


def test_envelope_header_round_trip() -> None:
    env = Envelope("MAILER-DAEMON", "bounces+tok@b.example", "Q1", "tok", 1234, True)
    line = env.to_header(1000)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    d = json.loads(line)
    assert d["length"] == 1000 and d["v"] == 1
    assert Envelope.from_header(d) == env


def test_fast_defaults_match_the_config_defaults() -> None:
    from sidecar.config import IngestConfig

    assert IngestConfig().socket == pipe.DEFAULT_SOCKET
    assert IngestConfig().max_message_size == pipe.DEFAULT_MAX_SIZE
    from sidecar.config import load_config

    full = load_config(None).ingest  # relative paths resolved as the full loader does
    assert fast_settings(None) == (full.socket, full.max_message_size)


def test_fast_settings_resolve_relative_socket_against_the_config_dir(tmp_path) -> None:
    from sidecar.config import load_config

    p = tmp_path / "c.toml"
    p.write_text('[ingest]\nsocket = "run/ingest.sock"\n')
    assert fast_settings(str(p)) == (str(tmp_path / "run/ingest.sock"), pipe.DEFAULT_MAX_SIZE)
    assert fast_settings(str(p))[0] == load_config(str(p)).ingest.socket


@pytest.mark.parametrize(
    "text",
    [
        '[server]\nhttp = "tcp:1"\n[[ratelimit.rules]]\nname = "a"\n[ingest]\nsocket = "/run/s.sock"  # x\n'
        "max_message_size = 1_048_576\nverp_key = 'k'\n",
        "[ingest]\nsocket = '/run/literal.sock'\n",
        '[database]\nurl = "sqlite:///x"\n',
        'ingest.socket = "/run/dotted.sock"\n',
        'ingest = { socket = "/run/inline.sock" }\n',
        '[ingest]\nsocket = "/run/esc\\u0061ped.sock"\n',
        '[ingest]\nsocket = """/run/multi.sock"""\n',
    ],
)
def test_fast_settings_agree_with_tomllib(tmp_path, text: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    section = tomllib.loads(text).get("ingest", {})
    sock = section.get("socket", pipe.DEFAULT_SOCKET)
    sock = sock if sock.startswith("/") else str(tmp_path / sock)
    expected = (sock, section.get("max_message_size", pipe.DEFAULT_MAX_SIZE))
    assert fast_settings(str(p)) == expected


def test_fast_settings_defer_to_the_full_loader_when_unsure(tmp_path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[ingest]\nmax_message_size = "10MB"\n')
    assert fast_settings(str(p)) is None
    p.write_text("[ingest\n")
    assert fast_settings(str(p)) is None
    assert fast_settings(str(tmp_path / "missing.toml")) is None


def test_ingest_parser_matches_the_cli_subparser() -> None:
    from sidecar.cli.bounces import ingest_parser
    from sidecar.cli.parser import build_parser

    sub = next(a for a in build_parser()._subparsers._group_actions).choices["ingest"]  # type: ignore[union-attr]
    cli = {(tuple(a.option_strings), a.dest, a.default) for a in sub._actions if a.dest != "help"}
    ours = {(tuple(a.option_strings), a.dest, a.default) for a in ingest_parser()._actions}
    assert ours == cli


@pytest.mark.parametrize(
    "argv",
    [
        ["--config=/etc/s.toml", "--sender=MAILER-DAEMON", "--recipient=b+t@x", "--queue-id=Q1", "--extension="],
        ["--config", "/etc/s.toml", "--sender", "", "--recipient", "b@x", "--db", "sqlite:///x.db"],
        ["--socket=/run/s.sock", "--sender=a=b", "--sender=last", "--extension=-dash"],
        [],
    ],
)
def test_quick_args_read_the_pipe_line_as_argparse_does(argv: list[str]) -> None:
    from sidecar.cli.bounces import ingest_parser

    quick = pipe.quick_args(argv)
    assert quick is not None
    full = vars(ingest_parser().parse_args(argv))
    assert {k: getattr(quick, k) for k in full} == full


@pytest.mark.parametrize(
    "argv",
    [["-c", "x"], ["--no-handoff"], ["--rec=b@x"], ["--sender", "-x"], ["--sender"], ["--help"], ["extra"]],
)
def test_quick_args_leave_anything_else_to_argparse(argv: list[str]) -> None:
    assert pipe.quick_args(argv) is None


def test_envelope_header_is_what_json_dumps_writes() -> None:
    for env in (
        Envelope("MAILER-DAEMON", 'b+"q"\\@x', "Q", "t\x01\u00e9\udcff", 2**40, True),
        Envelope(),
    ):
        d = {k: getattr(env, k) for k in Envelope.FIELDS}
        d.update(v=1, length=7)
        assert env.to_header(7) == json.dumps(d, separators=(",", ":")).encode() + b"\n"


def test_bad_arguments_defer_instead_of_exit_2(capsys) -> None:
    from sidecar.cli.bounces import ingest_main

    assert ingest_main(["--no-such-option"]) == 75
    assert capsys.readouterr().err.startswith("sidecar ingest: temporary failure")


def canon(a: str) -> str:
    return a.lower()


def test_derive_uses_the_verp_recipient_and_tenant() -> None:
    tok = make_verp_token(b"k", "Real@Example.com", tenant="acme")
    parsed = ParsedMessage(Kind.BOUNCE, [fr("rewritten@forwarder.example")], original_envelope_from="b@app.example")
    d = derive(parsed, Envelope(extension=tok), "k", canon)
    assert d.state == "parsed"
    assert [(f.address, f.tenant, f.kind) for f in d.findings] == [("real@example.com", "acme", "bounce")]


def test_derive_bad_verp_and_no_tenant_from_the_original_sender() -> None:
    parsed = ParsedMessage(
        Kind.COMPLAINT,
        [fr("a@x.example", Category.COMPLAINT, None, None, None)],
        original_envelope_from="<news@Tenant.Example>",
    )
    d = derive(parsed, Envelope(extension="garbage"), "k", canon)
    assert d.state == "bad-verp" and "VERP" in (d.error or "")
    # the enclosed Return-Path is written by whoever sent the report: it never names the tenant
    assert d.findings[0].tenant == "" and d.findings[0].kind == "complaint"
    off = derive(parsed, Envelope(extension="garbage"), "", canon)  # VERP off
    assert off.state == "parsed" and not off.verified


def test_derive_trusts_a_signed_token_in_the_enclosed_return_path_only() -> None:
    from sidecar.bounce.verp import make_verp_sender

    sender = make_verp_sender(b"k", "victim@example.net", "bounces@bounce.example", tenant="acme")
    arf = [fr("victim@example.net", Category.COMPLAINT, None, None, None), fr("other@example.net")]
    d = derive(ParsedMessage(Kind.COMPLAINT, arf, original_envelope_from=f"<{sender}>"), Envelope(), "k", canon)
    assert d.verified and [(f.address, f.tenant) for f in d.findings] == [("victim@example.net", "acme")]
    forged = make_verp_sender(b"not the key", "victim@example.net", "bounces@bounce.example", tenant="acme")
    d = derive(ParsedMessage(Kind.COMPLAINT, arf, original_envelope_from=forged), Envelope(), "k", canon)
    assert d.state == "parsed" and not d.verified and {f.tenant for f in d.findings} == {""}
    assert len(d.findings) == 2


def test_derive_counts_recipients_beyond_the_cap() -> None:
    parsed = ParsedMessage(Kind.BOUNCE, [fr(f"u{i}@x.example") for i in range(250)])
    d = derive(parsed, Envelope(), "", canon, max_recipients=100)
    assert len(d.findings) == 100 and d.dropped == 150
    assert [f.address for f in d.findings[:2]] == ["u0@x.example", "u1@x.example"]
    assert derive(parsed, Envelope(), "", canon).dropped == 0


def test_derive_kinds() -> None:
    parsed = ParsedMessage(
        Kind.BOUNCE,
        [
            fr("a@x.example", Category.MAILBOX_FULL, False, "delayed", "4.2.2"),
            fr("b@x.example", Category.AUTO_REPLY, None, None, None),
            fr("not an address"),
        ],
    )
    d = derive(
        parsed,
        Envelope(),
        "",
        lambda a: __import__("sidecar.suppression.address").suppression.address.canonical(a).lower(),
    )
    assert [(f.address, f.kind) for f in d.findings] == [("a@x.example", "delay"), ("b@x.example", "auto-reply")]


def test_report_without_recipients_is_unparsed_not_set_aside() -> None:
    raw = b"Content-Type: multipart/report; report-type=delivery-status\n\n"
    assert looks_like_report(raw)
    assert derive(ParsedMessage(Kind.NOT_BOUNCE, []), Envelope(), "", canon, raw).state == "unparsed"
    assert derive(ParsedMessage(Kind.NOT_BOUNCE, []), Envelope(), "", canon, b"Subject: hi\n\n").state == "not-bounce"


def test_recorded_values_are_the_ones_the_api_and_the_docs_know() -> None:
    """The enums' values are what the database stores: the API filters on the event kinds, and
    docs/ingest.md explains every decision and message state."""
    from pathlib import Path

    from sidecar.bounce.derive import Decision, EventKind, MessageState
    from sidecar.http.queries import EVENT_KINDS

    assert {k.value for k in EventKind} - set(EVENT_KINDS) == {EventKind.CAP_REACHED.value}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "ingest.md").read_text()
    assert [v for v in (*Decision, *MessageState) if f"`{v}`" not in doc] == []
