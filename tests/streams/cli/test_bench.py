"""What ``pairstream bench --json`` prints parses as strict JSON: a measure with one class (an
AUC on a dataset without related pairs) is ``null``, not a bare ``NaN``."""

from __future__ import annotations

import json

from streams.cli.bench import json_safe


def test_nan_and_infinity_are_null_and_everything_else_is_kept():
    result = {"auc": float("nan"), "n": 3, "name": "x", "curve": [1.5, float("inf"), None],
              "nested": {"ratio": float("-inf"), "pair": (0.25, float("nan"))}}
    safe = json_safe(result)
    assert safe == {"auc": None, "n": 3, "name": "x", "curve": [1.5, None, None],
                    "nested": {"ratio": None, "pair": [0.25, None]}}
    json.dumps(safe, allow_nan=False)  # raises on anything a strict parser would refuse
