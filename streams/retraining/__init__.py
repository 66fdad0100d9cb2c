"""Hop 3, pair_labels -> training run: when to train (trigger), and the launcher and job
service that run training's job entry in a child process or on the trainer."""
