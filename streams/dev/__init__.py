"""Development and demo tools: the synthetic marketplaces, the replayer and the end-to-end demo."""
