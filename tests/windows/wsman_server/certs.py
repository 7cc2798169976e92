"""Generated test PKI: a CA, a server certificate for 127.0.0.1/localhost, an expired one."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    expired_cert: Path
    expired_key: Path
    other_ca_cert: Path


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _ca(name: str):
    key = _key()
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subj).issuer_name(subj).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key, ca_cert, not_before, not_after):
    key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + not_before).not_valid_after(now + not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca("guestprep test CA")
    _, other = _ca("some other CA")
    k1, c1 = _leaf(ca_key, ca, dt.timedelta(days=-1), dt.timedelta(days=10))
    k2, c2 = _leaf(ca_key, ca, dt.timedelta(days=-30), dt.timedelta(days=-2))
    pem = serialization.Encoding.PEM
    p = Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "expired.pem", d / "expired.key", d / "other-ca.pem")
    p.ca_cert.write_bytes(ca.public_bytes(pem))
    p.other_ca_cert.write_bytes(other.public_bytes(pem))
    p.server_cert.write_bytes(c1.public_bytes(pem))
    p.expired_cert.write_bytes(c2.public_bytes(pem))
    _write_key(k1, p.server_key)
    _write_key(k2, p.expired_key)
    return p
