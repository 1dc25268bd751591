"""Print the README's config key tables from their declarations (deid_node/config_keys.py).

Run from the repository root::

    .venv/bin/python scripts/config_table.py           # print every table
    .venv/bin/python scripts/config_table.py --write   # put them in README.md

tests/test_config_keys.py fails while README.md differs from what --write would make.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deid_node.config_keys import README_TABLES, markdown_table, with_readme_tables

README = Path(__file__).resolve().parents[1] / "README.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    args = parser.parse_args()
    if args.write:
        text = README.read_text(encoding="utf-8")
        README.write_text(with_readme_tables(text), encoding="utf-8")
        return
    for name, tables in README_TABLES.items():
        print(f"{name}:\n{markdown_table(tables)}")


if __name__ == "__main__":
    main()
