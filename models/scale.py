"""The 1..10 compatibility scale that every label, model output and published score uses.

One definition: the LLM answers one of these bins, the students predict a distribution over
them, and a score is that distribution's expected bin."""

from __future__ import annotations

SCORE_BINS = tuple(range(1, 11))  # 1 = do not go together ... 10 = made for each other
