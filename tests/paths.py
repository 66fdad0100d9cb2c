"""Where the checkout is, for tests that read its files (README, deploy/): one place,
so a test reads the same at any depth of the mirrored folders."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
