"""Reputation levels as a real Postfix sees them: level 4 holds the message in Postfix's hold
queue and `sidecar reputation release --release-held` delivers it; level 5 defers at RCPT and
the message stays with the client (docs/reputation.md)."""

from __future__ import annotations

import tomllib

import pytest
from lab_checks import SBIN
from lab_env import Lab, MakeLab, to_toml
from lab_postfix import wait_until
from lab_sidecar import sidecar_cli, sidecar_json

pytestmark = pytest.mark.postfix

FAST = {"reputation": {"sync_interval": "0.2s"}}


def cli_config(lab: Lab) -> str:
    """The lab's config plus where this lab's Postfix tools and configuration are."""
    assert lab.config_path is not None
    settings = tomllib.loads(lab.config_path.read_text())
    settings.setdefault("reputation", {}).update(
        postfix_config_dir=str(lab.postfix.config_dir), postfix_bin_dir=str(SBIN)
    )
    path = lab.root / "cli.toml"
    path.write_text(to_toml(settings))
    return str(path)


def reputation(lab: Lab, *args: str) -> str:
    res = sidecar_cli("reputation", *args, "--config", cli_config(lab), "--db", lab.db_url)
    assert res.returncode == 0, res.stderr
    return res.stdout


def wait_level(lab: Lab, sender: str, want: str, state: str = "RCPT") -> None:
    """Until the policy server has read the new level from the store."""

    def answered() -> bool:
        return lab.policy_action("probe@example.test", sender, protocol_state=state).startswith(want)

    wait_until(answered, 10, 0.1, f"policy server answering {want} for {sender}")


def test_hold_then_release_delivers_to_the_mx(make_lab: MakeLab) -> None:
    lab = make_lab(config=FAST)
    sender, to = "app@held.test", "someone@example.test"
    reputation(lab, "set-level", "held.test", "4", "--reason", "lab: bad list")
    wait_level(lab, sender, "HOLD", state="END-OF-MESSAGE")

    result = lab.postfix.send(sender, [to])
    assert result.accepted, result  # accepted: nothing lost, nothing bounced to the app
    held = wait_until(
        lambda: [m for m in lab.postfix.queue() if m.get("queue_name") == "hold"], 20, 0.2, "a held message"
    )
    assert len(held) == 1 and held[0]["sender"] == sender, held
    assert not lab.sink.messages_to(to)
    shown = wait_until(
        lambda: [s for s in sidecar_json("reputation", "show", "held.test", "--db", lab.db_url) if s["held"] == 1],
        10,
        0.2,
        "the held queue id in the store",
    )
    assert shown[0]["sends"] == 1  # Postfix's recipient_count at END-OF-MESSAGE

    out = reputation(lab, "release", "held.test", "--to", "1", "--release-held", "--reason", "lab: list cleaned")
    assert "level 4 -> 1" in out and "1 held message(s) released" in out, out
    [got] = lab.sink.wait_for_message(to)
    assert got.mail_from == sender
    lab.postfix.wait_queue_empty()
    shown = sidecar_json("reputation", "show", "held.test", "--db", lab.db_url)[0]
    assert shown["level"] == 1 and shown["held"] == 0


def test_pause_defers_at_rcpt_and_the_message_stays_with_the_client(make_lab: MakeLab) -> None:
    lab = make_lab(config=FAST)
    sender, to = "app@paused.test", "someone@example.test"
    reputation(lab, "set-level", "paused.test", "5", "--reason", "lab: complaints")
    wait_level(lab, sender, "DEFER_IF_PERMIT")
    result = lab.postfix.send(sender, [to])
    assert not result.accepted
    assert result.stage == "rcpt" and result.code == 450, result
    assert "sending paused" in result.message, result
    assert lab.postfix.queue() == []  # never accepted: the application keeps it and retries
    assert not lab.sink.rcpt_attempts_for(to)
    # a tenant at level 1 on the same relay is untouched
    assert lab.postfix.send("app@fine.test", [to]).accepted
