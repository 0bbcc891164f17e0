"""TLS for the Erlang distribution (`cluster.distribution.tls: true`).

The toolkit is the cluster's certificate authority: a CA key and certificate, and a key and
certificate per node, made here with `cryptography` and kept in a local secrets directory
(0700, files 0600, git-ignored), like the cookie. A node presents its certificate both as
server and as client (ejabberdctl's hidden node too, with the same files), and accepts only
peers whose certificate this CA signed: the cookie alone no longer lets anyone in.

Each node's certificate names its node name's host (DNS SAN): the client side checks it
against the host it connects to. Certificates are made once and reused; one that expires
within RENEW_DAYS, names another host or comes from another CA is made again.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import EasyClusterError
from .inventory import Inventory, Node
from .secrets import Secret

# on each host: paths.DIST_TLS_CA, DIST_TLS_CERT, DIST_TLS_KEY, DIST_TLS_OPTFILE (render.py writes them)
CA_DAYS = 3650
NODE_DAYS = 1825
RENEW_DAYS = 90


@dataclass(frozen=True)
class NodeTLS:
    ca_pem: str
    cert_pem: str
    key_pem: Secret


def materials(inv: Inventory, create: bool) -> dict[str, NodeTLS]:
    """Per node name, what its host needs; {} with TLS off. Without `create` (a dry run)
    nothing is written: what is missing is made in memory only, to show in the plan."""
    if not inv.cluster.dist_tls:
        return {}
    directory = inv.cluster.dist_tls_dir
    assert directory is not None
    if create:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, ca_cert = _ca(directory, inv.cluster.name, create)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    return {node.name: _node(directory, node, ca_key, ca_cert, ca_pem, create) for node in inv.nodes}


def _ca(directory: Path, cluster: str, save: bool):
    key_path, cert_path = directory / "ca.key", directory / "ca.pem"
    if key_path.exists() and cert_path.exists():
        return _read_key(key_path), x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"easycluster {cluster} distribution CA")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    if save:
        _write(key_path, _key_pem(key))
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _node(directory: Path, node: Node, ca_key, ca_cert, ca_pem: str, save: bool) -> NodeTLS:
    key_path, cert_path = directory / f"{node.name}.key", directory / f"{node.name}.pem"
    if key_path.exists() and cert_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if usable(cert, ca_cert, node.node_host):
            return NodeTLS(ca_pem, cert_path.read_text(), Secret(_key_pem(_read_key(key_path)).decode()))
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node.name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=NODE_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(node.node_host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    if save:
        _write(key_path, _key_pem(key))
        _write(cert_path, cert_pem)
    return NodeTLS(ca_pem, cert_pem.decode(), Secret(_key_pem(key).decode()))


def usable(cert: x509.Certificate, ca_cert: x509.Certificate, host: str) -> bool:
    """Signed by this CA, naming this host, and not about to expire."""
    try:
        cert.verify_directly_issued_by(ca_cert)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:   # another CA, a bad signature, no SAN: make a new one
        return False
    return (host in names.get_values_for_type(x509.DNSName)
            and cert.not_valid_after_utc - _now() > dt.timedelta(days=RENEW_DAYS))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _read_key(path: Path):
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise EasyClusterError(f"{path} is readable by others (mode {mode:04o}): chmod 600 {path}")
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _write(path: Path, data: bytes) -> None:
    """0600 from creation on; replaced atomically (a renewed certificate)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
