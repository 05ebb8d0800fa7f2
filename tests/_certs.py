"""Self-signed certificates made at test time (``cryptography``), for servers on 127.0.0.1.

A self-signed leaf is its own CA: clients trust it by being given the
certificate file (``--cacert``, ``verify=``).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertificateFiles:
    cert: str
    key: str

    @property
    def serve_args(self) -> tuple[str, str, str, str]:
        """The ``sse-fast serve`` options that serve HTTPS with these files."""
        return ("--tls-cert", self.cert, "--tls-key", self.key)


def _pem_key(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def self_signed(directory: Path, name: str = "server") -> CertificateFiles:
    """``name.crt`` and ``name.key`` in ``directory``: P-256, valid a day, for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_pem_key(key))
    return CertificateFiles(str(cert_path), str(key_path))


def other_key(directory: Path, password: bytes | None = None) -> str:
    """A private key that belongs to no certificate (``password``: encrypted with it)."""
    path = directory / ("encrypted.key" if password else "other.key")
    path.write_bytes(_pem_key(ec.generate_private_key(ec.SECP256R1()), password))
    return str(path)
