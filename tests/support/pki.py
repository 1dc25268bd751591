"""A throwaway PKI made with openssl: a CA, server and client certificates, a rogue one.

Every certificate is made by the test run (2 days, RSA 2048, in a tmp folder); none is real.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "/usr/bin/openssl"

# A config of our own for `openssl req`/`x509`, so the distribution's default extensions
# (which differ between versions) cannot add to or clash with the ones the test asks for.
OPENSSL_CNF = """
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[rogue]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
"""


@dataclass(frozen=True)
class Pki:
    """The test's throwaway CA and the certificates it issued (plus a rogue one)."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _openssl(*args: str, cnf: Path) -> None:
    done = subprocess.run(
        [OPENSSL, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "OPENSSL_CONF": str(cnf)},
    )
    assert done.returncode == 0, f"openssl {args[0]} failed: {done.stderr}"


def make_pki(d: Path) -> Pki:
    """Make, in folder d, the CA, a server certificate for localhost/127.0.0.1 and two
    client certificates (one issued by the CA, one self-signed)."""
    cnf = d / "openssl.cnf"
    cnf.write_text(OPENSSL_CNF, encoding="utf-8")
    common = ["-newkey", "rsa:2048", "-nodes", "-config", str(cnf)]

    def self_signed(name: str, cn: str, ext: str) -> tuple[Path, Path]:
        cert, key = d / f"{name}.crt", d / f"{name}.key"
        _openssl(
            "req", "-x509", *common, "-days", "2", "-subj", f"/CN={cn}",
            "-extensions", ext, "-keyout", str(key), "-out", str(cert), cnf=cnf,
        )  # fmt: skip
        return cert, key

    def issued(name: str, cn: str, ext: str, serial: int) -> tuple[Path, Path]:
        cert, key, csr = d / f"{name}.crt", d / f"{name}.key", d / f"{name}.csr"
        _openssl(
            "req", "-new", *common, "-subj", f"/CN={cn}", "-keyout", str(key),
            "-out", str(csr), cnf=cnf,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-set_serial", str(serial), "-days", "2", "-extfile", str(cnf),
            "-extensions", ext, "-out", str(cert), cnf=cnf,
        )  # fmt: skip
        return cert, key

    ca_cert, ca_key = self_signed("ca", "deid-node test CA", "ca")
    server_cert, server_key = issued("server", "localhost", "server", 1001)
    client_cert, client_key = issued("client", "CT_SCANNER", "client", 1002)
    rogue_cert, rogue_key = self_signed("rogue", "CT_SCANNER", "rogue")
    return Pki(ca_cert, server_cert, server_key, client_cert, client_key, rogue_cert, rogue_key)


def tls_table(pki: Pki, *, require_client_cert: bool = True) -> str:
    """The [node.tls] table of a node serving with the test's server certificate."""
    return f"""
[node.tls]
certificate = "{pki.server_cert}"
key = "{pki.server_key}"
ca_bundle = "{pki.ca_cert}"
require_client_cert = {"true" if require_client_cert else "false"}
"""


def client_context(pki: Pki, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """A client context trusting the test CA, presenting `cert` (None: no certificate)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx
