"""The inventory `fab lab.up` writes for a lab, so the toolkit reaches lab hosts like real ones."""

from __future__ import annotations

# The ejabberd each release's own suite has (not its backports): what a lab pins.
LAB_EJABBERD_VERSIONS = {"trixie": "24.12-3+deb13u2", "bookworm": "23.01-1"}


def lab_ejabberd_version(release: str) -> str:
    return LAB_EJABBERD_VERSIONS[release]


def render_lab_inventory(name: str, hosts: list[str], release: str, cookie_file: str, ssh_config: str) -> str:
    """The lab NAME's inventory: HOSTS as nodes, the version RELEASE's suite has pinned."""
    nodes = "".join(f"  - host: {h}\n" for h in hosts)
    return f"""\
# Inventory of the easycluster lab {name!r}, written by `fab lab.up`: edit a copy, not this file.
# The format is documented in README.md and inventory/example.yml. The version pinned is that of
# the first host's release ({release}).
cluster:
  name: {name}
  ejabberd_version: "{lab_ejabberd_version(release)}"
  domains: [{name}.test]
  admins: [admin@{name}.test]
  in_band_registration: true     # the tests register users over XMPP...
  registration_timeout: infinity #   ...many of them, from one address
  distribution:
    port_min: 4370
    port_max: 4379
    net_ticktime: 15   # partitions and dead peers are noticed in ~15 s instead of ~60
  cookie:
    file: {cookie_file}
ssh:
  config: {ssh_config}
nodes:
{nodes}"""
