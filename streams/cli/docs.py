"""``pairstream docs``: rewrite the generated parts of the docs (settings table, module map)."""

from __future__ import annotations

from pathlib import Path

from streams.cli.common import command


def register(sub) -> None:
    p = command(sub, "docs", cmd_docs, help="rewrite the generated tables of README.md and docs/ (make docs)",
                description="""Rewrites, in a source checkout, the README's settings table (from the
                    settings class) and docs/development.md's module map (from each module's
                    docstring, first sentence). Tests fail while either file holds another table.""")
    p.add_argument("--root", default=".", help="the checkout's root (default: here)")


def cmd_docs(args) -> int:
    from streams.cli.settings import readme_with_settings
    from streams.core.config import Settings
    from streams.dev.module_map import markdown_table, with_table

    root = Path(args.root)
    readme = root / "README.md"
    readme.write_text(readme_with_settings(readme.read_text(), Settings.markdown_table()))
    development = root / "docs" / "development.md"
    development.write_text(with_table(development.read_text(), markdown_table(root)))
    print(f"rewrote the settings table of {readme} and the module map of {development}")
    return 0
