"""The secret key file's rules and the TLS configuration."""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import pytest

from deid_node.config import load_config
from deid_node.deid.secret import SECRET_ENV, load_secret
from deid_node.errors import ConfigError
from deid_node.net.server_tls import server_context


def test_key_created_once_with_mode_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    path = tmp_path / "var" / "secret.key"
    key = load_secret(path)
    assert len(key) == 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_secret(path) == key  # not regenerated


def test_key_readable_by_others_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    path = tmp_path / "secret.key"
    load_secret(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"readable by others .*chmod 600"):
        load_secret(path)


def test_env_overrides_and_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "ab" * 32)
    assert load_secret(tmp_path / "none.key", create=False) == b"\xab" * 32
    monkeypatch.setenv(SECRET_ENV, "not hex")
    with pytest.raises(ConfigError, match="expected hex"):
        load_secret(tmp_path / "none.key")


def make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate made with openssl for the test (never a real one)."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_config_and_context(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "node")
    cfg_path = tmp_path / "deid.toml"
    cfg_path.write_text(
        f'[node.tls]\ncertificate = "{cert.name}"\nkey = "{key.name}"\n'
        f'ca_bundle = "{cert.name}"\nrequire_client_cert = true\n'
    )
    cfg = load_config(cfg_path)
    assert cfg.node.tls is not None and cfg.node.tls.certificate == cert
    ctx = server_context(cfg.node.tls)
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    cfg_path.write_text('[node.tls]\ncertificate = "a"\nkey = "b"\nrequire_client_cert = true\n')
    with pytest.raises(ConfigError, match=r"node\.tls\.ca_bundle: is required"):
        load_config(cfg_path)
    cfg_path.write_text('[node.tls]\ncertificate = "missing.crt"\nkey = "missing.key"\n')
    tls = load_config(cfg_path).node.tls
    assert tls is not None
    with pytest.raises(ConfigError, match="cannot load certificate"):
        server_context(tls)
