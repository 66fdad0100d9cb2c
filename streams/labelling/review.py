"""The review queue as a person works through it: both products side by side, every opinion
and the behaviour behind it, and one key to set the label.

Why: ``labels review`` listed item ids only (``i1322524 | i7d894f2 tier high ... model 2.5,
behaviour 9.6``), so a reviewer had to look up two products elsewhere before deciding. A card
shows what a decision needs; a key writes the manual label (which wins everywhere) with the
opinions it overrode as its reason, so the gold set records why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from streams.core.storage import Storage
from streams.core.storage.items import products
from streams.core.storage.labels import LabelRow, effective_labels, write_labels
from streams.labelling.quality import published_rows

FIELDS = ("title", "category", "brand", "color", "condition", "model", "price")
KEYS = "1-9 score, 0 = 10, s skip, q quit"


@dataclass
class Card:
    """One pair of the queue with what a reviewer reads."""

    entry: dict  # a ``review_queue`` entry: item ids, tier, impact, opinions, count
    item_a: dict = field(default_factory=dict)  # product fields (empty: no longer listed)
    item_b: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)  # the label's per-dimension scores
    reasons: dict = field(default_factory=dict)  # and its reasons
    evidence: dict = field(default_factory=dict)  # users, lift, swing of the published row


def cards(storage: Storage, queue: list[dict]) -> list[Card]:
    """The queue's entries with both products, the label's dimensions and the behaviour."""
    if not queue:
        return []
    rows = products(storage, sorted({x for e in queue for x in (e["item_a"], e["item_b"])}))
    pairs = [(e["item_a"], e["item_b"]) for e in queue]
    labels = {(r["item_a"], r["item_b"]): r for r in effective_labels(
        storage, "(item_a, item_b) IN arrayZip({a:Array(String)}, {b:Array(String)})",
        {"a": [a for a, _ in pairs], "b": [b for _, b in pairs]})}
    evidence = published_rows(storage, pairs)
    out = []
    for entry, pair in zip(queue, pairs):
        label = labels.get(pair, {})
        out.append(Card(entry, rows.get(pair[0], {}), rows.get(pair[1], {}),
                        dict(label.get("dim_scores") or []), dict(label.get("dim_reasons") or []),
                        evidence.get(pair, {})))
    return out


def render(card: Card, position: int, total: int, width: int = 38) -> str:
    """The card as text: a header, both products field by field, then every opinion."""
    e, ev = card.entry, card.evidence
    behaviour = f"{e['count']} co-clicks"
    if ev:
        behaviour += f", {ev['users']} users, lift {ev['lift']:.2f}, swing {ev['swing']:.3f}"
    lines = [f"[{position}/{total}] impact {e['impact']:.2f} · tier {e['tier'] or '-'} "
             f"({e['seed_review']}) · {behaviour}",
             f"  {'':10} {_cut(e['item_a'], width):{width}}  {_cut(e['item_b'], width)}"]
    for name in FIELDS:
        left, right = card.item_a.get(name), card.item_b.get(name)
        if left in (None, "") and right in (None, ""):
            continue
        lines.append(f"  {name:10} {_cut(_text(left), width):{width}}  {_cut(_text(right), width)}")
    if not card.item_a or not card.item_b:
        lines.append("  (an item is no longer in the catalogue)")
    lines.append("  opinions: " + " · ".join(f"{k} {v:.1f}" for k, v in e["opinions"].items()))
    if card.dims:
        lines.append("  label dimensions: " + ", ".join(
            f"{d} {s:.0f}" + (f" ({_cut(card.reasons[d], 40)})" if card.reasons.get(d) else "")
            for d, s in sorted(card.dims.items())))
    return "\n".join(lines)


def answer(key: str) -> float | str | None:
    """A key as a score (``1``-``9``, ``0`` = 10), ``"quit"``, or None (skip: ``s``, Enter, other)."""
    key = key.strip().lower()[:1]
    if key.isdigit():
        return 10.0 if key == "0" else float(key)
    return "quit" if key == "q" else None


def review(storage: Storage, queue: list[dict], read_key: Callable[[str], str],
           show: Callable[[str], None] = print) -> dict:
    """Show each card and act on the reviewer's key; a score is written as a manual label."""
    done = {"labelled": 0, "skipped": 0, "quit": False}
    deck = cards(storage, queue)
    for position, card in enumerate(deck, 1):
        show(render(card, position, len(deck)))
        reply = answer(read_key(f"  label? ({KEYS}) "))
        if reply == "quit":
            done["quit"] = True
            break
        if not isinstance(reply, float):
            done["skipped"] += 1
            continue
        e = card.entry
        overridden = ", ".join(f"{k} {v:.1f}" for k, v in e["opinions"].items())
        write_labels(storage, [LabelRow(e["item_a"], e["item_b"], reply, e["tier"] or "manual", "manual", "none",
                                        "", "", dim_reasons={"all": f"review queue; overrode {overridden}"})])
        done["labelled"] += 1
        show(f"  -> manual label {reply:g}")
    return done


def _text(value) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
