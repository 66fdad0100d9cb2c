"""The Faust-free core every stage shares, and the only part of streams that training imports:
settings, event and dead-letter records, Kafka helpers, metrics and the ClickHouse storage."""
