"""The storage contract, on every engine the worker can run on.

Each test runs on ``ChdbStorage`` (embedded chDB, the default) and on ``ServerStorage`` (the
production path: clickhouse-connect, here over its in-process chDB interface), and on a real
ClickHouse server where ``PAIRSTREAM_CLICKHOUSE_URL`` points at one (skipped otherwise; the
test database is created and dropped there).
"""

import os
import uuid

import pyarrow as pa
import pytest

from streams.core.storage import scores
from streams.core.storage.base import check_identifier, timestamp_array
from streams.core.storage.labels import LabelRow, effective_labels, write_labels
from streams.core.storage.migrations import latest_version, migrate

TABLES = {"items", "pair_counts", "pair_labels", "pair_scores", "models", "score_versions"}
REAL_SERVER = os.environ.get("PAIRSTREAM_CLICKHOUSE_URL", "")


@pytest.fixture(params=["chdb", "server-client", "real-server"])
def storage(request, chdb_dir, settings, server_storages):
    if request.param == "chdb":
        from streams.core.storage.chdb_client import ChdbStorage

        store = ChdbStorage(chdb_dir, settings.clickhouse_database)
    elif request.param == "server-client":
        store = server_storages()
    else:
        if not REAL_SERVER.startswith(("http://", "https://")):
            pytest.skip("set PAIRSTREAM_CLICKHOUSE_URL (and _PASSWORD) to run the contract on your server")
        from streams.core.storage.server_client import ServerStorage, connect

        client, _ = connect(REAL_SERVER, os.environ.get("PAIRSTREAM_CLICKHOUSE_PASSWORD", ""))
        store = ServerStorage(client=client, database=f"pairstream_test_{uuid.uuid4().hex[:8]}")
    migrate(store)
    yield store
    if request.param == "real-server":
        store.command(f"DROP DATABASE IF EXISTS {store.database}")
    store.close()


def _pair_counts(n: int, count: int = 2, prefix: str = "a") -> pa.Table:
    return pa.table({
        "item_a": pa.array([f"{prefix}{i % 100}" for i in range(n)]),
        "item_b": pa.array([f"b{i % 7}" for i in range(n)]),
        "day": pa.array([20000] * n, pa.int32()).cast(pa.date32()),
        "count": pa.array([count] * n, pa.uint64()),
    })


def _sum(storage, table="pair_counts", column="count"):
    return storage.query_value(f"SELECT sum({column}) FROM {storage.table(table)}")


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
    table = _pair_counts(n)
    storage.insert_arrow("pair_counts", table, dedup_token="clicks:0:0:50000")
    storage.insert_arrow("pair_counts", table, dedup_token="clicks:0:0:50000")  # a retry
    assert _sum(storage) == 2 * n
    storage.insert_arrow("pair_counts", table, dedup_token="clicks:0:50000:100000", unique_keys=True)
    assert _sum(storage) == 4 * n


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


def test_maps_arrays_and_nullable_times_round_trip(storage):
    write_labels(storage, [LabelRow("a", "b", 7.5, "high", "llm", "hf", "tiny", "v1",
                                    dim_scores={"colour": 8.0, "brand": 6.5},
                                    dim_reasons={"colour": "both 'black'\n"},
                                    dim_dists={"colour": [0.25, 0.75]}, labelled_at=1_780_000_000.25)])
    (label,) = effective_labels(storage)
    assert (label["score"], label["dim_scores"], label["dim_reasons"], label["dim_dists"]) == (
        7.5, {"colour": 8.0, "brand": 6.5}, {"colour": "both 'black'\n"}, {"colour": [0.25, 0.75]})
    got = storage.query_arrow(
        "SELECT CAST(NULL, 'Nullable(DateTime64(3, \\'UTC\\'))') AS never, "
        "toDateTime64({t:Float64}, 3, 'UTC') AS at", {"t": 1_780_000_000.5})
    assert got.column("never").to_pylist() == [None]
    assert got.column("at").cast(pa.int64()).to_pylist() == [1_780_000_000_500]


def test_a_fenced_insert_writes_only_what_its_condition_lets_through(storage):
    """``insert_arrow_if`` is the fence of every ingest write (``streams.ingest.fencing``):
    the condition is decided by the statement that writes, over its own columns and bound
    parameters; a retry with the same token is dropped."""
    table = pa.concat_tables([_pair_counts(300, prefix="keep"), _pair_counts(200, prefix="drop")])
    condition = "startsWith(item_a, {allowed:String}) AND {owner:UInt64} IN {owners:Array(UInt64)}"
    params = {"allowed": "keep", "owner": 7, "owners": [3, 7]}
    written = storage.insert_arrow_if("pair_counts", table, condition, params, dedup_token="fenced:1")
    # the rows the view keeping item_day_clicks wrote count too (one per item and day: 100 + 7);
    # None: the engine does not say (the caller reads back)
    assert written in (300 + 107, None)
    assert _sum(storage) == 600
    storage.insert_arrow_if("pair_counts", table, condition, params, dedup_token="fenced:1")  # a retry
    assert _sum(storage) == 600
    refused = storage.insert_arrow_if("pair_counts", table, condition, {**params, "owner": 4},
                                      dedup_token="fenced:2")
    assert refused in (0, None)
    assert _sum(storage) == 600
    sessions = pa.table({"topic": ["t", "t"], "partition": pa.array([1, 2], pa.uint32()),
                         "user_id": ["u'1", "u\\2"], "items": [["a", "b"], []],
                         "times": [[1.0, 2.5], []], "version": pa.array([3, 3], pa.uint64())})
    storage.insert_arrow_if("user_sessions", sessions, "partition IN {ps:Array(UInt32)}", {"ps": [2]},
                            unique_keys=True)
    assert storage.query_rows(f"SELECT user_id, items, times FROM {storage.table('user_sessions')}") == [
        ("u\\2", [], [])]
    storage.settle_fenced()  # nothing of another writer's is running: returns


def test_delete_with_an_array_parameter_and_the_reader_views(storage):
    storage.insert_arrow("pair_counts", _pair_counts(100, count=1))
    storage.command(f"DELETE FROM {storage.table('pair_counts')} WHERE item_a IN {{ids:Array(String)}}",
                    {"ids": ["a1", "a2", "never"]})
    assert storage.query_value(f"SELECT count() FROM {storage.table('pair_counts')}") == 98
    version = scores.new_score_version("m1", now=1_780_000_000)
    storage.insert_arrow("pair_scores", pa.table({
        "item_a": ["a"], "item_b": ["b"], "score": pa.array([6.5], pa.float32()), "model_version": ["m1"],
        "scorer": ["two_tower"], "score_version": [version], "scored_at": timestamp_array([1_780_000_000])}))
    latest = f"SELECT item_a, item_b, score FROM {storage.table('pair_scores_latest')}"
    assert storage.query_rows(latest) == []  # written, not yet live
    scores.set_status(storage, version, "m1", "complete", rows=1)
    scores.point_live(storage, version, "m1")
    assert storage.query_rows(latest) == [("a", "b", 6.5)]
    assert scores.live(storage) == {"score_version": version, "model_version": "m1"}
