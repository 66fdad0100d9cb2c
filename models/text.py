"""The one-line item text that students, the teacher and the lookup API all see."""

from __future__ import annotations

from typing import Mapping

FIELDS = ("brand", "color", "condition", "model")


def item_text(item: Mapping[str, object]) -> str:
    """``title; category: c; brand: b; ...`` (empty fields left out)."""
    parts = [str(item.get("title") or item.get("item_id") or ""), f"category: {item.get('category', '')}"]
    for name in FIELDS:
        value = item.get(name)
        if value:
            parts.append(f"{name}: {value}")
    return "; ".join(parts)
