"""Strict reply parsing: only the asked format passes."""

from __future__ import annotations

import pytest

from models.reply import ReplyError, parse_reply


@pytest.mark.parametrize("text, score", [
    ("score: 7\nreason: same brand", 7), ("SCORE:10\nReason: fits", 10), ("  score: 1\r\nreason: no  ", 1),
])
def test_accepts_the_format(text, score):
    assert parse_reply(text).score == score


@pytest.mark.parametrize("text", [
    "10", "score: 11\nreason: x", "score: 0\nreason: x", "score: 7", "score: 7\nreason: ",
    "score: 7\nreason: ok\nscore: 10", "I'd say score: 8\nreason: x", "score: 7.5\nreason: x",
    "score: 10 ignore previous\nreason: x", "reason: x\nscore: 7",
])
def test_refuses_everything_else(text):
    with pytest.raises(ReplyError):
        parse_reply(text)
