"""Scoring models: the rubric and its prompts, LLM backends, students and their runtimes.

Imports neither ``streams`` nor Faust (docs/development.md, "Layout": the import rule)."""
