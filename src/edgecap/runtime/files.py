"""Files written whole or not at all (device-safe: the standard library only).

    write_atomically(path, data)   bytes or text into a temporary file beside path, then renamed over it

A reader in another process (a training worker reading the run the chief updates, a second `edgecap caption`
loading a cache, a signature check) sees the old file or the new one, never part of one; a process killed while
writing leaves the old file and no temporary one under a name anything reads.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """Write `data` (str: UTF-8) to `path` through a uniquely named temporary file in the same folder and a rename.
    Raises OSError as a plain write would; the temporary file is removed whatever happens."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make a run directory or cache unreadable to other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
