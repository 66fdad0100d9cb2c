"""Tests of streams/serving/."""
