"""Publishing: candidates, versions exposed atomically, rollback, cleanup, Kafka outputs."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import numpy as np
import orjson
import pytest

from models.runtime import Students
from streams.core.storage import registry, scores
from streams.core.storage.scores import SCORERS
from streams.core.topics import ensure_topics
from streams.publishing import publisher as publish_module
from streams.publishing.publisher import emit, publish
from streams.serving.index import ScoreIndex
from tests.student_fixtures import seed_pairs, tiny_students


@pytest.fixture
def seeded(storage, tmp_path):
    data = seed_pairs(storage)
    first = tiny_students(storage, tmp_path, seed=0)
    return data, first


def _live_rows(storage):
    return storage.query_rows(
        f"SELECT item_a, item_b, score, scorer, model_version, score_version "
        f"FROM {storage.table('pair_scores_latest')}")


def test_publish_scores_every_candidate_once(storage, settings, seeded):
    data, first = seeded
    published = publish(storage, settings, Students(first["version"], first["artifacts"]), progress=False)
    rows = _live_rows(storage)
    assert {(a, b) for a, b, *_ in rows} == data["eligible"]  # >= low tier, plus labelled pairs
    assert len(rows) == len(data["eligible"]) == published.summary["pairs"]
    by_pair = {(a, b): (s, sc) for a, b, s, sc, *_ in rows}
    assert by_pair[data["manual"]] == (2.0, "manual")  # a manual label wins
    assert all(1.0 <= s <= 10.0 for s, _ in by_pair.values())
    assert {v for *_, v in rows} == {published.score_version}
    # every pair is rescored by the cross-encoder: top-10 partners of items with few partners
    assert published.summary["cross_rescored"] == len(rows) - 1
    # too few held-out pairs here to measure the students against behaviour: an even mix,
    # published under the cross-encoder's name
    mixed = published.summary["cross_mix"]
    assert (mixed["source"], mixed["weight"]) == ("unmeasured", 0.5) and mixed["pairs"] < 30
    assert sum(sc == "cross_encoder" for *_, sc, _m, _v in rows) == len(rows) - 1
    partners = storage.query_rows(
        f"SELECT item_id, rank, partner_id, score FROM {storage.table('item_partners_latest')} "
        "ORDER BY item_id, rank")
    by_item: dict = {}
    for item, _rank, _partner, score in partners:
        by_item.setdefault(item, []).append(score)
    assert all(s == sorted(s, reverse=True) for s in by_item.values())  # best first


def test_quantile_map_keeps_the_order_and_takes_the_reference_scale():
    from streams.publishing.publisher import quantile_map

    cross = np.array([0.9, 0.1, 0.5, 0.5, 0.7], np.float32)
    two_tower = np.array([3.0, 9.0, 5.0, 7.0, 6.0], np.float32)
    mapped = quantile_map(cross, two_tower)
    assert sorted(mapped.tolist()) == [3.0, 5.5, 5.5, 7.0, 9.0]  # equal inputs share the mean
    assert np.argsort(mapped, kind="stable").tolist()[0] == 1 and mapped.argmax() == 0
    assert quantile_map(np.zeros(0, np.float32), np.zeros(0, np.float32)).shape == (0,)


def test_cross_scores_are_published_on_the_two_tower_scale(settings):
    """The rescored pairs keep the cross-encoder's order among themselves and the two-tower's
    score distribution, so a student's calibration does not move them in the global ranking:
    here a cross-encoder whose scores sit far below the two-tower's (0.1-0.9 against 2-9)."""
    from types import SimpleNamespace

    from streams.publishing.publisher import _cross_rescore

    rng = np.random.default_rng(0)
    chosen = rng.choice(1600, 300, replace=False)  # distinct pairs of items 0-39 x 40-79
    a, b = chosen // 40, 40 + chosen % 40
    two_tower = rng.uniform(2, 9, 300).astype(np.float32)
    texts = [f"item {k}" for k in range(80)]
    cross = SimpleNamespace(predict=lambda pairs: np.array(
        [0.1 + 0.8 * (int(x.split()[1]) * 80 + int(y.split()[1])) / 6400 for x, y in pairs], np.float32))
    score, scorer = two_tower.copy(), np.zeros(300, np.int8)
    rescored, mapped, exhausted = _cross_rescore(settings.replace(publish_cross_top_k=3),
                                                 SimpleNamespace(cross=cross), texts, a, b, score, scorer,
                                                 progress=False)
    assert len(rescored) == len(set(rescored.tolist())) > 50 and not exhausted
    assert np.allclose(np.sort(mapped), np.sort(two_tower[rescored]))  # the two-tower's scale
    raw = cross.predict([(texts[x], texts[y]) for x, y in zip(a[rescored], b[rescored])])
    assert len(np.unique(raw)) == len(raw)  # no ties: the order is strict
    assert (np.argsort(raw) == np.argsort(mapped)).all()  # the cross-encoder's order
    assert np.array_equal(score, two_tower) and not scorer.any()  # the mix decides what is published


def test_cross_encoder_budget_is_respected(storage, settings, seeded):
    _, first = seeded
    students = Students(first["version"], first["artifacts"])
    published = publish(storage, settings.replace(publish_cross_budget_s=0.0), students, progress=False)
    assert published.summary["cross_rescored"] == 0 and published.summary["cross_budget_exhausted"]
    scorers = {sc for *_, sc, _m, _v in _live_rows(storage)}
    assert scorers == {"two_tower", "manual"}


def test_readers_never_see_a_mixed_version(storage, settings, seeded, tmp_path, monkeypatch):
    _, first = seeded
    publish(storage, settings, Students(first["version"], first["artifacts"]), progress=False)
    second = tiny_students(storage, tmp_path, seed=1)
    monkeypatch.setattr(publish_module, "WRITE_CHUNK_ROWS", 20)  # a version takes many inserts
    expected = len(_live_rows(storage))
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            seen.append(storage.query_rows(
                f"SELECT uniqExact(score_version), count(), any(model_version) "
                f"FROM {storage.table('pair_scores_latest')}")[0])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        publish(storage, settings, Students(second["version"], second["artifacts"]), progress=False)
    finally:
        stop.set()
        reader.join()
    assert len(seen) > 3
    assert all(versions == 1 and n == expected for versions, n, _ in seen)
    assert {m for *_, m in seen} <= {first["version"], second["version"]}
    assert seen[-1][2] == second["version"] or _live_rows(storage)[0][4] == second["version"]


def test_rollback_and_cleanup(storage, settings, seeded, tmp_path):
    _, first = seeded
    v1 = publish(storage, settings, Students(first["version"], first["artifacts"]), progress=False)
    rows_v1 = sorted(_live_rows(storage))
    second = tiny_students(storage, tmp_path, seed=1)
    publish(storage, settings, Students(second["version"], second["artifacts"]), progress=False)
    assert sorted(_live_rows(storage)) != rows_v1
    assert registry.promoted(storage)["version"] == second["version"]

    target = scores.rollback_target(storage, first["version"])
    scores.point_live(storage, target["score_version"], target["model_version"])
    registry.restore(storage, first["version"])
    assert sorted(_live_rows(storage)) == rows_v1
    assert scores.live(storage)["score_version"] == v1.score_version
    statuses = {m["version"]: m["status"] for m in registry.models(storage)}
    assert statuses == {first["version"]: "promoted", second["version"]: "retired"}

    # keep 1: a third publish drops every complete version but the newest and the live one
    third = tiny_students(storage, tmp_path, seed=2)
    v3 = publish(storage, settings.replace(score_versions_kept=1),
                 Students(third["version"], third["artifacts"]), progress=False)
    left = storage.query_rows(f"SELECT DISTINCT score_version FROM {storage.table('pair_scores')}")
    assert {v for (v,) in left} == {v3.score_version}
    with pytest.raises(LookupError):
        scores.rollback_target(storage, first["version"])
    with pytest.raises(ValueError):
        scores.point_live(storage, "not-a-version", "x")


def test_index_matches_the_table(storage, settings, seeded):
    data, first = seeded
    publish(storage, settings, Students(first["version"], first["artifacts"]), progress=False)
    index = ScoreIndex.load(storage)
    rows = _live_rows(storage)
    pairs = [(a, b) for a, b, *_ in rows]
    found = index.lookup(pairs + [("nope", "zzz")])
    assert found[-1] is None
    assert [(round(f[0], 4), f[1]) for f in found[:-1]] == [(round(s, 4), sc) for _, _, s, sc, *_ in rows]
    item = rows[0][0]
    partners = index.partners(item, 1000)
    expected = sorted(((b if a == item else a), s) for a, b, s, *_ in rows if item in (a, b))
    assert sorted((p["item_id"], pytest.approx(p["score"], abs=1e-4)) for p in partners) == expected
    assert index.embedding(item) is not None and index.partners("unknown", 5) is None


def test_kafka_outputs(storage, settings, seeded, broker):
    from kafka import KafkaConsumer

    from streams.core.produce import open_producer

    _, first = seeded
    settings = settings.replace(topic_pair_scores=f"ps-{settings.app_id}",
                                topic_item_partners=f"ip-{settings.app_id}")
    ensure_topics(broker.bootstrap, settings)
    published = publish(storage, settings, Students(first["version"], first["artifacts"]), progress=False)

    async def go():
        async with open_producer(broker.bootstrap) as producer:
            return await emit(producer, settings, published)

    counts = asyncio.run(go())
    assert counts == {"pair_scores": len(published.a), "item_partners": len(published.partners)}
    consumer = KafkaConsumer(settings.topic_pair_scores, bootstrap_servers=broker.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    got = {m.key.decode(): orjson.loads(m.value) for m in consumer}
    consumer.close()
    assert len(got) == len(published.a)
    key, value = next(iter(got.items()))
    assert key == f"{value['item_a']}|{value['item_b']}"
    assert value["score_version"] == published.score_version and value["model_version"] == first["version"]


def test_published_rows_and_lookups_carry_their_evidence(storage, settings, seeded):
    """Each row says what its score rests on: the model, behaviour (count, users, lift,
    Swing) blended by evidence weight, or a person."""
    import math

    import pyarrow as pa

    from models.blend import blend
    from streams.core.storage import stats
    from streams.serving.lookup import Serving

    data, first = seeded
    visits = [(f"u{k}-{n}", item) for k, (pair, c) in enumerate(zip(data["pairs"], data["counts"]))
              for n in range(c) for item in pair]  # c users co-clicked each pair
    storage.insert_arrow("user_item_days", pa.table({
        "user_id": [u for u, _ in visits], "item_id": [i for _, i in visits],
        "day": pa.array([20605] * len(visits), pa.int32()).cast(pa.date32()),  # 2026-06-01
        "clicks": pa.array([1] * len(visits), pa.uint64())}))
    published = publish(storage, settings, Students(first["version"], first["artifacts"]), progress=False)
    # every click on one day: no two halves to fit k on, so the configured k
    assert published.summary["blend"] == {"k": settings.blend_evidence_count, "source": "setting",
                                          "pairs": published.summary["blend"]["pairs"]}
    rows = storage.query_arrow(
        f"SELECT item_a, item_b, score, dominant, model_score, behaviour_weight, count, users, lift "
        f"FROM {storage.table('pair_scores_latest')}").to_pylist()
    pair_stats = {(r["item_a"], r["item_b"]): r for r in stats.latest(storage).to_pylist()}
    by_pair = {(r["item_a"], r["item_b"]): r for r in rows}
    assert by_pair[data["manual"]]["dominant"] == "manual" and by_pair[data["manual"]]["score"] == 2.0
    frequent = [r for p, r in by_pair.items() if p != data["manual"] and r["count"] >= 30]
    assert frequent and all(r["dominant"] == "behaviour" for r in frequent)
    for pair, row in by_pair.items():
        if pair == data["manual"]:
            continue
        assert row["count"] == pair_stats[pair]["count"] and row["users"] == pair_stats[pair]["users"]
        want, _, weight = blend([row["model_score"]], [pair_stats[pair]["lift"]], [row["count"]],
                                published.summary["blend"]["k"])
        assert math.isclose(row["score"], float(want[0]), rel_tol=1e-5)
        assert row["dominant"] == ("behaviour" if weight[0] >= 0.5 else "model")
    serving = Serving(storage, settings)
    serving.current = serving.build()
    pair = (frequent[0]["item_a"], frequent[0]["item_b"])
    answer = asyncio.run(serving.score_pairs([pair[::-1]]))["results"][0]
    assert answer["source"] == "table" and answer["evidence"]["dominant"] == "behaviour"
    assert answer["evidence"]["count"] == 30 and answer["evidence"]["users"] == 30
    assert published.summary["behaviour_dominant"] == sum(r["dominant"] == "behaviour" for r in rows)


def test_large_lookups_answer_every_row_and_let_small_ones_through(storage, settings, seeded):
    """A 1000-pair request answers each pair as the table holds it (in chunks), and a 1-pair
    request sent while it runs is answered first: the large one yields between chunks."""
    from streams.serving.lookup import FAIR_CHUNK, Serving

    _, first = seeded
    publish(storage, settings, Students(first["version"], first["artifacts"]), progress=False)
    serving = Serving(storage, settings)
    serving.current = serving.build()
    rows = {(a, b): (s, sc) for a, b, s, sc, *_ in _live_rows(storage)}
    published = sorted(rows)
    asked = [published[k % len(published)][::(-1) ** k] for k in range(1000)]  # both orientations
    assert len(asked) > 3 * FAIR_CHUNK
    finished = []

    async def ask(name, pairs):
        answer = await serving.score_pairs(pairs)
        finished.append(name)
        return answer

    async def go():
        big = asyncio.create_task(ask("big", asked))
        await asyncio.sleep(0)  # the large request has started its first chunk
        small = asyncio.create_task(ask("small", [published[0]]))
        return await big, await small

    _, small = asyncio.run(go())
    assert finished == ["small", "big"]
    asked[500] = ("nope-a", "nope-b")  # an unknown pair among them: the two-tower path
    items = sorted({x for pair in published for x in pair})
    unpublished = next((a, b) for a in items for b in items if a < b and (a, b) not in rows)
    asked[700] = unpublished  # known items, pair not in the version: computed by the two-tower
    big = asyncio.run(serving.score_pairs(asked))
    # the route's answer, serialised chunk by chunk, is the same answer
    assert orjson.loads(asyncio.run(serving.answer_json(asked))) == big
    assert small["results"][0]["score"] == round(rows[published[0]][0], 4)
    for (a, b), result in zip(asked, big["results"]):
        assert (result["item_a"], result["item_b"]) == (a, b)
        if (a, b) == ("nope-a", "nope-b"):
            assert result["score"] is None and result["source"] == "unknown_item"
            continue
        if (a, b) == unpublished:
            assert result["source"] == "computed" and 1 <= result["score"] <= 10
            continue
        score, scorer = rows[min(a, b), max(a, b)]
        assert result["source"] == "table" and result["scorer"] == scorer
        assert result["score"] == round(score, 4) and "count" in result["evidence"]


def test_the_blend_weight_is_fitted_on_held_out_pairs_when_both_halves_have_clicks(storage, settings, seeded):
    """With co-clicks on even and odd days, publish fits k on the candidates the model never
    trained on (``training.held_out``) and every published row uses that k."""
    import math

    import pyarrow as pa

    from models.blend import K_GRID, blend
    from training import held_out

    data, first = seeded
    day = dt.date(2026, 6, 2)
    storage.insert_arrow("pair_counts", pa.table({  # the pairs at or above the low tier again, the next day
        "item_a": [a for (a, _), c in zip(data["pairs"], data["counts"]) if c >= 3],
        "item_b": [b for (_, b), c in zip(data["pairs"], data["counts"]) if c >= 3],
        "day": pa.array([day] * sum(c >= 3 for c in data["counts"])),
        "count": pa.array([c // 2 for c in data["counts"] if c >= 3], pa.uint64())}))
    storage.insert_arrow("user_item_days", pa.table({  # the horizon ends on the newest day clicked
        "user_id": ["u1"], "item_id": [data["pairs"][0][0]], "day": pa.array([day]),
        "clicks": pa.array([1], pa.uint64())}))
    held = [p for p in data["eligible"] if p != data["manual"] and held_out(*p)]
    assert len(held) >= 10
    students = Students(first["version"], first["artifacts"])
    published = publish(storage, settings.replace(blend_fit_min_pairs=len(held)), students, progress=False)
    fitted = published.summary["blend"]
    assert fitted["source"] == "fitted" and fitted["pairs"] == len(held) and fitted["k"] in K_GRID
    assert fitted["errors"][str(fitted["k"])] == min(fitted["errors"].values())
    ev = published.evidence
    want = blend(ev["model_score"], ev["lift"], ev["count"], fitted["k"])[0]
    manual = published.scorer == SCORERS.index("manual")
    assert np.allclose(ev["score"][~manual], want[~manual]) and manual.sum() == 1
    # one pair fewer than the minimum: the configured k
    again = publish(storage, settings.replace(blend_fit_min_pairs=len(held) + 1), students, progress=False)
    assert again.summary["blend"]["source"] == "setting"
    assert math.isclose(again.summary["blend"]["k"], settings.blend_evidence_count)


def test_a_publish_says_what_it_decided_in_one_line_and_keeps_it_with_its_version(
        storage, settings, seeded, caplog, capsys, monkeypatch):
    """One INFO line per publish (pairs, k, the cross-encoder's share, label worth, seconds);
    the same summary stored with the score version, shown by `pairstream models show` and /status."""
    import json
    import logging

    from streams.cli import main
    from streams.ops.status_page import gather, render

    _, first = seeded
    with caplog.at_level(logging.INFO, logger="streams.publishing.publisher"):
        result = publish(storage, settings, Students(first["version"], first["artifacts"]), progress=False)
    lines = [r.getMessage() for r in caplog.records
             if r.name == "streams.publishing.publisher" and r.levelno == logging.INFO]
    summary = result.summary
    assert len(lines) == 1 and lines[0].startswith(f"published {result.score_version} (model {first['version']})")
    for figure in (f"{summary['pairs']} pairs", f"blend k {summary['blend']['k']}",
                   f"share {summary['cross_mix']['weight']} of {summary['cross_rescored']} rescored",
                   "label worth ", f"; {summary['seconds']} s"):
        assert figure in lines[0], (figure, lines[0])

    kept = scores.summary(storage, result.score_version)
    assert kept == json.loads(json.dumps(summary, default=str))

    class Borrowed:  # the test's own storage, which the command must not close
        def __getattr__(self, name):
            return getattr(storage, name)

        def close(self):
            pass

    monkeypatch.setattr("streams.core.storage.open_storage", lambda _settings: Borrowed())
    for asked in (result.score_version, first["version"]):  # a model version: its newest score version
        assert main(["models", "show", asked]) == 0
        assert json.loads(capsys.readouterr().out) == kept
    assert main(["models", "show", "v19990101-000000-nope"]) == 1
    assert "no complete score version" in capsys.readouterr().err

    page = render(gather(storage, lambda: (result.score_version, first["version"], summary["pairs"]), list))
    assert f"its publish: published {result.score_version}" in page and "blend k" in page
