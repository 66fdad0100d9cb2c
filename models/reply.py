"""Strict parsing of an LLM reply: exactly ``score: N`` (1..10) and ``reason: one line``.

Anything else is rejected, including a bare number, extra lines, a score outside 1..10 or
text around it: a reply shaped by an injected instruction does not pass by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_REPLY = re.compile(r"score:[ \t]*(10|[1-9])[ \t]*\r?\nreason:[ \t]*([^\r\n]{1,300}?)[ \t]*",
                    re.IGNORECASE)


class ReplyError(ValueError):
    """The reply is not in the asked format; the message says how."""


@dataclass(frozen=True)
class DimensionReply:
    score: float  # 1..10; for distribution backends the expected value
    reason: str
    distribution: tuple[float, ...] | None = None  # P(1..10) where the backend gives one


def parse_reply(text: str) -> DimensionReply:
    if not isinstance(text, str):
        raise ReplyError("reply is not text")
    match = _REPLY.fullmatch(text.strip())
    if match is None:
        shown = text.strip().replace("\n", "\\n")[:120]
        raise ReplyError(f"reply not in the format 'score: 1..10\\nreason: ...': {shown!r}")
    reason = match.group(2).strip()
    if not reason:
        raise ReplyError("empty reason")
    return DimensionReply(float(int(match.group(1))), reason)
