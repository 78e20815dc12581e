"""Files that hold prompts and answers (captures, datasets, the store): made readable by this user alone."""

from __future__ import annotations

import contextlib
from pathlib import Path


def private_dir(folder: Path) -> None:
    """Make `folder` and any missing parents, each readable by this user alone (0700); folders that exist
    already keep their mode (a volume's root, say)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another worker made it first
            path.mkdir(mode=0o700)
            path.chmod(0o700)  # whatever the umask
