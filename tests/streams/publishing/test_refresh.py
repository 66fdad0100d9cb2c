"""Continuous publishing: changed pairs scored again into the live version, between trainings."""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa
import pytest

from models.runtime import Students
from streams.core.storage import scores
from streams.core.storage.labels import LabelRow, write_labels
from streams.core.storage.migrations import PAIR_HASH_SQL
from streams.publishing.publisher import publish
from streams.publishing.refresh import refresh
from streams.serving.index import UPDATE_COLUMNS, ScoreIndex
from tests.student_fixtures import seed_pairs, tiny_students

DAY = dt.date(2026, 6, 1)


def _click(storage, pairs: dict[tuple[str, str], int]) -> None:
    """What a click checkpoint leaves behind: the counts, and the touched pairs' hashes."""
    storage.insert_arrow("pair_counts", pa.table({
        "item_a": [a for a, _ in pairs], "item_b": [b for _, b in pairs],
        "day": pa.array([DAY] * len(pairs)), "count": pa.array(list(pairs.values()), pa.uint64())}))
    storage.command(
        f"INSERT INTO {storage.table('pair_touched_hashes')} (batch, pair_hash) "
        f"SELECT 1, {PAIR_HASH_SQL} FROM (SELECT ab.1 AS item_a, ab.2 AS item_b FROM "
        f"(SELECT arrayJoin(arrayZip({{a:Array(String)}}, {{b:Array(String)}})) AS ab))",
        {"a": [a for a, _ in pairs], "b": [b for _, b in pairs]})


def _latest(storage) -> dict:
    rows = storage.query_arrow(
        f"SELECT item_a, item_b, score, scorer, model_score, count, score_version, dominant "
        f"FROM {storage.table('pair_scores_latest')}").to_pylist()
    return {(r["item_a"], r["item_b"]): r for r in rows}


@pytest.fixture
def live(storage, settings, tmp_path):
    data = seed_pairs(storage)
    # the users' side of the clicks (the horizon and the users columns come from it)
    storage.insert_arrow("user_item_days", pa.table({
        "user_id": [f"u{k % 7}" for k in range(len(data["items"]))],
        "item_id": [i.item_id for i in data["items"]],
        "day": pa.array([DAY] * len(data["items"])), "clicks": pa.array([1] * len(data["items"]), pa.uint64())}))
    first = tiny_students(storage, tmp_path, seed=0)
    students = Students(first["version"], first["artifacts"])
    # a refresh reads changes from a second before its watermark (touched hashes carry
    # seconds): the seed's labels must be older than that, or the first refresh takes them again
    time.sleep(1.1)
    published = publish(storage, settings, students, progress=False)
    return data, students, published


def test_a_refresh_rescores_changed_pairs_and_adds_new_ones(storage, settings, live):
    data, students, published = live
    version = published.score_version
    before = _latest(storage)
    counts = dict(zip(data["pairs"], data["counts"]))
    grown = next(p for p in data["pairs"] if counts[p] == 30 and p != data["manual"])
    still_low = next(p for p in data["pairs"] if counts[p] == 1)
    items = {i.item_id: i for i in data["items"]}
    fresh = next((a, b) for a in sorted(items) for b in sorted(items)
                 if a < b and items[a].category != items[b].category and (a, b) not in counts)
    _click(storage, {grown: 10, fresh: 4, still_low: 1})

    index = ScoreIndex.load(storage, version)
    done = refresh(storage, settings, students, index)
    assert done.score_version == version and done.summary["pairs"] == 2 and done.summary["new_pairs"] == 1

    after = _latest(storage)
    assert set(after) == set(before) | {fresh}  # the still-low pair is no candidate
    assert after[grown]["count"] == 40 and before[grown]["count"] == 30
    # the model did not change: the pair keeps its model score and scorer, the blend moves
    assert after[grown]["model_score"] == pytest.approx(before[grown]["model_score"])
    assert after[grown]["scorer"] == before[grown]["scorer"]
    assert after[fresh]["count"] == 4 and after[fresh]["scorer"] == "two_tower"
    assert {r["score_version"] for r in after.values()} == {version}
    assert all(after[p] == before[p] for p in before if p != grown)  # nothing else moved

    # the lookup index: the same rows, applied to a copy, or loaded whole
    updates = scores.updates_after(storage, version, index.updated_through, UPDATE_COLUMNS)
    merged = index.merged(updates)
    reloaded = ScoreIndex.load(storage, version)
    assert index.lookup([fresh]) == [None]  # the old index is left as it was
    for pair in (grown, fresh, data["manual"]):
        assert merged.lookup([pair]) == reloaded.lookup([pair])
        assert merged.lookup([pair])[0][0] == pytest.approx(after[pair]["score"])
    assert len(merged) == len(reloaded) == len(after)
    assert merged.partners(fresh[0], 100) == reloaded.partners(fresh[0], 100)
    assert merged.updated_through == reloaded.updated_through > 0


def test_a_manual_label_given_between_trainings_wins_at_the_next_refresh(storage, settings, live):
    data, students, published = live
    pair = next(p for p, c in zip(data["pairs"], data["counts"]) if c == 5)
    time.sleep(1.1)  # past the publish's second (touched hashes carry seconds)
    write_labels(storage, [LabelRow(*pair, 9.5, "low", "manual", "", "person", "")])
    done = refresh(storage, settings, students, ScoreIndex.load(storage, published.score_version))
    assert done.summary["pairs"] == 1
    row = _latest(storage)[pair]
    assert (row["score"], row["scorer"], row["dominant"]) == (9.5, "manual", "manual")


def test_nothing_changed_writes_nothing_but_moves_the_watermark(storage, settings, live):
    _data, students, published = live
    first = scores.refresh_state(storage, published.score_version)
    done = refresh(storage, settings, students, ScoreIndex.load(storage, published.score_version))
    assert done.rows is None
    state = scores.refresh_state(storage, published.score_version)
    assert state["through"] > first["through"] and state["refreshes"] == 1
    assert state["blend_k"] == first["blend_k"]


def test_a_version_past_the_change_log_must_be_published_whole(storage, settings, live):
    _data, students, published = live
    scores.record_refresh(storage, published.score_version, "refresh", time.time() - 4000, 5.0, 0)
    with pytest.raises(LookupError, match="cannot be caught up"):
        refresh(storage, settings, students, ScoreIndex.load(storage, published.score_version))


def test_refreshed_rows_reach_the_pair_scores_topic_as_the_table_shows_them(storage, settings, live, broker):
    import asyncio

    import orjson
    from kafka import KafkaConsumer

    from streams.core.produce import open_producer
    from streams.core.topics import ensure_topics
    from streams.publishing.refresh import emit

    data, students, published = live
    settings = settings.replace(topic_pair_scores=f"ps-refresh-{settings.app_id}")
    ensure_topics(broker.bootstrap, settings)
    grown = next(p for p, c in zip(data["pairs"], data["counts"]) if c == 30 and p != data["manual"])
    _click(storage, {grown: 7})
    write_labels(storage, [LabelRow(*grown, 7.25, "high", "llm", "openai", "m", "v1",
                                    {"category": 9.12345, "colour": 3.5})])
    done = refresh(storage, settings, students, ScoreIndex.load(storage, published.score_version))

    async def go():
        async with open_producer(broker.bootstrap) as producer:
            return await emit(producer, settings, storage, done)

    assert asyncio.run(go()) == done.rows.num_rows == 1
    consumer = KafkaConsumer(settings.topic_pair_scores, bootstrap_servers=broker.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    got = {m.key.decode(): orjson.loads(m.value) for m in consumer}
    consumer.close()
    value = got[f"{grown[0]}|{grown[1]}"]
    row = _latest(storage)[grown]
    assert value["evidence"]["count"] == row["count"] == 37
    assert value["evidence"]["dim_scores"] == {"category": 9.123, "colour": 3.5}
    assert value["score"] == pytest.approx(row["score"], abs=1e-4)
    assert (value["score_version"], value["model_version"]) == (published.score_version, students.version)
    # ClickHouse formats the message: the same JSON the Python encoder makes of the row
    from streams.core.records import EVIDENCE_FIELDS, evidence_records, pair_score_value

    row = done.rows.to_pylist()[0]
    evidence = evidence_records({name: [row[name]] for name in EVIDENCE_FIELDS})[0]
    assert value == orjson.loads(pair_score_value(row["item_a"], row["item_b"], row["score"], row["scorer"],
                                                  row["model_version"], row["score_version"], evidence))
