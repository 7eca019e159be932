"""`wallwhale certs dev`: a local certificate authority and the certificates a development setup
with TLS needs, made with the `cryptography` package.

    ca.pem / ca-key.pem                    the local CA (reused when it exists, so trust survives)
    server.pem / server-key.pem            Envoy's public certificate (WALLWHALE_TLS_CERT_FILE/_KEY_FILE)
    instance.pem / instance-key.pem        a server instance's certificate for mutual TLS with Envoy
    envoy-client.pem / envoy-client-key.pem  Envoy's client certificate towards the instances

Leaf certificates name `localhost`, 127.0.0.1, ::1 and every --host; only the CA may sign. Keys are
ECDSA P-256, written 0600 into a 0700 folder.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
# Browsers refuse server certificates valid for more than 398 days.
LEAF_DAYS = 397
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DevCertificates:
    directory: Path
    ca_created: bool
    names: tuple[str, ...]

    def path(self, name: str) -> Path:
        return self.directory / name


def _write_private(path: Path, data: bytes) -> None:
    """Writes `data` readable by the owner only, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _subject_alt_names(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _load_or_create_ca(
    directory: Path, now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    if cert_path.is_file() and key_path.is_file():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an ECDSA key")
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "WallWhale development CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, True


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    names: Iterable[str],
    usage: x509.ObjectIdentifier,
    now: datetime.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(_subject_alt_names(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def make_dev_certificates(directory: Path, hosts: Iterable[str] = ()) -> DevCertificates:
    """Creates (or reuses) the CA in `directory` and issues fresh leaf certificates."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca, ca_key, created = _load_or_create_ca(directory, now)
    names = tuple(dict.fromkeys([*hosts, *DEFAULT_NAMES]))
    leaves = (
        ("server", "WallWhale edge", ExtendedKeyUsageOID.SERVER_AUTH),
        ("instance", "WallWhale instance", ExtendedKeyUsageOID.SERVER_AUTH),
        ("envoy-client", "WallWhale Envoy", ExtendedKeyUsageOID.CLIENT_AUTH),
    )
    for stem, common_name, usage in leaves:
        cert, key = _leaf(ca, ca_key, common_name, names, usage, now)
        _write_private(directory / f"{stem}-key.pem", _key_pem(key))
        (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return DevCertificates(directory, created, names)


def instructions(made: DevCertificates) -> str:
    """What to set and how to trust the CA, for the person who ran the command."""
    d = made.directory.resolve()
    verb = "Created a new" if made.ca_created else "Reused the"
    return f"""{verb} development CA and issued certificates for: {", ".join(made.names)}
in {d} (keys 0600). Never use them in production.

TLS at Envoy (scripts/run.sh):
  export WALLWHALE_TLS_CERT_FILE={d}/server.pem WALLWHALE_TLS_KEY_FILE={d}/server-key.pem
Mutual TLS between Envoy and the instances (optional):
  export WALLWHALE_UPSTREAM_TLS_CA_FILE={d}/ca.pem
  export WALLWHALE_UPSTREAM_TLS_CERT_FILE={d}/instance.pem
  export WALLWHALE_UPSTREAM_TLS_KEY_FILE={d}/instance-key.pem
  export WALLWHALE_UPSTREAM_TLS_CLIENT_CERT_FILE={d}/envoy-client.pem
  export WALLWHALE_UPSTREAM_TLS_CLIENT_KEY_FILE={d}/envoy-client-key.pem

Trust the CA ({d}/ca.pem):
  curl:             curl --cacert {d}/ca.pem https://localhost:8080/v1/status
  Python, Node:     pass it to the client (see the README), or NODE_EXTRA_CA_CERTS={d}/ca.pem
  Debian/Ubuntu:    sudo cp {d}/ca.pem /usr/local/share/ca-certificates/wallwhale-dev.crt
                    sudo update-ca-certificates
  macOS:            sudo security add-trusted-cert -d -r trustRoot \\
                        -k /Library/Keychains/System.keychain {d}/ca.pem
  Firefox/Chromium: import ca.pem as an authority in the browser's certificate settings"""
