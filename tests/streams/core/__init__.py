"""Tests of streams/core/."""
