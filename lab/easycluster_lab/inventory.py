"""The inventory `fab lab.up` writes for a lab, so the toolkit reaches lab hosts like real ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lab import Lab

# The ejabberd each release's own suite has (not its backports): what a lab pins.
LAB_EJABBERD_VERSIONS = {"trixie": "24.12-3+deb13u2", "bookworm": "23.01-1"}


def lab_ejabberd_version(release: str) -> str:
    return LAB_EJABBERD_VERSIONS[release]


def render_lab_inventory(lab: "Lab", hosts: list[str]) -> str:
    nodes = "".join(f"  - host: {h}\n" for h in hosts)
    release = lab.release(hosts[0]) if hosts else "trixie"
    return f"""\
# Inventory of the easycluster lab {lab.name!r}, written by `fab lab.up`: edit a copy, not this file.
# The format is documented in README.md and inventory/example.yml. The version pinned is that of
# the first host's release ({release}).
cluster:
  name: {lab.name}
  ejabberd_version: "{lab_ejabberd_version(release)}"
  domains: [{lab.name}.test]
  admins: [admin@{lab.name}.test]
  in_band_registration: true     # the tests register users over XMPP...
  registration_timeout: infinity #   ...many of them, from one address
  distribution:
    port_min: 4370
    port_max: 4379
    net_ticktime: 15   # partitions and dead peers are noticed in ~15 s instead of ~60
  cookie:
    file: {lab.cookie_file}
ssh:
  config: {lab.ssh_config}
nodes:
{nodes}"""
