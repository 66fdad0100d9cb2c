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


def whole_sequence_distribution(backend, messages) -> list[float]:
    """The answers' distribution the slow, obvious way: one full pass over prompt + answer each."""
    import torch

    prompt = backend._prompt_ids(messages)
    totals = []
    with torch.inference_mode():
        for cont in backend._continuations:
            logits = backend.model(torch.tensor([prompt + cont])).logits[0].float()
            logp = torch.log_softmax(logits[len(prompt) - 1:-1], -1)
            totals.append(logp[torch.arange(len(cont)), torch.tensor(cont)].sum())
    return torch.softmax(torch.stack(totals), -1).tolist()


def test_the_batched_answers_score_what_whole_sequences_score(tiny_lm):
    """The answers' tokens run as one right-padded batch on the prompt's cache; a padding or
    cache mistake would make an answer's probability depend on its neighbours in the batch."""
    from models.llm.hf_backend import HFBackend

    backend = HFBackend(str(tiny_lm), single_token=False)
    # answers of different lengths, so the batch is padded: "7" [SEP] and "10" as two tokens
    backend._continuations = [c if k != 9 else backend.tokenizer.encode("1", add_special_tokens=False)
                              + backend.tokenizer.encode("0", add_special_tokens=False) + c[-1:]
                              for k, c in enumerate(backend._continuations)]
    assert {len(c) for c in backend._continuations} == {2, 3}
    for dim, a, b in [("model", "case for iPhone 13", "iPhone 13"), ("colour", "red scarf", "green hat")]:
        messages = load_rubric().messages(dim, {"title": a}, {"title": b})
        assert backend.distribution(messages) == pytest.approx(whole_sequence_distribution(backend, messages),
                                                               abs=1e-5)


@pytest.mark.parametrize("single_token", [True, False])
def test_a_pairs_prompts_reuse_what_they_share_and_score_as_if_run_whole(tiny_lm, single_token):
    """The five prompts of a pair differ only in their last line: each runs from where it
    differs from the previous one, on that prompt's cache, and scores what it scores alone."""
    from models.llm.hf_backend import HFBackend

    rubric = load_rubric()
    backend = HFBackend(str(tiny_lm), single_token=single_token)
    alone = HFBackend(str(tiny_lm), single_token=single_token, prefix_reuse=False)  # every prompt whole
    pairs = [({"title": "case for iPhone 13"}, {"title": "iPhone 13"}), ({"title": "red scarf"}, {"title": "lens"})]
    lengths = []
    for a, b in pairs:
        for dim in rubric.weights():
            messages = rubric.messages(dim, a, b)
            lengths.append(len(backend._prompt_ids(messages)))
            assert backend.distribution(messages) == pytest.approx(alone.distribution(messages), abs=1e-5)
    assert alone.tokens_run == sum(lengths)
    # the first prompt runs whole; the rest only from their aspect line (or, for the next
    # pair's first prompt, from its products)
    assert backend.tokens_run < 0.4 * sum(lengths)
