"""The plugin is dialyzer clean, and every exported function has a -spec (scripts/dialyzer.sh
compiles with +warn_missing_spec +warnings_as_errors), against the OTP and ejabberd the lab
hosts run. Needs root: it runs in a chroot of a copy of the lab's base image."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import REPO

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("suite", ["", "backports"], ids=["trixie 24.12", "trixie-backports 26.07"])
def test_the_plugin_is_dialyzer_clean(suite):
    """Against Debian 13's 24.12 and against 26.07 from its backports (`fab upgrade`'s next step)."""
    if os.geteuid() != 0:
        pytest.skip("dialyzer runs in a chroot: needs root")
    proc = subprocess.run([str(REPO / "scripts" / "dialyzer.sh"), "trixie"], capture_output=True, text=True,
                          timeout=1200, env={**os.environ, "SUITE": suite})
    assert proc.returncode == 0, f"dialyzer exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "done (passed successfully)" in proc.stdout, proc.stdout
