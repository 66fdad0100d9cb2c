"""A third marketplace family: brand ecosystems, fit in structured fields, drifting trends.

Why another family: ``streams.dev.marketplace`` writes fit as a code in the title
(``6.1-inch`` / ``fits 6.1in``). Rules, defaults and models that only learned to match title
codes would look good there for one generator's reasons. Here everything that decides fit is
elsewhere, the way a catalogue with clean attributes would hold it:

- **fit is structured**: an accessory fits a device of its kind when it has the device's
  ``brand`` *and* its ``model`` (a generation such as ``Gen 3``), or when it is third-party
  ``universal``. Titles never name the fit ("Spare flight battery, 31 min"), so a model must
  compare two fields, and a brand match alone is not fit (brand-loyal browsing co-clicks
  same-brand misfits on purpose);
- **category shapes**: two-level opaque paths (``n4/n417``), each accessory kind under its
  device's department, and some kinds split over two leaf categories;
- **another popularity law**: log-normal item appeal (not Zipf), no global bestsellers but a
  trend per day (a few items boosted for one day each), exponential user activity;
- sessions: buying (a device, then accessories, a quarter of them misfits), brand-loyal
  browsing across kinds, comparing models of one kind, and noise.

Truth (``truth_compatible``) is read by the quality benchmark's evaluation step only: no rule,
model, default or setting of the pipeline imports this module.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

from streams.core.events import Click, Item

START_TS = 1_786_000_000.0  # 2026-08-06 UTC
SPAN_DAYS = 12
UNIVERSAL = "universal"

# device kind -> (title templates, generations per brand)
DEVICES = {
    "drone": (["{adj} camera drone, 4K", "Folding {adj} drone with gimbal"], ["Mini 2", "Mini 3", "Air 2"]),
    "watch": (["{adj} smartwatch, AMOLED", "{adj} fitness watch"], ["Series 5", "Series 6", "Series 7"]),
    "laptop": (["{adj} 14in ultrabook", "{adj} 16in laptop, 32GB"], ["Gen 2", "Gen 3", "Gen 4"]),
    "espresso": (["{adj} espresso machine, 15 bar", "{adj} capsule coffee maker"], ["Mk I", "Mk II"]),
}
# accessory kind -> (device kind, title templates, share of universal third-party items)
ACCESSORIES = {
    "battery": ("drone", ["Spare flight battery, {n} min", "{adj} intelligent battery"], 0.0),
    "propellers": ("drone", ["Low-noise propellers, set of {n}"], 0.3),
    "band": ("watch", ["{adj} sport band", "Leather strap, {n}mm"], 0.2),
    "charger": ("watch", ["Magnetic charging puck", "{adj} charging dock"], 0.0),
    "dock": ("laptop", ["{adj} docking station, {n} ports", "USB-C hub, {n}-in-1"], 0.4),
    "sleeve": ("laptop", ["{adj} protective sleeve", "Hard shell cover, matte"], 0.0),
    "capsules": ("espresso", ["Intenso capsules, pack of {n}", "{adj} decaf pods x{n}"], 0.0),
    "descaler": ("espresso", ["Descaling kit, {n} uses"], 1.0),
}
BRANDS = ["Aurora", "Basalt", "Corvid", "Delta", "Ember"]
ADJECTIVES = ["Compact", "Premium", "Classic", "Ultra", "Travel", "Studio", "Urban", "Quiet"]
COLORS = ["graphite", "ivory", "navy", "olive", "rose", "slate"]
CONDITIONS = ["new", "refurbished", "open box"]


@dataclass(frozen=True)
class Truth:
    kind: str
    brand: str
    generation: str  # UNIVERSAL for third-party accessories


def _categories(rng: random.Random) -> dict[str, list[str]]:
    """kind -> its leaf categories (``dept/leaf``): accessories under their device's department."""
    codes = iter(rng.sample(range(100, 1000), 40))
    dept = {device: f"n{rng.randint(1, 9)}{k}" for k, device in enumerate(DEVICES)}
    out = {}
    for kind in list(DEVICES) + list(ACCESSORIES):
        root = dept[kind] if kind in DEVICES else dept[ACCESSORIES[kind][0]]
        leaves = 2 if kind in ("battery", "band", "dock") else 1
        out[kind] = [f"{root}/n{next(codes)}" for _ in range(leaves)]
    return out


def make_catalogue(n_items: int, rng: random.Random) -> tuple[list[Item], dict[str, Truth], dict[str, float]]:
    """Items, truth, and each item's appeal (log-normal)."""
    kinds = list(DEVICES) + list(ACCESSORIES)
    categories = _categories(rng)
    weights = [1.5 if k in DEVICES else 1.0 for k in kinds]
    items, truth, appeal = [], {}, {}
    width = max(6, len(str(n_items)))
    for i in range(n_items):
        kind = kinds[i] if i < len(kinds) else rng.choices(kinds, weights)[0]
        adj, n = rng.choice(ADJECTIVES), rng.choice([2, 4, 6, 8, 10, 12, 20, 22, 31, 40, 50])
        if kind in DEVICES:
            templates, generations = DEVICES[kind]
            brand, generation = rng.choice(BRANDS), rng.choice(generations)
        else:
            device, templates, universal = ACCESSORIES[kind]
            if rng.random() < universal:
                brand, generation = rng.choice(["Generic", "Omni", "Kitbox"]), UNIVERSAL
            else:
                brand, generation = rng.choice(BRANDS), rng.choice(DEVICES[device][1])
        item_id = f"e{i:0{width}d}"
        items.append(Item(item_id, rng.choice(categories[kind]), rng.choice(templates).format(adj=adj, n=n),
                          brand, rng.choice(COLORS), rng.choice(CONDITIONS), generation,
                          round(math.exp(rng.gauss(4.0, 1.0)), 2)))
        truth[item_id] = Truth(kind, brand, generation)
        appeal[item_id] = math.exp(rng.gauss(0.0, 1.2))
    return items, truth, appeal


def truth_compatible(a: Truth, b: Truth) -> bool:
    """A device and an accessory of its kind with its brand and generation, or universal."""
    if a.kind in ACCESSORIES and b.kind in DEVICES:
        a, b = b, a
    if a.kind not in DEVICES or b.kind not in ACCESSORIES or ACCESSORIES[b.kind][0] != a.kind:
        return False
    return b.generation == UNIVERSAL or (b.brand == a.brand and b.generation == a.generation)


def related(a: Truth, b: Truth) -> bool:
    """The two kinds go together (a device and an accessory of its kind), fit or not."""
    return ACCESSORIES.get(b.kind, ("",))[0] == a.kind or ACCESSORIES.get(a.kind, ("",))[0] == b.kind


def generate(n_items: int, n_users: int, n_events: int, seed: int = 202
             ) -> tuple[list[Item], list[Click], dict[str, Truth]]:
    """Catalogue, clicks sorted by time, and the hidden truth; deterministic for a seed."""
    rng = random.Random(seed)
    items, truth, appeal = make_catalogue(n_items, rng)
    by_kind: dict[str, list[Item]] = {}
    for item in items:
        by_kind.setdefault(truth[item.item_id].kind, []).append(item)
    trending = {day: set(rng.sample([i.item_id for i in items], max(2, n_items // 300))) for day in range(SPAN_DAYS)}

    def weight(item: Item, day: int) -> float:
        return appeal[item.item_id] * (8.0 if item.item_id in trending[day] else 1.0)

    cumulative = {(kind, day): list(itertools.accumulate(weight(m, day) for m in members))
                  for kind, members in by_kind.items() for day in range(SPAN_DAYS)}

    def pick(kind: str, day: int, where=None) -> Item | None:
        if where is None:
            members = by_kind.get(kind, [])
            return rng.choices(members, cum_weights=cumulative[kind, day])[0] if members else None
        members = [m for m in by_kind.get(kind, []) if where(truth[m.item_id])]
        return rng.choices(members, [weight(m, day) for m in members])[0] if members else None

    def session(day: int) -> list[Item]:
        intent = rng.random()
        clicks: list[Item | None]
        if intent < 0.45:  # buying: a device, then accessories (a quarter of them misfits)
            device_kind = rng.choice(list(DEVICES))
            device = pick(device_kind, day)
            if device is None:
                return []
            t = truth[device.item_id]
            clicks = [device]
            kinds = [k for k, (d, _, _) in ACCESSORIES.items() if d == device_kind]
            for kind in rng.sample(kinds, k=rng.randint(1, len(kinds))):
                def fits(x: Truth) -> bool:
                    return x.generation == UNIVERSAL or (x.brand == t.brand and x.generation == t.generation)
                want_fit = rng.random() >= 0.25
                clicks.append(pick(kind, day, fits if want_fit else (lambda x: not fits(x))))
        elif intent < 0.65:  # brand-loyal browsing: one brand across kinds, fit or not
            brand = rng.choice(BRANDS)
            clicks = [pick(rng.choice(list(by_kind)), day, lambda x: x.brand == brand)
                      for _ in range(rng.randint(2, 4))]
        elif intent < 0.9:  # comparing: items of one kind
            kind = rng.choice(list(by_kind))
            clicks = [pick(kind, day) for _ in range(rng.randint(2, 5))]
        else:  # noise
            clicks = [rng.choice(items) for _ in range(rng.randint(2, 3))]
        chosen = [c for c in clicks if c is not None]
        if len(chosen) > 2 and rng.random() < 0.3:  # a second look at something already seen
            chosen.append(rng.choice(chosen))
        return chosen

    users = [f"w{i:06d}" for i in range(n_users)]
    activity = list(itertools.accumulate(math.exp(-r / (0.2 * n_users)) for r in range(n_users)))
    clicks: list[Click] = []
    while len(clicks) < n_events:
        user = rng.choices(users, cum_weights=activity)[0]
        day = rng.randrange(SPAN_DAYS)
        t = START_TS + day * 86400 + rng.uniform(0, 86000)
        for item in session(day):
            t += rng.uniform(5, 240)
            clicks.append(Click(f"y{len(clicks):09d}", user, item.item_id, round(t, 3)))
            if len(clicks) >= n_events:
                break
    clicks.sort(key=lambda c: (c.ts, c.event_id))
    return items, clicks, truth
