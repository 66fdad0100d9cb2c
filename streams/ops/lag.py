"""Consumer lag per group and partition, with Burrow's status rules.

Samples (time, committed offset, end offset) per partition with kafka-python's admin client
and judges a window of samples the way Burrow judges a window of commits
(github.com/linkedin/Burrow/wiki/Consumer-Lag-Evaluation-Rules):

1. any sample in the window has zero lag                      -> OK
2. the committed offset went backwards                        -> REWIND
3. the offset has not moved for longer than the window spans  -> STOP   (the consumer is gone)
4. the offset never moved over the window and lag > 0         -> STALL  (up, but not consuming)
5. the offset moved but the lag never fell between samples    -> WARN   (falling behind)
otherwise                                                     -> OK

On top of the rules, a threshold: a partition whose oldest unconsumed message is older than
``warn_after_s`` (300 s) is WARN even where the rules say OK (Burrow judges the trend, an
on-call engineer also needs the age).

Lag in seconds is the age of the oldest unconsumed message: now minus the broker timestamp of
the record at the committed offset (one fetch per lagging partition). It is exact on idle
partitions and at any age, where lag / consume rate is neither (no rate when the consumer
stopped; a burst makes it lie). Where the record cannot be read (deleted by retention in
between), the rate estimate is given and ``lag_seconds_source`` says so.

Window: Burrow keeps the last 10 commits; Faust commits about every 2.8 s and the click ingest
after every flush (~0.25 s), so a commit count is a poor clock here. pairstream samples on a
fixed interval instead: 10 samples 3 s apart (30 s) by default, long enough to see several
Faust commits and short enough for an on-call page to mean "now".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("OK", "WARN", "STALL", "STOP", "REWIND")
STATUS_CODES = {status: code for code, status in enumerate(STATUSES)}  # the metric's values


@dataclass
class Sample:
    at: float
    committed: int
    end: int
    oldest_ts: float | None = None  # broker timestamp (s) of the record at ``committed``

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


@dataclass
class PartitionLag:
    group: str
    topic: str
    partition: int
    samples: list[Sample] = field(default_factory=list)
    last_change_at: float | None = None  # when the committed offset last moved

    def add(self, sample: Sample) -> None:
        if self.samples and sample.committed != self.samples[-1].committed:
            self.last_change_at = sample.at
        elif self.last_change_at is None:
            self.last_change_at = sample.at
        self.samples.append(sample)
        del self.samples[:-100]  # a watch or the worker's timer runs for days

    def window(self, size: int) -> list[Sample]:
        return self.samples[-size:]

    def rate(self, size: int) -> float:
        """Committed messages per second over the window."""
        w = self.window(size)
        if len(w) < 2 or w[-1].at <= w[0].at:
            return 0.0
        return max(0.0, (w[-1].committed - w[0].committed) / (w[-1].at - w[0].at))


def evaluate(samples: list[Sample], now: float, last_change_at: float | None = None) -> str:
    """Burrow's rules over one partition's window (oldest first)."""
    if not samples:
        return "OK"
    if any(s.lag == 0 for s in samples):
        return "OK"
    if any(b.committed < a.committed for a, b in zip(samples, samples[1:])):
        return "REWIND"
    span = samples[-1].at - samples[0].at
    changed = last_change_at if last_change_at is not None else samples[0].at
    if len(samples) > 1 and now - changed > span > 0 and samples[-1].committed == samples[0].committed:
        return "STOP"
    if samples[-1].committed == samples[0].committed:
        return "STALL" if len(samples) > 1 else "OK"
    lags = [s.lag for s in samples]
    if all(b >= a for a, b in zip(lags, lags[1:])):
        return "WARN"
    return "OK"


class LagSampler:
    """Committed and end offsets of every partition a group has committed on, and the broker
    timestamp of the oldest unconsumed record of each lagging one."""

    def __init__(self, bootstrap: str, warn_after_s: float = 300.0):
        from kafka import KafkaAdminClient

        self.bootstrap = bootstrap
        self.warn_after_s = warn_after_s
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="pairstream-lag")
        self.partitions: dict[tuple[str, str, int], PartitionLag] = {}
        self._reader: Any = None  # a group-less KafkaConsumer, made on first need

    def _timestamps(self, positions: dict) -> dict:
        """{TopicPartition: timestamp in s} of the first record at or after each offset; a
        partition whose record does not arrive within 2 s is left out."""
        from kafka import KafkaConsumer

        if not positions:
            return {}
        if self._reader is None:
            self._reader = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                         enable_auto_commit=False, client_id="pairstream-lag",
                                         max_partition_fetch_bytes=1 << 16)
        reader = self._reader
        reader.assign(list(positions))
        for tp, offset in positions.items():
            reader.seek(tp, offset)
        found: dict = {}
        deadline = time.monotonic() + 2.0
        while len(found) < len(positions) and time.monotonic() < deadline:
            for tp, records in reader.poll(timeout_ms=200, max_records=500).items():
                if tp not in found and records and tp in positions:
                    found[tp] = records[0].timestamp / 1000.0
                    reader.pause(tp)
        reader.resume(*reader.paused())
        return found

    def groups(self) -> list[str]:
        return sorted(g["group_id"] if isinstance(g, dict) else g[0] for g in self.admin.list_groups())

    def sample(self, groups: list[str]) -> None:
        from kafka.admin import OffsetSpec

        now = time.time()
        committed: dict[tuple[str, str, int], int] = {}
        for group in groups:
            for tp, meta in self.admin.list_group_offsets(group).get(group, {}).items():
                if meta.offset >= 0:
                    committed[(group, tp.topic, tp.partition)] = meta.offset
        if not committed:
            return
        from kafka import TopicPartition

        tps = {TopicPartition(t, p) for _, t, p in committed}
        ends = self.admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
        end_of = {(tp.topic, tp.partition): info.offset for tp, info in ends.items()}
        # the oldest unconsumed record of each lagging (partition, committed offset); groups
        # at different offsets of one partition are read in separate rounds
        wanted = sorted({(TopicPartition(t, p), offset) for (_g, t, p), offset in committed.items()
                         if end_of.get((t, p), offset) > offset})
        oldest: dict = {}
        while wanted:
            round_, later = {}, []
            for tp, offset in wanted:
                if tp in round_:
                    later.append((tp, offset))
                else:
                    round_[tp] = offset
            try:
                for tp, ts in self._timestamps(round_).items():
                    oldest[(tp, round_[tp])] = ts
            except Exception:  # noqa: BLE001 - the age is best effort; offsets still count
                break
            wanted = later
        for (group, topic, partition), offset in committed.items():
            key = (group, topic, partition)
            lag = self.partitions.setdefault(key, PartitionLag(group, topic, partition))
            ts = oldest.get((TopicPartition(topic, partition), offset))
            lag.add(Sample(now, offset, max(offset, end_of.get((topic, partition), offset)), ts))

    def table(self, window: int) -> list[dict]:
        """One row per partition; judged as of its newest sample."""
        rows = []
        for (group, topic, partition), lag in sorted(self.partitions.items()):
            w = lag.window(window)
            rate = lag.rate(window)
            last = w[-1]
            if last.lag == 0:
                seconds, source = 0.0, "caught_up"
            elif last.oldest_ts is not None:
                seconds, source = max(0.0, last.at - last.oldest_ts), "timestamp"
            elif rate > 0:
                seconds, source = last.lag / rate, "rate"
            else:
                seconds, source = None, None
            status = evaluate(w, last.at, lag.last_change_at)
            if status == "OK" and seconds is not None and seconds > self.warn_after_s:
                status = "WARN"
            rows.append({
                "group": group, "topic": topic, "partition": partition,
                "committed": last.committed, "end": last.end, "lag": last.lag,
                "rate_per_s": round(rate, 1),
                "lag_seconds": None if seconds is None else round(seconds, 1),
                "lag_seconds_source": source,
                "status": status,
            })
        return rows

    def close(self) -> None:
        self.admin.close()
        if self._reader is not None:
            self._reader.close()


def format_table(rows: list[dict]) -> str:
    header = (f"{'group':28} {'topic':24} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8} "
              f"{'msg/s':>8} {'lag s':>7}  status")
    lines = [header]
    for r in rows:
        lag_s = "-" if r["lag_seconds"] is None else f"{r['lag_seconds']:.1f}"
        if r.get("lag_seconds_source") == "rate":
            lag_s = "~" + lag_s  # an estimate: the oldest record could not be read
        lines.append(f"{r['group'][:28]:28} {r['topic'][:24]:24} {r['partition']:>4} {r['committed']:>10} "
                     f"{r['end']:>10} {r['lag']:>8} {r['rate_per_s']:>8} {lag_s:>7}  {r['status']}")
    return "\n".join(lines)
