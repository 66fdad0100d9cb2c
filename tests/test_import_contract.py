"""The import contract, checked on every module's syntax tree (not on a hand-picked list).

Layers, bottom up; each imports only the layers below it and itself:

- ``models``: nothing of ours;
- ``streams.core`` (settings, records, Kafka helpers, metrics, storage): ``models``; no Faust;
- ``training``: ``models`` and ``streams.core``;
- the stages, one package per hop of the data flow, in its order (ingest -> labelling ->
  retraining -> publishing -> serving): ``streams.core``, ``models``, training's root (its job
  entry) and stages downstream of it, which it hands its output to;
- ``streams.ops`` (what on-call reads): ``streams.core``, ``models``, training's root;
- the wiring (``streams.app``, ``streams.worker``, ``streams.cli``) and ``streams.dev``: anything
  of ours except ``bench``, which the wheel does not ship;
- only ``streams.app`` and ``streams.worker`` import Faust.

A new module is covered the day it is written, a module outside every layer fails, and a lazy
import inside a function counts like a top-level one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import training
from tests.paths import REPO_ROOT as ROOT

PACKAGES = ("streams", "models", "training")
OURS = PACKAGES + ("bench",)

STAGES = ("streams.ingest", "streams.labelling", "streams.retraining", "streams.publishing",
          "streams.serving")
WIRING = ("streams.app", "streams.worker", "streams.cli", "streams.dev")
FAUST_MODULES = {"streams.app", "streams.worker"}
# training's root: its job entry and what else its __init__ defines, and nothing below it
TRAINING_ROOT = {"training"} | {f"training.{name}" for name in ("run", "DistillConfig", "RunResult",
                                                                  "held_out", "is_main_process")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of everything a module imports, lazy imports included: for ``from a
    import b`` both ``a`` and ``a.b`` (b may be a submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: relative import (ruff TID252 bans them)"
            module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _modules() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for package in PACKAGES
            for p in sorted((ROOT / package).rglob("*.py"))}


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _ours(imports: set[str]) -> set[str]:
    return {i for i in imports if _within(i, OURS)}


def _allowed(module: str) -> tuple[str, ...] | None:
    """Prefixes ``module`` may import of ours (training's root is checked apart); None: any."""
    if _within(module, ("models",)):
        return ("models",)
    if _within(module, ("streams.core",)):
        return ("streams.core", "models")
    if _within(module, ("training",)):
        return ("training", "streams.core", "models")
    for k, stage in enumerate(STAGES):
        if _within(module, (stage,)):
            return ("streams.core", "models") + STAGES[k:]
    if _within(module, ("streams.ops",)):
        return ("streams.core", "models", "streams.ops")
    if _within(module, WIRING) or module == "streams":
        return None
    raise AssertionError(f"{module} is in no layer of the import contract: put it in one")


def _violations() -> dict[str, list[str]]:
    bad = {}
    for module, imports in _modules().items():
        allowed = _allowed(module)
        wrong = []
        for name in sorted(_ours(imports)):
            if _within(name, ("bench",)):
                wrong.append(name)  # not shipped
            elif allowed is None or _within(name, allowed):
                continue
            elif name in TRAINING_ROOT and not _within(module, ("streams.core",)):
                continue  # training's job entry: what every stage and ops may call
            else:
                wrong.append(name)
        if wrong:
            bad[module] = wrong
    return bad


def test_every_package_module_is_seen_and_in_a_layer():
    modules = _modules()
    assert {"streams.app", "models.students", "training.pipeline", "streams.core.storage.base",
            "streams.ingest.consumer", "streams.serving.lookup", "streams.cli.bench"} <= set(modules)
    for module in modules:
        _allowed(module)  # raises for a module outside every layer


def test_every_module_imports_only_layers_below_it():
    assert not _violations()


def test_the_training_root_names_exist():
    for name in TRAINING_ROOT - {"training"}:
        assert getattr(training, name.removeprefix("training."))


def test_the_contract_catches_an_upward_import(tmp_path, monkeypatch):
    """The check can fail: a stage importing an upstream stage, core importing a stage, and a
    stage reaching past training's root are each reported."""
    cases = {"streams/serving/x.py": "from streams.ingest.consumer import ClickIngest\n",
             "streams/core/x.py": "from streams.publishing import promotion\n",
             "streams/publishing/x.py": "from training.pipeline import run\n"}
    for relative, text in cases.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    for package in ("models", "training"):
        (tmp_path / package).mkdir(exist_ok=True)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert set(_violations()) == {"streams.serving.x", "streams.core.x", "streams.publishing.x"}


def test_only_the_worker_wiring_imports_faust():
    bad = {m: sorted(i for i in imps if _within(i, ("faust", "mode")))
           for m, imps in _modules().items() if m not in FAUST_MODULES}
    assert not {m: i for m, i in bad.items() if i}, bad
