"""Provider notifications in JSON (Amazon SES via SNS e-mail): bounces, complaints, deliveries."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(slots=True)
class JsonEvent:
    kind: str  # bounce | complaint | delivery
    address: str
    status: str | None
    action: str | None
    diagnostic: str | None
    feedback_type: str | None = None


_ATTEMPTS = 32  # "{" positions tried: the notification is the first JSON object in the text


def _find_json(text: str) -> dict | None:
    decoder = json.JSONDecoder(strict=False)
    start = text.find("{")
    for _ in range(_ATTEMPTS):
        if start == -1:
            break
        try:
            obj, _end = decoder.raw_decode(text, start)  # in place: no copy of the rest per "{"
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict) and "Message" in obj and isinstance(obj["Message"], str):
            try:
                inner = json.loads(obj["Message"])
            except ValueError:
                return obj
            return inner if isinstance(inner, dict) else obj
        return obj if isinstance(obj, dict) else None
    return None


def ses_events(text: str) -> list[JsonEvent] | None:
    """Events of an SES notification in ``text``; None if there is none."""
    if "notificationType" not in text and "eventType" not in text:
        return None
    data = _find_json(text.replace("!\n ", "").replace("=\n", ""))  # sendmail / QP line folds
    if not data:
        return None
    ntype = str(data.get("notificationType") or data.get("eventType") or "").lower()
    events: list[JsonEvent] = []
    if ntype == "bounce":
        bounce = data.get("bounce") or {}
        for r in bounce.get("bouncedRecipients") or []:
            if isinstance(r, dict) and r.get("emailAddress"):
                events.append(
                    JsonEvent(
                        "bounce",
                        str(r["emailAddress"]).lower(),
                        r.get("status"),
                        r.get("action"),
                        r.get("diagnosticCode") or bounce.get("bounceSubType"),
                    )
                )
    elif ntype == "complaint":
        complaint = data.get("complaint") or {}
        for r in complaint.get("complainedRecipients") or []:
            if isinstance(r, dict) and r.get("emailAddress"):
                events.append(
                    JsonEvent(
                        "complaint",
                        str(r["emailAddress"]).lower(),
                        None,
                        None,
                        None,
                        complaint.get("complaintFeedbackType") or "abuse",
                    )
                )
    elif ntype == "delivery":
        delivery = data.get("delivery") or {}
        response = delivery.get("smtpResponse")
        response = str(response) if response else None
        for a in delivery.get("recipients") or []:
            events.append(JsonEvent("delivery", str(a).lower(), response or "2.0.0", "delivered", response))
    else:
        return None
    return events
