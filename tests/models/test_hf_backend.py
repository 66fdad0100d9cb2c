"""The ``hf`` backend on a tiny randomly initialised Qwen2 with the MiniLM vocabulary."""

from __future__ import annotations

import asyncio

import pytest

from models.llm.base import DimensionRequest
from models.local import build_tiny_causal_lm
from models.rubric import load_rubric


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-qwen2"), seed=1)


def test_score_is_the_expected_value_of_the_answer_distribution(tiny_lm):
    from models.llm.hf_backend import HFBackend

    backend = HFBackend(str(tiny_lm))
    assert backend.model.config.model_type == "qwen2"
    messages = load_rubric().messages("model", {"title": "case for iPhone 13"}, {"title": "iPhone 13"})
    reply = asyncio.run(backend.score(DimensionRequest("model", messages, {}, {})))
    dist = reply.distribution
    assert len(dist) == 10 and sum(dist) == pytest.approx(1, abs=1e-5)
    assert reply.score == pytest.approx(sum((k + 1) * p for k, p in enumerate(dist)))
    assert 1 <= reply.score <= 10
    # the MiniLM WordPiece vocabulary has "1".."10" as single tokens: one forward pass
    assert backend.single_token is True
    assert backend.tokenizer.tokenize("Spigen iPhone") == ["sp", "##igen", "iphone"]  # not characters
    # deterministic for the same prompt, different for another prompt
    again = asyncio.run(backend.score(DimensionRequest("model", messages, {}, {})))
    assert again.distribution == pytest.approx(dist)
    other = load_rubric().messages("colour", {"title": "red"}, {"title": "green"})
    assert asyncio.run(backend.score(DimensionRequest("colour", other, {}, {}))).distribution != pytest.approx(dist)


def test_whole_answers_are_scored_when_single_tokens_are_not_used(tiny_lm):
    from models.llm.hf_backend import HFBackend

    backend = HFBackend(str(tiny_lm), single_token=False)
    messages = load_rubric().messages("model", {"title": "case for iPhone 13"}, {"title": "iPhone 13"})
    dist = asyncio.run(backend.score(DimensionRequest("model", messages, {}, {}))).distribution
    assert backend.single_token is False and len(backend._continuations) == 10
    assert len(dist) == 10 and sum(dist) == pytest.approx(1, abs=1e-5)
    # a different answer distribution from the single-token path's: the answers end with [SEP]
    fast = asyncio.run(HFBackend(str(tiny_lm)).score(DimensionRequest("model", messages, {}, {})))
    assert fast.distribution != pytest.approx(dist)
