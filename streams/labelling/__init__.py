"""Hop 2, pairs-to-score -> pair_labels: the labeller (cache, LLM, few-shot) and label quality."""
