"""DICOM TLS: the server-side SSL context built from [node.tls]."""

from __future__ import annotations

import ssl

from deid_node.config import TlsConfig
from deid_node.errors import ConfigError


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """A TLS 1.2+ server context; client certificates checked against the CA bundle."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.certificate, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"node.tls: cannot load certificate {tls.certificate} / key {tls.key}: "
            f"{getattr(exc, 'strerror', None) or exc.__class__.__name__}"
        ) from None
    if tls.ca_bundle is not None:
        try:
            ctx.load_verify_locations(cafile=tls.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"node.tls.ca_bundle: cannot load {tls.ca_bundle}: "
                f"{getattr(exc, 'strerror', None) or exc.__class__.__name__}"
            ) from None
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    if tls.ca_bundle is None:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
