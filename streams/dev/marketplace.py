"""A second, independent marketplace generator: bestsellers, opaque categories, fit in free text.

Why a second generator: ``streams.dev.synthetic`` was written alongside the pipeline, and its
truth lives in the very attributes the ``heuristic`` rules read (readable category names, a
``model`` field that names the fit). A score tuned there can look good for the wrong reason.
This one differs on purpose, the way another marketplace would:

- categories are opaque ids (``c417``), as in DIGINETICA's catalogue: no name says that
  a case goes with a phone;
- compatibility is *fit*, written only in the free-text title, in several phrasings
  (``6.1-inch display`` / ``fits 6.1in screens``, ``RF mount`` / ``for RF-mount bodies``,
  ``cartridge 305`` / ``uses 305 cartridges``); ``model`` is a product-line name (``Slim``,
  ``Pro``) and brand, colour and condition are drawn independently of fit, so none of the
  fields the heuristic reads decides the truth;
- **bestsellers**: about 1.5% of items, of any category, are clicked in most sessions
  whatever the user is doing, so raw co-click counts are dominated by pairs that do not go
  together;
- sessions mix buying intent (a device, then accessories, a fifth of them misfits the user
  looked at and left), comparison (several items of one category) and noise.

Truth (``truth_compatible``) is read by the quality benchmark's evaluation step only: no rule,
model, default or setting of the pipeline imports this module.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from streams.core.events import Click, Item

START_TS = 1_785_000_000.0  # 2026-07-25 UTC
SPAN_DAYS = 10

# device kind -> (fit codes, title template, accessory kinds serving it)
DEVICES = {
    "phone": (["5.4", "6.1", "6.7"], "{line} smartphone, {fit}-inch display"),
    "camera": (["RF", "Z", "E", "X"], "{line} mirrorless body ({fit} mount)"),
    "printer": (["305", "62XL", "TN-2420"], "{line} inkjet printer, cartridge {fit}"),
    "console": (["Pulse", "Orbit"], "{line} games console, {fit} platform"),
}
# accessory kind -> (device kind, title templates; {fit} or None for universal ones)
ACCESSORIES = {
    "case": ("phone", ["{line} folio case, fits {fit}in screens", "{line} bumper for {fit}-inch phones"]),
    "glass": ("phone", ["Tempered glass protector {fit} inch", "{line} screen film, {fit}in"]),
    "lens": ("camera", ["50mm prime lens for {fit}-mount bodies", "{line} 18-55mm zoom, {fit} mount"]),
    "adapter": ("camera", ["{line} lens adapter to {fit} mount"]),
    "cartridge": ("printer", ["Ink cartridge {fit} black", "{line} refill, uses {fit} cartridges"]),
    "game": ("console", ["{line} racing game for {fit}", "{line} quest, {fit} edition"]),
    "pad": ("console", ["{line} wireless pad, {fit} compatible"]),
    "strap": ("camera", ["{line} neck strap, universal"]),  # fits every camera
    "charger": ("phone", ["{line} 20W fast charger, universal"]),
}
LINES = ["Slim", "Pro", "Max", "Lite", "Neo", "Air", "Prime", "Core", "Edge", "Go"]
BRANDS = ["Acme", "Borealis", "Cobalt", "Dyna", "Everest", "Fjord", "Gamma", "Helix"]
COLORS = ["black", "white", "blue", "red", "green", "silver"]
CONDITIONS = ["new", "like new", "good", "fair"]


@dataclass(frozen=True)
class Truth:
    kind: str
    fit: str | None  # None: universal accessory


def make_catalogue(n_items: int, rng: random.Random) -> tuple[list[Item], dict[str, Truth]]:
    kinds = list(DEVICES) + list(ACCESSORIES)
    codes = rng.sample(range(100, 1000), len(kinds))
    category_of = {kind: f"c{code}" for kind, code in zip(kinds, codes)}
    weights = [2.0 if k in DEVICES else 1.0 for k in kinds]
    items, truth = [], {}
    width = max(6, len(str(n_items)))
    for i in range(n_items):
        kind = kinds[i] if i < len(kinds) else rng.choices(kinds, weights)[0]
        line = rng.choice(LINES)
        fit: str | None
        if kind in DEVICES:
            fits, template = DEVICES[kind]
            fit = rng.choice(fits)
            title = template.format(line=line, fit=fit)
        else:
            device, templates = ACCESSORIES[kind]
            template = rng.choice(templates)
            fit = rng.choice(DEVICES[device][0]) if "{fit}" in template else None
            title = template.format(line=line, fit=fit)
        item_id = f"m{i:0{width}d}"
        items.append(Item(item_id, category_of[kind], title, rng.choice(BRANDS), rng.choice(COLORS),
                          rng.choice(CONDITIONS), line, round(rng.uniform(5, 900), 2)))
        truth[item_id] = Truth(kind, fit)
    return items, truth


def truth_compatible(a: Truth, b: Truth) -> bool:
    """A device and an accessory made for its kind that fits it (or fits every such device)."""
    if a.kind in ACCESSORIES and b.kind in DEVICES:
        a, b = b, a
    if a.kind not in DEVICES or b.kind not in ACCESSORIES:
        return False
    return ACCESSORIES[b.kind][0] == a.kind and (b.fit is None or b.fit == a.fit)


def generate(n_items: int, n_users: int, n_events: int, seed: int = 101,
             bestseller_share: float = 0.015, bestseller_rate: float = 0.7
             ) -> tuple[list[Item], list[Click], dict[str, Truth]]:
    """Catalogue, clicks sorted by time, and the hidden truth; deterministic for a seed."""
    rng = random.Random(seed)
    items, truth = make_catalogue(n_items, rng)
    by_kind: dict[str, list[Item]] = {}
    for item in items:
        by_kind.setdefault(truth[item.item_id].kind, []).append(item)
    popularity = {kind: list(itertools.accumulate(1.0 / (r + 1) ** 0.9 for r in range(len(members))))
                  for kind, members in by_kind.items()}
    for members in by_kind.values():
        rng.shuffle(members)
    bestsellers = rng.sample(items, max(3, int(bestseller_share * n_items)))

    def pick(kind: str, where=None) -> Item | None:
        members = by_kind.get(kind, [])
        if where is not None:
            members = [m for m in members if where(truth[m.item_id])]
            return rng.choice(members) if members else None
        return rng.choices(members, cum_weights=popularity[kind])[0] if members else None

    def session() -> list[Item]:
        intent = rng.random()
        device_kind = rng.choice(list(DEVICES))
        clicks: list[Item | None]
        if intent < 0.5:  # buying: a device, then accessories for it (some misfits browsed)
            device = pick(device_kind)
            if device is None:
                return []
            clicks = [device]
            kinds = [k for k, (d, _) in ACCESSORIES.items() if d == device_kind]
            fit = truth[device.item_id].fit
            for kind in rng.sample(kinds, k=rng.randint(1, len(kinds))):
                if rng.random() < 0.2:
                    other = pick(kind, lambda t: t.fit is not None and t.fit != fit)
                else:
                    other = pick(kind, lambda t: t.fit is None or t.fit == fit)
                if other is not None:
                    clicks.append(other)
        elif intent < 0.8:  # comparing: items of one category
            kind = rng.choice(list(DEVICES) + list(ACCESSORIES))
            clicks = [pick(kind) for _ in range(rng.randint(2, 4))]
        else:  # noise
            clicks = [rng.choice(items) for _ in range(rng.randint(2, 4))]
        chosen = [c for c in clicks if c is not None]
        if rng.random() < bestseller_rate:  # bestsellers, whatever the session is about
            for _ in range(rng.randint(1, 2)):
                chosen.insert(rng.randint(0, len(chosen)), rng.choice(bestsellers))
        return chosen

    users = [f"v{i:06d}" for i in range(n_users)]
    activity = list(itertools.accumulate(1.0 / (r + 1) ** 0.5 for r in range(n_users)))
    clicks: list[Click] = []
    while len(clicks) < n_events:
        user = rng.choices(users, cum_weights=activity)[0]
        t = START_TS + rng.uniform(0, SPAN_DAYS * 86400)
        for item in session():
            t += rng.uniform(5, 200)
            clicks.append(Click(f"x{len(clicks):09d}", user, item.item_id, round(t, 3)))
            if len(clicks) >= n_events:
                break
    clicks.sort(key=lambda c: (c.ts, c.event_id))
    return items, clicks, truth
