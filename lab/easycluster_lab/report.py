"""What `make bench` and `make load` write into the docs: a generated section of a page, between
markers of its own (one per release), the rest of the page left as written."""

from __future__ import annotations

from pathlib import Path

from .lab import RELEASES


def release_name(release: str) -> str:
    """'13 (trixie)', as Debian names its releases."""
    return f"{RELEASES[release]} ({release})" if release in RELEASES else release


def write_between(page: Path, start: str, end: str, text: str, new_page: str = "") -> None:
    """Put `text` between the markers `start` and `end` of `page`; a page without them gets them
    at its end (a missing page starts as `new_page`)."""
    doc = page.read_text() if page.exists() else new_page
    if start not in doc:
        doc += f"\n{start}\n{end}\n"
    head, _, rest = doc.partition(start)
    _, _, tail = rest.partition(end)
    page.write_text(f"{head}{start}\n{text}\n{end}{tail}")
