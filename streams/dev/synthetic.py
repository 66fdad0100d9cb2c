"""Synthetic second-hand marketplace: catalogue, click sessions with intents, and ground truth.

Why synthetic: the shared real datasets have no colour/condition/model fields and no labels
of compatibility; this generator knows the truth by construction, so every later stage
(counts, LLM labels, distilled students) can be scored against it.

Model of the world:
- *Families* of categories with complementary relations (phone: case, charger, earphones,
  screen protector; laptop: mouse, bag, charger; camera: lens, tripod, bag; console: game,
  controller; bike: helmet, light). Some accessories fit only one model (a case fits one
  phone model, a lens one mount, a game one platform).
- Items get a brand, colour, condition, model; popularity is a power law (Zipf) per category.
- Users run sessions with an *intent*: complete a purchase (anchor + compatible accessories),
  compare alternatives (several items of one category), or browse noisily (random items,
  often incompatible). Deterministic for a seed.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson

from streams.core.events import Click, Item

START_TS = 1_780_000_000.0  # 2026-05-28 UTC: fixed so outputs are reproducible
SPAN_DAYS = 14

COLORS = ["black", "white", "silver", "blue", "red", "green", "pink", "gold", "grey"]
CONDITIONS = ["new", "like new", "good", "fair", "for parts"]
CONDITION_WEIGHTS = [0.15, 0.3, 0.35, 0.15, 0.05]


@dataclass(frozen=True)
class Anchor:
    """A main product category and the models/brands that define compatibility."""

    category: str
    brands: dict[str, list[str]]  # brand -> models
    key: str  # what accessories must match: "model", "mount", "platform", "size", "port"


# A model's compatibility key (mount, platform, port ...) by anchor category.
def _anchor_key(category: str, brand: str, model: str) -> str:
    if category == "phone":
        return model
    if category == "laptop":
        return "13in" if ("13" in model or "Air" in model) else "15in"
    if category == "camera":
        return {"Canon": "EF", "Nikon": "F", "Sony": "E"}[brand]
    if category == "console":
        return model
    return "any"


ANCHORS = {
    "phone": Anchor("phone", {
        "Apple": ["iPhone 12", "iPhone 13", "iPhone 14"],
        "Samsung": ["Galaxy S21", "Galaxy S22", "Galaxy A52"],
        "Google": ["Pixel 6", "Pixel 7"],
        "Xiaomi": ["Redmi Note 11"],
    }, "model"),
    "laptop": Anchor("laptop", {
        "Apple": ["MacBook Air 13", "MacBook Pro 15"],
        "Dell": ["XPS 13", "Inspiron 15"],
        "Lenovo": ["ThinkPad X13", "IdeaPad 15"],
        "HP": ["Pavilion 15"],
    }, "size"),
    "camera": Anchor("camera", {
        "Canon": ["EOS 80D", "EOS 250D"],
        "Nikon": ["D7500", "D3500"],
        "Sony": ["A6400", "A7 III"],
    }, "mount"),
    "console": Anchor("console", {
        "Sony": ["PlayStation 5", "PlayStation 4"],
        "Microsoft": ["Xbox Series X"],
        "Nintendo": ["Switch"],
    }, "platform"),
    "bike": Anchor("bike", {
        "Trek": ["FX 3", "Marlin 5"], "Giant": ["Escape 2"], "Decathlon": ["Riverside 500"],
    }, "any"),
}

# accessory category -> (anchor category, base compatibility 1..10, must match the key?)
ACCESSORIES = {
    "phone_case": ("phone", 9.0, True),
    "screen_protector": ("phone", 8.0, True),
    "phone_charger": ("phone", 8.0, False),
    "earphones": ("phone", 7.0, False),
    "laptop_bag": ("laptop", 8.0, True),
    "mouse": ("laptop", 7.5, False),
    "laptop_charger": ("laptop", 8.0, False),
    "lens": ("camera", 9.0, True),
    "tripod": ("camera", 7.0, False),
    "camera_bag": ("camera", 7.5, False),
    "game": ("console", 8.5, True),
    "controller": ("console", 9.0, True),
    "helmet": ("bike", 8.0, False),
    "bike_light": ("bike", 7.0, False),
}

ACCESSORY_BRANDS = {
    "phone_case": ["Spigen", "OtterBox", "Apple", "Samsung"],
    "screen_protector": ["Belkin", "Zagg", "Spigen"],
    "phone_charger": ["Anker", "Apple", "Samsung", "Belkin"],
    "earphones": ["Sony", "Apple", "Samsung", "JBL"],
    "laptop_bag": ["Targus", "Samsonite", "Incase"],
    "mouse": ["Logitech", "Microsoft", "Apple"],
    "laptop_charger": ["Anker", "Dell", "Apple", "Lenovo"],
    "lens": ["Sigma", "Tamron", "Canon", "Nikon", "Sony"],
    "tripod": ["Manfrotto", "Joby"],
    "camera_bag": ["Lowepro", "Peak Design"],
    "game": ["EA", "Nintendo", "Sony", "Ubisoft"],
    "controller": ["Sony", "Microsoft", "Nintendo", "8BitDo"],
    "helmet": ["Giro", "Bell", "Decathlon"],
    "bike_light": ["Lezyne", "Cateye"],
}


def _port(category: str, brand: str) -> str:
    """Chargers: a phone charger fits by connector, a laptop charger by brand."""
    if category == "phone":
        return "lightning" if brand == "Apple" else "usb-c"
    return brand


def _keys_for_accessory(category: str) -> list[str]:
    anchor_cat = ACCESSORIES[category][0]
    anchor = ANCHORS[anchor_cat]
    return sorted({_anchor_key(anchor_cat, b, m) for b, ms in anchor.brands.items() for m in ms})


def true_compatibility(a: Item, b: Item) -> float:
    """Ground-truth 1..10 compatibility of two items (symmetric)."""
    if a.category == b.category:
        return 2.0  # alternatives, not complements
    if b.category in ANCHORS and a.category in ACCESSORIES:
        a, b = b, a
    if a.category in ANCHORS and b.category in ACCESSORIES:
        anchor_cat, base, must_match = ACCESSORIES[b.category]
        if anchor_cat != a.category:
            return 1.0
        a_key = _anchor_key(a.category, a.brand, a.model)
        if must_match and b.model != a_key:
            return 2.0  # the classic mistake: a case for another phone
        if b.category in ("phone_charger", "laptop_charger"):
            if b.model != _port(a.category, a.brand):
                return 3.0
        score = base
        if a.color and a.color == b.color:
            score += 0.5
        if b.brand == a.brand:
            score += 0.5
        if "for parts" in (a.condition, b.condition):
            score -= 3.0
        elif "fair" in (a.condition, b.condition):
            score -= 0.5
        return float(min(10.0, max(1.0, score)))
    # two accessories: mildly related if they serve the same anchor key
    if a.category in ACCESSORIES and b.category in ACCESSORIES:
        if ACCESSORIES[a.category][0] == ACCESSORIES[b.category][0]:
            same = a.model == b.model or "any" in (a.model, b.model)
            return 5.0 if same else 3.0
    return 1.0


def make_catalogue(n_items: int, rng: random.Random) -> list[Item]:
    categories = list(ANCHORS) + list(ACCESSORIES)
    # anchors are rarer than accessories in a second-hand catalogue, but not by much
    weights = [3.0 if c in ANCHORS else 1.5 for c in categories]
    items = []
    width = max(6, len(str(n_items)))
    for i in range(n_items):
        category = categories[i] if i < len(categories) else rng.choices(categories, weights)[0]
        color = rng.choice(COLORS)
        condition = rng.choices(CONDITIONS, CONDITION_WEIGHTS)[0]
        if category in ANCHORS:
            brand = rng.choice(sorted(ANCHORS[category].brands))
            model = rng.choice(ANCHORS[category].brands[brand])
            title = f"{brand} {model} ({color}, {condition})"
            price = round(rng.uniform(80, 1200), 2)
        else:
            brand = rng.choice(ACCESSORY_BRANDS[category])
            if category == "phone_charger":
                model = rng.choice(["usb-c", "lightning"])
            elif category == "laptop_charger":
                model = rng.choice(["Apple", "Dell", "Lenovo", "HP"])
            elif ACCESSORIES[category][2]:
                model = rng.choice(_keys_for_accessory(category))
            else:
                model = "any"
            pretty = category.replace("_", " ")
            title = f"{brand} {pretty}" + (f" for {model}" if model != "any" else "") + f" - {color}"
            price = round(rng.uniform(5, 150), 2)
        items.append(Item(f"it{i:0{width}d}", category, title, brand, color, condition, model, price))
    return items


class _Popularity:
    """Zipf-like sampler over the items of each category."""

    def __init__(self, items: list[Item], rng: random.Random, exponent: float = 1.1):
        self.by_cat: dict[str, list[Item]] = {}
        for item in items:
            self.by_cat.setdefault(item.category, []).append(item)
        self.weights: dict[str, list[float]] = {}
        for cat, members in self.by_cat.items():
            rng.shuffle(members)
            self.weights[cat] = list(itertools.accumulate(
                1.0 / (rank + 1) ** exponent for rank in range(len(members))))
        self.rng = rng

    def pick(self, category: str, where=None) -> Item | None:
        members = self.by_cat.get(category, [])
        if where is not None:
            members = [m for m in members if where(m)]
            if not members:
                return None
            return self.rng.choices(
                members, [1.0 / (i + 1) ** 1.1 for i in range(len(members))])[0]
        if not members:
            return None
        return self.rng.choices(members, cum_weights=self.weights[category])[0]


def _session(pop: _Popularity, rng: random.Random, items: list[Item]) -> list[Item]:
    anchor_cat = rng.choices(list(ANCHORS), [5, 3, 2, 2, 1])[0]
    intent = rng.random()
    anchor = pop.pick(anchor_cat)
    if anchor is None:
        return []
    if intent < 0.6:  # complete the purchase: the anchor, then compatible accessories
        clicks = [anchor]
        key = _anchor_key(anchor.category, anchor.brand, anchor.model)
        accessories = [c for c, (a, _, _) in ACCESSORIES.items() if a == anchor_cat]
        for cat in rng.sample(accessories, k=rng.randint(1, len(accessories))):
            must = ACCESSORIES[cat][2]
            if cat.endswith("charger"):
                fit = pop.pick(cat, lambda m: m.model == _port(anchor_cat, anchor.brand))
            else:
                fit = pop.pick(cat, (lambda m: m.model == key) if must else None)
            if fit is not None:
                clicks.append(fit)
            if rng.random() < 0.3:
                clicks.append(anchor)  # users go back to the main item
        return clicks
    if intent < 0.85:  # compare alternatives of one category, maybe with a few accessories
        maybe: list[Item | None] = [anchor]
        maybe += [pop.pick(anchor_cat) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.5:
            accessories = [c for c, (a, _, _) in ACCESSORIES.items() if a == anchor_cat]
            maybe.append(pop.pick(rng.choice(accessories)))
        return [c for c in maybe if c is not None]
    # noise: random items, often incompatible with one another
    return [rng.choice(items) for _ in range(rng.randint(2, 5))]


def generate(
    n_items: int, n_users: int, n_events: int, seed: int = 7
) -> tuple[list[Item], list[Click]]:
    """Catalogue and clicks, clicks sorted by time; deterministic for a seed."""
    rng = random.Random(seed)
    items = make_catalogue(n_items, rng)
    pop = _Popularity(items, rng)
    users = [f"u{i:06d}" for i in range(n_users)]
    # power-law activity: some users come back much more often; sessions start uniformly
    # over SPAN_DAYS so the stream covers a fixed period whatever its size
    activity = list(itertools.accumulate(1.0 / (r + 1) ** 0.8 for r in range(n_users)))
    clicks: list[Click] = []
    while len(clicks) < n_events:
        user = rng.choices(users, cum_weights=activity)[0]
        t = START_TS + rng.uniform(0, SPAN_DAYS * 86400)
        for item in _session(pop, rng, items):
            t += rng.uniform(5, 240)
            action = "click" if rng.random() < 0.9 else rng.choice(["view", "add_to_cart"])
            clicks.append(Click(f"e{len(clicks):09d}", user, item.item_id, round(t, 3), action))
            if len(clicks) >= n_events:
                break
    clicks.sort(key=lambda c: (c.ts, c.event_id))
    return items, clicks


def co_clicks(clicks: list[Click], window_s: float = 1800) -> Iterator[tuple[str, str]]:
    """Every (item_a, item_b) co-click of a user within ``window_s`` (sorted ids; repeats
    included): the pairs the stream counts, in click order."""
    recent: dict[str, list[tuple[float, str]]] = {}
    for click in clicks:
        history = [(t, i) for t, i in recent.get(click.user_id, []) if click.ts - t <= window_s]
        for _, other in history:
            if other != click.item_id:
                yield (min(other, click.item_id), max(other, click.item_id))
        history.append((click.ts, click.item_id))
        recent[click.user_id] = history[-20:]


def truth_pairs(items: list[Item], clicks: list[Click], window_s: float = 1800) -> Iterator[dict]:
    """Ground truth for every distinct item pair co-clicked by a user within ``window_s``."""
    by_id = {item.item_id: item for item in items}
    seen: set[tuple[str, str]] = set()
    for pair in co_clicks(clicks, window_s):
        if pair in seen:
            continue
        seen.add(pair)
        a, b = by_id[pair[0]], by_id[pair[1]]
        score = true_compatibility(a, b)
        yield {
            "item_a": pair[0], "item_b": pair[1], "score": round(score, 2),
            "compatible": score >= 6.0, "cross_category": a.category != b.category,
        }


def write_dataset(out: Path, n_items: int, n_users: int, n_events: int, seed: int) -> dict:
    """Write items.jsonl, clicks.jsonl and truth.jsonl under ``out``; return the counts."""
    out.mkdir(parents=True, exist_ok=True)
    items, clicks = generate(n_items, n_users, n_events, seed)
    with open(out / "items.jsonl", "wb") as fh:
        for item in items:
            fh.write(item.to_json() + b"\n")
    with open(out / "clicks.jsonl", "wb") as fh:
        for click in clicks:
            fh.write(click.to_json() + b"\n")
    n_truth = 0
    with open(out / "truth.jsonl", "wb") as fh:
        for row in truth_pairs(items, clicks):
            fh.write(orjson.dumps(row) + b"\n")
            n_truth += 1
    return {"items": len(items), "clicks": len(clicks), "truth_pairs": n_truth}

