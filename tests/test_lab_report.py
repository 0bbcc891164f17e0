"""The docs sections `make bench` and `make load` write (pure)."""

from __future__ import annotations

import pytest

from easycluster_lab.report import release_name, write_between


@pytest.mark.parametrize("before, after", [
    ("# P\n<!-- S -->\nold\n<!-- /S -->\nkept\n", "# P\n<!-- S -->\nnew\n<!-- /S -->\nkept\n"),  # replaced, rest kept
    ("# P\nkept\n", "# P\nkept\n\n<!-- S -->\nnew\n<!-- /S -->\n"),                          # markers added at the end
    (None, "# New\n\n<!-- S -->\nnew\n<!-- /S -->\n"),                                          # a page made
])
def test_a_section_is_written_between_its_markers_and_nothing_else_changes(tmp_path, before, after):
    page = tmp_path / "page.md"
    if before is not None:
        page.write_text(before)
    write_between(page, "<!-- S -->", "<!-- /S -->", "new", new_page="# New\n")
    assert page.read_text() == after


def test_releases_are_named_as_debian_names_them():
    assert (release_name("trixie"), release_name("bookworm"), release_name("sid")) == ("13 (trixie)", "12 (bookworm)", "sid")
