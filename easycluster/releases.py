"""The operating system releases easycluster runs clusters on (pure: no host is contacted).

A host's release is read by the fact probe from /etc/os-release (ID, VERSION_ID,
VERSION_CODENAME). Debian 13 "trixie" is Debian's stable release (ejabberd 24.12 on OTP 27,
systemd 257, PostgreSQL 17); Debian 12 "bookworm" is oldstable (ejabberd 23.01 on OTP 25, 24.12
in its backports, systemd 252, PostgreSQL 15). Any other release is refused by preflight,
named: nothing easycluster does has been proven there.
"""

from __future__ import annotations

import re

# Debian's VERSION_ID -> codename, newest first: the releases easycluster supports.
DEBIAN = {"13": "trixie", "12": "bookworm"}


def known(os_id: str, version: str) -> bool:
    return os_id == "debian" and version in DEBIAN


def describe(os_id: str, version: str) -> str:
    """'Debian 13 (trixie)' for a release easycluster knows; else what the host says it is
    ('fedora 12', 'debian 11', 'unknown')."""
    if known(os_id, version):
        return f"Debian {version} ({DEBIAN[version]})"
    return f"{os_id or 'unknown'} {version}".strip()


def short(os_id: str, version: str) -> str:
    """'Debian 13', as status prints it."""
    return f"Debian {version}" if os_id == "debian" and version else describe(os_id, version)


def supported() -> str:
    return " and ".join(f"Debian {v} ({c})" for v, c in DEBIAN.items())


def erlang_short(package_version: str | None) -> str | None:
    """erlang-base's Debian version as OTP's: '1:27.3.4.1+dfsg-1+deb13u4' -> '27.3.4.1'."""
    if not package_version:
        return None
    upstream = package_version.split(":", 1)[-1]
    return upstream.split("+", 1)[0].split("-", 1)[0]


def mixed(releases: dict[str, str]) -> dict[str, list[str]]:
    """host -> release description, grouped: {release: [hosts]} when they are not all one."""
    by_release: dict[str, list[str]] = {}
    for host, release in releases.items():
        by_release.setdefault(release, []).append(host)
    return by_release if len(by_release) > 1 else {}


def listed(groups: dict[str, list[str]]) -> str:
    """mixed()'s groups as one line: 'Debian 12 (bookworm) on lab1, lab2; Debian 13 (trixie) on lab3'."""
    return "; ".join(f"{release} on {', '.join(hosts)}" for release, hosts in groups.items())


# Debian's version of a package names the release it was built for: +debNNuM (a stable
# update), ~bpoNN+M (a backport to release NN). A release's original version carries neither
# and is listed here: ejabberd's as each release shipped it.
ORIGINAL_EJABBERD = {"23.01-1": "12", "24.12-3": "13"}
# Mnesia's protocol (mnesia:system_info(protocol_version)) of each release's OTP, read on the
# lab's hosts (2026-12-07): nodes of two releases share tables only where these match.
MNESIA_PROTOCOL = {"12": "8.6", "13": "8.6"}
# PostgreSQL's major version in each release (its `postgresql` package): a replicated database's
# members run one release (15 and 17 do not replicate to each other)
POSTGRESQL = {"12": "15", "13": "17"}


def release_of(version: str) -> str | None:
    """The Debian release a package version was built for: '24.12-3+deb13u2' -> '13',
    '24.12-3~bpo12+1' -> '12', '23.01-1' -> '12'; None when the version does not say."""
    found = re.search(r"(?:\+deb|~bpo)(\d+)", version)
    if found:
        return found.group(1)
    return ORIGINAL_EJABBERD.get(version)


def upstream(version: str) -> str:
    """ejabberd's own version in a Debian version: '1:24.12-3+deb13u2' -> '24.12'."""
    return version.split(":", 1)[-1].rsplit("-", 1)[0]


def shipped(version_id: str) -> str | None:
    """The ejabberd a release ships (upstream): '13' -> '24.12'."""
    return next((upstream(v) for v, r in ORIGINAL_EJABBERD.items() if r == version_id), None)


def version_id(name: str) -> str | None:
    """'bookworm' -> '12'; a VERSION_ID ('12') as it is; None for a release easycluster does not know."""
    if name in DEBIAN:
        return name
    return next((v for v, c in DEBIAN.items() if c == name), None)


def codename(version_id: str) -> str:
    """'13' -> 'trixie' (a release easycluster knows)."""
    return DEBIAN[version_id]
