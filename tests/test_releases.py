"""The operating system releases easycluster knows (pure)."""

from __future__ import annotations

import pytest

from easycluster import releases
from easycluster.facts import parse_facts


@pytest.mark.parametrize("os_id, version, known, described, short", [
    ("debian", "13", True, "Debian 13 (trixie)", "Debian 13"),
    ("debian", "12", True, "Debian 12 (bookworm)", "Debian 12"),
    ("debian", "11", False, "debian 11", "Debian 11"),
    ("debian", "", False, "debian", "debian"),                 # testing/sid: no VERSION_ID
    ("ubuntu", "24.04", False, "ubuntu 24.04", "ubuntu 24.04"),
    ("", "", False, "unknown", "unknown"),
])
def test_a_release_is_known_described_and_shortened(os_id, version, known, described, short):
    assert releases.known(os_id, version) is known
    assert releases.describe(os_id, version) == described
    assert releases.short(os_id, version) == short


@pytest.mark.parametrize("package, otp", [
    ("1:27.3.4.1+dfsg-1+deb13u4", "27.3.4.1"),
    ("1:25.2.3+dfsg-1+deb12u4", "25.2.3"),
    ("1:26.2.5-1", "26.2.5"),
    (None, None),
    ("", None),
])
def test_the_erlang_package_version_reads_as_otps(package, otp):
    assert releases.erlang_short(package) == otp


@pytest.mark.parametrize("hosts, mixed", [
    ({"a": "Debian 13 (trixie)", "b": "Debian 13 (trixie)"}, {}),
    ({"a": "Debian 12 (bookworm)", "b": "Debian 13 (trixie)", "c": "Debian 12 (bookworm)"},
     {"Debian 12 (bookworm)": ["a", "c"], "Debian 13 (trixie)": ["b"]}),
    ({}, {}),
])
def test_mixed_releases_are_grouped_by_release(hosts, mixed):
    assert releases.mixed(hosts) == mixed


def test_the_fact_probe_reports_the_release_and_erlang():
    f = parse_facts("lab1", "os_id=debian\nos_version=13\nos_codename=trixie\n"
                            "erlang_version=1:27.3.4.1+dfsg-1+deb13u4\nend=1\n")
    assert (f.os_release, f.os_codename, f.erlang_version) == ("Debian 13 (trixie)", "trixie",
                                                               "1:27.3.4.1+dfsg-1+deb13u4")


@pytest.mark.parametrize("version, release, upstream", [
    ("24.12-3+deb13u2", "13", "24.12"),
    ("26.07-1~bpo13+1", "13", "26.07"),
    ("24.12-3~bpo12+1", "12", "24.12"),
    ("23.01-1", "12", "23.01"),
    ("24.12-3", "13", "24.12"),
    ("1:25.2.3+dfsg-1+deb12u4", "12", "25.2.3+dfsg"),
    ("99.1-1", None, "99.1"),
])
def test_a_package_version_names_its_release_and_upstream(version, release, upstream):
    assert releases.release_of(version) == release
    assert releases.upstream(version) == upstream


def test_every_release_has_a_mnesia_protocol_and_a_codename():
    assert set(releases.MNESIA_PROTOCOL) == set(releases.DEBIAN)
    assert releases.codename("13") == "trixie"


@pytest.mark.parametrize("name, version_id", [("bookworm", "12"), ("trixie", "13"), ("12", "12"), ("sid", None)])
def test_a_release_named_by_codename_or_version_id(name, version_id):
    assert releases.version_id(name) == version_id
