"""What one training run returns: a typed record instead of a string-keyed dict, so every
caller (the CLI, the embedded launcher, the trainer service, the benchmarks) reads named
fields, and the embedded run's ``result.json`` reads back into the same type.

Torch-free, so ``streams`` can read a result without loading the training stack."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    """``version`` is None only in the replica processes of a data-parallel run (the main
    process reports); ``decision`` is the gate's (``promoted``, ``metric``, ``candidate``,
    ``incumbent``, ``incumbent_version``, ``tolerance``), ``report`` the paths of the plots and
    the JSON report."""

    version: str | None
    process: int = 0
    processes: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    augmentation_curve: list[dict[str, Any]] = field(default_factory=list)
    decision: dict[str, Any] = field(default_factory=dict)
    minutes: float = 0.0
    report: dict[str, str] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return bool(self.decision.get("promoted"))

    @property
    def incumbent_version(self) -> str | None:
        """The model this run retired by being promoted, if any."""
        return self.decision.get("incumbent_version") if self.promoted else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str)

    @classmethod
    def read(cls, path: str | Path) -> RunResult:
        return cls(**json.loads(Path(path).read_text()))
