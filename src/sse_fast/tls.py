"""TLS for the edge and for our clients: contexts built from PEM files, errors that name the option.

The server's files are checked once, before an engine starts (granian loads
them again in each worker, the native engine uses the context built here), so
that a missing file, a key that is not the certificate's, or an encrypted
key is a one-line startup error rather than a traceback from a worker.
"""

from __future__ import annotations

import ssl

__all__ = ["MIN_TLS_VERSION", "check_server_files", "client_verify", "server_context"]

MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2
"""The oldest TLS both engines accept: 1.2 is still what many backends and proxies speak."""


def _no_password() -> bytes:
    """OpenSSL would prompt on the terminal for an encrypted key; a server must not wait there."""
    return b""


def _encrypted(key: str) -> bool:
    """Whether a PEM key file is encrypted (PKCS#8 ``ENCRYPTED PRIVATE KEY`` or OpenSSL's ``Proc-Type``)."""
    try:
        with open(key, "rb") as file:
            text = file.read(64 * 1024)
    except OSError:
        return False
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in text or b"Proc-Type: 4,ENCRYPTED" in text


def server_context(cert: str, key: str, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    """A server-side context for ``cert`` (PEM, the chain after the leaf) and its ``key`` (PEM, unencrypted).

    Raises :class:`ValueError` naming ``--tls-cert`` or ``--tls-key`` and the reason.
    """
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ValueError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        ssl.create_default_context(cafile=cert)
    except ssl.SSLError as exc:
        raise ValueError(f"--tls-cert: {cert} holds no PEM certificate ({exc.reason or exc})") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_TLS_VERSION
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(f"--tls-key: {key} is not the key of the certificate in {cert}") from None
        if _encrypted(key):
            raise ValueError(
                f"--tls-key: {key} is encrypted; give the key unencrypted, in a file only the server may read"
            ) from None
        raise ValueError(f"--tls-key: {key} holds no PEM private key") from None
    context.set_alpn_protocols(list(alpn))
    return context


def check_server_files(cert: str | None, key: str | None) -> None:
    """Both files or neither, and a usable pair (see :func:`server_context`)."""
    if (cert is None) != (key is None):
        given, missing = ("--tls-cert", "--tls-key") if cert is not None else ("--tls-key", "--tls-cert")
        raise ValueError(f"{missing}: required with {given} (TLS needs both the certificate and its key)")
    if cert is not None and key is not None:
        server_context(cert, key)


def client_verify(
    cacert: str | None = None, insecure: bool = False, option: str = "--cacert"
) -> ssl.SSLContext | bool:
    """What our clients hand httpx as ``verify``: the system's CAs, a CA file of one's own, or no check.

    ``cacert`` trusts the certificates in that PEM file (a self-signed
    server's own certificate, or a private CA) instead of the system's;
    ``insecure`` checks nothing (tests and debugging only).
    """
    if insecure:
        return False
    if cacert is None:
        return True
    try:
        return ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{option}: cannot use {cacert} as CA certificates: {exc}") from None
