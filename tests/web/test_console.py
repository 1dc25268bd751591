"""The web console against a real audit database filled by a real node."""

from __future__ import annotations

import http.cookiejar
import logging
import re
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from deid_node.audit.db import open_audit
from deid_node.audit.schema import OBJECT_COLUMNS
from deid_node.cli.app import app as cli
from deid_node.config import Config, load_config
from deid_node.deid.secret import load_secret
from deid_node.errors import ConfigError
from deid_node.runtime.node import Node
from deid_node.testing.loopback import deid_node_command, free_port
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from deid_node.web.app import create_app, session_key_path
from deid_node.web.limiter import LOGIN_FAILURES, LoginLimiter
from tests.support.node import CT_SOURCE, audit_associations, console_user, node_table
from tests.support.pki import Pki
from tests.support.scu import echo, store
from tests.support.waiting import wait_for

runner = CliRunner()
PASSWORD = "correct horse battery"
CONFIG = node_table() + CT_SOURCE


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


class Served:
    """`deid-node web` in its own process, as deployed; its stderr kept in a file."""

    def __init__(self, cfg: Config, tmp_path: Path, extra: str = "") -> None:
        self.port = free_port()
        config = tmp_path / "served.toml"
        text = Path(str(cfg.path)).read_text(encoding="utf-8")
        config.write_text(text + f"\n[web]\nport = {self.port}\n{extra}", encoding="utf-8")
        self.stderr = tmp_path / "web-stderr.log"
        self._err = self.stderr.open("wb")
        self.proc = subprocess.Popen(
            [*deid_node_command(), "web", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=self._err,
        )
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        wait_for(lambda: self.get("/login")[0] == 200, 60, "the web console to answer")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.url(path), headers=headers or {}))

    def post(self, path: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode()
        return self._open(urllib.request.Request(self.url(path), data, headers))

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def close(self) -> str:
        """Stop it; what it wrote on stderr."""
        self.proc.terminate()
        self.proc.wait(30)
        self._err.close()
        return self.stderr.read_text(encoding="utf-8", errors="replace")


def web_events(cfg: Config) -> list[dict[str, object]]:
    with open_audit(cfg.database_url) as db:
        return list(db.users.iter_events(1000))


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
    served = Served(filled, tmp_path)  # it answers /login: see Served
    try:
        assert served.get("/api/objects")[0] == 401
    finally:
        served.close()


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
    pki: Pki,
) -> None:
    import ssl

    port = free_port()
    config = tmp_path / "web-tls.toml"
    config.write_text(
        Path(str(filled.path)).read_text(encoding="utf-8")
        + f'\n[web]\nport = {port}\n[web.tls]\ncertificate = "{pki.server_cert}"\n'
        f'key = "{pki.server_key}"\n',
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [*deid_node_command(), "web", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
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


# -- hostile clients: forwarded addresses, the login limit, sessions that end, bad numbers ---


@pytest.fixture
def console(write_config: Callable[[str], Config]) -> Config:
    """A config, its audit database and a user `alice`; no node (nothing stored)."""
    cfg = write_config(CONFIG)
    console_user(cfg, "alice", PASSWORD)
    return cfg


@pytest.fixture
def web(console: Config) -> Iterator[TestClient]:
    with TestClient(create_app(console), base_url="http://127.0.0.1") as c:
        yield c


def test_a_forged_x_forwarded_for_from_loopback_is_not_believed(
    console: Config, tmp_path: Path
) -> None:
    # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: a client on
    # the console's own machine (or a proxy that passes the header on) could pick its
    # address, escape the per-address limit and write any address into the web audit.
    served = Served(console, tmp_path)
    try:
        statuses = []
        for i in range(30):
            page = served.get("/login")[1]
            token = re.search(r'name="csrf" value="([^"]+)"', page)
            assert token, page[:300]
            form = {"username": "alice", "password": "wrong password", "csrf": token.group(1)}
            forged = {"X-Forwarded-For": f"203.0.113.{i + 1}"}
            statuses.append(served.post("/login", form, forged)[0])
    finally:
        served.close()
    assert statuses == [401] * LOGIN_FAILURES + [429] * (30 - LOGIN_FAILURES)
    logins = [e for e in web_events(console) if str(e["kind"]).startswith("login")]
    assert len(logins) == 30 and {e["peer_address"] for e in logins} == {"127.0.0.1"}


def test_the_console_process_believes_a_configured_proxy(console: Config, tmp_path: Path) -> None:
    served = Served(console, tmp_path, 'trusted_proxies = ["127.0.0.0/8"]')
    try:
        token = re.search(r'name="csrf" value="([^"]+)"', served.get("/login")[1])
        assert token
        form = {"username": "alice", "password": PASSWORD, "csrf": token.group(1)}
        assert served.post("/login", form, {"X-Forwarded-For": "198.51.100.9"})[0] == 200
    finally:
        served.close()
    [login] = [e for e in web_events(console) if e["kind"] == "login"]
    assert login["peer_address"] == "198.51.100.9"


def client_at(cfg: Config, host: str) -> TestClient:
    return TestClient(create_app(cfg), base_url="http://127.0.0.1", client=(host, 40000))


def with_web(console: Config, tmp_path: Path, lines: str) -> Config:
    path = tmp_path / "proxied.toml"
    path.write_text(
        Path(str(console.path)).read_text(encoding="utf-8") + f"\n[web]\n{lines}\n",
        encoding="utf-8",
    )
    return load_config(path)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_behind_a_trusted_proxy_the_forwarded_address_counts_and_names_are_limited(
    console: Config, tmp_path: Path
) -> None:
    cfg = with_web(console, tmp_path, 'trusted_proxies = ["10.1.2.3", "192.168.0.0/16"]')
    assert [str(n) for n in cfg.web.trusted_proxies] == ["10.1.2.3/32", "192.168.0.0/16"]
    clock = Clock()
    with client_at(cfg, "192.168.7.7") as proxy:
        proxy.app.state.limiter = LoginLimiter(clock)  # type: ignore[attr-defined]
        statuses, refusals = [], []
        for i in range(30):  # every try from a new address: the user name is what limits
            headers = {"X-Forwarded-For": f"198.51.100.{i + 1}"}
            token = csrf(proxy)
            data = {"username": "alice", "password": "not the password", "csrf": token}
            answer = proxy.post("/login", data=data, headers=headers, follow_redirects=False)
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                refusals.append(answer.headers["retry-after"])
        assert statuses == [401] * LOGIN_FAILURES + [429] * (30 - LOGIN_FAILURES)
        assert set(refusals) == {"1"}  # refused tries do not lengthen the wait
        clock.now += 1.5  # a delay, not a lock: the user gets in a moment later
        data = {"username": "alice", "password": PASSWORD, "csrf": csrf(proxy)}
        first = {"X-Forwarded-For": "198.51.100.1"}
        assert proxy.post("/login", data=data, headers=first, follow_redirects=False).is_redirect
    logins = [e for e in web_events(cfg) if str(e["kind"]).startswith("login")]
    assert logins[0]["kind"] == "login" and logins[0]["peer_address"] == "198.51.100.1"
    assert {e["peer_address"] for e in logins[1:]} == {f"198.51.100.{i + 1}" for i in range(30)}
    refused = [e for e in logins if e["kind"] == "login_refused"]
    assert len(refused) == 25 and refused[0]["detail"] == "too many failed logins for this user"


def test_the_delay_per_user_name_doubles_up_to_a_minute() -> None:
    clock = Clock()
    limiter = LoginLimiter(clock)
    waits = []
    for i in range(LOGIN_FAILURES + 10):
        refusal = limiter.refusal(f"10.0.0.{i}", "alice")
        if refusal is not None:
            waits.append(refusal.seconds)
            clock.now += refusal.seconds
            assert limiter.refusal(f"10.0.0.{i}", "alice") is None
        limiter.failed(f"10.0.0.{i}", "alice")
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert limiter.refusal("10.0.1.1", "bob") is None  # other names are not slowed
    clock.now += 301  # forgotten after the window: one failure is one again
    limiter.failed("10.0.1.1", "alice")
    assert limiter.refusal("10.0.1.2", "alice") is None


def test_trusted_proxies_must_be_addresses(console: Config, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        with_web(console, tmp_path, 'trusted_proxies = ["127.0.0.1", "proxy.example"]')
    assert str(caught.value).endswith(
        "web.trusted_proxies[1]: 'proxy.example' is not an IP address or CIDR like 10.0.0.0/8"
    )


def logged_in_elsewhere(console: Config) -> TestClient:
    """A second browser: it logs in, its cookie is copied into a third (returned)."""
    with client_at(console, "127.0.0.1") as first:
        assert log_in(first) == 303
        cookie = first.cookies.get("deid_node_session")
    assert cookie
    copy = client_at(console, "127.0.0.1")
    copy.cookies.set("deid_node_session", cookie)
    assert copy.get("/api/dashboard").status_code == 200
    return copy


@pytest.mark.parametrize("how", ["logout", "password", "users logout", "users remove"])
def test_every_session_of_a_user_ends_with_logout_password_or_removal(
    web: TestClient, console: Config, how: str
) -> None:
    copied = logged_in_elsewhere(console)
    assert log_in(web) == 303
    path = str(console.path)
    if how == "logout":
        token = csrf(web, "/")
        web.post("/logout", data={"csrf": token}, follow_redirects=False)
    elif how == "password":
        changed = runner.invoke(
            cli, ["users", "password", "alice", "--password-stdin", "-c", path],
            input="a brand new password\n",
        )  # fmt: skip
        assert changed.exit_code == 0 and "sessions ended" in changed.output
    else:
        assert runner.invoke(cli, [*how.split(), "alice", "-c", path]).exit_code == 0
    for browser in (web, copied):
        assert browser.get("/api/dashboard").status_code == 401
        assert browser.get("/", follow_redirects=False).headers["location"] == "/login"
    if how == "password":
        assert log_in(web) == 401
        assert log_in(web, "a brand new password") == 303
    elif how != "users remove":
        assert log_in(web) == 303  # a new login works as before
    if how == "users remove":  # and once added again, the old cookies stay dead
        runner.invoke(
            cli, ["users", "add", "alice", "--password-stdin", "-c", path], input=PASSWORD + "\n"
        )
        assert copied.get("/api/dashboard").status_code == 401
    copied.close()


def test_users_logout_leaves_tokens_and_names_a_missing_user(console: Config) -> None:
    path = str(console.path)
    token = console_user(console, "bob", PASSWORD)
    assert runner.invoke(cli, ["users", "logout", "bob", "-c", path]).exit_code == 0
    with client_at(console, "127.0.0.1") as c:
        bearer = {"Authorization": f"Bearer {token}"}
        assert c.get("/api/dashboard", headers=bearer).status_code == 200
    missing = runner.invoke(cli, ["users", "logout", "carol", "-c", path])
    assert missing.exit_code == 1 and "no user 'carol'" in missing.output
    assert web_events(console)[0]["kind"] == "sessions_ended"


def test_the_session_key_is_not_the_pseudonym_key(console: Config) -> None:
    copied = logged_in_elsewhere(console)
    cookie = copied.cookies.get("deid_node_session")
    copied.close()
    # A new pseudonym key: sessions go on.
    console.node.secret_path.unlink(missing_ok=True)
    load_secret(console.node.secret_path)
    again = client_at(console, "127.0.0.1")
    again.cookies.set("deid_node_session", str(cookie))
    assert again.get("/api/dashboard").status_code == 200
    again.close()
    # A new session key: every session ends, pseudonyms are untouched.
    key = console.node.secret_path.read_bytes()
    session_key_path(console).unlink()
    fresh = client_at(console, "127.0.0.1")
    fresh.cookies.set("deid_node_session", str(cookie))
    assert fresh.get("/api/dashboard").status_code == 401
    fresh.close()
    assert console.node.secret_path.read_bytes() == key
    assert session_key_path(console).stat().st_mode & 0o077 == 0
    session_key_path(console).chmod(0o640)
    with pytest.raises(ConfigError, match=r"session key is readable by others .* chmod 600"):
        create_app(console)


HUGE = str(10**30)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/api/objects?offset={HUGE}"),
        ("GET", f"/api/objects?offset={2**63}"),
        ("GET", f"/api/associations?offset={HUGE}"),
        ("GET", f"/api/studies?offset={HUGE}"),
        ("GET", f"/api/jobs/{HUGE}"),
        ("GET", f"/api/jobs/{2**63}/download"),
        ("POST", f"/api/quarantine/{HUGE}/purge"),
        ("GET", "/api/instances/1.2.3/frames/0.png?window_center=inf&window_width=100"),
    ],
)
def test_numbers_out_of_range_are_a_4xx_with_a_message(
    web: TestClient, console: Config, method: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = console_user(console, "bob", PASSWORD)
    answer = web.request(method, path, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 422, answer.text  # not a 500 from the database
    detail = answer.json()["detail"]
    assert detail and ("less than or equal" in str(detail) or "finite" in str(detail))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_huge_number_or_a_client_leaving_mid_upload_logs_no_traceback(
    console: Config, tmp_path: Path
) -> None:
    token = console_user(console, "bob", PASSWORD)
    bearer = {"Authorization": f"Bearer {token}"}
    served = Served(console, tmp_path)
    try:
        assert served.get(f"/api/objects?offset={HUGE}", bearer)[0] == 422
        assert served.get(f"/api/jobs/{HUGE}", bearer)[0] == 422
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            head = (
                f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: multipart/form-data; boundary=b0undary\r\n"
                "Content-Length: 10000000\r\n\r\n"
                '--b0undary\r\nContent-Disposition: form-data; name="files"; '
                'filename="a.dcm"\r\n\r\n'
            )
            sock.sendall(head.encode() + b"\0" * 200_000)  # then the client is gone
        wait_for(
            lambda: "upload was cut off" in served.stderr.read_text(errors="replace"),
            60,
            "the console to notice the client left",
        )
        assert served.get("/login")[0] == 200  # and it serves on
    finally:
        stderr = served.close()
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr[-2000:]
    assert not list((console.node.data_dir / "jobs").glob("incoming-*"))  # nothing kept


def test_every_response_has_a_content_security_policy_and_no_referrer(web: TestClient) -> None:
    answers = [
        web.get("/login"),
        web.get("/static/style.css"),
        web.get("/api/objects"),
        web.get("/", follow_redirects=False),
        web.get("/no/such/page"),
    ]
    assert log_in(web) == 303
    answers += [web.get(p) for p in ("/", "/audit", "/studies", "/quarantine", "/jobs")]
    for answer in answers:
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
        assert answer.headers["referrer-policy"] == "no-referrer"


def test_no_template_holds_inline_script_or_style() -> None:
    # What the policy would block: an inline script, an on* handler, a javascript: URL,
    # a style attribute or element.
    folder = Path(str(resources.files("deid_node"))) / "web" / "templates"
    templates = sorted(folder.glob("*.html"))
    assert len(templates) >= 9
    for template in templates:
        text = template.read_text(encoding="utf-8")
        for body in re.findall(r"<script\b[^>]*>(.*?)</script>", text, flags=re.S | re.I):
            assert not body.strip(), template.name
        assert all(re.search(r"\bsrc=", tag) for tag in re.findall(r"<script\b[^>]*>", text))
        assert not re.search(r"<[^>]*\son[a-z]+\s*=", text, flags=re.I), template.name
        assert not re.search(r"javascript:|<style\b|\sstyle\s*=", text, flags=re.I), template.name


def test_the_dashboard_says_why_an_association_was_rejected(
    write_config: Callable[[str], Config], start_node: Callable[..., Node]
) -> None:
    cfg = write_config(CONFIG)
    node = start_node(cfg)
    assert echo(node.address, "STRANGER") != 0  # no [[sources]] entry: rejected
    wait_for(lambda: any(a["outcome"] == "rejected" for a in audit_associations(cfg)), 30, "row")
    console_user(cfg, "alice", PASSWORD)
    with TestClient(create_app(cfg), base_url="http://127.0.0.1") as client:
        assert log_in(client) == 303
        [rejected] = client.get("/api/dashboard").json()["recent_associations"]
        assert rejected["outcome"] == "rejected" and "STRANGER" in rejected["reason"]
        page = client.get("/").text
        assert "<th>why</th>" in page and "STRANGER" in page
