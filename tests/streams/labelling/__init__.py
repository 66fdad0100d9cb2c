"""Tests of streams/labelling/."""
