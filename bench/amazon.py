"""Amazon Magazine Subscriptions (2018, Ni, Li & McAuley) as a click stream with a truth the
pipeline never sees: ``bench quality --dataset amazon-magazine``.

Why this dataset: its truth comes from elsewhere. The clicks are the 2,375 reviews of 348
reviewers (``Magazine_Subscriptions_5.json``); the truth is Amazon's ``also_buy`` lists in the
catalogue metadata (``meta_Magazine_Subscriptions.json``), computed by Amazon from all of its
customers' purchases, not from these reviews. So a score that only echoes the co-reviews gains
nothing for free.

Choices (documented, not tuned):
- each reviewer's reviews, in review order, become one session of clicks one minute apart
  (reviews carry only a day; a reviewer's history is the closest thing to a session here),
  reviewers 10 minutes apart, so the whole stream fits in the 30-day horizon;
- item text: the metadata's title is a broken HTML fragment for most items, so ``title`` is
  the first description sentence(s), ``category`` the deepest category-path element (the
  pipeline pairs items of different categories), ``brand`` the publisher;
- truth: an unordered pair is compatible when either item lists the other in ``also_buy``.
  Read only by the benchmark's evaluation step.

The data is read from ``../shared/data/amazon_magazine_2018`` (never copied into the repo);
``available()`` says whether it is there so the benchmark can skip with a message.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from streams.core.events import Click, Item

CHECKOUT = Path(__file__).resolve().parents[1]  # bench/amazon.py -> the checkout
DEFAULT_DIR = CHECKOUT.parent / "shared" / "data" / "amazon_magazine_2018"
REVIEWS = "Magazine_Subscriptions_5.json"
META = "meta_Magazine_Subscriptions.json"
BASE_TS = 1_700_000_000.0  # sessions are laid out from here, one per reviewer, 10 min apart


def available(data_dir: Path = DEFAULT_DIR) -> bool:
    return (data_dir / REVIEWS).is_file() and (data_dir / META).is_file()


def _ids(value) -> list[str]:
    """``also_buy`` is a list, or the text of one."""
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str) and value.startswith("["):
        return [str(v) for v in ast.literal_eval(value)]
    return []


def _item(asin: str, meta: dict) -> Item:
    description = " ".join(d for d in meta.get("description", []) if isinstance(d, str))
    title = meta.get("title", "")
    if not title or "<" in title:
        title = description[:240]
    path = [c for c in meta.get("category", []) if isinstance(c, str)]
    return Item(item_id=asin, category=path[-1] if path else "Magazine Subscriptions",
                title=title, brand=str(meta.get("brand", ""))[:120])


def load(data_dir: Path = DEFAULT_DIR) -> tuple[list[Item], list[Click], set[tuple[str, str]]]:
    """(items that were reviewed, clicks in time order, compatible pairs (a < b))."""
    metas: dict[str, dict] = {}
    with open(data_dir / META) as lines:
        for line in lines:
            meta = json.loads(line)
            metas.setdefault(meta["asin"], meta)  # the file repeats lines: the first wins
    reviews: dict[str, list[tuple[int, str]]] = {}
    with open(data_dir / REVIEWS) as lines:
        for line in lines:
            review = json.loads(line)
            if review["asin"] in metas:
                reviews.setdefault(review["reviewerID"], []).append((review["unixReviewTime"], review["asin"]))
    reviewed = sorted({asin for history in reviews.values() for _, asin in history})
    items = [_item(asin, metas[asin]) for asin in reviewed]
    clicks: list = []
    for k, user in enumerate(sorted(reviews)):
        for step, (_, asin) in enumerate(sorted(reviews[user])):
            clicks.append(Click(f"r{len(clicks)}", user, asin, BASE_TS + k * 600.0 + step * 60.0))
    clicks.sort(key=lambda click: click.ts)
    known = set(reviewed)
    truth = set()
    for asin in reviewed:
        for other in _ids(metas[asin].get("also_buy")):
            if other in known and other != asin:
                truth.add((min(asin, other), max(asin, other)))
    return items, clicks, truth
