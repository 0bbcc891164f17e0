"""The cookie's generation, local storage and the rotation's choice of a new cookie (pure: no lab)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from easycluster import secrets as cookie_secrets
from easycluster.ops.cookie_rotation import new_cookie, pending_path
from easycluster.errors import EasyClusterError
from easycluster.inventory import parse_inventory
from easycluster.secrets import (COOKIE_ALPHABET, MIN_COOKIE_LENGTH, Secret, create_cookie_file,
                                 generate_cookie, read_cookie_file)

INVENTORY = """
cluster:
  name: c
  ejabberd_version: "23.01-1"
  domains: [c.test]
  cookie: {cookie}
nodes:
  - host: n1
"""


def test_generated_cookies_are_long_random_and_from_the_secrets_module(monkeypatch):
    values = {generate_cookie().reveal() for _ in range(200)}
    assert len(values) == 200
    assert all(len(v) >= 32 and set(v) <= set(COOKIE_ALPHABET) for v in values)
    # the characters come from secrets.choice (the OS's CSPRNG), not from `random`
    monkeypatch.setattr(cookie_secrets.secrets, "choice", lambda seq: "Z")
    assert generate_cookie().reveal() == "Z" * len(next(iter(values)))


def test_a_new_cookie_file_is_0600_in_a_0700_directory_and_never_overwritten(tmp_path):
    path = tmp_path / "secrets" / "c.cookie"
    cookie = create_cookie_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_cookie_file(path) == cookie
    with pytest.raises(FileExistsError):
        create_cookie_file(path)


@pytest.mark.parametrize("content, mode, message", [
    ("A" * 48, 0o644, "readable by others (mode 0644)"),
    ("A" * 48, 0o640, "readable by others"),
    ("A" * (MIN_COOKIE_LENGTH - 1), 0o600, f"shorter than {MIN_COOKIE_LENGTH}"),
    ("A" * 30 + "'\"", 0o600, "characters Erlang rejects"),
    ("A" * 30 + " B", 0o600, "characters Erlang rejects"),
    ("", 0o600, "shorter than"),
])
def test_bad_cookie_files_are_refused_without_showing_the_cookie(tmp_path, content, mode, message):
    path = tmp_path / "c.cookie"
    path.write_text(content + "\n")
    path.chmod(mode)
    with pytest.raises(EasyClusterError) as exc:
        read_cookie_file(path)
    assert message in str(exc.value)
    assert not content or content not in str(exc.value)


def test_a_missing_cookie_file_is_an_operator_error(tmp_path):
    with pytest.raises(EasyClusterError, match="No such file"):
        read_cookie_file(tmp_path / "nope")


def test_a_secret_never_formats_itself():
    s = Secret("x" * 40)
    for text in (str(s), repr(s), f"{s}", f"{s!r}", "%s" % s, str([s]), str({"k": s})):
        assert "x" * 40 not in text


def _inventory(tmp_path: Path, cookie: str):
    return parse_inventory(INVENTORY.format(cookie=cookie), tmp_path / "inv.yml")


def test_rotation_with_a_cookie_file_generates_the_new_one_or_resumes_a_pending_one(tmp_path):
    inv = _inventory(tmp_path, "{file: c.cookie}")
    current = create_cookie_file(inv.cluster.cookie_file)
    said = []
    new, pending, unwritten = new_cookie(inv, None, said.append)
    assert pending == pending_path(inv.cluster.cookie_file) == tmp_path / "c.cookie.new"
    assert unwritten and new != current and not pending.exists() and not said
    # a rotation that was interrupted left its cookie: the rerun uses that one
    kept = create_cookie_file(pending)
    again, _, unwritten = new_cookie(inv, None, said.append)
    assert again == kept and not unwritten and "resuming" in said[0]
    with pytest.raises(EasyClusterError, match="generates the new one itself"):
        new_cookie(inv, str(pending), said.append)


def test_rotation_with_an_environment_cookie_needs_the_new_one_in_a_private_file(tmp_path):
    inv = _inventory(tmp_path, "{env: C_COOKIE}")
    with pytest.raises(EasyClusterError, match="--new-cookie-file"):
        new_cookie(inv, None, print)
    given = tmp_path / "new"
    given.write_text("B" * 40)
    given.chmod(0o644)
    with pytest.raises(EasyClusterError, match="readable by others"):
        new_cookie(inv, str(given), print)
    given.chmod(0o600)
    new, pending, unwritten = new_cookie(inv, str(given), print)
    assert new == Secret("B" * 40) and pending is None and not unwritten
