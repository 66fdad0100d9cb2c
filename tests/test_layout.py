"""The shared, Faust-free parts stay Faust-free (training imports them; DESIGN.md)."""

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
