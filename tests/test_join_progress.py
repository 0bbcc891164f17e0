"""The plugin's join progress lines as an operator sees them (membership.progress_line): a
case table, line in, line out."""

from __future__ import annotations

import pytest

from easycluster.membership import progress_line

CASES = [
    # a disc_only table being copied: bytes received over the distribution, against the seed's file
    ("copying roster disc_only_copies 125000000 250000000 received 3012 receiving",
     "  copying roster (disc_only_copies), 3s: 125.0 MB received of 250.0 MB (50%)"),
    # then its index is built from the copy, or its file closed
    ("copying roster disc_only_copies 300000000 250000000 received 7000 indexing",
     "  copying roster (disc_only_copies), 7s: received, building its index"),
    ("copying passwd disc_only_copies 250000000 250000000 received 5000 closing",
     "  copying passwd (disc_only_copies), 5s: received, closing its file"),
    # a TLS distribution has no port to ask: the bytes written, with no share
    ("copying passwd disc_only_copies 545900000 246900000 written 2000 receiving",
     "  copying passwd (disc_only_copies), 2s: 545.9 MB written"),
    # an ets-based one, counted in records
    ("copying muc_room disc_copies 40000 160000 records 1000 receiving",
     "  copying muc_room (disc_copies), 1s: 40000 of 160000 records (25%)"),
    # more received than the seed's file (other traffic): 99 % at most until it is copied
    ("copying passwd disc_only_copies 300 200 received 2000 receiving",
     "  copying passwd (disc_only_copies), 2s: 0.0 MB received of 0.0 MB (99%)"),
    # the seed's size unknown (the rpc failed): no share
    ("copying passwd disc_only_copies 5000000 0 received 1000 receiving",
     "  copying passwd (disc_only_copies), 1s: 5.0 MB received of 0.0 MB"),
    # copied: shown when it held 1000 records or took a second
    ("table roster disc_only_copies 100000 1100", "  copied roster (disc_only_copies, 100000 records) in 1.1s"),
    ("table passwd disc_only_copies 10 1500", "  copied passwd (disc_only_copies, 10 records) in 1.5s"),
    ("table route ram_copies 3 2", None),
    ("paused", "  join paused before copying tables (fault injection file present)"),
    # anything else the plugin writes is for the log, not the operator
    ("step copy_tables", None),
    ("waiting", None),
    ('result {"ok":true}', None),
    ("copying roster disc_only_copies x y received 1 receiving", None),
    ("copying roster disc_only_copies 1 2 received 1", None),   # a line of another plugin version
    ("copying roster disc_only_copies -5 2 received 1 receiving", None),   # a connection closed meanwhile
    ("", None),
]


@pytest.mark.parametrize("line,shown", CASES)
def test_progress_line(line, shown):
    assert progress_line(line) == shown
