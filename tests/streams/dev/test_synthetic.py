import orjson

from streams.core.events import parse_click, parse_item
from streams.dev.synthetic import generate, true_compatibility, write_dataset


def test_same_seed_same_files(tmp_path):
    write_dataset(tmp_path / "a", 300, 50, 3000, seed=3)
    write_dataset(tmp_path / "b", 300, 50, 3000, seed=3)
    write_dataset(tmp_path / "c", 300, 50, 3000, seed=4)
    for name in ("items.jsonl", "clicks.jsonl", "truth.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "clicks.jsonl").read_bytes() != (tmp_path / "c" / "clicks.jsonl").read_bytes()


def test_files_follow_the_message_schema(tmp_path):
    counts = write_dataset(tmp_path, 300, 50, 3000, seed=3)
    items = [parse_item(line) for line in (tmp_path / "items.jsonl").read_bytes().splitlines()]
    clicks = [parse_click(line, now=2e9) for line in (tmp_path / "clicks.jsonl").read_bytes().splitlines()]
    assert len(items) == counts["items"] == 300 and len(clicks) == counts["clicks"] == 3000
    known = {i.item_id for i in items}
    assert all(c.item_id in known for c in clicks)
    assert [c.ts for c in clicks] == sorted(c.ts for c in clicks)
    truth = [orjson.loads(line) for line in (tmp_path / "truth.jsonl").read_bytes().splitlines()]
    assert truth and all(1 <= t["score"] <= 10 and t["item_a"] < t["item_b"] for t in truth)
    assert all(t["compatible"] == (t["score"] >= 6) for t in truth)
    # the marketplace has both signal and noise
    assert any(t["compatible"] for t in truth) and any(not t["compatible"] for t in truth)


def test_model_dependent_compatibility():
    items, _ = generate(400, 10, 10, seed=1)
    phones = [i for i in items if i.category == "phone"]
    cases = [i for i in items if i.category == "phone_case"]
    phone = phones[0]
    fitting = [c for c in cases if c.model == phone.model]
    other = [c for c in cases if c.model != phone.model]
    assert fitting and other
    assert true_compatibility(phone, fitting[0]) >= 6 > true_compatibility(phone, other[0])
    assert true_compatibility(phone, phones[1]) < 6  # alternatives are not complements
