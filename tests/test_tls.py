"""TLS for the Erlang distribution on a real lab ("tls", 3 hosts): deploy, add-master and status
over TLS; from lab3, outside the cluster, only a node with a certificate of the cluster CA and
the right cookie gets in.
"""

from __future__ import annotations

import stat
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from conftest import fab, own_lab, ssh
from easycluster import paths, tls
from easycluster.inventory import Node
from easycluster.secrets import generate_cookie

pytestmark = pytest.mark.lab

LAB = "tls"


@pytest.fixture(scope="module")
def tlslab(tmp_path_factory):
    with own_lab(LAB, 3) as lab:
        yield _tls_inventories(lab, tmp_path_factory.mktemp("tls"))


def _tls_inventories(lab, tmp):
    """TLS on; the inventories "one" (lab1) and "two" (lab1, lab2)."""
    data = yaml.safe_load(lab.inventory.read_text())
    data["cluster"]["distribution"]["tls"] = True
    inventories = {}
    for name, hosts in (("one", ["lab1"]), ("two", ["lab1", "lab2"])):
        data["nodes"] = [{"host": h} for h in hosts]
        inventories[name] = tmp / f"{name}.yml"
        inventories[name].write_text(yaml.safe_dump(data))
    lab.tls_inventories = inventories
    lab.tls_dir = lab.cookie_file.parent / f"{LAB}-dist-tls"
    return lab


def run(lab, *args, inventory: str, check: bool = True):
    return fab(*args, "--inventory", str(lab.tls_inventories[inventory]), lab=LAB, check=check, timeout=900)


def test_deploy_add_master_and_status_over_tls(tlslab):
    out = run(tlslab, "deploy", inventory="one").stdout
    assert "ca.pem, node.pem, node.key, ssl_dist.conf" in out, out
    args = ssh(tlslab, "lab1", "ps -eww -o args | grep '[b]eam.smp'").stdout
    assert "-proto_dist inet_tls -ssl_dist_optfile /etc/ejabberd/dist-tls/ssl_dist.conf" in args
    out = run(tlslab, "add-master", "--host", "lab2", inventory="two").stdout
    assert "cluster: 2 members, 2 masters (healthy)" in out, out
    status = run(tlslab, "status", inventory="two").stdout
    assert "cluster: healthy" in status
    assert "no changes" in run(tlslab, "deploy", inventory="two").stdout

    # the CA and the nodes' keys: kept locally like the cookie; on hosts the key is ejabberd's only
    assert stat.S_IMODE(tlslab.tls_dir.stat().st_mode) == 0o700
    for f in tlslab.tls_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    ca = x509.load_pem_x509_certificate((tlslab.tls_dir / "ca.pem").read_bytes())
    for h in ("lab1", "lab2"):
        assert ssh(tlslab, h, f"stat -c '%a %U' {paths.DIST_TLS_KEY}").stdout.split() == ["400", "ejabberd"]
        cert = x509.load_pem_x509_certificate(ssh(tlslab, h, f"cat {paths.DIST_TLS_CERT}").stdout.encode())
        assert tls.usable(cert, ca, h)
        key_body = (tlslab.tls_dir / f"ejabberd@{h}.key").read_text().splitlines()[1]
        assert key_body not in out + status
    # switching a running cluster between TLS and plain TCP would split it: refused
    plain = yaml.safe_load(tlslab.tls_inventories["two"].read_text())
    plain["cluster"]["distribution"]["tls"] = False
    tlslab.tls_inventories["plain"] = tlslab.tls_inventories["two"].with_name("plain.yml")
    tlslab.tls_inventories["plain"].write_text(yaml.safe_dump(plain))
    refused = run(tlslab, "plan", inventory="plain", check=False)
    assert refused.returncode == 1 and "the running node's distribution is TLS" in refused.stderr


def _put(lab, path: str, data: str) -> None:
    """A file on lab3 by stdin: keys and cookies never on a command line."""
    subprocess.run(["ssh", "-F", str(lab.ssh_config), "lab3", f"umask 077; cat > {path}"],
                   input=data, text=True, check=True, timeout=60)


def probe(lab, cookie: str, cert: str) -> str:
    """net_adm:ping(ejabberd@lab1) from lab3 with this cookie (its file) and `cert`: "tcp" (no
    TLS), "none" (TLS, no client certificate), "foreign" (another CA's) or "cluster" (the CA's)."""
    d = f"/tmp/probe-{uuid.uuid4().hex[:8]}"
    ssh(lab, "lab3", f"install -d -m 700 {d}")
    _put(lab, f"{d}/.erlang.cookie", cookie)
    args = ""
    if cert != "tcp":
        ca_pem = (lab.tls_dir / "ca.pem").read_text()
        ca_key, ca_cert = tls._ca(lab.tls_dir, LAB, save=False)
        issuer = tls._ca(Path("/nonexistent"), "foreign", save=False) if cert == "foreign" else (ca_key, ca_cert)
        mine = tls._node(Path("/nonexistent"), Node("lab3", "probe@lab3", None), *issuer, ca_pem, save=False)
        _put(lab, f"{d}/ca.pem", ca_pem)          # the probe trusts the cluster: only lab1 can refuse
        _put(lab, f"{d}/cert.pem", mine.cert_pem)
        _put(lab, f"{d}/key.pem", mine.key_pem.reveal())
        own = "" if cert == "none" else f'{{certfile, "{d}/cert.pem"}}, {{keyfile, "{d}/key.pem"}}, '
        _put(lab, f"{d}/dist.conf",
             f'[{{server, [{{certfile, "{d}/cert.pem"}}, {{keyfile, "{d}/key.pem"}}, {{cacertfile, "{d}/ca.pem"}}]}},'
             f' {{client, [{own}{{cacertfile, "{d}/ca.pem"}}, {{verify, verify_peer}}]}}].\n')
        args = f"-proto_dist inet_tls -ssl_dist_optfile {d}/dist.conf"
    out = ssh(lab, "lab3", f"chmod 400 {d}/.erlang.cookie; cd {d} && HOME={d} timeout 40 erl "
                           f"-sname probe{uuid.uuid4().hex[:6]} {args} -noshell "
                           f"-eval 'io:format(\"~p~n\", [net_adm:ping(ejabberd@lab1)]), halt().'; rm -rf {d}",
              check=False).stdout.split()
    # TLS alerts may be logged after the answer: pick the answer itself
    return next((word for word in reversed(out) if word in ("pong", "pang")), " ".join(out[-5:]))


def test_only_a_certificate_of_the_cluster_ca_and_the_cookie_get_in(tlslab):
    ssh(tlslab, "lab3", "export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null && "
                        "apt-get install -y -q --no-install-recommends erlang-base erlang-ssl >/dev/null",
        timeout=300)
    cookie = tlslab.cookie_file.read_text().strip()
    # lab3 is no node of this cluster: lab1's firewall shuts it out whatever it holds...
    assert probe(tlslab, cookie, "cluster") == "pang", "a host outside the cluster got in"
    # ...so let it through the firewall for the probes below: they test TLS and the cookie
    lab3 = tlslab.ip("lab3")
    ssh(tlslab, "lab1", f"nft add element inet easycluster members {{ {lab3} }}")
    try:
        assert probe(tlslab, cookie, "tcp") == "pang", "plain TCP got in"
        assert probe(tlslab, cookie, "none") == "pang", "a TLS client without a certificate got in"
        assert probe(tlslab, cookie, "foreign") == "pang", "another CA's certificate got in"
        assert probe(tlslab, generate_cookie().reveal(), "cluster") == "pang", "a wrong cookie got in"
        # the probe works: with both, it is in
        assert probe(tlslab, cookie, "cluster") == "pong"
    finally:
        ssh(tlslab, "lab1", f"nft delete element inet easycluster members {{ {lab3} }}")
    assert "cluster: healthy" in run(tlslab, "status", inventory="two").stdout


def test_switching_tls_off_takes_a_full_stop_then_deploy(tlslab):
    # (the refusal of a rolling switch is checked in the first test)
    fab("stop-cluster", "--inventory", str(tlslab.tls_inventories["two"]), lab=LAB, timeout=300)
    out = run(tlslab, "deploy", inventory="plain").stdout
    assert "cluster: 2 members, 2 masters (healthy)" in out, out
    assert "-proto_dist" not in ssh(tlslab, "lab1", "ps -eww -o args | grep '[b]eam.smp'").stdout
    # the same plain-TCP probe that got pang over TLS now gets in
    lab3 = tlslab.ip("lab3")    # no node of the cluster: let through lab1's firewall for the probe
    ssh(tlslab, "lab1", f"nft add element inet easycluster members {{ {lab3} }}")
    try:
        assert probe(tlslab, tlslab.cookie_file.read_text().strip(), "tcp") == "pong"
    finally:
        ssh(tlslab, "lab1", f"nft delete element inet easycluster members {{ {lab3} }}")
