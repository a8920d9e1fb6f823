"""The store's own certificate authority: signs the certificate of the store's broker and HTTPS API.

A store runs on a private network with no public name, so no public CA can vouch for it. Instead
every store gets a CA of its own, created once on the gateway; nodes and installer tools trust that
CA (its certificate, or its SHA-256 fingerprint shown to the installer) and nothing else, so a box
on the shop's Wi-Fi cannot pose as the broker. Keys are ECDSA P-256: small, fast on a Raspberry Pi,
and understood by OpenSSL (Mosquitto), Python's ssl and mobile TLS stacks alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CA_VALIDITY = dt.timedelta(days=3652)
# Apple platforms reject TLS server certificates valid for longer than 825 days, whoever issued them.
SERVER_VALIDITY = dt.timedelta(days=825)
# A server certificate this close to its end is issued anew when the configuration is regenerated.
RENEW_BEFORE = dt.timedelta(days=30)
_BACKDATE = dt.timedelta(hours=1)  # tolerate clocks of clients running a little behind


class CAError(Exception):
    """A CA or certificate file that cannot be used; str() names the file and the problem."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by its owner only, atomically (never a half-written key)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)  # O_CREAT's mode is ignored if tmp already existed
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as err:
        raise CAError(f"{path}: cannot read the private key: {err.strerror or err}") from None
    except (ValueError, TypeError) as err:
        raise CAError(f"{path}: not an unencrypted PEM private key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError(f"{path}: expected an EC private key, found {type(key).__name__}")
    return key


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as err:
        raise CAError(f"{path}: cannot read the certificate: {err.strerror or err}") from None
    except ValueError as err:
        raise CAError(f"{path}: not a PEM certificate: {err}") from None


def fingerprint_of(path: Path) -> str:
    """SHA-256 (lowercase hex of the DER) of the certificate in `path`."""
    return hashlib.sha256(_load_cert(path).public_bytes(serialization.Encoding.DER)).hexdigest()


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


class StoreCA:
    """A store's CA: its certificate and key, kept in one directory (the key readable by its owner only)."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, directory: Path) -> None:
        self.cert = cert
        self.key = key
        self.directory = directory

    @classmethod
    def load_or_create(cls, directory: Path, store_id: str) -> StoreCA:
        """The CA in `directory` (ca.pem, ca.key), created there on first use.

        Loading never replaces a CA: every node trusts it, so a new one would cut them all off.
        """
        directory = Path(directory)
        cert_path, key_path = directory / CA_CERT, directory / CA_KEY
        if cert_path.exists() or key_path.exists():
            missing = key_path if cert_path.exists() else cert_path
            if not missing.exists():
                raise CAError(f"{missing}: missing while {cert_path if missing == key_path else key_path} exists; "
                              "restore it from a backup (a new CA would need every node re-claimed)")
            cert, key = _load_cert(cert_path), _load_key(key_path)
            if not _same_key(cert, key):
                raise CAError(f"{key_path}: does not belong to the certificate {cert_path}")
            return cls(cert, key, directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CAError(f"{directory}: cannot create the CA's folder: {err.strerror or err}") from None
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "omnisense"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"omnisense {store_id} CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(key_path, _key_pem(key))  # key first: a cert without its key is unrecoverable
        write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key, directory)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate (DER), lowercase hex: what an installer compares by eye."""
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def issue_server_cert(self, cert_path: Path, key_path: Path, hostnames: list[str], ips: list[str]) -> bool:
        """Write a TLS server certificate for these names and addresses; True if written anew.

        Existing files are kept when the certificate is ours, not near its end and names exactly these
        hosts, so regenerating the configuration does not churn what clients see.
        """
        cert_path, key_path = Path(cert_path), Path(key_path)
        wanted = self._sans(hostnames, ips)
        key = _load_key(key_path) if key_path.exists() else None
        if key is not None and cert_path.exists():
            current = _load_cert(cert_path)
            if self._still_good(current, key, wanted):
                return False
        key = key or _new_key()
        now = _now()
        cn = hostnames[0] if hostnames else ips[0]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "omnisense"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + SERVER_VALIDITY, self.cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(wanted), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        write_private(key_path, _key_pem(key))
        write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return True

    @staticmethod
    def _sans(hostnames: list[str], ips: list[str]) -> list[x509.GeneralName]:
        if not hostnames and not ips:
            raise CAError("a server certificate needs at least one hostname or IP address")
        names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
        for ip in ips:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(ip)))
            except ValueError:
                raise CAError(f"not an IP address: {ip!r}") from None
        return names

    def _still_good(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                    wanted: list[x509.GeneralName]) -> bool:
        if not _same_key(cert, key) or cert.issuer != self.cert.subject:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        if cert.not_valid_after_utc - RENEW_BEFORE < _now():
            return False
        try:
            have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        return set(have) == set(wanted)
