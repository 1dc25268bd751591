"""Shared fixtures: configs written in tmp_path, a real node on 127.0.0.1:0, tools and data.

Everything is real: associations over loopback, SQLite files, worker processes. Plain
helpers (SCU, dcmtk, the node's output and audit, PKI, pixels) live in tests/support/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deid_node.config import Config, load_config
from deid_node.pixels.detect import DetectorUnavailable, TextDetector
from deid_node.pixels.ocr import OcrUnavailable, TextFinder
from deid_node.runtime.node import Node
from deid_node.testing.loopback import free_port
from deid_node.testing.postgres import PostgresServer, server_bin
from tests.support.dcmtk import dcmtk_missing
from tests.support.pki import OPENSSL, Pki, make_pki


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (skipped only without Debian's binaries)."""
    bin_dir = server_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries missing: apt-get install postgresql")
    server = PostgresServer(bin_dir, free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Config]:
    """Write TOML text to tmp_path/deid-node.toml and load it (paths relative to tmp_path)."""

    def write(text: str) -> Config:
        path = tmp_path / "deid-node.toml"
        path.write_text(text, encoding="utf-8")
        return load_config(path)

    return write


@pytest.fixture
def start_node() -> Iterator[Callable[..., Node]]:
    """Start a Node on 127.0.0.1 port 0 (read ``node.address``); stopped after the test."""
    nodes: list[Node] = []

    def start(cfg: Config, **kwargs: Any) -> Node:
        node = Node(cfg, port=0, **kwargs)
        node.start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop(timeout=30)


@pytest.fixture
def dcmtk() -> None:
    """Skip (with the reason) when dcmtk's storescu/echoscu are not installed."""
    reason = dcmtk_missing()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA, a server certificate for localhost/127.0.0.1 and client certificates."""
    if not Path(OPENSSL).exists():
        pytest.skip(f"{OPENSSL} not found: install openssl")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def text_detector() -> TextDetector:
    """The process's text detector, as workers use it; skipped when it is missing."""
    from deid_node.pixels.release import shared_finder

    try:
        return shared_finder()
    except DetectorUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def text_finder() -> Iterator[TextFinder]:
    """One Tesseract engine for the burned-in text tests; skipped when it is missing."""
    try:
        engine = TextFinder()
    except OcrUnavailable as exc:
        pytest.skip(str(exc))
    with engine:
        yield engine
