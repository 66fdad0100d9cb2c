"""``pairstream bench llm`` on a tiny model: both ways label the same pairs with the same scores,
and prefix reuse runs a fraction of the prompt tokens (its timings are the bench's to print)."""

from __future__ import annotations

import types

from bench import llm
from models.local import build_tiny_causal_lm


def test_prefix_reuse_changes_the_cost_of_a_pair_not_its_score(tmp_path, capsys):
    tiny = build_tiny_causal_lm(tmp_path / "tiny-lm", seed=1)
    result = llm.run(types.SimpleNamespace(model=str(tiny), llm_pairs=3))
    assert result["pairs"] == 3 and result["max_abs_score_delta"] < 1e-4
    assert result["reuse_tokens_per_pair"] < 0.4 * result["whole_tokens_per_pair"]
    assert result["whole_s_per_pair"] > 0 and result["reuse_s_per_pair"] > 0
    assert "with prefix reuse" in capsys.readouterr().out
