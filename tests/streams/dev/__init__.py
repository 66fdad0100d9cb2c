"""Tests of streams/dev/."""
