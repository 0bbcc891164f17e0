"""easycluster: deploy and operate multi-master ejabberd clusters over SSH."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
