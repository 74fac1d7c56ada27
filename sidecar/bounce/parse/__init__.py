"""Bounce parsing: raw message bytes in, a :class:`~sidecar.bounce.parse.results.ParsedMessage` out.

Pure and bounded (no database, no configuration). The entry point is :func:`parse_message`
(:mod:`.message`); the modules below it read one format each (:mod:`.mime`, :mod:`.dsn`,
:mod:`.arf`, :mod:`.notifications`, :mod:`.textbounce`) or categorise what was read
(:mod:`.classify`, :mod:`.reasons`, :mod:`.patterns`, :mod:`.status`, :mod:`.reporting_mta`,
:mod:`.remote_host`), within the limits of :mod:`.budget`.
"""

from sidecar.bounce.parse.message import PARSER_VERSION, parse_bytes, parse_message

__all__ = ["PARSER_VERSION", "parse_bytes", "parse_message"]
