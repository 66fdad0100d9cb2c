"""``pairstream settings``: every setting with its environment variable, default and meaning."""

from __future__ import annotations

import re
from pathlib import Path

from streams.cli.common import command

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def register(sub) -> None:
    p = command(sub, "settings", cmd_settings, help="every setting, its variable, default and meaning",
                description="""Prints the settings of every component (streams/core/config.py): the
                    environment variable, the default (the embedded mode) and what it does.
                    Precedence: defaults < TOML file (--config) < environment.""")
    p.add_argument("--markdown", action="store_true", help="as the README's Markdown table")
    p.add_argument("--update-readme", metavar="PATH",
                   help="rewrite the table between the settings markers of this file (make docs)")


def readme_with_settings(text: str, table: str) -> str:
    """``text`` with the block between the settings markers replaced by ``table``."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {BEGIN} ... {END} block")
    return pattern.sub(lambda _: f"{BEGIN}\n{table}\n{END}", text, count=1)


def cmd_settings(args) -> int:
    from streams.core.config import Settings

    if args.update_readme:
        path = Path(args.update_readme)
        path.write_text(readme_with_settings(path.read_text(), Settings.markdown_table()))
        return 0
    if args.markdown:
        print(Settings.markdown_table())
        return 0
    for env, default, doc in Settings.documentation():
        print(f"{env} = {default}\n    {doc}")
    return 0
