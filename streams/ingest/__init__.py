"""Hop 1, click -> pair_counts (and pair_tiers -> pairs-to-score): the batch click consumer, its
decode, sessions, pairing kernel, catalogue, tier routing, and the exact reference it is checked against."""
