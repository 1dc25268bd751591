"""The web console against a real audit database filled by a real node."""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from deid_node.audit.db import open_audit
from deid_node.audit.schema import OBJECT_COLUMNS
from deid_node.cli.app import app as cli
from deid_node.config import Config
from deid_node.runtime.node import Node
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from deid_node.web.app import create_app
from deid_node.web.auth import LOGIN_FAILURES
from tests.conftest import console_user, free_port, node_table, store, wait_for, which_deid_node
from tests.test_tls import Pki
from tests.test_tls import pki as _pki  # noqa: F401  (its fixture, under this name)

runner = CliRunner()
PASSWORD = "correct horse battery"
CONFIG = (
    node_table()
    + """
[[sources]]
ae_title = "CT_SCANNER"
profile = "research"

[profiles.research]
"""
)


@pytest.fixture
def filled(
    write_config: Callable[[str], Config], start_node: Callable[..., Node], tmp_path: Path
) -> Config:
    """A node that stored 5 CT, its config, and a user `alice`."""
    cfg = write_config(CONFIG)
    node = start_node(cfg)
    patient = SyntheticPatient.make(PhiTokens(), 3)
    assert store(node.address, ct_series(5, patient=patient, seed=3), "CT_SCANNER") == [0] * 5
    assert node.wait_idle(60)
    console_user(cfg, "alice", PASSWORD)
    return cfg


@pytest.fixture
def client(filled: Config) -> Iterator[TestClient]:
    with TestClient(create_app(filled), base_url="http://127.0.0.1") as c:
        yield c


def csrf(client: TestClient, path: str = "/login") -> str:
    page = client.get(path)
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def log_in(client: TestClient, password: str = PASSWORD) -> int:
    token = csrf(client)
    data = {"username": "alice", "password": password, "csrf": token}
    return client.post("/login", data=data, follow_redirects=False).status_code


def events(cfg: Config) -> list[str]:
    with open_audit(cfg.database_url) as db:
        return [str(e["kind"]) for e in db.users.iter_events()]


def test_without_credentials_api_is_401_and_pages_go_to_login(client: TestClient) -> None:
    assert client.get("/api/objects").status_code == 401
    assert client.get("/api/dashboard").status_code == 401
    for page in ("/", "/audit"):
        response = client.get(page, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login"


def test_login_shows_the_dashboard_and_logout_needs_csrf(
    client: TestClient, filled: Config
) -> None:
    assert log_in(client, "wrong password!") == 401
    assert log_in(client) == 303
    cookie = client.cookies.get("deid_node_session")
    assert cookie
    page = client.get("/")
    assert page.status_code == 200 and "Dashboard" in page.text
    assert re.search(r"<th>today</th><td>5</td>", page.text)  # 5 stored today
    assert client.get("/api/dashboard").json()["today"]["stored"] == 5
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 403
    token = csrf(client, "/")
    assert client.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert client.get("/api/objects").status_code == 401
    assert events(filled)[:3] == ["logout", "login", "login_failed"]


def test_the_session_cookie_is_httponly_and_samesite(client: TestClient) -> None:
    token = csrf(client)
    response = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf": token},
        follow_redirects=False,
    )  # fmt: skip
    header = response.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=strict" in header


def test_a_login_without_the_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/login")
    data = {"username": "alice", "password": PASSWORD}
    assert client.post("/login", data=data, follow_redirects=False).status_code == 403
    data["csrf"] = "forged"
    assert client.post("/login", data=data, follow_redirects=False).status_code == 403


def test_failed_logins_are_limited_and_audited(client: TestClient, filled: Config) -> None:
    for _ in range(LOGIN_FAILURES):
        assert log_in(client, "not the password") == 401
    assert log_in(client) == 429  # the right password too, for a while
    kinds = events(filled)
    assert kinds.count("login_failed") == LOGIN_FAILURES and kinds[0] == "login_refused"


def test_api_token_filters_and_pagination(client: TestClient, filled: Config) -> None:
    made = runner.invoke(cli, ["users", "token", "alice", "-c", str(filled.path)])
    assert made.exit_code == 0  # a second token of the same user
    token = made.output.strip()
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/objects", headers={"Authorization": "Bearer nope"}).status_code == 401
    first = client.get("/api/objects?limit=2", headers=bearer).json()
    assert len(first["items"]) == 2 and first["next_offset"] == 2
    rest = client.get("/api/objects?limit=10&offset=2", headers=bearer).json()
    assert len(rest["items"]) == 3 and rest["next_offset"] is None
    received = [(r["received_at"], r["id"]) for r in first["items"] + rest["items"]]
    assert received == sorted(received, reverse=True)  # newest first
    assert len({r["id"] for r in first["items"] + rest["items"]}) == 5
    assert all("output_path" not in r for r in rest["items"])  # no server paths
    stored = client.get("/api/objects?status=stored&calling_ae=CT_SCANNER", headers=bearer)
    assert len(stored.json()["items"]) == 5
    none = client.get("/api/objects?status=quarantined", headers=bearer).json()
    assert none["items"] == []
    unknown = client.get("/api/objects?profile=nope", headers=bearer)
    assert unknown.status_code == 400 and "unknown profile 'nope'" in unknown.json()["detail"]
    bad = client.get("/api/objects?status=lost", headers=bearer)
    assert bad.status_code == 400 and "lost" in bad.json()["detail"]
    assoc = client.get("/api/associations?calling_ae=CT_SCANNER", headers=bearer).json()
    assert [a["objects"] for a in assoc["items"]] == [5] and assoc["next_offset"] is None
    assert client.get("/api/associations?outcome=lost", headers=bearer).status_code == 400
    csv_text = client.get("/api/objects.csv?status=stored", headers=bearer).text
    lines = csv_text.splitlines()
    assert lines[0] == ",".join(OBJECT_COLUMNS) and len(lines) == 6
    assert token not in "".join(str(e) for e in open_audit(filled.database_url).users.iter_events())


def test_the_audit_page_pages_and_filters(client: TestClient) -> None:
    assert log_in(client) == 303
    page = client.get("/audit?status=stored")
    assert page.status_code == 200
    assert page.text.count("<td>stored</td>") == 5
    assert 'rel="next"' not in page.text


def test_users_commands(filled: Config) -> None:
    path = str(filled.path)
    short = runner.invoke(
        cli, ["users", "add", "bob", "--password-stdin", "-c", path], input="short\n"
    )
    assert short.exit_code == 1 and "password too short" in short.output
    no_stdin = runner.invoke(cli, ["users", "add", "bob", "-c", path])
    assert no_stdin.exit_code == 1 and "--password-stdin" in no_stdin.output
    again = runner.invoke(
        cli, ["users", "add", "alice", "--password-stdin", "-c", path], input=PASSWORD + "\n"
    )
    assert again.exit_code == 1 and "exists already" in again.output
    listed = runner.invoke(cli, ["users", "list", "-c", path])
    assert "alice" in listed.output
    removed = runner.invoke(cli, ["users", "remove", "alice", "-c", path])
    assert removed.exit_code == 0
    gone = runner.invoke(cli, ["users", "remove", "alice", "-c", path])
    assert gone.exit_code == 1 and "no user 'alice'" in gone.output
    with open_audit(filled.database_url) as db:
        stored = [u.name for u in db.users.list()]
        assert stored == []


def test_deid_node_web_serves_on_its_own_port(filled: Config, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "web.toml"
    config.write_text(
        Path(str(filled.path)).read_text(encoding="utf-8") + f"\n[web]\nport = {port}\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [*which_deid_node(), "web", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as r:
                    return r.status == 200
            except (OSError, urllib.error.URLError):
                return False

        wait_for(answers, 60, "the web console to answer")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/objects", timeout=5)
            raise AssertionError("answered without credentials")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        proc.terminate()
        proc.wait(30)


def test_quarantine_is_listed_never_shown_and_acted_on_with_csrf(
    client: TestClient, filled: Config, start_node: Callable[..., Node]
) -> None:
    from deid_node.testing.synthetic import secondary_capture

    node = start_node(filled)
    patient = SyntheticPatient.make(PhiTokens(), 9)
    captures = [secondary_capture(patient, seed=i) for i in range(2)]
    assert store(node.address, captures, "CT_SCANNER") == [0, 0]
    assert node.wait_idle(60)
    assert log_in(client) == 303
    listed = client.get("/api/quarantine").json()
    assert len(listed) == 2 and all("burned-in" in e["reason"] for e in listed)
    assert all(set(e) == {"id", "received_at", "calling_ae", "profile", "reason"} for e in listed)
    page = client.get("/quarantine")
    assert page.status_code == 200 and str(patient.family) not in page.text
    first, second = (e["id"] for e in listed)
    assert client.post(f"/quarantine/{first}/purge", data={}).status_code == 403  # no CSRF
    token = csrf(client, "/quarantine")
    done = client.post(f"/quarantine/{first}/purge", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    retried = client.post(f"/api/quarantine/{second}/retry", headers={"X-CSRF-Token": token})
    assert retried.json()["status"] == "quarantined"  # the profile still says so
    assert [e["id"] for e in client.get("/api/quarantine").json()] == [second]
    assert events(filled)[:2] == ["quarantine_retry", "quarantine_purge"]


def test_deid_node_web_serves_https_with_web_tls(
    filled: Config,
    tmp_path: Path,
    _pki: Pki,  # noqa: F811  (the fixture imported above)
) -> None:
    import ssl

    port = free_port()
    config = tmp_path / "web-tls.toml"
    config.write_text(
        Path(str(filled.path)).read_text(encoding="utf-8")
        + f'\n[web]\nport = {port}\n[web.tls]\ncertificate = "{_pki.server_cert}"\n'
        f'key = "{_pki.server_key}"\n',
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [*which_deid_node(), "web", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ctx = ssl.create_default_context(cafile=str(_pki.ca_cert))
    try:

        def answers() -> bool:
            try:
                with urllib.request.urlopen(
                    f"https://localhost:{port}/login", context=ctx, timeout=2
                ):
                    return True
            except (OSError, urllib.error.URLError):
                return False

        wait_for(answers, 60, "the console over HTTPS")
        with urllib.request.urlopen(
            f"https://localhost:{port}/login", context=ctx, timeout=5
        ) as page:
            cookie = page.headers["set-cookie"].lower()
        assert "secure" in cookie  # the session cookie is Secure over HTTPS
    finally:
        proc.terminate()
        proc.wait(30)
