"""Each record of our own topics: what its builder writes, its parser reads back, and what
its parser refuses, with the reason its dead letter carries."""

from __future__ import annotations

import orjson
import pytest

from streams.core.events import InvalidEvent
from streams.core.records import (
    TIERS,
    PairToScore,
    TrainingJob,
    computed_evidence,
    evidence_records,
    json_object,
    model_update_value,
    pair_score_value,
    parse_model_update,
    tier_name,
)


def test_pairs_to_score_round_trip_and_refusals():
    record = PairToScore("a1", "b2", "medium", 20, 1_780_000_000.5)
    assert PairToScore.parse(record.to_json()) == record
    for raw, reason in [(b"", "tombstone"), (b"{", "bad_json"), (b"[1]", "not_object"),
                        (b'{"item_a": "b", "item_b": "a", "tier": "low"}', "bad_type"),
                        (b'{"item_a": "a", "item_b": "b", "tier": "huge"}', "bad_type"),
                        (b'{"item_a": "a", "item_b": "b", "tier": "low", "count": -1}', "bad_type"),
                        (b'{"item_a": "", "item_b": "b", "tier": "low"}', "bad_type")]:
        with pytest.raises(InvalidEvent) as bad:
            PairToScore.parse(raw)
        assert bad.value.reason == reason, raw


def test_tier_names_follow_the_ledger_codes():
    assert [tier_name(code) for code in (1, 2, 3)] == list(TIERS) and tier_name(9) == "9"


def test_model_updates_and_training_jobs_round_trip():
    value = model_update_value("promoted", "v1", "s20261205-000000-000000", 5.0)
    assert parse_model_update(value, lambda v: v.startswith("s")) == "s20261205-000000-000000"
    assert parse_model_update(orjson.dumps({"event": "promoted"}), lambda v: True) is None
    with pytest.raises(InvalidEvent, match="bad_version"):
        parse_model_update(model_update_value("promoted", "v1", "../etc", 5.0), lambda v: False)
    job = TrainingJob("r1", "--epochs 2", "schedule", 7.0)
    assert TrainingJob.parse(job.to_json()) == job
    for raw in (b'{"run_id": ""}', b'{"run_id": "r", "args": 3}', b"null"):
        with pytest.raises(InvalidEvent):
            TrainingJob.parse(raw)


def test_evidence_has_one_shape_and_one_rounding():
    rows = evidence_records({"dominant": ["behaviour", ""], "model_score": [6.123456, 2.0],
                             "behaviour_score": [8.0, 1.0], "behaviour_weight": [0.55555, 0.1],
                             "count": [12, 0], "users": [5, 0], "lift": [3.333333, 1.0],
                             "swing": [0.1234567, 0.0], "dim_scores": [[("brand", 7.77777)], None]})
    assert rows[0] == {"dominant": "behaviour", "model_score": 6.1235, "behaviour_score": 8.0,
                       "behaviour_weight": 0.5556, "count": 12, "users": 5, "lift": 3.3333,
                       "swing": 0.123457, "dim_scores": {"brand": 7.778}}
    assert rows[1]["dominant"] is None and rows[1]["dim_scores"] == {}
    assert computed_evidence(7.123456) == {"dominant": "model", "model_score": 7.1235}
    value = orjson.loads(pair_score_value("a", "b", 7.123456, "two_tower", "v1", "s1", rows[0]))
    assert value["score"] == 7.1235 and value["evidence"] == rows[0]


def test_json_object_names_what_it_wanted():
    with pytest.raises(InvalidEvent, match="a model update must be a JSON object"):
        json_object(b'"text"', "model update")
