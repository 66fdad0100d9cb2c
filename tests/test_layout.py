"""The shared, Faust-free parts stay Faust-free (training imports them; docs/development.md, "Layout")."""

import subprocess
import sys


def test_storage_config_and_pairing_do_not_import_faust():
    code = ("import sys, streams.core.storage, streams.core.config, streams.ingest.sessions, streams.core.events, "
            "streams.dev.synthetic, streams.publishing.publisher, streams.serving.index, streams.serving.lookup, "
            "streams.retraining.launcher, streams.serving.watcher, streams.core.storage.snapshot, training.pipeline; "
            "print('faust' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_help_explains_commands():
    out = subprocess.run([sys.executable, "-m", "streams.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for command in ("generate", "replay", "worker", "demo", "bench", "publish", "models", "trainer"):
        assert command in out


def test_the_suite_mirrors_the_packages():
    """A test folder for a package that no longer exists (or a test left at the top for one that
    does) is how a suite drifts from the code; the folders must name real packages."""
    from tests.paths import REPO_ROOT

    tests = REPO_ROOT / "tests"
    for folder in (path.parent for path in tests.rglob("test_*.py") if path.parent != tests):
        package = REPO_ROOT / folder.relative_to(tests)
        assert (package / "__init__.py").is_file(), f"{folder} mirrors no package"
    top_level = {path.stem for path in tests.glob("test_*.py")}
    assert top_level == {"test_import_contract", "test_layout", "test_compose"}, top_level


def test_the_module_map_is_the_generated_one_and_every_module_says_what_it_is_for():
    """docs/development.md's module map is what ``make docs`` writes from the code: a module
    added, moved or re-described without ``make docs`` fails here, and so does one with no
    docstring (the map would have nothing to say of it)."""
    from streams.dev.module_map import markdown_table, modules, with_table
    from tests.paths import REPO_ROOT

    silent = [name for name, line in modules(REPO_ROOT) if not line and not name.endswith("__init__.py")]
    assert not silent, f"modules without a docstring: {silent}"
    text = (REPO_ROOT / "docs" / "development.md").read_text()
    assert with_table(text, markdown_table(REPO_ROOT)) == text, "run make docs"
