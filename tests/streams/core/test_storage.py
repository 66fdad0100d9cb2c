"""Storage contract on chDB: migrations, parameterised SQL, bulk inserts, dedup tokens."""

import pyarrow as pa
import pytest

from streams.core.storage.base import check_identifier, timestamp_array
from streams.core.storage.migrations import latest_version, migrate

TABLES = {"items", "pair_counts", "pair_labels", "pair_scores", "models", "score_versions"}


def test_migrations_are_idempotent(storage):
    assert migrate(storage) == []  # the fixture already migrated: nothing twice
    versions = [r[0] for r in storage.query_rows(
        f"SELECT version FROM {storage.table('schema_migrations')} FINAL ORDER BY version")]
    assert versions == list(range(1, latest_version() + 1))
    names = {r[0] for r in storage.query_rows(
        "SELECT name FROM system.tables WHERE database = {db:String}", {"db": storage.database})}
    assert TABLES <= names


def test_parameters_are_bound_not_interpolated(storage):
    hostile = "x'); DROP TABLE pair_counts; --"
    assert storage.query_value("SELECT {s:String}", {"s": hostile}) == hostile
    assert storage.query_value(
        f"SELECT count() FROM {storage.table('pair_counts')}") == 0  # table still there
    with pytest.raises(ValueError):
        check_identifier("pair_counts; DROP")


def test_string_parameters_round_trip_whatever_they_contain(storage):
    """Ids are any 1..128-char strings: backslash sequences, newlines, tabs, NULs. chDB reads
    parameters in ClickHouse's escaped format, so ``a\\nb`` once matched nothing (it arrived
    as a newline) and a real newline was an error (``labels show`` crashed on such an id)."""
    for value in ("a\\nb", "x\ny", "tab\there", "back\\\\slash", "nul\0x", "cr\rx", "é\\t'\""):
        assert storage.query_value("SELECT {v:String}", {"v": value}) == value, repr(value)
        assert storage.query_value("SELECT {v:Array(String)}", {"v": [value, "b"]}) == [value, "b"]


def test_bulk_insert_and_dedup_token(storage):
    n = 50_000
    table = pa.table({
        "item_a": pa.array([f"a{i % 100}" for i in range(n)]),
        "item_b": pa.array([f"b{i % 7}" for i in range(n)]),
        "day": pa.array([20000] * n, pa.int32()).cast(pa.date32()),
        "count": pa.array([2] * n, pa.uint64()),
    })
    storage.insert_arrow("pair_counts", table, dedup_token="clicks:0:0:50000")
    storage.insert_arrow("pair_counts", table, dedup_token="clicks:0:0:50000")  # a retry
    assert storage.query_value(f"SELECT sum(count) FROM {storage.table('pair_counts')}") == 2 * n
    storage.insert_arrow("pair_counts", table, dedup_token="clicks:0:50000:100000")
    assert storage.query_value(f"SELECT sum(count) FROM {storage.table('pair_counts')}") == 4 * n


def test_items_round_trip_with_timestamps(storage):
    storage.insert_arrow("items", pa.table({
        "item_id": ["i1"], "title": ["Pixel 7"], "category": ["phone"], "brand": ["Google"],
        "color": ["black"], "condition": ["good"], "model": ["Pixel 7"],
        "price": pa.array([None], pa.float64()), "updated_at": timestamp_array([1_780_000_000.5]),
    }))
    row = storage.query_rows(
        f"SELECT item_id, category, price, toUnixTimestamp64Milli(updated_at) "
        f"FROM {storage.table('items')} WHERE item_id = {{id:String}}", {"id": "i1"})
    assert row == [("i1", "phone", None, 1_780_000_000_500)]
