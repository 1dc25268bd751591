"""The client side of DICOM TLS towards a destination (no pynetdicom: check-config uses it)."""

from __future__ import annotations

import ssl

from deid_node.config import ClientTlsConfig
from deid_node.errors import ConfigError

__all__ = ["client_context"]


def client_context(tls: ClientTlsConfig, name: str) -> ssl.SSLContext:
    """A TLS 1.2+ client context that checks the destination's certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    where = f"destination '{name}', tls"
    try:
        if tls.ca_bundle is not None:
            ctx.load_verify_locations(cafile=tls.ca_bundle)
        if tls.certificate is not None and tls.key is not None:
            ctx.load_cert_chain(tls.certificate, tls.key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        raise ConfigError(f"{where}: cannot load the certificates or key: {reason}") from None
    return ctx
