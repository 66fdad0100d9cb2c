"""One settings object for every component.

Values come from (lowest to highest precedence): the defaults below (= embedded mode),
an optional TOML file (``PAIRSTREAM_CONFIG`` or ``Settings.load(path)``), and environment
variables ``PAIRSTREAM_<FIELD>`` (upper case). Each field carries its documentation so the
README table is generated from, and checked against, this file.

Faust-free on purpose: ``training`` and the storage layer import it too.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "PAIRSTREAM_"


def setting(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


DURABLE_FETCH_WAIT_MS = 500


@dataclass(frozen=True)
class Settings:
    # --- where things live -------------------------------------------------------------
    data_dir: str = setting(".pairstream", "Local state: chDB data, model artifacts, reports.")
    kafka_bootstrap: str = setting(
        "", "Kafka bootstrap servers (host:port,...). Empty = start the embedded Tansu broker."
    )
    log_level: str = setting(
        "INFO", "The worker's log level (DEBUG, INFO, WARNING, ERROR): INFO says what it decided (each "
        "publish in one line, each refresh, training run and statistics refresh); DEBUG adds every "
        "labelled batch and each step's own figures.")
    embedded_log: str = setting(
        "memory", "Storage of the embedded broker's log: memory (forgotten when the worker stops; "
        "the ingest rewinds) or durable (Tansu's s3:// engine on an embedded SeaweedFS under "
        "data_dir/log: messages and group offsets survive restarts; fetches wait 500 ms).")
    clickhouse_url: str = setting(
        "",
        "ClickHouse HTTP URL (http://user@host:8123/db) for clickhouse-connect. "
        "chdb:///path runs that same client code on clickhouse-connect's in-process chDB (one process). "
        "Empty = embedded chDB under data_dir/chdb.",
    )
    clickhouse_password: str = setting(
        "", "ClickHouse password (kept out of the URL and never logged)."
    )
    clickhouse_database: str = setting("pairstream", "ClickHouse database name.")
    # --- Kafka / Faust -----------------------------------------------------------------
    app_id: str = setting("pairstream", "Faust app id; prefix of consumer groups.")
    topic_partitions: int = setting(4, "Partitions of the topics pairstream creates.")
    topic_clicks: str = setting("clicks", "Click events, key = user_id.")
    topic_items: str = setting("items", "Catalogue updates, compacted, key = item_id.")
    topic_clicks_dlq: str = setting("clicks-dlq", "Rejected click events with their reason.")
    topic_pairs_to_score: str = setting("pairs-to-score", "Pairs that entered a tier.")
    topic_pairs_to_score_dlq: str = setting(
        "pairs-to-score-dlq", "Pairs whose scoring failed for good, with the reason."
    )
    topic_items_dlq: str = setting("items-dlq", "Item messages that could not be applied, with the reason.")
    topic_model_updates_dlq: str = setting(
        "model-updates-dlq", "Model updates rejected before any swap, with the reason.")
    topic_training_jobs_dlq: str = setting(
        "training-jobs-dlq", "training-jobs messages that are not jobs, with the reason.")
    shutdown_timeout_s: float = setting(
        30.0, "Longest a worker spends stopping after SIGTERM/SIGINT; past it, it exits with status "
        "1 (state is in ClickHouse: a restart resumes exactly, as after a crash). Keeps a worker "
        "whose broker has gone from hanging on its way out.")
    session_timeout_s: float = setting(
        6.0,
        "Consumer group session timeout. Tansu holds a join for half of it: keep it short "
        "embedded (6 s: worker ready in ~5 s instead of ~32 s).",
    )
    web_port: int = setting(6066, "Worker web server port (metrics, health, /status, and the lookup "
                                  "API sharing the worker's loop).")
    lookup_port: int = setting(
        6067, "Port of the lookup processes: the lookup API apart from the worker's work, what a "
        "re-ranker should call (docs/serving.md); 0 = none, lookups only on the web port.")
    worker_nice: int = setting(
        0, "Niceness the worker takes once its lookup processes run (0-19; they keep the niceness it "
        "started with). 5 on a host the worker shares only with its lookup processes: a lookup then "
        "waits less for the ingest's and the refresh's threads. Not on a host shared with other "
        "busy processes: a niced worker starved behind one spinning process (Faust's consumer "
        "keepalive logged ERRORs).")
    lookup_processes: int = setting(
        1, "Lookup processes the worker starts on lookup_port (SO_REUSEPORT shares it): one per "
        "core you give to serving.")
    # --- pair collection ---------------------------------------------------------------
    session_window_s: int = setting(
        1800, "W: a click pairs with history items clicked within W seconds of it."
    )
    history_size: int = setting(20, "N: distinct items kept per user (the N most recent).")
    late_allowance_s: int = setting(
        3600,
        "Users idle for W + this many seconds behind the partition's newest event are "
        "evicted; events later than that may miss partners from evicted sessions.",
    )
    horizon_days: int = setting(30, "Pair frequency = count over this many UTC days.")
    tier_low: int = setting(3, "Count at which a pair enters the low (long-tail) tier.")
    tier_medium: int = setting(20, "Count at which a pair enters the medium tier.")
    tier_high: int = setting(
        100, "Count at which a pair enters the high tier (a behaviour label instead of an LLM "
        "call when its lift clears `behaviour_default_min_lift`).")
    behaviour_default_min_lift: float = setting(
        2.0, "A high-tier pair gets its label from behaviour (no LLM call) only at this smoothed "
        "lift or above; below it (bestsellers clicked with everything) it is scored like a "
        "medium one.")
    stats_lift_prior: float = setting(
        1.0, "Pseudo-count of the smoothed lift (count_ab + s) / (expected_ab + s): pairs with "
        "little evidence shrink towards 1.")
    stats_half_life_days: float = setting(
        0.0, "Half-life of the time-decayed co-click count in pair_stats (0 = no decay).")
    swing_alpha: float = setting(
        1.0, "Swing: a user pair (u, v) adds w_u w_v / (alpha + the number of items both clicked) "
        "to each pair of items both clicked.")
    swing_user_offset: float = setting(
        15.0, "Swing user weight w_u = (items of u + offset)^-power: heavy clickers count less.")
    swing_user_power: float = setting(0.3, "Swing user weight exponent (see swing_user_offset).")
    swing_max_user_items: int = setting(
        200, "Swing skips users with more distinct items than this in the horizon (crawlers).")
    swing_max_item_users: int = setting(
        500, "Swing keeps at most this many users per item: the most recent (then by user id).")
    stats_memory_mb: int = setting(
        1500, "A statistics refresh holds about this many MB: Swing works through its users in "
        "as many buckets as that takes, and aggregations spill to disk past it (slower, not out of memory).")
    blend_evidence_count: float = setting(
        5.0, "Published score = w * behaviour + (1 - w) * model with w = count / (count + this): "
        "at this many co-clicks both sources weigh the same (models/blend.py). The configured "
        "k: used when the publisher cannot fit one (see blend_fit_min_pairs).")
    blend_fit_min_pairs: int = setting(
        200, "Each publish fits the blend's k on held-out behaviour (even vs odd days, pairs the "
        "model never trained on; models/blend.py) when at least this many such pairs exist; "
        "0 = always use blend_evidence_count.")
    ingest_batch_events: int = setting(
        200000,
        "Most consumed events held, paired but unwritten, while a ClickHouse write is in "
        "flight; past this the ingest waits for the write (back-pressure).",
    )
    ingest_flush_ms: int = setting(
        250, "Longest a consumed event waits before its batch is written (freshness)."
    )
    catalogue_wait_s: float = setting(
        30.0, "Longest a fetch of clicks waits for the items follower to read the items created "
        "before them (a fresh worker replays the whole items topic first); then they are paired "
        "with the catalogue as it stands.")
    checkpoint_interval_s: float = setting(
        2.0,
        "How often the ingest saves user sessions and routes tier crossings; a restart "
        "replays at most this much of the stream (deduplicated).",
    )
    max_event_bytes: int = setting(65536, "Click messages larger than this go to the DLQ.")
    max_future_s: int = setting(86400, "Clicks more than this far in the future go to the DLQ.")
    storage_retry_max_s: float = setting(
        5.0, "Upper bound of the back-off between ClickHouse write retries."
    )
    # --- LLM scoring -------------------------------------------------------------------
    llm_backend: str = setting("heuristic", "Scoring backend: heuristic | openai | hf.")
    llm_url: str = setting("", "Base URL of an OpenAI-compatible endpoint (…/v1).")
    llm_model: str = setting("", "Model name (openai) or local path (hf).")
    llm_api_key: str = setting("", "API key for the openai backend (read from env, never stored).")
    llm_timeout_s: float = setting(30.0, "Per-call timeout of one prompt.")
    llm_concurrency: int = setting(16, "Most prompts in flight at once (openai; a local hf model runs one at a time).")
    llm_rate_per_s: float = setting(50.0, "Most prompts started per second.")
    llm_retries: int = setting(3, "Retries of a failed call (exponential back-off with jitter).")
    rubric_path: str = setting("", "Rubric YAML (weights, prompts). Empty = the packaged one.")
    few_shot_k: int = setting(3, "Few-shot examples for long-tail (low tier) pairs.")
    # --- training trigger, publishing, serving ------------------------------------------
    topic_model_updates: str = setting(
        "model-updates", "Promotions and rollbacks; every worker reloads its students from it.")
    topic_training_jobs: str = setting(
        "training-jobs", "Training requests for the trainer service (training_mode=kafka).")
    topic_pair_scores: str = setting(
        "pair-scores", "Published pair scores, compacted, key item_a|item_b.")
    topic_item_partners: str = setting(
        "item-partners", "Top partners per item, compacted, key item_id.")
    training_mode: str = setting(
        "subprocess",
        "How a triggered run starts: subprocess (embedded: a child process on a snapshot of the "
        "tables) | kafka (a message on training-jobs for `pairstream trainer`).")
    training_min_new_labels: int = setting(
        500, "Start a training run once this many labels arrived since the last run.")
    training_min_labels: int = setting(
        200, "No run starts before this many labels exist in all (whatever the trigger): with "
        "fewer, the 10% test split is too small to train on, gate or evaluate.")
    training_interval_s: float = setting(
        86400.0, "Start a run when this long passed since the last one (0 = labels only).")
    training_check_s: float = setting(30.0, "How often the leader worker checks the trigger.")
    training_retry_s: float = setting(
        900.0, "After a failed run, wait this long before the next try (never a retry loop).")
    training_timeout_s: float = setting(
        7200.0, "A run still 'running' after this long is treated as dead.")
    training_threads: int = setting(
        0, "CPU threads of an embedded training run's child (torch, OpenMP, BLAS); 0 = every usable "
        "core but one, so the worker beside it keeps ingesting and serving. Its pools wait passively.")
    training_nice: int = setting(
        10, "Niceness of an embedded training run's child (0-19): batch work that yields the cores to "
        "the ingest and the lookup processes when they want them, and takes them when they do not.")
    training_args: str = setting(
        "", "Extra `pairstream distill` options for triggered runs, e.g. '--epochs 2'.")
    training_first_args: str = setting(
        "--teacher-epochs 0 --augment 0 --epochs 1 --max-labels 200 --max-test 100 --max-length 48",
        "Options of the first run, while no model is promoted: a fast, smaller round so the first "
        "score version comes minutes after the first clicks (the runs that follow use "
        "training_args and replace it when they beat it). Empty = training_args.")
    publish_first_cross_budget_s: float = setting(
        15.0, "The cross-encoder's time at the first publish (no model before it): the first "
        "version's two-tower scores are out sooner; later publishes use publish_cross_budget_s.")
    publish_partners_k: int = setting(50, "Partners kept per item in item_partners.")
    publish_cross_top_k: int = setting(
        10, "The cross-encoder rescores this many top two-tower partners of each item.")
    publish_cross_budget_s: float = setting(
        120.0, "Time the cross-encoder may spend per publish (best partners first).")
    publish_refresh_s: float = setting(
        10.0, "Continuous publishing: this often the leader worker scores again the pairs whose "
        "behaviour changed since the live version was written or last refreshed, and writes them "
        "as updates of it (streams/publishing/refresh.py); 0 = only full publishes after training.")
    score_versions_kept: int = setting(3, "Complete score versions kept for rollback.")
    onnx_threads: int = setting(0, "ONNX Runtime intra-op threads (0 = its default).")
    on_offset_reset: str = setting(
        "auto", "A click checkpoint outside its partition's log (topic recreated, broker "
        "storage lost): fail (pause the partition, not ready) or rewind (start it over from the "
        "log's first message); auto = rewind with the embedded broker's memory log (every "
        "restart of it is a new log), fail with a durable log or an external Kafka.")
    lag_sample_s: float = setting(
        10.0, "How often the worker samples its consumer lag and table freshness (metrics).")
    lag_warn_s: float = setting(
        300.0, "A partition whose oldest unconsumed message is older than this is WARN even "
        "where Burrow's rules say OK.")
    lookup_max_pairs: int = setting(1000, "Most pairs one POST /v1/pair-scores may ask for.")
    lookup_max_body_bytes: int = setting(
        4 << 20, "Largest lookup request body (4 MiB fits 1000 pairs of 128-char ids even "
        "written as \\u escapes); larger ones get 413.")
    api_token: str = setting(
        "", "Bearer token the worker's web server requires (Authorization: Bearer ...) on all but "
        "/healthz and /readyz: the lookup API, /status, /metrics. Empty = open, allowed only on a "
        "loopback PAIRSTREAM_WEB_HOST. Read from env, never stored.")
    web_max_connections: int = setting(
        512, "Open connections the web server accepts; more are closed at once (keep it under "
        "the open-file limit, which the worker shares with ClickHouse and Kafka sockets).")
    web_max_connections_per_address: int = setting(
        64, "Open connections one remote address may hold; more from it are closed at once, so one "
        "slow or greedy client cannot take the port from the others (a re-ranker fleet behind one "
        "NAT address shares this).")
    web_reserved_connections: int = setting(
        32, "The last this many of web_max_connections go only to addresses holding fewer than 4 "
        "connections: health probes and Prometheus scrapes get in when heavy clients fill the rest.")
    web_header_timeout_s: float = setting(
        10.0, "A request head (and a lookup body) must arrive within this, else the connection "
        "closes: slow clients cannot pile up.")
    web_keepalive_s: float = setting(15.0, "Idle keep-alive connections close after this.")
    web_host: str = setting(
        "127.0.0.1", "Address the worker's web server binds: loopback by default; containers "
        "set 0.0.0.0 (docker-compose.yaml does), which needs PAIRSTREAM_API_TOKEN.")

    # ---------------------------------------------------------------------------------
    @property
    def offset_reset_policy(self) -> str:
        policy = self.on_offset_reset
        if policy == "auto":
            return "rewind" if self.embedded_kafka and not self.durable_log else "fail"
        if policy not in ("fail", "rewind"):
            raise ValueError(f"on_offset_reset must be auto, fail or rewind, not {policy!r}")
        return policy

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def durable_log(self) -> bool:
        """The embedded broker keeps its log on disk (``embedded_log = durable``)."""
        return self.embedded_kafka and self.embedded_log == "durable"

    def fetch_wait_ms(self, wanted: int) -> int:
        """A consumer's fetch wait: ``wanted``, but at least 500 ms on the durable embedded log.
        Tansu's s3 engine lists a partition's batch objects on every fetch and answers nothing
        when the wait runs out first (50 ms: consumers got no record for 12 s at the head of a
        1,500-6,000-batch log); 500 ms works."""
        return max(wanted, DURABLE_FETCH_WAIT_MS) if self.durable_log else wanted

    @property
    def embedded_clickhouse(self) -> bool:
        return not self.clickhouse_url

    @property
    def chdb_path(self) -> Path:
        return Path(self.data_dir) / "chdb"

    def environment(self) -> dict[str, str]:
        """Every setting as the ``PAIRSTREAM_*`` variable that loads it: how a child process
        (a lookup process) gets exactly its parent's settings."""
        def text(value: Any) -> str:
            return ("true" if value else "false") if isinstance(value, bool) else str(value)
        return {ENV_PREFIX + f.name.upper(): text(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(
        cls, path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None
    ) -> "Settings":
        """Defaults, then the TOML file, then ``PAIRSTREAM_*`` variables."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = path or env.get(ENV_PREFIX + "CONFIG")
        known = {f.name: f for f in fields(cls)}
        if path:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
            data = data.get("pairstream", data)
            for key, value in data.items():
                if key not in known:
                    raise ValueError(f"{path}: unknown setting {key!r}")
                values[key] = _coerce(known[key], value)
        for name, f in known.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = _coerce(f, raw)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not (0 < self.tier_low <= self.tier_medium <= self.tier_high):
            raise ValueError("tiers must satisfy 0 < tier_low <= tier_medium <= tier_high")
        if self.history_size < 1 or self.session_window_s < 0 or self.horizon_days < 1:
            raise ValueError("history_size >= 1, session_window_s >= 0, horizon_days >= 1")
        if self.llm_backend not in ("heuristic", "openai", "hf"):
            raise ValueError(f"llm_backend must be heuristic, openai or hf, not {self.llm_backend!r}")
        if not (0 <= self.web_reserved_connections < self.web_max_connections
                and self.web_max_connections_per_address >= 1):
            raise ValueError("web_max_connections_per_address >= 1 and "
                             "0 <= web_reserved_connections < web_max_connections")
        if not (0 <= self.training_nice <= 19 and 0 <= self.worker_nice <= 19):
            raise ValueError("training_nice and worker_nice must be within 0..19")
        if self.lookup_port and (self.lookup_port == self.web_port or self.lookup_processes < 1):
            raise ValueError("lookup_port must differ from web_port, and lookup_processes >= 1")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {self.log_level!r}")
        if self.embedded_log not in ("memory", "durable"):
            raise ValueError(f"embedded_log must be memory or durable, not {self.embedded_log!r}")
        if self.training_mode not in ("subprocess", "kafka"):
            raise ValueError(f"training_mode must be subprocess or kafka, not {self.training_mode!r}")
        if self.clickhouse_url:  # parsed the way the client will parse it (scheme, database name)
            from streams.core.storage.server_client import client_arguments

            try:
                client_arguments(self.clickhouse_url, database=self.clickhouse_database)
            except ValueError as exc:
                raise ValueError(f"clickhouse_url: {exc}") from None
        problem = exposure_problem(self.web_host, self.api_token)
        if problem:
            raise ValueError(problem)

    @classmethod
    def markdown_table(cls) -> str:
        """The README's settings table (``make docs`` writes it; a test compares)."""
        rows = [f"| `{env}` | `{default}` | {doc} |" for env, default, doc in cls.documentation()]
        return "\n".join(["| variable | default | meaning |", "| --- | --- | --- |", *rows])

    @classmethod
    def documentation(cls) -> list[tuple[str, str, str]]:
        """(environment variable, default, doc) for every setting."""
        return [
            (ENV_PREFIX + f.name.upper(), repr(f.default), f.metadata["doc"]) for f in fields(cls)
        ]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or a wildcard: reachable from elsewhere


def exposure_problem(web_host: str, api_token: str) -> str | None:
    """Why this bind and token would open the worker's data to the network, or None.
    The token guards everything but the probes (``streams.serving.auth``)."""
    if api_token or is_loopback(web_host):
        return None
    return (f"PAIRSTREAM_WEB_HOST={web_host} serves the lookup API, /status and /metrics beyond "
            "this machine: set PAIRSTREAM_API_TOKEN (clients and Prometheus send it as a bearer "
            "token) or bind 127.0.0.1")


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return str(value).lower() in ("1", "true", "yes", "on")
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {f.name}: cannot read {value!r} as {kind}") from exc
