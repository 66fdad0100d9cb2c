"""Tests of streams/retraining/."""
