"""Versioned, idempotent schema migrations; the same SQL runs on chDB and clickhouse-server.

Each migration is a version number and a list of statements. Applied versions are recorded in
``schema_migrations``; running ``migrate`` again applies nothing twice, and every statement is
itself idempotent (``IF NOT EXISTS``) so a migration interrupted half way can be re-run.
The columns of ``pair_scores_latest`` / ``item_partners_latest`` are the contract the re-ranker reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from streams.core.storage.base import Storage

log = logging.getLogger(__name__)

# Window of remembered insert tokens per table: a retried batch whose token is among the last
# this many inserts is dropped by ClickHouse (exactly-once writes of pair counts).
DEDUP_WINDOW = 10000

PAIR_HASH_SQL = "murmurHash2_64(concat(item_a, '\\0', item_b))"

_UPDATED = ("score, model_version, scorer, scored_at, dominant, model_score, behaviour_score, "
            "behaviour_weight, count, users, lift, swing, dim_scores")
_LIVE = "(SELECT argMax(score_version, changed_at) FROM {db}.score_pointer WHERE name = 'live')"
# The live version as readers see it: each pair's newest row among the version's published rows
# and the updates refreshes wrote for it since (streams.publishing.refresh), pairs a refresh
# added included. A filter on item_a / item_b reaches both tables through the GROUP BY (its
# keys), so a point read groups only that item's rows (13 ms against 4.6 for the bare version
# with 100k updates on 500k rows; a whole read 0.29 s). The two scalar subqueries naming the
# live version are one text, which ClickHouse evaluates once per query.
LATEST_SCORES_SQL = (
    "SELECT item_a, item_b, u.1 AS score, u.2 AS model_version, u.3 AS scorer, score_version, "
    "u.4 AS scored_at, u.5 AS dominant, u.6 AS model_score, u.7 AS behaviour_score, "
    "u.8 AS behaviour_weight, u.9 AS count, u.10 AS users, u.11 AS lift, u.12 AS swing, u.13 AS dim_scores "
    f"FROM (SELECT item_a, item_b, score_version, argMax(({_UPDATED}), scored_at) AS u FROM ("
    f"SELECT item_a, item_b, score_version, {_UPDATED} FROM {{db}}.pair_scores WHERE score_version = {_LIVE} "
    f"UNION ALL SELECT item_a, item_b, score_version, {_UPDATED} FROM {{db}}.pair_score_updates "
    f"WHERE score_version = {_LIVE}) GROUP BY item_a, item_b, score_version)")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def _migrations(db: str) -> list[Migration]:
    return [
        Migration(1, "core tables", (
            f"""CREATE TABLE IF NOT EXISTS {db}.items (
                item_id String,
                title String,
                category LowCardinality(String),
                brand String,
                color String,
                condition String,
                model String,
                price Nullable(Float64),
                updated_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(updated_at) ORDER BY item_id""",
            f"""CREATE TABLE IF NOT EXISTS {db}.pair_counts (
                item_a String,
                item_b String,
                day Date,
                count UInt64
            ) ENGINE = SummingMergeTree(count)
            ORDER BY (item_a, item_b, day)
            SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}""",
            f"""CREATE TABLE IF NOT EXISTS {db}.pair_labels (
                item_a String,
                item_b String,
                score Float32,
                tier LowCardinality(String),
                source LowCardinality(String),
                backend LowCardinality(String),
                model_name String,
                prompt_version String,
                dim_scores Map(String, Float32),
                dim_reasons Map(String, String),
                dim_dists Map(String, Array(Float32)),
                labelled_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(labelled_at)
            ORDER BY (item_a, item_b, source)""",
            f"""CREATE TABLE IF NOT EXISTS {db}.pair_scores (
                item_a String,
                item_b String,
                score Float32,
                model_version String,
                scorer LowCardinality(String),
                scored_at DateTime64(3, 'UTC')
            ) ENGINE = MergeTree
            PARTITION BY model_version
            ORDER BY (model_version, item_a, item_b)""",
            f"""CREATE TABLE IF NOT EXISTS {db}.score_versions (
                model_version String,
                status LowCardinality(String),
                rows UInt64,
                changed_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(changed_at) ORDER BY model_version""",
            f"""CREATE TABLE IF NOT EXISTS {db}.models (
                version String,
                kind LowCardinality(String),
                status LowCardinality(String),
                metrics String,
                artifacts Map(String, String),
                created_at DateTime64(3, 'UTC'),
                updated_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(updated_at) ORDER BY (version, kind)""",
        )),
        Migration(2, "stream state for exactly-once ingest and tier routing", (
            f"""CREATE TABLE IF NOT EXISTS {db}.ingest_batches (
                topic String,
                partition UInt32,
                start_offset UInt64,
                end_offset UInt64,
                created_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree
            ORDER BY (topic, partition, start_offset)""",
            f"""CREATE TABLE IF NOT EXISTS {db}.user_sessions (
                topic String,
                partition UInt32,
                user_id String,
                items Array(String),
                times Array(Float64),
                version UInt64
            ) ENGINE = ReplacingMergeTree(version)
            ORDER BY (topic, partition, user_id)""",
            f"""CREATE TABLE IF NOT EXISTS {db}.pair_tiers (
                item_a String,
                item_b String,
                tier UInt8,
                count UInt64,
                routed_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(tier)
            ORDER BY (item_a, item_b)""",
            f"""CREATE TABLE IF NOT EXISTS {db}.pair_touches (
                batch String,
                item_a String,
                item_b String,
                created_at DateTime DEFAULT now()
            ) ENGINE = MergeTree ORDER BY batch
            TTL created_at + INTERVAL 1 HOUR""",
        )),
        Migration(3, "versioned score tables, the live pointer, reader views, training runs", (
            # pair_scores and score_versions of migration 1 never had a writer (publishing
            # arrives with this migration): they are replaced by tables keyed by score version
            # (one publish of one model), which is what rollback and atomic exposure need.
            f"DROP TABLE IF EXISTS {db}.pair_scores",
            f"DROP TABLE IF EXISTS {db}.score_versions",
            f"""CREATE TABLE IF NOT EXISTS {db}.pair_scores (
                item_a String,
                item_b String,
                score Float32,
                model_version String,
                scorer LowCardinality(String),
                score_version String,
                scored_at DateTime64(3, 'UTC')
            ) ENGINE = MergeTree
            PARTITION BY score_version
            ORDER BY (score_version, item_a, item_b)""",
            f"""CREATE TABLE IF NOT EXISTS {db}.item_partners (
                item_id String,
                rank UInt16,
                partner_id String,
                score Float32,
                scorer LowCardinality(String),
                model_version String,
                score_version String
            ) ENGINE = MergeTree
            PARTITION BY score_version
            ORDER BY (score_version, item_id, rank)""",
            f"""CREATE TABLE IF NOT EXISTS {db}.item_embeddings (
                item_id String,
                embedding Array(Float32),
                model_version String,
                score_version String
            ) ENGINE = MergeTree
            PARTITION BY score_version
            ORDER BY (score_version, item_id)""",
            f"""CREATE TABLE IF NOT EXISTS {db}.score_versions (
                score_version String,
                model_version String,
                status LowCardinality(String),
                rows UInt64,
                detail String,
                changed_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(changed_at) ORDER BY score_version""",
            f"""CREATE TABLE IF NOT EXISTS {db}.score_pointer (
                name String,
                score_version String,
                model_version String,
                changed_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(changed_at) ORDER BY name""",
            f"""CREATE VIEW IF NOT EXISTS {db}.pair_scores_latest AS
                SELECT item_a, item_b, score, model_version, scorer, score_version, scored_at
                FROM {db}.pair_scores
                WHERE score_version = (SELECT argMax(score_version, changed_at)
                                       FROM {db}.score_pointer WHERE name = 'live')""",
            f"""CREATE VIEW IF NOT EXISTS {db}.item_partners_latest AS
                SELECT item_id, rank, partner_id, score, scorer, model_version, score_version
                FROM {db}.item_partners
                WHERE score_version = (SELECT argMax(score_version, changed_at)
                                       FROM {db}.score_pointer WHERE name = 'live')""",
            f"""CREATE TABLE IF NOT EXISTS {db}.training_runs (
                run_id String,
                trigger LowCardinality(String),
                status LowCardinality(String),
                model_version String,
                promoted UInt8,
                error String,
                started_at DateTime64(3, 'UTC'),
                finished_at Nullable(DateTime64(3, 'UTC')),
                updated_at DateTime64(3, 'UTC')
            ) ENGINE = ReplacingMergeTree(updated_at) ORDER BY run_id""",
        )),
        Migration(4, "pair hashes for the tier-crossing check", (
            # murmurHash2_64 of "item_a NUL item_b": streams.ingest.kernel.pair_hashes computes
            # the same value in the ingest, so the check passes touched pairs as 8-byte hashes
            f"""ALTER TABLE {db}.pair_counts ADD COLUMN IF NOT EXISTS pair_hash UInt64
                MATERIALIZED {PAIR_HASH_SQL}""",
            f"""ALTER TABLE {db}.pair_tiers ADD COLUMN IF NOT EXISTS pair_hash UInt64
                MATERIALIZED {PAIR_HASH_SQL}""",
            f"""CREATE TABLE IF NOT EXISTS {db}.pair_touched_hashes (
                batch UInt64,
                pair_hash UInt64,
                created_at DateTime DEFAULT now()
            ) ENGINE = MergeTree ORDER BY (batch, pair_hash)
            TTL created_at + INTERVAL 1 HOUR""",
            f"DROP TABLE IF EXISTS {db}.pair_touches",
        )),
        Migration(5, "behaviour evidence: the user-item graph, pair statistics, evidence in scores", (
            # written by the ingest with the batch's pair_counts token (exactly once)
            f"""CREATE TABLE IF NOT EXISTS {db}.user_item_days (
                user_id String,
                item_id String,
                day Date,
                clicks UInt64
            ) ENGINE = SummingMergeTree(clicks)
            ORDER BY (item_id, user_id, day)
            SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}""",
            # one refresh = one stats_version (streams.core.storage.stats); readers take the newest
            f"""CREATE TABLE IF NOT EXISTS {db}.pair_stats (
                stats_version UInt64,
                item_a String,
                item_b String,
                count UInt64,
                decayed_count Float64,
                users UInt32,
                users_a UInt32,
                users_b UInt32,
                lift Float32,
                pmi Float32,
                jaccard Float32,
                swing Float64,
                computed_at DateTime64(3, 'UTC')
            ) ENGINE = MergeTree
            PARTITION BY stats_version
            ORDER BY (item_a, item_b)""",
            f"""CREATE TABLE IF NOT EXISTS {db}.stats_edges (
                stats_version UInt64,
                user_id String,
                item_id String,
                last_day Date
            ) ENGINE = MergeTree
            PARTITION BY stats_version
            ORDER BY (item_id, user_id)""",
            f"""CREATE VIEW IF NOT EXISTS {db}.pair_stats_latest AS
                SELECT * EXCEPT stats_version, stats_version FROM {db}.pair_stats
                WHERE stats_version = (SELECT max(stats_version) FROM {db}.pair_stats)""",
            *(f"ALTER TABLE {db}.pair_scores ADD COLUMN IF NOT EXISTS {column}" for column in (
                "model_score Float32", "behaviour_score Float32", "behaviour_weight Float32",
                "dominant LowCardinality(String)", "count UInt64", "users UInt32", "lift Float32",
                "swing Float32", "dim_scores Map(String, Float32)")),
            f"""CREATE OR REPLACE VIEW {db}.pair_scores_latest AS
                SELECT item_a, item_b, score, model_version, scorer, score_version, scored_at,
                       dominant, model_score, behaviour_score, behaviour_weight,
                       count, users, lift, swing, dim_scores
                FROM {db}.pair_scores
                WHERE score_version = (SELECT argMax(score_version, changed_at)
                                       FROM {db}.score_pointer WHERE name = 'live')""",
        )),
        Migration(6, "checkpoint marks: the last record a click checkpoint covers", (
            # streams.ingest.log_identity: restoring a checkpoint checks the record at
            # ``position - 1`` is still this one, so a refilled log is not taken for the old one
            f"""CREATE TABLE IF NOT EXISTS {db}.ingest_checkpoints (
                topic String,
                partition UInt32,
                position UInt64,
                record_timestamp Int64,
                record_digest UInt64,
                written_at DateTime64(3, 'UTC') DEFAULT now64(3)
            ) ENGINE = ReplacingMergeTree
            ORDER BY (topic, partition, position)""",
        )),
        Migration(7, "continuous publishing: score updates between trainings", (
            # streams.publishing.refresh: pairs whose evidence changed since the live version
            # was written are scored again and land here, keyed by the version they update;
            # readers take a pair's newest row (the view below), a new version starts clean
            f"""CREATE TABLE IF NOT EXISTS {db}.pair_score_updates (
                item_a String,
                item_b String,
                score Float32,
                model_version String,
                scorer LowCardinality(String),
                score_version String,
                scored_at DateTime64(3, 'UTC'),
                model_score Float32,
                behaviour_score Float32,
                behaviour_weight Float32,
                dominant LowCardinality(String),
                count UInt64,
                users UInt32,
                lift Float32,
                swing Float32,
                dim_scores Map(String, Float32)
            ) ENGINE = MergeTree
            PARTITION BY score_version
            ORDER BY (score_version, item_a, item_b, scored_at)""",
            # a refresh reads the touched hashes of the last seconds: each checkpoint's insert is
            # one part with one created_at, so a minmax index skips every older part unread
            f"""ALTER TABLE {db}.pair_touched_hashes ADD INDEX IF NOT EXISTS created_at_minmax
                created_at TYPE minmax GRANULARITY 1""",
            # the pairs one refresh looks at (INSERT ... SELECT inside ClickHouse, then joined)
            f"""CREATE TABLE IF NOT EXISTS {db}.pair_changes (
                refresh UInt64,
                item_a String,
                item_b String,
                created_at DateTime DEFAULT now()
            ) ENGINE = MergeTree ORDER BY (refresh, item_a, item_b)
            TTL created_at + INTERVAL 1 HOUR""",
            # one row per publish and per refresh: how far behaviour is reflected, and the
            # blend's k the version was published with (a refresh blends with the same k)
            f"""CREATE TABLE IF NOT EXISTS {db}.score_refreshes (
                score_version String,
                kind LowCardinality(String),
                refreshed_through DateTime64(3, 'UTC'),
                blend_k Float64,
                pairs UInt64,
                new_pairs UInt64,
                seconds Float64,
                at DateTime64(3, 'UTC') DEFAULT now64(3)
            ) ENGINE = MergeTree ORDER BY (score_version, at)""",
            f"""CREATE OR REPLACE VIEW {db}.pair_scores_latest AS
                {LATEST_SCORES_SQL.format(db=db)}""",
        )),
        Migration(8, "owner epochs: a member that lost a click partition cannot write to it", (
            # streams.ingest.fencing: one row per claim; the newest (epoch, claim_id) owns
            f"""CREATE TABLE IF NOT EXISTS {db}.ingest_owners (
                topic String,
                partition UInt32,
                epoch UInt64,
                claim_id String,
                claimed_at DateTime64(3, 'UTC') DEFAULT now64(3)
            ) ENGINE = MergeTree ORDER BY (topic, partition, epoch, claim_id)""",
            # a restore follows, at each start offset, the intent of the newest owner
            f"""ALTER TABLE {db}.ingest_batches ADD COLUMN IF NOT EXISTS owner_epoch UInt64""",
        )),
        Migration(9, "item marginals kept by the inserts: lift never scans pair_counts", (
            # C_i per UTC day (an item's co-clicks with anything): a materialized view adds each
            # pair_counts insert's rows to both of its items, summed per item and day within the
            # insert (one view, grouped: +21 ms per 90k-row insert against +51 ms for one view per
            # side, chDB). A view sees exactly what the insert writes: a fenced insert's surviving
            # rows, nothing of one dropped by its dedup token
            f"""CREATE TABLE IF NOT EXISTS {db}.item_day_clicks (
                item_id String,
                day Date,
                clicks UInt64
            ) ENGINE = SummingMergeTree(clicks)
            ORDER BY (item_id, day)
            SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}""",
            f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.item_day_clicks_from_pairs TO {db}.item_day_clicks
                AS SELECT item_id, day, sum(count) AS clicks FROM {db}.pair_counts
                ARRAY JOIN [item_a, item_b] AS item_id GROUP BY item_id, day""",
            # the counts from before the views; a worker migrates before its ingest starts (stop
            # every worker for this upgrade: an insert between the views and this line would be
            # taken twice); the token makes a second worker's run of it a dropped repeat
            f"""INSERT INTO {db}.item_day_clicks (item_id, day, clicks)
                SETTINGS insert_deduplication_token = 'migration-9-backfill'
                SELECT item_id, day, sum(n) FROM (
                    SELECT item_a AS item_id, day, count AS n FROM {db}.pair_counts
                    UNION ALL SELECT item_b, day, count FROM {db}.pair_counts)
                GROUP BY item_id, day""",
        )),
        Migration(10, "Swing on integer ids: the capped graph written once per refresh", (
            # per stats version: item ids numbered in id order (so a < b holds for numbers too),
            # and Swing's capped user-item graph on numbers; dropped with the version's edges
            f"""CREATE TABLE IF NOT EXISTS {db}.stats_item_ids (
                stats_version UInt64,
                item_id String,
                ix UInt32
            ) ENGINE = MergeTree
            PARTITION BY stats_version
            ORDER BY ix""",
            f"""CREATE TABLE IF NOT EXISTS {db}.stats_capped (
                stats_version UInt64,
                ux UInt32,
                ix UInt32,
                user_items UInt32
            ) ENGINE = MergeTree
            PARTITION BY stats_version
            ORDER BY (ix, ux)""",
            # Swing's partial sums, one insert per bucket of users (``stats._swing``)
            f"""CREATE TABLE IF NOT EXISTS {db}.stats_swing (
                stats_version UInt64,
                xa UInt32,
                xb UInt32,
                swing Float64
            ) ENGINE = MergeTree
            PARTITION BY stats_version
            ORDER BY (xa, xb)""",
        )),
    ]


def migrate(storage: Storage, until: int | None = None) -> list[int]:
    """Apply pending migrations in order (up to ``until``: tests of a migration on old data);
    return the versions applied now."""
    db = storage.database
    storage.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    storage.command(
        f"""CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
            version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
        ) ENGINE = ReplacingMergeTree ORDER BY version"""
    )
    done = {row[0] for row in storage.query_rows(f"SELECT version FROM {db}.schema_migrations")}
    applied = []
    for migration in _migrations(db):
        if migration.version in done or (until is not None and migration.version > until):
            continue
        for statement in migration.statements:
            storage.command(statement)
        storage.command(
            f"INSERT INTO {db}.schema_migrations (version, name) VALUES ({{v:UInt32}}, {{n:String}})",
            {"v": migration.version, "n": migration.name},
        )
        log.info("applied migration %d: %s", migration.version, migration.name)
        applied.append(migration.version)
    return applied


def latest_version() -> int:
    return max(m.version for m in _migrations("db"))
