"""``ServerStorage``'s URL parsing and an injected client (the contract itself is in
``test_storage.py``, on every engine)."""

import pytest

from streams.core.config import Settings
from streams.core.storage import open_storage
from streams.core.storage.server_client import ServerStorage, client_arguments


@pytest.mark.parametrize(("url", "password", "expected"), [
    ("http://ch.internal", "", ({"host": "ch.internal", "port": 8123, "username": "default", "password": "",
                                 "secure": False, "compress": "lz4"}, "pairstream")),
    ("https://ingest@ch.example.com/events", "s3cret",
     ({"host": "ch.example.com", "port": 8443, "username": "ingest", "password": "s3cret", "secure": True,
       "compress": "lz4"}, "events")),
    ("http://a%40b:from-url@10.0.0.5:9000/", "", ({"host": "10.0.0.5", "port": 9000, "username": "a@b",
                                                  "password": "from-url", "secure": False, "compress": "lz4"},
                                                 "pairstream")),
    # the password setting (kept out of URLs and logs) wins over one written in the URL
    ("http://u:old@h:8123/db", "new", ({"host": "h", "port": 8123, "username": "u", "password": "new",
                                        "secure": False, "compress": "lz4"}, "db")),
    ("chdb:///var/lib/pairstream/chdb", "", ({"interface": "chdb", "path": "/var/lib/pairstream/chdb"},
                                             "pairstream")),
])
def test_a_url_becomes_client_arguments(url, password, expected):
    assert client_arguments(url, password) == expected


@pytest.mark.parametrize(("url", "problem"), [
    ("clickhouse://h:9000", "must start with"),
    ("h:8123", "must start with"),
    ("http://h/pairs;DROP", "not a plain SQL identifier"),
    ("chdb://memory", "needs a data path"),
])
def test_a_bad_url_is_refused_with_the_reason(url, problem):
    with pytest.raises(ValueError, match=problem):
        client_arguments(url)


def test_settings_refuse_a_url_of_another_scheme():
    with pytest.raises(ValueError, match="clickhouse_url"):
        Settings(clickhouse_url="tcp://h:9000").validate()


def test_an_injected_client_is_used_as_it_is(chdb_dir, settings):
    import clickhouse_connect

    client = clickhouse_connect.get_client(interface="chdb", path=str(chdb_dir))
    store = ServerStorage(client=client, database=settings.clickhouse_database)
    try:
        assert store.query_value("SELECT {x:UInt8} + 1", {"x": 41}) == 42
        assert store.database == settings.clickhouse_database
    finally:
        store.close()


def test_open_storage_takes_the_server_path_for_a_url(chdb_dir, settings):
    store = open_storage(settings.replace(clickhouse_url=f"chdb://{chdb_dir}"))
    try:
        assert isinstance(store, ServerStorage)
        assert store.query_value(f"SELECT count() FROM {store.table('pair_counts')}") == 0  # migrated
    finally:
        store.close()
