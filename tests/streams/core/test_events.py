import pytest

from streams.core.events import InvalidEvent, parse_click, parse_item

NOW = 1_780_000_000.0


@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "bad_json"),
    (b"[1, 2]", "not_object"),
    (b'{"user_id": "u", "item_id": "i", "ts": 1}', "missing_field"),
    (b'{"event_id": "e", "user_id": 5, "item_id": "i", "ts": 1}', "bad_type"),
    (b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": "yesterday"}', "bad_type"),
    (b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": NaN}', "bad_json"),
    (b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": -5}', "bad_ts"),
    (b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1780090000}', "future_ts"),
    (b'{"event_id": "e", "user_id": "u", "item_id": "' + b"x" * 70000 + b'", "ts": 1}', "too_large"),
])
def test_bad_clicks_have_reasons(raw, reason):
    with pytest.raises(InvalidEvent) as err:
        parse_click(raw, NOW)
    assert err.value.reason == reason


def test_good_click_defaults_action():
    click = parse_click(b'{"event_id": "e", "user_id": "u", "item_id": "i", "ts": 17}', NOW)
    assert (click.user_id, click.item_id, click.ts, click.action) == ("u", "i", 17.0, "click")


def test_item_requires_id_and_category():
    item = parse_item(b'{"item_id": "a", "category": "phone", "price": 3}')
    assert item.category == "phone" and item.price == 3.0 and item.brand == ""
    with pytest.raises(InvalidEvent, match="category"):
        parse_item(b'{"item_id": "a"}')
