"""Hop 4, training run -> pair_scores: score candidates with the promoted students, blend with
behaviour, write and announce a score version; promotion and rollback."""
