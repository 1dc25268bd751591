"""DICOM TLS (PS3.15 Annex B): the server-side SSL context built from [node.tls].

The handshake itself runs in each connection's thread (see
:class:`deid_node.net.pynetdicom_compat.GuardedAssociationServer`)."""

from __future__ import annotations

import logging
import ssl

from deid_node.config import TlsConfig
from deid_node.errors import ConfigError

log = logging.getLogger(__name__)


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


def log_handshake_failure(peer: str, exc: BaseException) -> None:
    """One warning line for a failed TLS handshake: the peer and why, no traceback."""
    log.warning("TLS handshake with %s failed: %s", peer, _handshake_error(exc))


def _handshake_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate not accepted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.__class__.__name__)
    if isinstance(exc, TimeoutError):
        return "handshake not completed within node.network_timeout"
    return getattr(exc, "strerror", None) or exc.__class__.__name__
