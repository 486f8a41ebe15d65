"""Certificates for the TLS tests, made by the test with ``cryptography``: a CA, and
leaf certificates it signs (or that sign themselves, for a client the engine must
refuse), written as PEM files readable by the test's user only."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pem:
    """A certificate and key on disk; ``bundle`` holds both (baresip's sip_certificate)."""

    cert: Path
    key: Path
    bundle: Path
    serial: int


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return path


class Authority:
    """A CA that issues certificates into ``folder``."""

    def __init__(self, folder: Path, name: str = "ansim test CA") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.name = _name(name)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        slug = name.replace(" ", "-")
        self.path = _write(
            self.folder / f"{slug}.pem", self.cert.public_bytes(serialization.Encoding.PEM)
        )

    def issue(
        self,
        stem: str,
        cn: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = ("127.0.0.1",),
        self_signed: bool = False,
        days: int = 30,
    ) -> Pem:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alt: list[x509.GeneralName] = [x509.DNSName(d) for d in (cn, *dns)]
        alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn) if self_signed else self.name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        cert = builder.sign(key if self_signed else self.key, hashes.SHA256())
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Pem(
            cert=_write(self.folder / f"{stem}.crt", cert_pem),
            key=_write(self.folder / f"{stem}.key", key_pem),
            bundle=_write(self.folder / f"{stem}.pem", key_pem + cert_pem),
            serial=serial,
        )
