"""How a file is known to the index."""

from __future__ import annotations

import os
from pathlib import Path


def source_key(path: Path) -> str:
    """Absolute, with links kept: a file is known by the path it is cited under (see
    `retrieval.loaders.walking` for the symlink rule)."""
    return Path(os.path.abspath(path)).as_posix()
