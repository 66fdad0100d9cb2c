"""Create the topics pairstream uses, with their cleanup policies (idempotent)."""

from __future__ import annotations

import logging

from streams.core.config import Settings

log = logging.getLogger(__name__)


def topic_specs(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic name -> configs. Catalogue and score topics are compacted (latest per key)."""
    compact = {"cleanup.policy": "compact"}
    return {
        settings.topic_clicks: {},
        settings.topic_items: compact,
        settings.topic_clicks_dlq: {},
        settings.topic_pairs_to_score: {},
        settings.topic_pairs_to_score_dlq: {},
        settings.topic_pair_scores: compact,
        settings.topic_item_partners: compact,
        settings.topic_model_updates: {},
        settings.topic_training_jobs: {},
        settings.topic_items_dlq: {},
        settings.topic_model_updates_dlq: {},
        settings.topic_training_jobs_dlq: {},
    }


# one partition: model updates and training requests are rare and must stay in order
SINGLE_PARTITION = ("topic_model_updates", "topic_training_jobs")


def partitions_of(settings: Settings, name: str) -> int:
    single = {getattr(settings, field) for field in SINGLE_PARTITION}
    return 1 if name in single else settings.topic_partitions


def ensure_topics(bootstrap: str, settings: Settings) -> list[str]:
    """Create missing topics; return the names created now."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="pairstream-admin")
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(name, partitions_of(settings, name), 1, topic_configs=configs)
            for name, configs in topic_specs(settings).items()
            if name not in existing
        ]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:  # another worker won the race
                pass
            log.info("created topics %s", [t.name for t in wanted])
        return [t.name for t in wanted]
    finally:
        admin.close()
