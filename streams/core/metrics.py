"""Prometheus metrics of every stage (prefix ``pairstream_``, base units, no per-pair labels)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("pairstream_events_in_total", "Events consumed by a stage.", ["stage"])
BATCH_SIZE = Histogram(
    "pairstream_batch_events", "Events per processed batch.", ["stage"],
    buckets=(1, 10, 100, 1000, 5000, 10000, 20000, 50000),
)
DLQ = Counter(
    "pairstream_dead_letters_total", "Events sent to a dead-letter topic.", ["topic", "reason"]
)
PAIR_INCREMENTS = Counter(
    "pairstream_pair_count_rows_total", "Aggregated (pair, day) increment rows written."
)
PAIRS_ROUTED = Counter(
    "pairstream_pairs_routed_total", "Pairs produced to pairs-to-score on entering a tier.", ["tier"]
)
UNKNOWN_ITEMS = Counter(
    "pairstream_unknown_item_clicks_total", "Clicks on items the catalogue does not know (no pairs)."
)
SESSIONS_EVICTED = Counter(
    "pairstream_sessions_evicted_total", "User histories dropped after being idle."
)
CH_WRITE_SECONDS = Histogram(
    "pairstream_clickhouse_write_seconds", "Latency of ClickHouse inserts.", ["table"]
)
CH_ERRORS = Counter("pairstream_clickhouse_errors_total", "Failed ClickHouse calls (retried).")
INGEST_INTERNED = Gauge("pairstream_ingest_interned_ids", "Ids the click ingest holds in memory "
                        "(all partitions): live users, and interned items (compacted after evictions).",
                        ["kind"])
CATALOGUE_ITEMS = Gauge("pairstream_catalogue_items", "Items known to the worker's catalogue.")
LABELS = Counter("pairstream_labels_total", "Pair labels written, by source.", ["source"])
LABEL_SKIPS = Counter(
    "pairstream_label_cache_hits_total", "Routed pairs not scored again (same prompt version and "
    "backend, or a manual label)."
)
CONSUMER_LAG = Gauge("pairstream_consumer_lag_messages", "End offset minus committed offset.",
                     ["group", "topic", "partition"])
CONSUMER_LAG_SECONDS = Gauge("pairstream_consumer_lag_seconds",
                             "Age of the oldest unconsumed message (broker timestamp); 0 when "
                             "caught up.",
                             ["group", "topic", "partition"])
CONSUMER_LAG_STATUS = Gauge("pairstream_consumer_lag_status",
                            "Burrow's status plus the age threshold (PAIRSTREAM_LAG_WARN_S): "
                            "0 OK, 1 WARN, 2 STALL, 3 STOP, 4 REWIND.",
                            ["group", "topic", "partition"])
TABLE_NEWEST = Gauge("pairstream_table_newest_row_timestamp_seconds",
                     "Time of the newest row of a table (freshness).", ["table"])
TRAINING_RUNS = Counter("pairstream_training_runs_total", "Training runs by outcome (succeeded, failed, "
                        "cancelled: the worker stopped during the run).", ["status"])
TRAINING_CHECKS = Counter("pairstream_training_checks_total", "Checks of the training trigger by the "
                          "leader's timer, by outcome (started, busy, not_due, error).", ["outcome"])
TRAINING_SECONDS = Histogram("pairstream_training_run_seconds", "Duration of training runs.",
                             buckets=(60, 300, 900, 1800, 3600, 7200))
PROMOTED_VERSION = Gauge("pairstream_promoted_model_info", "1 for the promoted model version.",
                         ["version"])
TRAINING_RUNNING = Gauge("pairstream_training_running", "1 while a training run is in progress.")
SCORES_PUBLISHED = Counter("pairstream_scores_published_total", "Pair scores written by publishes.")
PUBLISH_SECONDS = Histogram("pairstream_publish_seconds", "Duration of a publish.",
                            buckets=(1, 5, 15, 60, 300, 900, 3600))
REFRESHES = Counter("pairstream_publish_refreshes_total", "Continuous publishing between trainings, by "
                    "outcome: refreshed (changed pairs scored again), empty (nothing changed), full "
                    "(the live version re-published whole: its watermark was past the change log's "
                    "retention), waiting (no model, or this worker has not loaded the live version "
                    "yet), error.", ["outcome"])
for _outcome in ("refreshed", "empty", "full", "waiting", "error"):
    REFRESHES.labels(_outcome)
REFRESH_PAIRS = Counter("pairstream_publish_refresh_pairs_total", "Pairs written by refreshes: updated "
                        "(already in the live version) or added (newly at or above the low tier).", ["kind"])
for _kind in ("updated", "added"):
    REFRESH_PAIRS.labels(_kind)
REFRESH_SECONDS = Histogram("pairstream_publish_refresh_seconds", "Duration of one refresh.",
                            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
SCORES_BEHAVIOUR_THROUGH = Gauge("pairstream_scores_behaviour_through_timestamp_seconds",
                                 "Clicks up to this time are reflected in the live published scores "
                                 "(the live version's last publish or refresh): time() minus it is the "
                                 "staleness of the re-ranker's table.")
LIVE_SCORE_VERSION = Gauge("pairstream_live_score_version_info",
                           "1 for the score version readers see.", ["score_version", "model_version"])
LOOKUP_SECONDS = Histogram("pairstream_lookup_seconds", "Lookup API latency by endpoint.",
                           ["endpoint"], buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1))
LOOKUP_PAIRS = Counter("pairstream_lookup_pairs_total", "Pairs answered by the lookup API, by "
                       "where the score came from.", ["source"])
FENCED_WRITES = Counter("pairstream_fenced_writes_total", "Ingest lane steps refused because another "
                        "member claimed the click partition since (a paused or lost member's late "
                        "write): nothing of it landed; the member dropped its partitions and re-joined.")
INGEST_PARTITIONS_DROPPED = Counter("pairstream_ingest_partitions_dropped_total", "Partitions the click "
                                 "ingest dropped without writing: membership lost, a fenced "
                                 "write, or a revoke that could not finish within the rebalance.",
                                 ["reason"])
OFFSET_RESETS = Counter("pairstream_offset_resets_total", "Restored click checkpoints found outside "
                        "their partition's log (topic recreated, broker storage lost, retention), by "
                        "the policy applied.", ["policy"])
OFFSET_RESET_SKIPPED = Counter("pairstream_offset_reset_skipped_messages_total", "Messages deleted by "
                               "retention before they were processed (rewind past the log start).")
CATALOGUE_WAITS = Counter("pairstream_catalogue_waits_total", "Fetches of clicks held until the items "
                          "follower had read the items created before them: synced, or timeout "
                          "(catalogue_wait_s passed; the clicks were paired with the catalogue as it stood).",
                          ["outcome"])
for _outcome in ("synced", "timeout"):
    CATALOGUE_WAITS.labels(_outcome)
WEB_CONNECTIONS = Gauge("pairstream_web_connections", "Open connections to the worker's web server.")
WEB_CONNECTIONS_REFUSED = Counter("pairstream_web_connections_refused_total", "Connections closed at "
                                  "once: server_full (web_max_connections open), per_address (that "
                                  "address holds web_max_connections_per_address), reserved (only "
                                  "light users may take the last web_reserved_connections).", ["reason"])
for _reason in ("server_full", "per_address", "reserved"):  # series at 0 before the first refusal
    WEB_CONNECTIONS_REFUSED.labels(_reason)
WEB_SLOW_CLIENTS_CLOSED = Counter("pairstream_web_slow_clients_closed_total", "Connections closed "
                                  "because their request head did not arrive within web_header_timeout_s.")
LOOKUP_PROCESS_RESTARTS = Counter("pairstream_lookup_process_restarts_total", "Lookup processes "
                                  "that ended on their own (a crash, the OOM killer) and were started again.")
MODEL_RELOADS = Counter("pairstream_model_reloads_total", "Hot reloads of the students by outcome "
                        "(updates: a refresh's new rows applied to the lookup index).",
                        ["outcome"])


def set_live(score_version: str, model_version: str) -> None:
    """The score version readers see now (one series: the old one is dropped)."""
    LIVE_SCORE_VERSION.clear()
    LIVE_SCORE_VERSION.labels(score_version=score_version, model_version=model_version).set(1)


def set_promoted(version: str) -> None:
    """The promoted model version (one series)."""
    PROMOTED_VERSION.clear()
    PROMOTED_VERSION.labels(version=version).set(1)


# every stage that consumes a topic counts its events under one of these
STAGES = ("ingest", "items", "labelling", "model_updates", "training_jobs")


def initialise(llm_backend: str) -> None:
    """Create the series whose labels are known at start, at zero: Prometheus queries (and the
    dashboard) then see "0 so far" instead of "no data", and rate() has a first point."""
    from models import telemetry

    for stage in STAGES:
        EVENTS_IN.labels(stage=stage)
    for kind in ("users", "items"):
        INGEST_INTERNED.labels(kind=kind)
    for endpoint in ("pair_scores", "partners"):
        LOOKUP_SECONDS.labels(endpoint=endpoint)
    for source in ("table", "computed", "unknown_item", "no_model"):
        LOOKUP_PAIRS.labels(source=source)
    for status in ("succeeded", "failed", "cancelled"):
        TRAINING_RUNS.labels(status=status)
    for outcome in ("started", "busy", "not_due", "error"):
        TRAINING_CHECKS.labels(outcome=outcome)
    for outcome in ("ok", "updates", "failed", "rejected"):
        MODEL_RELOADS.labels(outcome=outcome)
    for outcome in ("ok", "error", "unparsed"):
        telemetry.LLM_CALLS.labels(backend=llm_backend, outcome=outcome)
    telemetry.LLM_SECONDS.labels(backend=llm_backend)
    telemetry.LLM_CIRCUIT_OPEN.labels(backend=llm_backend).set(0)
    telemetry.LLM_QUEUE.labels(backend=llm_backend)
