"""The worker's in-memory copy of the live score version, for the lookup API.

Why in process: a ClickHouse round trip per request costs milliseconds (chDB top-50 partners:
20-28 ms p99 here), the target is 5 ms p99 for 100 pairs. The index is immutable: a reload
builds a new one and swaps the reference, so a request that started on the old version
finishes on it.

Layout (numpy, ~13 bytes a pair): item ids interned to ints; a pair is one int64 key
``a << 32 | b`` in a sorted array, found with ``searchsorted``; partners are a CSR over both
directions, best first. Item embeddings of the version let the two-tower head score a pair that
was never published (two embedding rows and a tiny MLP: no encoder pass).

Continuous publishing (``streams.publishing.refresh``) writes updates of the live version between
trainings; ``load`` applies them, and ``merged`` applies the ones that came since to a copy (the
new rows replace the old ones of their pairs, new pairs are added, partners are ranked again).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streams.core.records import EVIDENCE_FIELDS, evidence_records
from streams.core.storage import Storage
from streams.core.storage import scores as score_tables
from streams.core.storage.scores import SCORERS

EVIDENCE = EVIDENCE_FIELDS  # pair_scores columns that say what a published score rests on (migration 5)
UPDATE_COLUMNS = f"item_a, item_b, score, scorer, {', '.join(EVIDENCE)}"


def as_column(values) -> np.ndarray | pa.Array:
    """An evidence column as the index keeps it: numbers as numpy, strings and maps as Arrow
    (no Python object per pair: a map per pair as lists of tuples was most of the index's heap,
    and Arrow columns can be written and memory-mapped as they are: ``streams.serving.export``)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        kind = values.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            return values.to_numpy(zero_copy_only=False)
        return values
    return np.asarray(values)


def take(column: np.ndarray | pa.Array, at: np.ndarray) -> np.ndarray | pa.Array:
    return column[at] if isinstance(column, np.ndarray) else column.take(pa.array(at, pa.int64()))


class ScoreIndex:
    def __init__(self, score_version: str | None, model_version: str | None, ids: list[str],
                 a: np.ndarray, b: np.ndarray, score: np.ndarray, scorer: np.ndarray,
                 embeddings: np.ndarray | None = None, embedded: list[str] | None = None,
                 evidence: dict[str, np.ndarray] | None = None):
        self.score_version = score_version
        self.model_version = model_version
        self.ids = ids
        self.index = {item: k for k, item in enumerate(ids)}
        keys = (a.astype(np.int64) << 32) | b.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        self.keys, self.score, self.scorer = keys[order], score[order], scorer[order]
        # per pair, in key order: what the published score rests on (see ``EVIDENCE``)
        self.evidence = {name: take(as_column(column), order) for name, column in (evidence or {}).items()}
        # partners: both directions, grouped by anchor, best first
        anchor = np.concatenate([a, b])
        partner = np.concatenate([b, a])
        both = np.concatenate([score, score])
        both_scorer = np.concatenate([scorer, scorer])
        order = np.lexsort((-both, anchor))
        self.partner = partner[order].astype(np.int32)
        self.partner_score = both[order]
        self.partner_scorer = both_scorer[order]
        self.offsets = np.searchsorted(anchor[order], np.arange(len(ids) + 1))
        self.embeddings = embeddings
        self.embedded_ids = embedded or []
        self.embedded = {item: k for k, item in enumerate(self.embedded_ids)}
        self.updated_through = 0.0  # scored_at (seconds) of the newest update applied

    # what an index is made of: ``parts`` and ``from_parts`` carry it to another process as it is
    PARTS = ("score_version", "model_version", "ids", "keys", "score", "scorer", "evidence", "partner",
             "partner_score", "partner_scorer", "offsets", "embeddings", "embedded_ids", "updated_through")

    def parts(self) -> dict:
        return {name: getattr(self, name) for name in self.PARTS}

    @classmethod
    def from_parts(cls, parts: dict) -> "ScoreIndex":
        """An index from another's ``parts()`` (arrays mapped from files: no sort, no copy)."""
        index = cls.__new__(cls)
        for name in cls.PARTS:
            setattr(index, name, parts[name])
        index.index = {item: k for k, item in enumerate(index.ids)}
        index.embedded = {item: k for k, item in enumerate(index.embedded_ids)}
        return index

    @classmethod
    def empty(cls) -> "ScoreIndex":
        z = np.zeros(0, np.int64)
        return cls(None, None, [], z, z, np.zeros(0, np.float32), np.zeros(0, np.int8))

    @classmethod
    def load(cls, storage: Storage, score_version: str | None = None) -> "ScoreIndex":
        """The live version (or ``score_version``) from ClickHouse; empty before a publish."""
        if score_version is None:
            current = score_tables.live(storage)
            if current is None:
                return cls.empty()
            score_version = current["score_version"]
        params = {"v": score_version}
        rows = storage.query_arrow(
            f"SELECT item_a, item_b, score, scorer, model_version, {', '.join(EVIDENCE)} "
            f"FROM {storage.table('pair_scores')} WHERE score_version = {{v:String}}", params)
        emb = storage.query_arrow(
            f"SELECT item_id, embedding FROM {storage.table('item_embeddings')} "
            "WHERE score_version = {v:String} ORDER BY item_id", params)
        if not rows.num_rows:
            return cls.empty()
        both = pa.chunked_array(rows.column("item_a").chunks + rows.column("item_b").chunks)
        encoded = both.combine_chunks().dictionary_encode()
        ids = encoded.dictionary.to_pylist()
        codes = encoded.indices.to_numpy()
        n = rows.num_rows
        scorer_codes = {name: k for k, name in enumerate(SCORERS)}
        scorer = np.array([scorer_codes.get(s, 0) for s in rows.column("scorer").to_pylist()], np.int8)
        embeddings = embedded = None
        if emb.num_rows:
            embedded = emb.column("item_id").to_pylist()
            flat = pc.list_flatten(emb.column("embedding")).to_numpy()
            embeddings = flat.reshape(emb.num_rows, -1).astype(np.float32)
        evidence = {name: rows.column(name) for name in EVIDENCE}
        base = cls(score_version, rows.column("model_version")[0].as_py(), ids, codes[:n], codes[n:],
                   rows.column("score").to_numpy().astype(np.float32), scorer, embeddings, embedded,
                   evidence)
        return base.merged(score_tables.updates_after(storage, score_version, 0.0, UPDATE_COLUMNS))

    def merged(self, updates: pa.Table) -> "ScoreIndex":
        """A copy with ``updates`` (rows of ``pair_score_updates`` with ``scored_ms``, at most one
        per pair: ``scores.updates_after``) applied; ``self`` itself is left as it is (requests in
        flight keep reading it)."""
        if not updates.num_rows:
            return self
        ids = list(self.ids)
        n = updates.num_rows
        both = pa.chunked_array(updates.column("item_a").chunks + updates.column("item_b").chunks)
        encoded = both.combine_chunks().dictionary_encode()  # per distinct item, not per row
        codes = np.empty(len(encoded.dictionary), np.int64)
        for k, item in enumerate(encoded.dictionary.to_pylist()):
            code = self.index.get(item)
            if code is None:
                code = len(ids)
                ids.append(item)
            codes[k] = code
        mapped = codes[encoded.indices.to_numpy()]
        ua, ub = mapped[:n], mapped[n:]
        keys = (ua << 32) | ub
        pos = np.searchsorted(self.keys, keys)
        hit = np.zeros(len(keys), bool)
        inside = pos < len(self.keys)
        hit[inside] = self.keys[pos[inside]] == keys[inside]
        new_score = updates.column("score").to_numpy().astype(np.float32)
        new_scorer = pc.index_in(updates.column("scorer"), value_set=pa.array(SCORERS)).fill_null(0) \
            .to_numpy(zero_copy_only=False).astype(np.int8)

        def patched(old, new):
            if isinstance(old, pa.Array):  # old rows, each replaced by its update, then the new pairs
                order = np.arange(len(old) + int((~hit).sum()), dtype=np.int64)
                order[pos[hit]] = len(old) + np.flatnonzero(hit)
                order[len(old):] = len(old) + np.flatnonzero(~hit)
                added = as_column(new)
                assert isinstance(added, pa.Array), f"{added.dtype} updates of an Arrow column"
                return pa.concat_arrays([old, added.cast(old.type)]).take(pa.array(order))
            new = as_column(new)
            out = old.copy()
            out[pos[hit]] = new[hit]
            return np.concatenate([out, new[~hit].astype(out.dtype)])

        evidence = {name: patched(column, updates.column(name)) for name, column in self.evidence.items()}
        a = np.concatenate([self.keys >> 32, ua[~hit]])
        b = np.concatenate([self.keys & 0xFFFFFFFF, ub[~hit]])
        out = ScoreIndex(self.score_version, self.model_version, ids, a, b, patched(self.score, new_score),
                         patched(self.scorer, new_scorer), self.embeddings, self.embedded_ids, evidence)
        out.updated_through = max(self.updated_through,
                                  float(updates.column("scored_ms").to_numpy().max()) / 1000.0)
        return out

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, pairs: list[tuple[str, str]]) -> list[tuple[float, str] | None]:
        """(score, scorer) per canonical pair (a < b), or None where the version has none."""
        return [(score, scorer) if hit else None for hit, score, scorer, _ in self.lookup_rows(pairs)]

    def positions(self, a: list[str], b: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(found, row) per canonical pair ``(a[k], b[k])``: ``row`` indexes ``score``,
        ``scorer`` and ``evidence`` where ``found``. Columnar: what a refresh of many pairs uses."""
        index = self.index
        ia = np.fromiter((index.get(x, -1) for x in a), np.int64, len(a))
        ib = np.fromiter((index.get(x, -1) for x in b), np.int64, len(b))
        if not len(self.keys):
            return np.zeros(len(a), bool), np.zeros(len(a), np.int64)
        keys = (ia << 32) | ib
        row = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return (ia >= 0) & (ib >= 0) & (self.keys[row] == keys), row

    def lookup_rows(self, pairs: list[tuple[str, str]]) -> list[tuple[bool, float, str, int]]:
        """(found, score, scorer, row) per canonical pair; ``row`` indexes ``evidence_rows``."""
        index = self.index
        missing = -1
        ia = np.fromiter((index.get(a, missing) for a, _ in pairs), np.int64, len(pairs))
        ib = np.fromiter((index.get(b, missing) for _, b in pairs), np.int64, len(pairs))
        keys = (ia << 32) | ib
        pos = np.searchsorted(self.keys, keys)
        pos_c = np.minimum(pos, max(len(self.keys) - 1, 0))
        found = (ia >= 0) & (ib >= 0) & (len(self.keys) > 0)
        if len(self.keys):
            found &= self.keys[pos_c] == keys
        if not len(self.keys):
            return [(False, 0.0, "", -1)] * len(pairs)
        scores, scorers = self.score[pos_c].tolist(), self.scorer[pos_c].tolist()
        return [(True, scores[j], SCORERS[scorers[j]], p) if ok else (False, 0.0, "", -1)
                for j, (ok, p) in enumerate(zip(found.tolist(), pos_c.tolist()))]

    def evidence_rows(self, rows: list[int]) -> list[dict]:
        """The evidence of published rows, as the lookup API answers it: one gather per column
        (numpy scalar access per row cost ~10 us a pair, once the bulk of a 1000-pair answer)."""
        if not self.evidence or not rows:
            return [{} for _ in rows]
        at = np.asarray(rows, np.int64)
        return evidence_records({name: column[at] if isinstance(column, np.ndarray)
                                 else column.take(pa.array(at)).to_pylist()
                                 for name, column in self.evidence.items()})

    def partners(self, item: str, k: int) -> list[dict] | None:
        """Top ``k`` partners of ``item``, best first; None if the version does not know it."""
        idx = self.index.get(item)
        if idx is None:
            return None
        lo, hi = self.offsets[idx], min(self.offsets[idx + 1], self.offsets[idx] + k)
        ids = self.ids
        return [{"item_id": ids[p], "score": round(float(s), 4), "scorer": SCORERS[c]}
                for p, s, c in zip(self.partner[lo:hi].tolist(), self.partner_score[lo:hi].tolist(),
                                   self.partner_scorer[lo:hi].tolist())]

    def embedding(self, item: str) -> np.ndarray | None:
        k = self.embedded.get(item)
        return None if k is None or self.embeddings is None else self.embeddings[k]
