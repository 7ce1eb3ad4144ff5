"""A small certificate authority for one fleet: the CA, the broker's certificate, gateway client certificates.

Keys are ECDSA P-256 (small, fast on a Pi, accepted by Mosquitto, EMQX, VerneMQ and
HiveMQ). Private keys are written with mode 0600 from the start. A gateway's client
certificate carries ``<site>/<gateway>`` as its Common Name: with Mosquitto's
``use_identity_as_username`` that becomes the user the ACL knows.

>>> ca = make_ca("Test fleet CA")
>>> broker = issue_certificate(ca, "broker", dns_names=["localhost"], ip_addresses=["127.0.0.1"], server=True)
>>> gw = issue_certificate(ca, "net3/gw-01")
>>> common_name(gw.cert), verify_signed_by(gw.cert, ca.cert), verify_signed_by(gw.cert, make_ca("other").cert)
('net3/gw-01', True, False)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.security.secrets import write_private_file

CA_DAYS = 10 * 365
# 825 days is the longest lifetime many TLS clients still accept for a leaf certificate.
LEAF_DAYS = 825


@dataclass(frozen=True)
class KeyPair:
    """A private key and the certificate of its public key."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "frugalsense"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> dt.datetime:
    # A minute back: a gateway whose clock is slightly behind still accepts a fresh certificate.
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)


def make_ca(common_name: str = "frugalsense fleet CA", days: int = CA_DAYS) -> KeyPair:
    """A new self-signed fleet CA that signs the broker's and the gateways' certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(key, cert)


def issue_certificate(
    ca: KeyPair,
    common_name: str,
    *,
    dns_names: list[str] = (),
    ip_addresses: list[str] = (),
    server: bool = False,
    days: int = LEAF_DAYS,
) -> KeyPair:
    """A leaf certificate signed by ``ca``: a server one (with names to verify) or a client one."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    names = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if server and not names:
        raise ValueError("a server certificate needs at least one DNS name or IP address clients will connect to")
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return KeyPair(key, builder.sign(ca.key, hashes.SHA256()))


def common_name(cert: x509.Certificate) -> str:
    """The Common Name a certificate was issued to (``<site>/<gateway>`` for a gateway)."""
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` signed ``cert`` directly."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def write_pair(pair: KeyPair, cert_path: Path, key_path: Path) -> None:
    """Certificate readable by all (it is public), key by its owner only."""
    key_pem = pair.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(key_path, key_pem)
    cert_path.write_bytes(pair.cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, 0o644)


def load_pair(cert_path: Path, key_path: Path) -> KeyPair:
    """Read a certificate and its private key from PEM files; ValueError if the key is not the certificate's."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise ValueError(f"{key_path} is not the private key of {cert_path}")
    return KeyPair(key, cert)
