"""Hop 5, pair_scores -> lookup: the live score index, the model-updates watcher, the lookup API
and the HTTP server it runs on."""
