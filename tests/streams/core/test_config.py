
import pytest

from streams.core.config import Settings
from tests.paths import REPO_ROOT


def test_defaults_are_embedded():
    s = Settings.load(env={})
    assert s.embedded_kafka and s.embedded_clickhouse
    assert (s.tier_low, s.tier_medium, s.tier_high) == (3, 20, 100)
    assert s.session_window_s == 1800 and s.history_size == 20 and s.horizon_days == 30


def test_env_overrides_file(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text('[pairstream]\ntier_low = 5\nkafka_bootstrap = "k:9092"\n')
    s = Settings.load(cfg, env={"PAIRSTREAM_TIER_LOW": "7", "PAIRSTREAM_SESSION_TIMEOUT_S": "4.5"})
    assert s.tier_low == 7  # env wins over the file
    assert s.kafka_bootstrap == "k:9092" and not s.embedded_kafka
    assert s.session_timeout_s == 4.5


def test_bad_values_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="history_size"):
        Settings.load(env={"PAIRSTREAM_HISTORY_SIZE": "many"})
    with pytest.raises(ValueError, match="tiers"):
        Settings.load(env={"PAIRSTREAM_TIER_LOW": "50"})
    cfg = tmp_path / "p.toml"
    cfg.write_text("nope = 1\n")
    with pytest.raises(ValueError, match="unknown setting 'nope'"):
        Settings.load(cfg, env={})


def test_readme_settings_table_is_the_generated_one():
    """The README's table is what ``make docs`` writes from the settings class, so a setting
    added, removed or re-documented without ``make docs`` fails here."""
    from streams.cli.settings import readme_with_settings

    readme = (REPO_ROOT / "README.md").read_text()
    assert readme_with_settings(readme, Settings.markdown_table()) == readme, "run make docs"
    assert all(f"| `{env}` |" in readme for env, _, _ in Settings.documentation())


def test_a_server_bound_beyond_loopback_needs_a_token():
    """Binding 0.0.0.0 (or a host name) with no token would open /status, /metrics and the
    lookup API to the network: refused with what to do; loopback and token-guarded binds load."""
    for host in ("0.0.0.0", "::", "10.1.2.3", "worker.internal"):
        with pytest.raises(ValueError, match="set PAIRSTREAM_API_TOKEN"):
            Settings.load(env={"PAIRSTREAM_WEB_HOST": host})
        assert Settings.load(env={"PAIRSTREAM_WEB_HOST": host, "PAIRSTREAM_API_TOKEN": "t"}).api_token == "t"
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert Settings.load(env={"PAIRSTREAM_WEB_HOST": host}).web_host == host


def test_a_durable_embedded_log_fails_on_a_reset_and_waits_long_enough_per_fetch():
    memory, durable = Settings(), Settings(embedded_log="durable")
    assert (memory.offset_reset_policy, durable.offset_reset_policy) == ("rewind", "fail")
    assert (memory.fetch_wait_ms(50), durable.fetch_wait_ms(50), durable.fetch_wait_ms(1500)) == (50, 500, 1500)
    external = Settings(embedded_log="durable", kafka_bootstrap="kafka:9092")  # the setting is the embedded broker's
    assert (external.durable_log, external.fetch_wait_ms(50)) == (False, 50)
    with pytest.raises(ValueError, match="embedded_log"):
        Settings(embedded_log="disk").validate()


def test_a_child_process_loads_exactly_the_settings_it_was_given():
    """The lookup processes get the worker's settings as PAIRSTREAM_* variables: every field
    (bools, floats, empty strings) must come back equal."""
    given = Settings(tier_low=4, publish_refresh_s=2.5, api_token="", web_host="127.0.0.1", lookup_processes=3,
                     llm_backend="openai", training_nice=7, worker_nice=0)
    assert Settings.load(env=given.environment()) == given
    assert Settings.load(env=Settings().environment()) == Settings()


def test_priorities_and_the_lookup_port_are_checked():
    with pytest.raises(ValueError, match="worker_nice"):
        Settings.load(env={"PAIRSTREAM_WORKER_NICE": "25"})
    with pytest.raises(ValueError, match="lookup_port"):
        Settings.load(env={"PAIRSTREAM_LOOKUP_PORT": "6066"})
