"""The one-line item text that students, the teacher and the lookup API all see."""

from __future__ import annotations

from typing import Mapping

# what a product row carries (items topic, ``items`` table, prompts, the students' text)
PRODUCT_FIELDS = ("title", "category", "brand", "color", "condition", "model")
FIELDS = PRODUCT_FIELDS[2:]  # the attributes after title and category


def item_text(item: Mapping[str, object]) -> str:
    """``title; category: c; brand: b; ...`` (empty fields left out)."""
    parts = [str(item.get("title") or item.get("item_id") or ""), f"category: {item.get('category', '')}"]
    for name in FIELDS:
        value = item.get(name)
        if value:
            parts.append(f"{name}: {value}")
    return "; ".join(parts)


def aligned_pair_text(a: Mapping[str, object], b: Mapping[str, object]) -> str:
    """Two items field by field, values side by side (``brand: Apple | Spigen``).

    The teacher's input: comparing a field is then a look at two neighbouring spans instead
    of a search across two long titles, which a small model learns from a few hundred labels
    and a large one reads as easily."""
    names = ("category", *FIELDS, "title")
    return "\n".join(f"{name}: {a.get(name) or '-'} | {b.get(name) or '-'}" for name in names)
