"""TLS for the Erlang distribution, the pure parts: the CA and node certificates, the inventory
switch, the files rendered for hosts, the plan (no lab)."""

from __future__ import annotations

import datetime as dt
import stat
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from casefacts import holding
from easycluster import plan as planmod
from easycluster import paths, tls
from easycluster.errors import EasyClusterError, InventoryError
from easycluster.facts import HostFacts, parse_facts
from easycluster.inventory import parse_inventory
from easycluster.plan import make_plan
from easycluster.paths import EJABBERD_DEFAULT
from easycluster.render import managed_files
from easycluster.secrets import Secret

COOKIE = Secret("C" * 40)
HOSTS = ["lab1", "lab2"]
IPS = {"lab1": "10.9.0.11", "lab2": "10.9.0.12"}


def inventory(tmp_path: Path, tls_on: bool = True, **dist) -> "Inventory":  # noqa: F821
    data = {"cluster": {"name": "t", "ejabberd_version": "23.01-1", "domains": ["t.test"],
                        "cookie": {"file": "secrets/t.cookie"},
                        "distribution": {"tls": tls_on, **dist}},
            "nodes": [{"host": h} for h in HOSTS]}
    return parse_inventory(yaml.safe_dump(data), tmp_path / "inv.yml")


def test_the_ca_and_node_certificates_are_made_once_kept_0600_and_reused(tmp_path):
    inv = inventory(tmp_path)
    assert inv.cluster.dist_tls_dir == tmp_path / "secrets" / "t-dist-tls"
    first = tls.materials(inv, create=True)
    d = inv.cluster.dist_tls_dir
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["ca.key", "ca.pem"] + [f"ejabberd@{h}.{ext}" for h in HOSTS for ext in ("key", "pem")])
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in d.iterdir())
    ca = x509.load_pem_x509_certificate(first["ejabberd@lab1"].ca_pem.encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for h in HOSTS:
        cert = x509.load_pem_x509_certificate(first[f"ejabberd@{h}"].cert_pem.encode())
        cert.verify_directly_issued_by(ca)
        assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.DNSName) == [h]
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku)
        assert "PRIVATE KEY" not in repr(first[f"ejabberd@{h}"])
    again = tls.materials(inv, create=True)
    assert again == first, "a second deploy must not make new certificates (it would restart every node)"


def test_a_dry_run_writes_nothing(tmp_path):
    inv = inventory(tmp_path)
    made = tls.materials(inv, create=False)
    assert set(made) == {"ejabberd@lab1", "ejabberd@lab2"}
    assert not inv.cluster.dist_tls_dir.exists()


def test_tls_off_needs_nothing(tmp_path):
    inv = inventory(tmp_path, tls_on=False)
    assert tls.materials(inv, create=True) == {} and inv.cluster.dist_tls_dir is None
    assert not any(mf.path.startswith(paths.DIST_TLS_DIR) for mf in managed_files(inv, inv.nodes[0], IPS["lab1"], COOKIE))


def test_certificates_of_another_ca_another_host_or_near_expiry_are_not_reused(tmp_path, monkeypatch):
    inv = inventory(tmp_path)
    made = tls.materials(inv, create=True)
    d = inv.cluster.dist_tls_dir
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate(made["ejabberd@lab1"].cert_pem.encode())
    assert tls.usable(cert, ca, "lab1")
    assert not tls.usable(cert, ca, "lab2")
    _, other_ca = tls._ca(tmp_path / "nowhere", "other", save=False)
    assert not tls.usable(cert, other_ca, "lab1")
    # a certificate about to expire is made again at the next deploy
    soon = tls._now() + dt.timedelta(days=tls.NODE_DAYS - 10)
    assert tls.usable(cert, ca, "lab1")
    monkeypatch.setattr(tls, "_now", lambda: soon)
    assert not tls.usable(cert, ca, "lab1")


def test_a_readable_key_is_refused(tmp_path):
    inv = inventory(tmp_path)
    tls.materials(inv, create=True)
    (inv.cluster.dist_tls_dir / "ca.key").chmod(0o644)
    with pytest.raises(EasyClusterError, match="readable by others"):
        tls.materials(inv, create=True)


@pytest.mark.parametrize("cookie, dist, expect", [
    ({"env": "C"}, {"tls": True}, (None, "cluster.distribution.tls_dir: required with cookie.env")),
    ({"env": "C"}, {"tls": True, "tls_dir": "/etc/x"}, (Path("/etc/x"), None)),
    ({"file": "s/c.cookie"}, {"tls": True, "tls_dir": "d"}, ("REL:d", None)),
    ({"file": "s/c.cookie"}, {"tls": "yes"}, (None, "cluster.distribution.tls: must be true or false")),
    ({"file": "s/c.cookie"}, {"tsl": True}, (None, "did you mean 'tls'")),
])
def test_inventory_tls_switch(tmp_path, cookie, dist, expect):
    data = {"cluster": {"name": "t", "ejabberd_version": "23.01-1", "domains": ["t.test"], "cookie": cookie,
                        "distribution": dist}, "nodes": [{"host": "lab1"}]}
    want_dir, error = expect
    if error:
        with pytest.raises(InventoryError) as exc:
            parse_inventory(yaml.safe_dump(data), tmp_path / "inv.yml")
        assert error in str(exc.value)
        return
    inv = parse_inventory(yaml.safe_dump(data), tmp_path / "inv.yml")
    if isinstance(want_dir, str):
        want_dir = tmp_path / want_dir[4:]
    assert inv.cluster.dist_tls and inv.cluster.dist_tls_dir == want_dir


def test_hosts_get_the_ca_their_certificate_their_key_as_a_secret_and_erl_options(tmp_path):
    inv = inventory(tmp_path)
    mat = tls.materials(inv, create=True)
    files = {mf.path: mf for mf in managed_files(inv, inv.nodes[0], IPS["lab1"], COOKIE, mat["ejabberd@lab1"])}
    key = files[paths.DIST_TLS_KEY]
    assert key.secret and (key.mode, key.owner) == (0o400, "ejabberd") and key.restart
    assert files[paths.DIST_TLS_CERT].content == mat["ejabberd@lab1"].cert_pem and not files[paths.DIST_TLS_CERT].secret
    assert files[paths.DIST_TLS_CA].content == mat["ejabberd@lab1"].ca_pem
    conf = files[paths.DIST_TLS_OPTFILE].content
    assert conf.count("{verify, verify_peer}") == 2 and conf.count("{fail_if_no_peer_cert, true}") == 1
    assert f'{{keyfile, "{paths.DIST_TLS_KEY}"}}' in conf
    assert f"-proto_dist inet_tls -ssl_dist_optfile {paths.DIST_TLS_OPTFILE}" in files[EJABBERD_DEFAULT].content
    assert list(files).index(paths.DIST_TLS_OPTFILE) < list(files).index(EJABBERD_DEFAULT)
    with pytest.raises(EasyClusterError, match="no distribution certificate"):
        managed_files(inv, inv.nodes[0], IPS["lab1"], COOKIE)


def _facts(inv, host, mat, running=True, tls_running=True) -> HostFacts:
    f = HostFacts(host=host, os_id="debian", os_version="12", addresses=[IPS[host]], resolves=dict(IPS), systemd=True, nft=True,
                  ejabberd_version="23.01-1", erlang_version="1:25.2.3", plugin_sha256="p" * 64)
    files_inv = inv if tls_running else replace(inv, cluster=replace(inv.cluster, dist_tls=False))
    holding(f, managed_files(files_inv, inv.node(host), IPS[host], COOKIE, mat.get(f"ejabberd@{host}"),
                             members=list(IPS.values())))
    if running:
        f.ctl_status, f.beam_running, f.mnesia_schema = 0, True, True
        f.cluster_status = {"node": f"ejabberd@{host}", "db_nodes": [f"ejabberd@{h}" for h in HOSTS],
                            "running_db_nodes": [f"ejabberd@{h}" for h in HOSTS], "registered_users": 0}
    return f


def test_plan_converged_over_tls_a_new_key_is_redacted_and_switching_live_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(planmod, "plugin_sha256", lambda: "p" * 64)
    inv = inventory(tmp_path)
    mat = tls.materials(inv, create=True)
    facts = {h: _facts(inv, h, mat) for h in HOSTS}
    assert make_plan(inv, facts, COOKIE, mat).steps == []
    del facts["lab1"].secret_sha256[paths.DIST_TLS_KEY]
    steps = make_plan(inv, facts, COOKIE, mat).steps
    assert [(s.kind, s.host) for s in steps] == [("write", "lab1"), ("restart", "lab1")]
    assert steps[0].diff == f"{paths.DIST_TLS_KEY}: created (content redacted)\n"
    # a running plain-TCP cluster and an inventory asking for TLS: refused, per node
    plain = {h: _facts(inv, h, mat, tls_running=False) for h in HOSTS}
    problems = make_plan(inv, plain, COOKIE, mat).problems
    assert [(p.host, p.check) for p in problems] == [("lab1", "distribution"), ("lab2", "distribution")]
    assert "fab stop-cluster" in problems[0].fix
    # stopped, the switch is fine: every node starts with it at once
    stopped = {h: _facts(inv, h, mat, running=False, tls_running=False) for h in HOSTS}
    assert not make_plan(inv, stopped, COOKIE, mat).problems


def test_facts_read_secret_files_as_hashes():
    f = parse_facts("h", f"secret:{paths.DIST_TLS_KEY}={'a' * 64}\nsecret:/x=\nend=1\n")
    assert f.secret_sha256 == {paths.DIST_TLS_KEY: "a" * 64, "/x": None}
