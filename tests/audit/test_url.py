"""The one SQLite URL reader: agrees with SQLAlchemy, and config, CLI and engine use it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from deid_node.audit.db import open_audit
from deid_node.cli.app import app
from deid_node.config import load_config
from deid_node.database_url import sqlite_file, sqlite_memory, sqlite_url, with_sqlite_file

URLS = [
    "sqlite://",
    "sqlite:///",
    "sqlite:///:memory:",
    "sqlite:///var/audit.db",
    "sqlite:////srv/deid/audit.db",
    "sqlite+pysqlite:///var/audit.db",
    "sqlite:///var/audit.db?timeout=30",
    "sqlite:///var/audit.db?mode=memory",
    "sqlite:///var/audit.db?mode=memory&mode=ro",
    "sqlite:///file:audit.db?mode=ro&uri=true",
    "sqlite:///file:mem?mode=memory&cache=shared&uri=true",
    "sqlite:///a%20b%3Fc.db",
    "sqlite://user:pw@host:1/x.db",
    "postgresql+psycopg://user@host/deid",
    "postgresql://user:p/w@host:5432/deid?sslmode=require",
]


@pytest.mark.parametrize("url", URLS)
def test_agrees_with_sqlalchemy(url: str) -> None:
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    database = parsed.database or ""
    memory = is_sqlite and (database in ("", ":memory:") or parsed.query.get("mode") == "memory")
    caller_managed = database.startswith("file:")
    assert sqlite_memory(url) == memory
    expected = Path(database) if is_sqlite and not memory and not caller_managed else None
    assert sqlite_file(url) == expected


@pytest.mark.parametrize("url", [u for u in URLS if sqlite_file(u) is not None])
def test_with_sqlite_file_keeps_the_rest(url: str) -> None:
    path = Path("/data/50% ?done/audit.db")
    changed = with_sqlite_file(url, path)
    before, after = make_url(url), make_url(changed)
    assert after.database == str(path)
    assert sqlite_file(changed) == path
    assert after.set(database=before.database) == before


def test_sqlite_url_of_an_odd_path(tmp_path: Path) -> None:
    path = tmp_path / "100%?" / "audit.db"
    assert sqlite_url(Path("/srv/audit.db")) == "sqlite:////srv/audit.db"
    assert sqlite_file(sqlite_url(path)) == path
    open_audit(sqlite_url(path)).close()  # the engine creates the very file the URL names
    assert path.is_file()


def test_with_sqlite_file_needs_a_file_url() -> None:
    with pytest.raises(ValueError, match="not an SQLite URL"):
        with_sqlite_file("postgresql://host/deid", Path("/x.db"))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///state/audit.db", "sqlite:///{base}/state/audit.db"),
        (
            "sqlite+pysqlite:///state/audit.db?timeout=30",
            "sqlite+pysqlite:///{base}/state/audit.db?timeout=30",
        ),
        ("sqlite:////srv/audit.db", "sqlite:////srv/audit.db"),
        ("sqlite://", "sqlite://"),
        ("sqlite:///state/audit.db?mode=memory", "sqlite:///state/audit.db?mode=memory"),
        ("sqlite:///file:audit.db?uri=true", "sqlite:///file:audit.db?uri=true"),
        ("postgresql://host/deid", "postgresql://host/deid"),
    ],
)
def test_config_resolves_relative_files_against_its_folder(
    tmp_path: Path, url: str, expected: str
) -> None:
    config = tmp_path / "conf" / "deid-node.toml"
    config.parent.mkdir()
    config.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    base = config.parent.resolve()
    assert load_config(config).database_url == expected.format(base=base)


def test_config_default_is_the_data_dir_file(tmp_path: Path) -> None:
    config = tmp_path / "deid-node.toml"
    config.write_text('[node]\ndata_dir = "state"\n', encoding="utf-8")
    cfg = load_config(config)
    assert sqlite_file(cfg.database_url) == (tmp_path / "state" / "audit.db").resolve()


def test_cli_refuses_a_missing_file_but_not_memory(tmp_path: Path) -> None:
    config = tmp_path / "deid-node.toml"
    config.write_text('[database]\nurl = "sqlite:///no%20such/audit.db"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["audit", "--config", str(config)])
    missing = tmp_path.resolve() / "no such" / "audit.db"
    assert result.exit_code == 1
    assert f"Error: audit database {missing} not found" in result.output
    assert not missing.parent.exists()

    config.write_text('[database]\nurl = "sqlite://"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["audit", "--config", str(config)])
    assert (result.exit_code, result.output.strip()) == (0, "0 rows")
