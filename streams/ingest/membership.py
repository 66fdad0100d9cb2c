"""What the ingest asks of its consumer-group membership that aiokafka does not expose.

aiokafka has no ``on_partitions_lost``: after a heartbeat or a commit answers that the member is
unknown or its generation is stale, it forgets its generation and, on re-joining, calls
``on_partitions_revoked`` as for an orderly rebalance. A revoke after that must not write (the
partitions may already be another member's), so the ingest asks which of the two it is.
"""

from __future__ import annotations

from typing import Any

_NO_GENERATION = -1  # aiokafka's (and Kafka's) generation of a member that is not in a group


def membership_lost(consumer: Any) -> bool:
    """True when the group coordinator has dropped this member (unknown member id, illegal
    generation, a fenced commit): what it held may already belong to another member."""
    coordinator = getattr(consumer, "_coordinator", None)  # noqa: SLF001 - no public accessor
    if coordinator is None:
        return False
    return getattr(coordinator, "generation", _NO_GENERATION) == _NO_GENERATION


def request_rejoin(consumer: Any) -> None:
    """Ask the coordinator for a rebalance at the next poll: a fenced member gives its
    partitions back to the group's assignment instead of sitting on them unowned."""
    coordinator = getattr(consumer, "_coordinator", None)  # noqa: SLF001 - no public accessor
    if coordinator is not None:
        coordinator.request_rejoin()
