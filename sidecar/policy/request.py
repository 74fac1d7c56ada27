"""One policy request and its reply: ``Request`` (attributes read from the request's text when asked
for), ``BadRequest`` (what costs the connection) and ``reply_bytes`` (the one-line ``action=`` reply)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from operator import methodcaller
from typing import Any

log = logging.getLogger("sidecar.policy")

_split_attribute = methodcaller("split", "=", 1)
_NEEDLES: dict[str, str] = {}  # attribute name -> "\nname="

# The longest action value sent, in bytes: Postfix passes a "550 ..." action's text on as the
# SMTP reply, and RFC 5321 (4.5.3.1.5) bounds a reply line at 512 octets with its CRLF.
MAX_ACTION_BYTES = 510


def reply_bytes(action: str) -> bytes:
    """``action=ACTION`` and the empty line, as ONE line whatever ``action`` holds.

    A control character (CR, LF, NUL ...) or anything else not printable becomes ``?`` (as
    Postfix's own printable() does), so text from stored data can never end the reply early
    and answer Postfix's next request; the value is cut at MAX_ACTION_BYTES (whole UTF-8
    characters). Clean text, the usual case, costs one isprintable().
    """
    if not action.isprintable():
        was = action
        action = "".join(c if c.isprintable() else "?" for c in action)
        log.warning("policy reply had control or unprintable characters, replaced by '?': %.200r", was)
    out = action.encode("utf-8")
    if len(out) > MAX_ACTION_BYTES:
        log.warning("policy reply over %d bytes, cut: %.200r", MAX_ACTION_BYTES, action)
        out = out[:MAX_ACTION_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return b"action=" + out + b"\n\n"


class Request(Mapping[str, str]):
    """One request's attributes, read straight from its text when asked for.

    The engine needs a handful of Postfix's ~30 attributes, so values are found (the last
    ``\nname=`` line, as a dict built from the lines would keep) rather than every line
    split into a dict; iterating or ``len`` builds that dict once.
    """

    __slots__ = ("text", "_all")

    def __init__(self, text: str) -> None:
        self.text = text
        self._all: dict[str, str] | None = None

    def get(self, name: str, default: Any = None) -> Any:
        text = self.text
        needle = _NEEDLES.get(name)
        if needle is None:
            needle = "\n" + name + "="
            if len(_NEEDLES) < 256:
                _NEEDLES[name] = needle
        i = text.rfind(needle)
        if i >= 0:
            i += len(needle)
        elif text.startswith(name + "="):
            i = len(name) + 1
        else:
            return default
        j = text.find("\n", i)
        return text[i:] if j < 0 else text[i:j]

    def __getitem__(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v  # type: ignore[no-any-return]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def _dict(self) -> dict[str, str]:
        if self._all is None:
            self._all = dict(map(_split_attribute, self.text.split("\n")))  # type: ignore[arg-type]
        return self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"Request({self._dict()!r})"


class BadRequest(ValueError):
    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
