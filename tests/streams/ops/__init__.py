"""Tests of streams/ops/."""
