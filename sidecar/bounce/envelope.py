"""The delivery's envelope, and its line in the hand-off protocol (pipe client -> service).

Shared by the pipe client (:mod:`sidecar.bounce.pipe`), the hand-off service
(:mod:`sidecar.bounce.handoff`) and recording (:mod:`sidecar.bounce.record`), so none of them
imports another for it. Standard library only: the pipe's fast path imports it once per bounce.
"""

from __future__ import annotations

from _json import encode_basestring_ascii  # json's own C string encoder: `import json` costs ~10 ms

TYPE_CHECKING = False  # typing costs ~10 ms at start-up, paid once per bounce
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 1
MAX_HEADER = 16384  # bytes of the JSON header line the service accepts


class Envelope:
    """What pipe(8) told us about the delivery, plus how much of the message we kept.

    ``size`` is the size of the whole message as delivered (it may exceed what was kept).
    """

    __slots__ = ("sender", "recipient", "queue_id", "extension", "size", "truncated")
    FIELDS = __slots__

    def __init__(
        self,
        sender: str = "",
        recipient: str = "",
        queue_id: str = "",
        extension: str = "",
        size: int = 0,
        truncated: bool = False,
    ) -> None:
        self.sender, self.recipient, self.queue_id, self.extension = sender, recipient, queue_id, extension
        self.size, self.truncated = size, truncated

    def __repr__(self) -> str:
        return "Envelope(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.FIELDS) + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Envelope) and all(getattr(self, k) == getattr(other, k) for k in self.FIELDS)

    def to_header(self, kept: int) -> bytes:
        """The JSON line ``json.dumps(..., separators=(",", ":"))`` would write (a test keeps them equal)."""
        text = ",".join(f'"{k}":{encode_basestring_ascii(getattr(self, k))}' for k in self.FIELDS[:4])
        tail = f'"size":{int(self.size)},"truncated":{"true" if self.truncated else "false"}'
        return f'{{{text},{tail},"v":{PROTOCOL_VERSION},"length":{int(kept)}}}\n'.encode("ascii")

    @classmethod
    def from_header(cls, d: dict[str, Any]) -> Envelope:
        return cls(
            sender=str(d.get("sender") or ""),
            recipient=str(d.get("recipient") or ""),
            queue_id=str(d.get("queue_id") or ""),
            extension=str(d.get("extension") or ""),
            size=int(d.get("size") or 0),
            truncated=bool(d.get("truncated")),
        )
