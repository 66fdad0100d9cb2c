"""The import contract of DESIGN.md, checked on every module's syntax tree (not on a
hand-picked list): ``models`` imports nothing of ours; ``training`` imports ``models`` and the
shared Faust-free storage of ``streams``; ``streams`` reaches ``training`` only through its job
entry points; only the worker's wiring imports Faust. A new module is covered the day it is
written, and a lazy import inside a function counts like a top-level one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("streams", "models", "training")

# what training may take from streams: the storage layer shared by both (DESIGN.md)
TRAINING_MAY_IMPORT_FROM_STREAMS = ("streams.storage",)
# training's job entry points: what streams may call
TRAINING_ENTRY = ("training", "training.config", "training.registry", "training.snapshot",
                  "training.distributed")
# the worker's wiring (Faust app, services, timers) and its process runner
FAUST_MODULES = {"streams.app", "streams.runtime"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of everything a module imports, lazy imports included."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # submodules by name
    return found


def _modules() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for package in PACKAGES
            for p in sorted((ROOT / package).rglob("*.py"))}


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_every_package_module_is_seen():
    modules = _modules()
    assert {"streams.app", "models.students", "training.pipeline", "streams.storage.base"} <= set(modules)


def test_models_import_nothing_of_ours():
    bad = {m: sorted(i for i in imps if _within(i, ("streams", "training")))
           for m, imps in _modules().items() if m.startswith("models")}
    assert not {m: i for m, i in bad.items() if i}


def test_training_imports_models_and_shared_storage_only():
    bad = {}
    for module, imps in _modules().items():
        if module.startswith("training"):
            wrong = sorted(i for i in imps if _within(i, ("streams",))
                           and not _within(i, TRAINING_MAY_IMPORT_FROM_STREAMS))
            if wrong:
                bad[module] = wrong
    assert not bad, bad


def test_streams_reaches_training_only_through_its_entry_points():
    bad = {}
    for module, imps in _modules().items():
        # benchmarks measure training's internals on purpose (issue 18 moves them to bench/)
        if module.startswith("streams") and not module.startswith("streams.benchmarks"):
            wrong = sorted(i for i in imps if _within(i, ("training",)) and i not in TRAINING_ENTRY
                           and i.rpartition(".")[0] not in TRAINING_ENTRY)
            if wrong:
                bad[module] = wrong
    assert not bad, bad


def test_only_the_worker_wiring_imports_faust():
    bad = {m: sorted(i for i in imps if _within(i, ("faust", "mode")))
           for m, imps in _modules().items() if m not in FAUST_MODULES}
    assert not {m: i for m, i in bad.items() if i}, bad


def test_the_shared_storage_imports_nothing_above_it():
    """streams.storage is what training shares: it may not pull in the rest of streams."""
    bad = {}
    for module, imps in _modules().items():
        if module.startswith("streams.storage"):
            wrong = sorted(i for i in imps if _within(i, ("streams", "training"))
                           and not _within(i, ("streams.storage",)))
            if wrong:
                bad[module] = wrong
    assert not bad, bad
