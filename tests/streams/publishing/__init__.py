"""Tests of streams/publishing/."""
